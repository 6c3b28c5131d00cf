"""Structured outputs (every backend), rejected.jsonl, author-year citations."""

from __future__ import annotations

import json
import logging
import sys

import jsonschema
import pytest

from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager
from corpus_tools.synth.backends import BackendError, GenRequest
from corpus_tools.synth.backends.openai_backend import OpenAIBackend
from corpus_tools.synth.chunking import Chunk, iter_chunks
from corpus_tools.synth.citation import author_citation, family_name, rewrite_references, short_authors
from corpus_tools.synth.parsing import extract_json
from corpus_tools.synth.schemas import portable_schema, response_schema
from corpus_tools.synth.validate import CONTEXT_REFERENCE, Rejected, validate_mcq, validate_qa
from test_synth_local import _one_torch_thread  # noqa: F401  (autouse: tiny matmuls on one thread)
from test_synth_support import ReplayServer, Reply, default_script, good_items, read_jsonl_dir, recipe_dict, synth_registry, write_docs

TASKS = ("qa", "qa_reasoning", "mcq")


# ------------------------------------------------------------------------------------ schemas
def test_schemas_accept_the_items_the_validator_keeps_and_refuse_broken_ones():
    chunk = Chunk("2401.10000", 0, "text", title="A study of halos")
    prompt_like = 'Excerpt:\n"""\n' + " ".join(f"word{i}" for i in range(60)) + '\n"""\narXiv:2401.10000 (2024) multiple-choice'
    mcq = good_items(prompt_like)
    jsonschema.validate(mcq, response_schema("mcq", 1))
    assert validate_mcq(mcq["items"][0], chunk, 2.5).answer == 0
    qa = good_items(prompt_like.replace("multiple-choice", ""))
    jsonschema.validate(qa, response_schema("qa", 2))
    with pytest.raises(jsonschema.ValidationError):  # one item where two were asked for
        jsonschema.validate({"items": qa["items"][:1]}, response_schema("qa", 2))
    with pytest.raises(jsonschema.ValidationError):  # a letter outside A-D
        jsonschema.validate({"items": [{**mcq["items"][0], "answer": "E"}]}, response_schema("mcq", 1))
    with pytest.raises(jsonschema.ValidationError):  # an answer shorter than the validator's minimum
        jsonschema.validate({"items": [{"question": "What sets the halo scale?", "answer": "Gravity."}]}, response_schema("qa", 1))
    # fitted to a small token budget, the caps shrink; the portable form has no length keywords
    small, big = (response_schema("qa_reasoning", 3, t)["properties"]["items"]["items"]["properties"] for t in (512, None))
    assert all(small[k]["maxLength"] < big[k]["maxLength"] for k in small)
    assert small["question"]["maxLength"] >= small["question"]["minLength"] + 10
    portable = json.dumps(portable_schema(response_schema("mcq", 2, 256)))
    assert "maxLength" not in portable and "minItems" not in portable and '"enum"' in portable


# ------------------------------------------------------------------------------------ openai
def _req(task: str = "qa", n: int = 2) -> GenRequest:
    return GenRequest([{"role": "user", "content": f"task {task}"}], seed=3, max_new_tokens=512, temperature=0.7, top_p=0.9,
                      schema=response_schema(task, n, 512), schema_name=f"astrosage_{task}")


def test_openai_request_carries_the_json_schema():
    with ReplayServer(lambda body, attempt: Reply(content='{"items": []}')) as srv:
        client = OpenAIBackend(srv.url, "teacher", api_key_env="ASTROSAGE_NO_KEY", max_retries=0)
        res = client.generate([_req("mcq", 1), GenRequest([{"role": "user", "content": "free"}], 1, 16, 0.7, 0.9)])
        client.close()
    body = {e["body"]["messages"][0]["content"]: e["body"] for e in srv.log}
    fmt = body["task mcq"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "astrosage_mcq" and fmt["json_schema"]["schema"] == response_schema("mcq", 1, 512)
    assert "response_format" not in body["free"], "a request without a schema is sent as before"
    assert [r.structured for r in res] == ["json_schema", "none"]


def test_openai_server_refusing_schemas_falls_back_with_a_clear_log(caplog):
    """A strict server that knows no length keywords, then one that knows no response_format at all."""

    def strict_api(body, attempt):
        fmt = body.get("response_format")
        if fmt and "maxLength" in json.dumps(fmt):
            msg = "Invalid schema for response_format 'astrosage_qa': 'maxLength' is not permitted"
            return Reply(status=400, raw_body=json.dumps({"error": {"message": msg}}))
        return Reply(content=json.dumps({"items": [{"question": "q" * 20, "answer": "a" * 30}] * 2}))

    caplog.set_level(logging.WARNING, logger="astrosage")
    with ReplayServer(strict_api) as srv:
        client = OpenAIBackend(srv.url, "teacher", api_key_env="ASTROSAGE_NO_KEY", concurrency=1, max_retries=0)
        first, second = client.generate([_req(), _req()])
        client.close()
    assert first.ok and second.ok and first.structured == second.structured == "json_schema_portable"
    bodies = [e["body"] for e in srv.log]
    assert len(bodies) == 3, "one refused request, then the portable schema for both"
    assert "maxLength" in json.dumps(bodies[0]["response_format"])
    assert bodies[1]["response_format"]["json_schema"]["schema"] == portable_schema(response_schema("qa", 2, 512))
    assert "refused response_format json_schema (HTTP 400" in caplog.text and "'maxLength' is not permitted" in caplog.text

    caplog.clear()
    with ReplayServer(lambda b, a: Reply(status=400) if "response_format" in b else Reply(content="{}")) as srv:
        client = OpenAIBackend(srv.url, "teacher", api_key_env="ASTROSAGE_NO_KEY", concurrency=1, max_retries=0)
        (res,) = client.generate([_req()])
        assert client.structured_mode == "none" and client.stats["format_refused"] == 2
        client.close()
    assert res.ok and res.structured == "none" and len(srv.log) == 3 and "response_format" not in srv.log[-1]["body"]
    assert "sending no response_format from now on (JSON is asked for in the prompt only" in caplog.text


def test_openai_structured_output_off_sends_no_schema(tmp_path):
    write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=1, chars=900)
    with ReplayServer() as srv:
        data = recipe_dict(tmp_path, tmp_path / "docs" / "part-0.parquet", backend="openai", api_base=srv.url,
                           api_key_env="ASTROSAGE_NO_KEY", tasks=["qa"], structured_output=False)
        RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
    assert srv.log and all("response_format" not in e["body"] for e in srv.log)


# ------------------------------------------------------------------------------------ transformers
def _tiny_requests(n_per_task: int = 2, max_new_tokens: int = 256, structured: bool = True) -> list[GenRequest]:
    return [
        GenRequest([{"role": "user", "content": f"Write {task} item {i} about accretion disks as JSON."}], seed=i,
                   max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.95,
                   schema=response_schema(task, 1, max_new_tokens) if structured else None)
        for task in TASKS for i in range(n_per_task)
    ]


def test_transformers_backend_gives_schema_valid_json_from_a_random_model(tiny_instruct):
    from corpus_tools.synth.backends.transformers_backend import TransformersBackend

    reqs = _tiny_requests()
    unconstrained = TransformersBackend(str(tiny_instruct), batch_size=3, structured=False).generate(_tiny_requests(structured=False))
    backend = TransformersBackend(str(tiny_instruct), batch_size=3)  # rows of one batch follow different schemas
    results = backend.generate(reqs)
    for req, res in zip(reqs, results):
        assert res.ok and res.structured == "json_schema" and res.finish_reason == "stop", res.text[-80:]
        jsonschema.validate(json.loads(res.text), req.schema)  # the grammar closed the JSON and ended the reply
    free_valid = 0
    for res in unconstrained:
        try:
            extract_json(res.text)
            free_valid += 1
        except ValueError:
            pass
    assert free_valid == 0 and all(r.structured == "none" for r in unconstrained), "the random model alone writes no JSON"
    again = TransformersBackend(str(tiny_instruct), batch_size=3).generate(reqs)
    assert [r.text for r in again] == [r.text for r in results], "constrained sampling stays deterministic"


def test_transformers_structured_without_llguidance_is_a_clear_error(tiny_instruct, monkeypatch):
    from corpus_tools.synth.backends.transformers_backend import TransformersBackend

    monkeypatch.setitem(sys.modules, "llguidance", None)  # import fails as if not installed
    with pytest.raises(BackendError, match=r"not available: pip install llguidance.*structured_output: false"):
        TransformersBackend(str(tiny_instruct))
    assert TransformersBackend(str(tiny_instruct), structured=False).generate(_tiny_requests(1, 8, structured=False))


def test_tiny_teacher_malformed_json_before_and_after(tmp_path, tiny_instruct):
    """Same tiny teacher and chunks: free text is all malformed JSON; constrained, none is."""
    docs = write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=2, chars=1200, authors=["Ada Lovelace", "Carl Sagan"])
    manifests = {}
    for structured in (False, True):
        data = recipe_dict(tmp_path, docs, backend="transformers", teacher_model=str(tiny_instruct), max_chunks=3, qa_per_chunk=1,
                           max_new_tokens=160, batch_size=3, chunk_chars=500, chunk_overlap=50, shard_chunks=2,
                           structured_output=structured)
        data["run"]["name"] = f"tiny-{structured}"
        outcome = RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
        assert next(o for o in outcome if o.stage == "synth").status == "done"
        stage = tmp_path / "runs" / data["run"]["name"] / "synth"
        manifests[structured] = (json.loads((stage / "manifest.json").read_text()), stage)
    (free, _), (constrained, stage) = manifests[False], manifests[True]
    assert free["counts"]["requests"] == constrained["counts"]["requests"] == 9
    assert free["counts"]["rejected_malformed_json"] == 9 and free["counts"]["kept"] == 0
    assert free["metrics"]["structured"] == {"none": 9}
    c = constrained["counts"]
    assert constrained["metrics"]["structured"] == {"json_schema": 9}
    assert c.get("rejected_malformed_json", 0) <= constrained["metrics"]["truncated"] <= 1
    assert c["generated"] >= 8 and c["kept"] > 0, "valid JSON reaches content validation; what passes is kept"
    assert c["kept"] + c["rejected"] - c.get("rejected_malformed_json", 0) == c["generated"]
    assert len(read_jsonl_dir(stage / "qa")) == c["kept_qa"] + c["kept_qa_reasoning"]
    for m in (free, constrained):
        assert m["metrics"]["tokens_per_s"] > 0 and m["metrics"]["seconds"] > 0 and "items_per_s" in m["metrics"]


# ------------------------------------------------------------------------------------ rejected.jsonl
BAD_QA = {"question": "What is it?", "answer": "Short."}  # too short: rejected item with the parsed item kept


def _rejecting(body, attempt):
    prompt = body["messages"][-1]["content"]
    if "2401.10000 (2024)" in prompt and '"reasoning"' not in prompt and "multiple-choice" not in prompt:
        return Reply(content="Sorry, no JSON here. " + "x" * 3000)
    if "2401.10001 (2024)" in prompt and '"reasoning"' not in prompt and "multiple-choice" not in prompt:
        items = good_items(prompt)["items"]
        return Reply(content=json.dumps({"items": [items[0], BAD_QA]}))
    return default_script(body, attempt)


def test_rejected_jsonl_holds_every_rejection_with_reason_raw_text_and_item(tmp_path):
    docs = write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=4, chars=2400)
    with ReplayServer(_rejecting) as srv:
        data = recipe_dict(tmp_path, docs, backend="openai", api_base=srv.url, api_key_env="ASTROSAGE_NO_KEY",
                           tasks=["qa", "mcq"], rejected_text_chars=500)
        RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
    stage = tmp_path / "runs" / "synth-test" / "synth"
    manifest = json.loads((stage / "manifest.json").read_text())
    rows = [json.loads(line) for line in (stage / "rejected.jsonl").read_text().splitlines()]
    assert len(rows) == manifest["counts"]["rejected"] == manifest["metrics"]["rejected_logged"] > 0
    assert not (stage / "rejected").exists(), "the per-shard parts are gathered into rejected.jsonl"
    malformed = [r for r in rows if r["reason"] == "malformed_json"]
    assert malformed and all(r["chunk"].startswith("2401.10000#") and r["task"] == "qa" and r["item"] is None for r in malformed)
    assert all(r["raw"].startswith("Sorry, no JSON here.") and len(r["raw"]) == 500 and r["raw_chars"] > 3000 for r in malformed)
    short = [r for r in rows if r["reason"] == "too_short"]
    assert short and all(r["item"] == BAD_QA and r["item_index"] == 1 and r["chunk"].startswith("2401.10001#") for r in short)
    assert all(json.loads(r["raw"])["items"][1] == BAD_QA for r in short)
    top = {t["reason"]: t["count"] for t in manifest["metrics"]["top_rejections"]}
    assert top == manifest["metrics"]["rejected_by_reason"] == {"malformed_json": len(malformed), "too_short": len(short)}


# ------------------------------------------------------------------------------------ citations
def test_family_names_and_author_year_citations():
    assert family_name("Maria de la Cruz") == "de la Cruz" and family_name("Ibarra, Jorge") == "Ibarra"
    assert family_name("J. R. Smith Jr.") == "Smith" and family_name("The LIGO Scientific Collaboration") == "LIGO Scientific Collaboration"
    assert short_authors(["Eleanor Whitcombe"]) == "Whitcombe"
    assert short_authors(["Eleanor Whitcombe", "Jorge Ibarra"]) == "Whitcombe & Ibarra"
    assert author_citation(["A. Smith", "B. Lee", "C. Wu"], 2021) == "Smith et al. (2021)"
    assert author_citation([], 2021) == "" and author_citation(["A. Smith"], None) == ""


def test_this_paper_is_rewritten_to_the_citation_where_authors_are_known():
    authors = ["Ada Smith", "Bo Lee", "Cy Wu"]
    text, n = rewrite_references("In this paper we find that the authors' halo model fits; this study's fit is good.", authors, "2021")
    assert text == "In Smith et al. (2021) Smith et al. (2021) find that Smith et al.'s halo model fits; Smith et al. (2021)'s fit is good."
    assert n == 4
    raw = {"question": "What does this paper conclude about the halo mass profile of spiral galaxies?",
           "answer": "The authors show that the profile is cored within about two kiloparsecs of the centre."}
    known = Chunk("2401.10001", 0, "x", title="Halo profiles", year="2021", authors=tuple(authors))
    item = validate_qa(raw, known, reasoning=False)
    assert item.question == "What does Smith et al. (2021) conclude about the halo mass profile of spiral galaxies?"
    assert item.answer.startswith("Smith et al. show") and item.rewritten == 2
    with pytest.raises(Rejected) as exc:  # without authors, the item is rejected as before
        validate_qa(raw, Chunk("2401.10001", 0, "x", title="Halo profiles", year="2021"), reasoning=False)
    assert exc.value.reason == CONTEXT_REFERENCE
    prompt_ref = {**raw, "question": "According to the excerpt, what is the halo mass profile of spiral galaxies?"}
    with pytest.raises(Rejected, match="refers to the prompt"):
        validate_qa(prompt_ref, known, reasoning=False)
    # a single-author citation anchors the reference too
    assert validate_qa({**raw, "question": "Why does Smith (2021) favour a cored halo profile in this study?"},
                       Chunk("2401.10001", 0, "x", year="2021", authors=("Ada Smith",)), reasoning=False).rewritten == 2


def test_chunks_carry_authors_and_prompts_cite_them(tmp_path):
    from corpus_tools.synth.templates import load_template

    docs = write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=1, chars=900, authors=["Eleanor Whitcombe", "Jorge Ibarra"])
    chunk = next(iter_chunks(docs, 800, 100))
    assert chunk.authors == ("Eleanor Whitcombe", "Jorge Ibarra") and chunk.year == "2024"
    prompt = load_template("qa", "v2").render(chunk, 2)[0]["content"]
    assert "by Whitcombe & Ibarra (arXiv:2401.10000 (2024))" in prompt and '"Whitcombe & Ibarra (2024)"' in prompt
    assert "cite it as arXiv:2401.10000 (2024)" in load_template("qa", "v1").render(chunk, 2)[0]["content"], "v1 is unchanged"


def test_stage_keeps_rewritten_items_instead_of_rejecting_them(tmp_path):
    docs = write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=2, chars=1200, authors=["Vera Rubin", "Kent Ford"])

    def this_paper(body, attempt):
        items = good_items(body["messages"][-1]["content"])
        for item in items["items"]:
            item["question"] = item["question"].replace("according to arXiv", "in this paper, says arXiv")
        return Reply(content=json.dumps(items))

    with ReplayServer(this_paper) as srv:
        data = recipe_dict(tmp_path, docs, backend="openai", api_base=srv.url, api_key_env="ASTROSAGE_NO_KEY", tasks=["qa"])
        RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
    stage = tmp_path / "runs" / "synth-test" / "synth"
    counts = json.loads((stage / "manifest.json").read_text())["counts"]
    qa = read_jsonl_dir(stage / "qa")
    assert counts.get("rejected_context_reference", 0) == 0 and len(qa) == counts["kept"] > 0
    assert all("in Rubin & Ford (2024), says" in r["messages"][0]["content"] and r["meta"]["rewritten_refs"] == 1 for r in qa)
