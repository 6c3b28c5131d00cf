"""Recipe section ``corpus``: where papers come from, quality filters, dedup, decontamination, held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from .base import _Section


class FilterSettings(_Section):
    min_chars: int = Field(default=2_000, ge=0, description="Drop documents shorter than this (characters).")
    max_chars: int = Field(default=2_000_000, gt=0, description="Drop documents longer than this (characters).")
    languages: list[Literal["en"]] = Field(
        default_factory=lambda: ["en"],
        description="Keep documents in these languages (offline stop-word heuristic, which recognises 'en' only); "
        "an empty list turns the language filter off.",
    )
    max_non_text_ratio: float = Field(
        default=0.5, ge=0, le=1, description="Drop documents whose share of characters outside prose+math exceeds this."
    )
    min_stopword_ratio: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Language test: a document is English when at least this share of its prose words (math removed) "
        "are English stop words (English papers: ~0.3-0.45; other languages: < 0.08).",
    )
    max_bad_char_ratio: float = Field(
        default=0.001, ge=0, le=1, description="Drop documents whose share of U+FFFD / mojibake characters exceeds this."
    )
    max_duplicate_line_ratio: float = Field(
        default=0.3, ge=0, le=1, description="Drop documents whose share of repeated paragraphs (math removed) exceeds this."
    )


class DedupSettings(_Section):
    exact: bool = Field(default=True, description="Drop exact duplicates (hash of normalised text).")
    near: bool = Field(default=True, description="Drop near-duplicates with MinHash-LSH.")
    shingle_size: int = Field(default=5, gt=0, description="Word n-gram size of MinHash shingles.")
    num_perm: int = Field(default=112, gt=0, description="Number of MinHash permutations (buckets x hashes).")
    threshold: float = Field(default=0.8, gt=0, lt=1, description="Jaccard similarity above which two docs are duplicates.")
    seed: int = Field(default=1, ge=0, description="Seed of the MinHash permutations (signatures are comparable only with the same seed).")


class DecontaminationSettings(_Section):
    ngram: int = Field(default=13, gt=0, description="Word n-gram length shared with a benchmark item that counts as contamination.")
    action: Literal["drop", "flag"] = Field(default="drop", description="Drop contaminated documents or keep them flagged.")
    benchmarks: list[Path] = Field(
        default_factory=list,
        description="Extra benchmark files (MCQ JSON/JSONL) to decontaminate against; the eval section's benchmarks are always included.",
    )
    drop_doi_prefixes: list[str] = Field(
        default_factory=lambda: ["10.1146/annurev-astro"],
        description="Drop papers whose DOI starts with one of these (benchmark source journals, e.g. ARA&A).",
    )
    drop_journal_refs: list[str] = Field(
        default_factory=lambda: ["Annu. Rev. Astron. Astrophys", "ARA&A"],
        description="Drop papers whose journal_ref contains one of these strings.",
    )


class CorpusSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    source: Literal["local", "arxiv_api", "oai_pmh", "s3_bulk"] = Field(
        default="local", description="Where papers come from: a local folder of e-print files, the arXiv API, OAI-PMH, or the S3 bulk tars."
    )
    local_dir: Path | None = Field(default=None, description="Folder of e-print files + metadata.jsonl (source: local).")
    categories: list[str] = Field(
        default_factory=lambda: ["astro-ph"], description="arXiv categories to harvest (astro-ph includes its subcategories)."
    )
    include_gr_qc: bool = Field(default=False, description="Also harvest gr-qc (as AstroSage-8B did).")
    date_from: str | None = Field(default=None, description="First submission date, YYYY-MM-DD.", pattern=r"^\d{4}-\d{2}-\d{2}$")
    date_to: str | None = Field(default=None, description="Last submission date, YYYY-MM-DD.", pattern=r"^\d{4}-\d{2}-\d{2}$")

    @field_validator("date_from", "date_to")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value is not None:
            import datetime

            try:
                datetime.date.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a calendar date ({exc})") from None
        return value
    max_papers: int | None = Field(default=None, gt=0, description="Stop after this many papers (for trials).")
    contact_email: str | None = Field(
        default=None, description="Your e-mail, sent in the User-Agent as arXiv's terms ask (required for network sources)."
    )
    request_interval_s: float = Field(
        default=3.0, ge=3.0, description="Seconds between requests to arXiv (its terms: at most 1 request / 3 s)."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Network timeout per request, seconds.")
    max_retries: int = Field(default=5, ge=0, description="Retries with exponential backoff on 429/503/timeouts.")
    s3_requester_pays: bool = Field(default=True, description="The arXiv S3 bucket is requester-pays; you are billed for transfer.")
    bulk_tars: list[str] = Field(
        default_factory=list,
        description="source: s3_bulk. fsspec paths or globs of arXiv bulk source tars, e.g. "
        "'s3://arxiv/src/arXiv_src_2401_*.tar' (needs s3fs and AWS credentials; requester pays) or local copies. "
        "Metadata comes from an OAI-PMH harvest, or from local_dir/metadata.jsonl when local_dir is set.",
    )
    api_url: str = Field(
        default="https://export.arxiv.org/api/query", description="arXiv API query endpoint (source: arxiv_api)."
    )
    oai_url: str = Field(default="https://oaipmh.arxiv.org/oai", description="arXiv OAI-PMH endpoint (source: oai_pmh / s3_bulk).")
    oai_set: str = Field(default="physics:astro-ph", description="OAI-PMH set to harvest.")
    eprint_url: str = Field(
        default="https://arxiv.org/e-print/{id}", description="Template of the e-print source URL ({id} is the arXiv id)."
    )
    api_page_size: int = Field(default=500, gt=0, le=2000, description="Results per arXiv API page (the API allows at most 2,000).")
    api_slice_days: int = Field(
        default=7,
        gt=0,
        le=366,
        description="Width in days of the submittedDate slices of arXiv API queries (keeps every query under the "
        "30,000-result window; astro-ph gets ~1,400 papers a month).",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Folder for harvested metadata and downloaded e-prints, kept across reruns so an interrupted "
        "harvest resumes (default: <run dir>/corpus.cache).",
    )
    max_uncompressed_mb: int = Field(default=512, gt=0, description="Per-paper cap on extracted size (decompression-bomb guard).")
    max_archive_members: int = Field(default=2_000, gt=0, description="Per-paper cap on archive members.")
    num_workers: int = Field(default=1, gt=0, description="Local worker processes for text extraction and filtering.")
    executor: Literal["local", "slurm"] = Field(default="local", description="Engine that fans out processing steps.")
    filters: FilterSettings = Field(default_factory=FilterSettings, description="Quality filters tuned for papers.")
    dedup: DedupSettings = Field(default_factory=DedupSettings, description="Exact and near-duplicate removal.")
    decontamination: DecontaminationSettings = Field(
        default_factory=DecontaminationSettings, description="Benchmark decontamination (by n-gram and by source)."
    )
    shard_docs: int = Field(default=10_000, gt=0, description="Documents per output parquet shard.")
    heldout_fraction: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Share of papers set aside in corpus/heldout/ for held-out perplexity (never trained on, never "
        "chunked by synth). Chosen by a hash of the paper id, so adding papers never moves one already placed; "
        "near-duplicates go with their cluster. 0 = no held-out split.",
    )
    heldout_min_papers: int = Field(
        default=3,
        ge=0,
        description="Hold out at least this many papers when heldout_fraction gives fewer (the lowest-hash ones), but "
        "never more than a fifth of the corpus, so a small corpus still trains on most of it.",
    )
