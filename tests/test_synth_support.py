"""Helpers for the synth tests: small corpus parquet files, recipes, and a replaying
OpenAI-compatible server on 127.0.0.1 (real HTTP, scripted answers)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

VOCAB = (
    "accretion disk quasar redshift galaxy cluster halo dark matter baryon acoustic oscillation supernova "
    "neutron star pulsar magnetar white dwarf binary merger gravitational wave spectrum emission line "
    "absorption metallicity stellar population initial mass function star formation rate molecular cloud "
    "dust extinction photometry astrometry parallax proper motion velocity dispersion rotation curve "
    "cosmic microwave background polarization lensing shear convergence weak strong Hubble constant "
    "tension distance ladder Cepheid variable luminosity function exoplanet transit radial velocity "
    "atmosphere transmission hot Jupiter habitable zone protoplanetary disk planetesimal migration "
    "magnetohydrodynamic turbulence shock cosmic ray synchrotron inverse Compton jet black hole spin "
    "event horizon tidal disruption feedback outflow wind circumgalactic medium intergalactic filament "
    "reionization epoch Lyman alpha forest neutral hydrogen twenty one centimetre survey telescope"
).split()


def write_docs(path: Path, n_docs: int = 4, chars: int = 2400, seed: int = 0, authors: list[str] | None = None) -> Path:
    """A parquet shard in the corpus contract (id, title, abstract, text, categories, date, source, license, n_chars;
    with ``authors``, also the authors and year columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    rows = []
    for i in range(n_docs):
        sentences, size = [], 0
        while size < chars:
            s = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(8, 18))).capitalize() + "."
            sentences.append(s)
            size += len(s) + 1
            if rng.random() < 0.15:
                sentences.append("\n\n")
        text = " ".join(sentences).replace(" \n\n ", "\n\n")
        pid = f"2401.{10000 + i}"
        rows.append(
            dict(id=pid, title=f"Synthetic study number {i} of {rng.choice(VOCAB)} physics", abstract="We study things. " * 3,
                 text=text, categories="astro-ph.GA", date=f"2024-01-{i + 1:02d}", source="test", license="cc-by", n_chars=len(text))
        )
        if authors is not None:
            rows[-1].update(authors=list(authors), year=2024)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def excerpt(prompt: str) -> str:
    m = re.search(r'Excerpt:\n"""\n(.*?)\n"""', prompt, re.DOTALL)
    return m.group(1) if m else prompt


def task_of(prompt: str) -> str:
    if "multiple-choice" in prompt:
        return "mcq"
    if '"reasoning"' in prompt:
        return "qa_reasoning"
    return "qa"


def good_items(prompt: str) -> dict[str, Any]:
    """Valid items built from the chunk's own words (distinct chunks -> distinct questions)."""
    words = excerpt(prompt).split()
    cite = re.search(r"arXiv:[\w./-]+", prompt).group(0)
    task = task_of(prompt)
    if task == "mcq":
        w = [x.strip(".,").lower() for x in words[10:30]]
        return {"items": [{
            "question": f"Which process links {w[0]} {w[1]} {w[2]} and {w[3]} {w[4]} in the model of {cite}?",
            "A": f"Heating by {w[5]} {w[6]}", "B": f"Cooling by {w[7]} {w[8]}",
            "C": f"Mixing by {w[9]} {w[10]}", "D": f"Ejection by {w[11]} {w[12]}",
            "answer": "A", "explanation": f"The excerpt attributes it to {w[5]} {w[6]}.", "topic": "galaxies",
        }]}
    items = []
    for k in range(2):
        w = words[5 + 12 * k : 17 + 12 * k]
        item = {"question": f"What role does {' '.join(w[:6])} play for {' '.join(w[6:10])} according to {cite}?",
                "answer": f"It sets the {' '.join(w[:3])} scale, which controls {' '.join(w[3:8])} in the system."}
        if task == "qa_reasoning":
            item["reasoning"] = f"First consider {' '.join(w[:4])}. Then relate it to {' '.join(w[4:9])} and compare scales."
        items.append(item)
    return {"items": items}


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # chat message content (status 200)
    raw_body: str | None = None  # overrides the whole HTTP body
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(content: str) -> str:
    return json.dumps({
        "id": "cmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(content) // 4 + 50, "completion_tokens": len(content) // 4},
    })


def default_script(body: dict[str, Any], attempt: int) -> Reply:
    return Reply(content=json.dumps(good_items(body["messages"][-1]["content"])))


class ReplayServer:
    """``POST /v1/chat/completions`` answered by ``script(body, attempt_of_this_prompt)``."""

    def __init__(self, script: Callable[[dict[str, Any], int], Reply] = default_script):
        self.script = script
        self.log: list[dict[str, Any]] = []  # one entry per request: time, headers, body, status
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                key = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
                with server._lock:
                    attempt = server._attempts.get(key, 0)
                    server._attempts[key] = attempt + 1
                    reply = server.script(body, attempt) if self.path == "/v1/chat/completions" else Reply(status=404, content="")
                    server.log.append({"t": time.monotonic(), "headers": dict(self.headers), "body": body, "status": reply.status})
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.raw_body if reply.raw_body is not None else (
                    completion(reply.content or "") if reply.status == 200 else json.dumps({"error": {"message": "scripted"}})
                )
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ReplayServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def recipe_dict(tmp_path: Path, docs: Path, **synth: Any) -> dict[str, Any]:
    """A tiny recipe: only the synth stage, reading ``docs``."""
    return {
        "run": {"name": "synth-test", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"base": "tiny:base"},
        "corpus": {"enabled": False},
        "synth": {"docs": str(docs), "teacher_model": "replay-teacher", "chunk_chars": 800, "chunk_overlap": 100,
                  "shard_chunks": 3, "max_new_tokens": 256, **synth},
        "cpt": {"enabled": False}, "sft": {"enabled": False}, "merge": {"enabled": False},
        "eval": {"enabled": False}, "publish": {"enabled": False},
    }


def synth_registry():
    """The pipeline registry with the synth stage wired to this package (dict order kept)."""
    from astrosage.stages import STAGES

    return dict(STAGES)


def read_jsonl_dir(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("part-*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return rows
