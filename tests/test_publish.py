"""Publish stage: model card with model-index, the exact upload folder, corpus never uploaded, token never leaked."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from astrosage.core.stage import StageContext, StageResult, StageSpec
from astrosage.stages import STAGES
from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager
from astrosage.stages import publish as publish_stage

FAKE_TOKEN = "hf_fakeTOKENforTESTS0123456789abcdef"
TOKEN_ENV = "ASTROSAGE_TEST_HF_TOKEN"
REPO = "astro-tester/astrosage-tiny"
MODEL_FILES = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
QA_BYTES = b'{"messages": [{"role": "user", "content": "What is a pulsar?"}], "meta": {"paper": "2401.00417"}}\n'


def _recipe(tmp_path: Path, **publish) -> object:
    return load_recipe_dict(
        {
            "run": {"name": "pub", "output_dir": str(tmp_path / "runs"), "seed": 0},
            "model": {"base": "tiny:base", "base_instruct": "tiny:instruct", "dtype": "float32"},
            "corpus": {"enabled": True, "local_dir": "examples/sample_corpus", "date_to": "2024-12-31"},
            "synth": {"enabled": True},
            "cpt": {"enabled": True, "max_steps": 20},
            "sft": {"enabled": True, "general_mix": [{"path": "BAAI/Infinity-Instruct", "weight": 0.5}]},
            "merge": {"method": "linear", "weight": 0.75, "dtype": "float32"},
            "eval": {
                "benchmarks": [
                    {"name": "sample-mcq", "path": "examples/mcq/astro_mcq_sample.json"},
                    {"name": "astromlab1-public", "path": "AstroMLab/Astrobench_MCQ_v1_Public", "split": "train"},
                ]
            },
            "publish": {"repo_id": REPO, "token_env": TOKEN_ENV, **publish},
        }
    )


def fake_merge(ctx: StageContext) -> StageResult:
    """A merged checkpoint, carelessly sharing its folder with corpus data and training leftovers."""
    src = Path(ctx.resolve_model(ctx.recipe.model.base))
    model = ctx.work_dir / "model"
    shutil.copytree(src, model)
    (model / "mergekit_config.yml").write_text(f"merge_method: linear\nbase_model: {ctx.run_dir}/sft/model\n")
    (model / "README.md").write_text("mergekit's own card\n")
    (model / "train.jsonl").write_bytes(QA_BYTES)
    (model / "docs-000.parquet").write_bytes(b"PAR1 not really")
    (model / "notes.json").write_bytes(QA_BYTES)  # innocent name, corpus content
    (model / "optimizer.pt").write_bytes(b"\0" * 64)
    (model / "checkpoint-10").mkdir()
    (model / "checkpoint-10" / "config.json").write_text("{}")
    return StageResult(outputs={"model": "model"}, metrics={"method": "linear"})


def fake_eval(ctx: StageContext) -> StageResult:
    """The eval stage's comparison.json (its documented row format)."""
    rows = [
        {"checkpoint": "base", "benchmark": "sample-mcq", "model": "x", "n": 40, "accuracy": 0.25, "ci95": [0.1, 0.4],
         "delta_vs_base": None, "ece": 0.2, "brier": 0.8, "nll": 1.5},
        {"checkpoint": "merge", "benchmark": "sample-mcq", "model": "y", "n": 40, "accuracy": 0.625, "ci95": [0.5, 0.7],
         "delta_vs_base": 0.375, "ece": 0.05, "brier": 0.5, "nll": 0.9},
        {"checkpoint": "merge", "benchmark": "astromlab1-public", "model": "y", "n": 3846, "accuracy": None, "ci95": None,
         "delta_vs_base": None, "ece": None, "brier": None, "nll": None},
    ]
    (ctx.work_dir / "comparison.json").write_text(json.dumps({"method": "letter", "rows": rows}))
    return StageResult(outputs={"report": "comparison.json"})


def _registry(with_eval: bool = True) -> dict[str, StageSpec]:
    spec = lambda name, fn: StageSpec(name=name, summary=f"fake {name}", sections=("model",), upstream=lambda r: [],  # noqa: E731
                                      external=lambda r: {}, run=globals()[fn])
    registry = {"merge": spec("merge", "fake_merge")}
    if with_eval:
        registry["eval"] = spec("eval", "fake_eval")
    registry["publish"] = STAGES["publish"]
    return registry


def _corpus_files(run_dir: Path) -> None:
    (run_dir / "synth" / "qa").mkdir(parents=True)
    (run_dir / "synth" / "qa" / "part-0000.jsonl").write_bytes(QA_BYTES)


@pytest.fixture
def log_text():
    """Everything the astrosage logger says during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("astrosage")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old)


def _assert_token_nowhere(root: Path, *texts: str) -> None:
    for text in texts:
        assert FAKE_TOKEN not in text
    for f in root.rglob("*"):
        if f.is_file():
            assert FAKE_TOKEN.encode() not in f.read_bytes(), f


def test_dry_run_writes_the_exact_upload_folder_with_a_parseable_card(tmp_path, monkeypatch, log_text, capsys):
    from huggingface_hub import ModelCard

    monkeypatch.setenv(TOKEN_ENV, FAKE_TOKEN)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    recipe = _recipe(tmp_path, dry_run=True)
    manager = RunManager(recipe, registry=_registry())
    _corpus_files(manager.run_dir)
    outcomes = manager.run()
    assert [o.status for o in outcomes] == ["done", "done", "done"]
    stage_dir = manager.run_dir / "publish"
    upload = stage_dir / "upload"

    # only model files + the card + the (sanitised) merge config; corpus data and leftovers skipped
    assert {p.name for p in upload.iterdir()} == MODEL_FILES | {"README.md", "mergekit_config.yml"}
    plan = json.loads((stage_dir / "publish_plan.json").read_text())
    reasons = {s["file"]: s["reason"] for s in plan["skipped"]}
    assert set(reasons) == {"train.jsonl", "docs-000.parquet", "notes.json", "optimizer.pt", "checkpoint-10/", "astrosage_tiny.json"}
    assert "corpus" in reasons["train.jsonl"] and "corpus" in reasons["docs-000.parquet"]
    assert reasons["notes.json"].startswith("identical to corpus data")
    assert str(tmp_path) not in (upload / "mergekit_config.yml").read_text()

    # the card: huggingface_hub reads it, model-index carries the published checkpoint's labelled scores
    card = ModelCard.load(upload / "README.md")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("sample-mcq", "accuracy"): 0.625, ("sample-mcq", "ece"): 0.05, ("sample-mcq", "brier"): 0.5, ("sample-mcq", "nll"): 0.9}
    meta = yaml.safe_load((upload / "README.md").read_text().split("---")[1])
    # the tiny base has no model card: the licence is 'other' (never a made-up default), and the card says so
    assert meta["model-index"][0]["name"] == "astrosage-tiny" and meta["license"] == "other"
    assert "unknown: set publish.license" in card.text
    assert meta["datasets"] == ["BAAI/Infinity-Instruct"] and "merge" in meta["tags"]
    text = card.text
    for needed in ("## Training data", "arXiv papers", "never uploaded", "## Evaluation", "62.5%", "n/a (unlabelled)",
                   "## Intended use", "## Limitations", "## Recipe", "merge_method: linear"):
        assert needed in text, needed
    assert str(tmp_path) not in text
    assert "{{" not in text and "{%" not in text and "{#" not in text  # the template rendered completely

    out = capsys.readouterr()
    _assert_token_nowhere(tmp_path, log_text.getvalue(), out.out, out.err)


def test_card_says_no_evaluation_when_there_is_none(tmp_path):
    from huggingface_hub import ModelCard

    recipe = _recipe(tmp_path, dry_run=True)
    recipe.eval.enabled = False
    manager = RunManager(recipe, registry=_registry(with_eval=False))
    manager.run()
    card = ModelCard.load(manager.run_dir / "publish" / "upload" / "README.md")
    assert not card.data.eval_results
    assert "model-index" not in (manager.run_dir / "publish" / "upload" / "README.md").read_text()
    assert "No evaluation was run" in card.text


def test_publish_refuses_without_a_model_stage(tmp_path):
    recipe = _recipe(tmp_path, dry_run=True)
    work = tmp_path / "w"
    work.mkdir()
    ctx = StageContext(recipe, "publish", tmp_path / "runs" / "pub", work, {})
    with pytest.raises(publish_stage.PublishError, match="needs a trained or merged model"):
        publish_stage.run(ctx)


# ------------------------------------------------------------------------------ real upload, local Hub


class _FakeHub(BaseHTTPRequestHandler):
    """Replays the Hub endpoints create_repo / model_info / validate-yaml / preupload / commit use."""

    calls: list[dict] = []
    private = True

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, obj, status=200) -> None:
        body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _record(self, body: bytes) -> None:
        self.calls.append({"method": self.command, "path": self.path, "auth": self.headers.get("authorization"), "body": body})

    def do_GET(self) -> None:
        self._record(b"")
        if self.path.startswith(f"/api/models/{REPO}"):
            return self._reply({"id": REPO, "private": self.private, "sha": "0" * 40, "siblings": []})
        self._reply({"error": "not found"}, 404)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._record(body)
        if self.path == "/api/validate-yaml":
            return self._reply(b"{}")
        if self.path == "/api/repos/create":
            return self._reply({"url": f"{self._base()}/{REPO}", "name": REPO})
        if self.path.startswith(f"/api/models/{REPO}/preupload/"):
            files = json.loads(body)["files"]
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if self.path.startswith(f"/api/models/{REPO}/commit/"):
            return self._reply({"commitUrl": f"{self._base()}/{REPO}/commit/{'a' * 40}", "commitOid": "a" * 40})
        self._reply({"error": "not found"}, 404)


@pytest.fixture
def fake_hub(monkeypatch):
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _FakeHub.calls = []
    _FakeHub.private = True
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # only 127.0.0.1 is reachable here
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield _FakeHub.calls
    server.shutdown()
    server.server_close()


def test_upload_is_private_uses_the_token_and_sends_no_corpus(tmp_path, monkeypatch, fake_hub, log_text, capsys):
    monkeypatch.setenv(TOKEN_ENV, FAKE_TOKEN)
    recipe = _recipe(tmp_path)
    manager = RunManager(recipe, registry=_registry())
    _corpus_files(manager.run_dir)
    manager.run()
    create = next(c for c in fake_hub if c["path"] == "/api/repos/create")
    assert json.loads(create["body"])["visibility"] == "private"
    authed = [c for c in fake_hub if c["path"].startswith(("/api/repos/create", f"/api/models/{REPO}"))]
    assert {"POST"} <= {c["method"] for c in authed} and any("/commit/" in c["path"] for c in authed)
    assert authed and all(c["auth"] == f"Bearer {FAKE_TOKEN}" for c in authed)
    commit = next(c for c in fake_hub if "/commit/" in c["path"])
    lines = [json.loads(line) for line in commit["body"].decode().splitlines() if line.strip()]
    sent = {ln["value"]["path"]: base64.b64decode(ln["value"]["content"]) for ln in lines if ln.get("key") == "file"}
    assert set(sent) == MODEL_FILES | {"README.md", "mergekit_config.yml"}
    assert QA_BYTES not in sent.values()
    published = json.loads((manager.run_dir / "publish" / "published.json").read_text())
    assert published["private"] is True and published["commit"] == "a" * 40
    out = capsys.readouterr()
    _assert_token_nowhere(tmp_path, log_text.getvalue(), out.out, out.err)


def test_upload_without_any_token_fails_clearly(tmp_path, monkeypatch, fake_hub):
    from huggingface_hub import constants

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    manager = RunManager(_recipe(tmp_path), registry=_registry())
    with pytest.raises(publish_stage.PublishError, match=f"set \\${TOKEN_ENV}"):
        manager.run()
    assert not [c for c in fake_hub if c["path"] == "/api/repos/create"]


def test_upload_refuses_an_existing_public_repo_when_private_is_asked(tmp_path, monkeypatch, fake_hub):
    monkeypatch.setenv(TOKEN_ENV, FAKE_TOKEN)
    _FakeHub.private = False  # the repository already exists and is public
    manager = RunManager(_recipe(tmp_path), registry=_registry())
    with pytest.raises(publish_stage.PublishError, match="already exists and is public"):
        manager.run()
    assert not [c for c in fake_hub if "/preupload/" in c["path"] or "/commit/" in c["path"]]


def test_licence_comes_from_the_base_models_card_or_the_recipe(tmp_path, tiny_base):
    import shutil

    from astrosage.publishing.card import resolve_license

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# a base model\n")
    off = {s: {"enabled": False} for s in ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish")}
    recipe = load_recipe_dict({"run": {"name": "lic", "output_dir": str(tmp_path)}, "model": {"base": str(base)}, **off})
    assert resolve_license(recipe, str(base)) == ("apache-2.0", f"from the base model's card ({base})")
    pinned = load_recipe_dict({"run": {"name": "lic", "output_dir": str(tmp_path)}, "model": {"base": str(base)}, **off,
                               "publish": {"enabled": False, "license": "llama3.1"}})
    assert resolve_license(pinned, str(base)) == ("llama3.1", "publish.license")
    assert resolve_license(recipe, str(tmp_path / "no-card")) == ("other", "unknown: set publish.license")
