"""Synthetic training data from the corpus: QA pairs, QA with <think> reasoning chains, and MCQs.

    chunking   corpus docs -> overlapping chunks that carry their paper's metadata
    templates  versioned Jinja prompt files (prompts/<task>_<version>.j2) -> chat messages
    backends   teacher models behind one interface: transformers, vLLM, OpenAI-compatible HTTP
    parsing    robust JSON extraction from model output
    validate   per-item checks (each rejection has a reason), near-dup questions, decontamination
    records    validated items -> the DESIGN.md output formats, with provenance
    generate   one shard: chunks x tasks -> teacher requests -> validated records
    store      sharded, resumable JSONL output with a done-shards ledger
    shards     the generation loop over the shards the store lacks
    progress   the live bar, throughput and log lines
    report     counts, the MCQ dev set, the summary table and metrics
    build      the stage's work, ``build_synth(ctx)``, as the sequence of those steps
"""
