"""The OpenAI-compatible client and the synth stage against a real HTTP replay server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager
from corpus_tools.synth.backends import BackendError, GenRequest
from corpus_tools.retry import retry_after_seconds as retry_after_s
from corpus_tools.synth.backends.openai_backend import OpenAIBackend
from test_synth_support import (
    ReplayServer,
    Reply,
    default_script,
    good_items,
    read_jsonl_dir,
    recipe_dict,
    synth_registry,
    write_docs,
)

KEY_ENV = "ASTROSAGE_TEST_SYNTH_KEY"
SECRET = "sk-test-d0n0tl0g-7f3a9c"


def _req(marker: str) -> GenRequest:
    return GenRequest([{"role": "user", "content": marker}], seed=1, max_new_tokens=32, temperature=0.7, top_p=0.9)


def _scripted(body, attempt):
    marker = body["messages"][0]["content"]
    if marker == "good":
        return Reply(content='{"items": []}')
    if marker == "garbage-body":  # a 200 whose body is not a chat completion: retried
        return Reply(raw_body="<html>proxy error</html>") if attempt == 0 else Reply(content="ok")
    if marker == "slow":
        return Reply(content="late", delay=1.5) if attempt == 0 else Reply(content="fast")
    if marker == "rate-limited":
        return Reply(status=429, headers={"Retry-After": "1"}) if attempt == 0 else Reply(content="after 429")
    if marker == "down":
        return Reply(status=503)
    if marker == "bad-request":
        return Reply(status=400)
    return Reply(status=401)


def test_client_handles_good_malformed_slow_429_and_errors(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG, logger="astrosage")
    with ReplayServer(_scripted) as srv:
        client = OpenAIBackend(srv.url, "teacher", api_key_env=KEY_ENV, concurrency=4, timeout_s=0.5, max_retries=2, backoff_s=0.01)
        markers = ["good", "garbage-body", "slow", "rate-limited", "down", "bad-request"]
        results = dict(zip(markers, client.generate([_req(m) for m in markers])))
        assert results["good"].text == '{"items": []}' and results["good"].attempts == 1 and results["good"].completion_tokens > 0
        assert results["garbage-body"].text == "ok" and results["garbage-body"].attempts == 2
        assert results["slow"].text == "fast" and results["slow"].attempts == 2
        assert results["rate-limited"].text == "after 429" and results["rate-limited"].attempts == 2
        assert not results["down"].ok and "HTTP 503" in results["down"].error and results["down"].attempts == 3
        assert not results["bad-request"].ok and results["bad-request"].attempts == 1, "a 400 is not retried"
        assert client.stats["timeouts"] == 1 and client.stats["rate_limited"] == 1

        # the 429 retry waited for Retry-After (1 s), not for the 0.01 s backoff
        times = [e["t"] for e in srv.log if e["body"]["messages"][0]["content"] == "rate-limited"]
        assert times[1] - times[0] >= 0.9
        assert all(e["headers"].get("Authorization") == f"Bearer {SECRET}" for e in srv.log)
        assert {e["body"]["model"] for e in srv.log} == {"teacher"} and srv.log[0]["body"]["seed"] == 1

        with pytest.raises(BackendError, match="401"):
            client.generate([_req("unauthorized")])
        client.close()
    shown = caplog.text + " ".join(str(r.error) for r in results.values())
    assert SECRET not in shown


def test_retry_after_parsing():
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_s(future) <= 31


# ------------------------------------------------------------------------------------ the stage
def _run(tmp_path: Path, srv: ReplayServer, name: str = "synth-test", force: bool = False, **synth):
    data = recipe_dict(tmp_path, tmp_path / "docs" / "part-0.parquet", backend="openai", api_base=srv.url, api_key_env=KEY_ENV, **synth)
    data["run"]["name"] = name
    data.setdefault("eval", {})["benchmarks"] = [{"name": "bench", "path": str(tmp_path / "bench.json")}]
    outcomes = RunManager(load_recipe_dict(data), synth_registry()).run(["synth"], force=force)
    return next(o for o in outcomes if o.stage == "synth"), tmp_path / "runs" / name / "synth"


def _outputs(stage_dir: Path) -> tuple[list[dict], list[dict]]:
    return read_jsonl_dir(stage_dir / "qa"), read_jsonl_dir(stage_dir / "mcq")


@pytest.fixture
def corpus(tmp_path):
    docs = write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=4, chars=2400)
    # a benchmark whose question a scripted answer will copy (decontamination must catch it)
    (tmp_path / "bench.json").write_text(json.dumps([{"question": BENCH_Q, "A": "a", "B": "b", "C": "c", "D": "d"}]))
    return docs


BENCH_Q = "How does the observed rotation curve of a spiral galaxy constrain the mass of its dark matter halo at large radii"


def _mixed(body, attempt):
    """Good answers, except: malformed JSON for one chunk, a contaminated and a self-referencing QA, a duplicate."""
    prompt = body["messages"][-1]["content"]
    reply = default_script(body, attempt)
    if "2401.10001 (2024)" in prompt and '"reasoning"' not in prompt and "multiple-choice" not in prompt:
        items = good_items(prompt)["items"]
        items[0]["question"] = BENCH_Q + "?"
        items[1]["question"] = "What does this paper conclude about the halo mass profile of spiral galaxies?"
        return Reply(content=json.dumps({"items": items}))
    if "2401.10002 (2024)" in prompt and "multiple-choice" in prompt:
        return Reply(content="I cannot answer in JSON, sorry {")
    return reply


def test_stage_keeps_valid_items_rejects_bad_ones_and_reruns_cached(tmp_path, corpus, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.INFO, logger="astrosage")
    with ReplayServer(_mixed) as srv:
        outcome, stage_dir = _run(tmp_path, srv, tasks=["qa", "qa_reasoning", "mcq"], mcq_dev_size=5)
        assert outcome.status == "done"
        n_requests = len(srv.log)
        manifest = json.loads((stage_dir / "manifest.json").read_text())
        counts = manifest["counts"]
        assert manifest["outputs"] == {"qa": "qa", "mcq": "mcq", "mcq_dev": "mcq/dev.jsonl", "rejected": "rejected.jsonl"}
        assert counts["requests"] == n_requests == 3 * counts["chunks"]
        assert counts["rejected_malformed_json"] >= 1
        assert counts["rejected_contaminated"] >= 1 and counts["rejected_context_reference"] >= 1
        assert counts["generated"] == counts["kept"] + counts["rejected"] - counts["rejected_malformed_json"]
        qa, mcq = _outputs(stage_dir)
        assert len(qa) == counts["kept_qa"] + counts["kept_qa_reasoning"] > 0 and len(mcq) == counts["kept_mcq"] > 0
        assert not any(BENCH_Q in r["messages"][0]["content"] for r in qa)
        thinking = [r for r in qa if r["meta"]["reasoning"]]
        assert thinking and all(r["messages"][1]["content"].startswith("<think>\n") and "\n</think>\n\n" in r["messages"][1]["content"] for r in thinking)
        assert {r["meta"]["backend"] for r in qa} == {"openai"} and all(r["meta"]["prompt_sha"] for r in qa)
        assert len({r["meta"]["id"] for r in qa}) == len(qa)

        # the QA folder loads with the sft stage's loader, reasoning chains recognised
        from astrosage.training.chat import has_reasoning
        from astrosage.training.data import load_records

        records = load_records(stage_dir / "qa")
        assert len(records) == len(qa) and sum(has_reasoning(m) for m in records["messages"]) == len(thinking)

        # the dev set loads with the evaluator's loader
        from eval.data import load_benchmark

        dev = load_benchmark(stage_dir / "mcq" / "dev.jsonl")
        assert len(dev) == counts["mcq_dev"] == 5 and all(q.answer is not None and q.id and q.explanation for q in dev)

        # rerun: cached, no request sent
        again, _ = _run(tmp_path, srv, tasks=["qa", "qa_reasoning", "mcq"], mcq_dev_size=5)
        assert again.status == "cached" and len(srv.log) == n_requests

    leaked = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not leaked and SECRET not in caplog.text


def _snapshot(stage_dir: Path) -> tuple[list[str], list[str], str]:
    qa, mcq = _outputs(stage_dir)
    return [json.dumps(r, sort_keys=True) for r in qa], [json.dumps(r, sort_keys=True) for r in mcq], (stage_dir / "mcq" / "dev.jsonl").read_text()


def test_failure_mid_run_resumes_without_loss_or_duplicates(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    calls = {"n": 0}

    def revoked_midway(body, attempt):  # the key is revoked in the middle of shard 2 (9 requests a shard)
        calls["n"] += 1
        return Reply(status=401) if calls["n"] > 20 else default_script(body, attempt)

    # one server for all runs: synth.api_base is part of the recipe section, so a new port would start over
    with ReplayServer() as srv:
        _, clean_dir = _run(tmp_path, srv, name="clean")
        clean, clean_requests = _snapshot(clean_dir), len(srv.log)

        srv.script = revoked_midway
        with pytest.raises(BackendError, match="401"):
            _run(tmp_path, srv, name="broken")
        partial = tmp_path / "runs" / "broken" / "synth.partial"
        ledger = [json.loads(x) for x in (partial / "state" / "ledger.jsonl").read_text().splitlines()]
        assert [e["shard"] for e in ledger] == [0, 1], "shards before the failure are committed, the failing one is not"
        done_requests = sum(e["requests"] for e in ledger)

        srv.script = default_script
        before = len(srv.log)
        outcome, resumed_dir = _run(tmp_path, srv, name="broken")
        assert outcome.status == "done"
        assert len(srv.log) - before == clean_requests - done_requests, "finished chunks are not asked again"
    assert _snapshot(resumed_dir) == clean
    assert json.loads((resumed_dir / "manifest.json").read_text())["metrics"]["shards_resumed"] == 2


CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from astrosage.core.recipe import load_recipe_dict
    from astrosage.runner import RunManager
    from test_synth_support import synth_registry
    RunManager(load_recipe_dict(json.load(open(sys.argv[1]))), synth_registry()).run(["synth"])
    """
)


def test_killed_process_resumes_without_loss_or_duplicates(tmp_path, corpus, monkeypatch):
    """SIGKILL the stage mid-run (a real crash), then rerun: same items as an uninterrupted run."""
    monkeypatch.setenv(KEY_ENV, SECRET)

    def slow(body, attempt):
        return Reply(content=default_script(body, attempt).content, delay=0.15)

    with ReplayServer(slow) as srv:
        data = recipe_dict(tmp_path, tmp_path / "docs" / "part-0.parquet", backend="openai", api_base=srv.url,
                           api_key_env=KEY_ENV, concurrency=2)
        data["run"]["name"] = "killed"
        (tmp_path / "recipe.json").write_text(json.dumps(data))
        (tmp_path / "child.py").write_text(CHILD.format(tests=str(Path(__file__).parent)))
        ledger = tmp_path / "runs" / "killed" / "synth.partial" / "state" / "ledger.jsonl"
        proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "recipe.json")],
                                cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if ledger.exists() and ledger.read_text().count("\n") >= 2:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the child finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        committed = ledger.read_text().count("\n")
        assert 2 <= committed < 6
        requests_before = len(srv.log)

        srv.script = default_script
        outcome = RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
        assert next(o for o in outcome if o.stage == "synth").status == "done"
        resumed = tmp_path / "runs" / "killed" / "synth"
        manifest = json.loads((resumed / "manifest.json").read_text())
        assert manifest["metrics"]["shards_resumed"] == committed
        assert len(srv.log) - requests_before == manifest["counts"]["requests"] - sum(
            json.loads(x)["requests"] for x in (resumed / "state" / "ledger.jsonl").read_text().splitlines()[:committed]
        )

        data["run"]["name"] = "clean"
        RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
    assert _snapshot(resumed) == _snapshot(tmp_path / "runs" / "clean" / "synth")
    qa, _ = _outputs(resumed)
    assert len({r["meta"]["id"] for r in qa}) == len(qa)


# ------------------------------------------------------------------------------------ bad inputs
def _ctx(tmp_path: Path, srv: ReplayServer, **synth):
    from astrosage.core.stage import StageContext

    data = recipe_dict(tmp_path, tmp_path / "docs" / "part-0.parquet", backend="openai", api_base=srv.url, api_key_env=KEY_ENV, **synth)
    recipe = load_recipe_dict(data)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return StageContext(recipe, "synth", tmp_path / "runs" / "synth-test", work, upstream={})


def test_unreachable_teacher_fails_the_shard_without_committing(tmp_path, corpus):
    from corpus_tools.synth.generate import SynthError
    from corpus_tools.synth.build import build_synth as run

    with ReplayServer(lambda body, attempt: Reply(status=503)) as srv:
        with pytest.raises(SynthError, match=r"9 of 9 teacher requests failed \(last error: HTTP 503"):
            run(_ctx(tmp_path, srv, max_retries=1, retry_backoff_s=0.01))
        assert len(srv.log) == 18, "each request was retried once"
    assert not (tmp_path / "work" / "state" / "ledger.jsonl").exists()
    assert read_jsonl_dir(tmp_path / "work" / "qa") == []


def test_ledger_from_other_chunks_and_missing_docs_are_clear_errors(tmp_path, corpus):
    from corpus_tools.synth.generate import SynthError
    from corpus_tools.synth.build import build_synth as run
    from corpus_tools.synth.store import ShardStore

    with ReplayServer() as srv:
        ctx = _ctx(tmp_path, srv)
        ShardStore(ctx.work_dir).commit(0, {}, {"chunks": ["other#0"], "requests": 0, "generated": {}, "kept": {}, "rejected": {}})
        with pytest.raises(SynthError, match="made from other chunks.*--force"):
            run(ctx)
        assert srv.log == []
        nodocs = _ctx(tmp_path, srv)
        nodocs.recipe.synth.docs = None
        with pytest.raises(ValueError, match="enable the corpus stage or set synth.docs"):
            run(nodocs)
