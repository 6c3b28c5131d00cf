"""The benchmark evaluator: AstroMLab-1 style multiple-choice scoring of any checkpoint.

One module per job:

* ``data``: load MCQ sets (JSON/JSONL/CSV/parquet, saved datasets, Hub names), clear errors;
* ``prompts``: the prompts (Jinja, shared with the lm-eval export);
* ``scoring``: the `letter` scorer and the helpers both log-likelihood methods share; ``choices``:
  the `choices` scorer (lm-eval's encode_pair rule, one context forward for the four options);
  ``packing``: questions packed into scoring rows with a per-segment mask; ``prefix``: the shared
  instruction prefix's KV cache, computed once;
* ``generate``: `generate` (JSON answers, optional <think>), transformers or vLLM;
* ``store``: the resumable per-question score store;
* ``perplexity``: held-out perplexity and bits per byte (sliding window, batched, resumable) on
  the corpus's held-out papers and any local or Hub text set;
* ``metrics``/``topics``/``report``/``plots``: accuracy, calibration, per-topic, files, PNGs;
* ``evaluator``/``api``: score one checkpoint (``api.evaluate_checkpoint`` for other stages);
* ``runs``: score a run's base model and every checkpoint (``checkpoints``: which ones,
  ``comparison``: the did-domain-training-help table), called by ``astrosage/stages/eval.py``;
* ``lm_eval_export``: an lm-evaluation-harness task (the CLI is ``astrosage eval``, in astrosage/cli_eval.py).

Heavy libraries (torch, transformers, lm-eval) are imported only where they are used.
"""
