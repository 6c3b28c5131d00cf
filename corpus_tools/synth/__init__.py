"""Synthetic training data from the corpus: QA pairs, QA with <think> reasoning chains, and MCQs.

    chunking   corpus docs -> overlapping chunks that carry their paper's metadata
    templates  versioned Jinja prompt files (prompts/<task>_<version>.j2) -> chat messages
    backends   teacher models behind one interface: transformers, vLLM, OpenAI-compatible HTTP
    parsing    robust JSON extraction from model output
    validate   per-item checks (each rejection has a reason), near-dup questions, decontamination
    records    validated items -> the DESIGN.md output formats, with provenance
    store      sharded, resumable JSONL output with a done-shards ledger
    stage      the pipeline stage ``run(ctx)`` (progress, throughput, final table)
"""
