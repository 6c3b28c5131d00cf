"""Process exit codes shared by the CLI, the training stages and the Slurm job scripts."""

OK = 0
STAGE_FAILED = 1
BAD_INPUT = 2
#: A training process saved a complete checkpoint after a preemption signal (SIGTERM/SIGUSR1)
#: and stopped so that its job can be requeued. 75 is EX_TEMPFAIL ("try again later").
REQUEUE = 75
