"""The kernel: recipe schema and loader, artifacts and manifests, the stage contract, model
references, distributed state, logging. It imports nothing from the stages, runner or CLI above it."""
