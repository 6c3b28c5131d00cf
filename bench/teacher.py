"""Teacher throughput: the `openai` synth backend against a local OpenAI-compatible server with a fixed latency.

    .venv/bin/python bench/teacher.py [--latency 0.5] [--concurrency 1 4 16 64] [--requests 4]

The server (127.0.0.1, its own process, a thread per connection) answers every ``POST /chat/completions`` after
``--latency`` seconds, like a teacher that takes that long per completion and never saturates.
It also rate-limits: every ``--rate-limit-every``-th request gets ``429`` with ``Retry-After: 0``
at once, so the backend's retry path (with its real settings: ``max_retries`` 5) is on. The
baseline is the ideal: ``concurrency / latency`` requests/s. Target: >= 0.9x of it at every
concurrency (``synth.concurrency`` must buy throughput linearly while the server keeps up). A second
reference, a bare httpx thread pool on the same server (no schema, retries or rate limits), shows
what this machine allows: where it falls short of the ideal too, the limit is the machine, not the backend.
``--requests`` is per unit of concurrency (each run sends ``requests * concurrency``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def serve(latency: float, rate_limit_every: int) -> tuple[ThreadingHTTPServer, dict]:
    counts = {"requests": 0, "limited": 0}
    lock = threading.Lock()
    reply = json.dumps({"question": "What sets the Eddington luminosity?", "answer": "Radiation pressure on electrons balancing gravity."})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def setup(self) -> None:  # TCP_NODELAY, as real servers (uvicorn) set: no Nagle/delayed-ACK stall per reply
            super().setup()
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            json.loads(body)
            with lock:
                counts["requests"] += 1
                limited = rate_limit_every > 0 and counts["requests"] % rate_limit_every == 0
                counts["limited"] += limited
            if limited:
                data = b'{"error": {"message": "rate limited"}}'
                self.send_response(429)
                self.send_header("Retry-After", "0")
            else:
                time.sleep(latency)
                data = json.dumps({
                    "id": "x", "object": "chat.completion", "model": "teacher",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 30},
                }).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 512
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counts


def _server_process(latency: float, rate_limit_every: int, port_queue) -> None:
    server, _ = serve(latency, rate_limit_every)
    port_queue.put(server.server_address[1])
    threading.Event().wait()  # until terminated


def run(concurrency: int, n: int, latency: float, rate_limit_every: int) -> dict:
    """One measurement; the server runs in its own process (as a real teacher would: no GIL shared with the client)."""
    import multiprocessing

    from corpus_tools.synth.backends.base import GenRequest
    from corpus_tools.synth.backends.openai_backend import OpenAIBackend

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_server_process, args=(latency, rate_limit_every, ports), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
    schema = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
              "required": ["question", "answer"]}
    reqs = [GenRequest(messages=[{"role": "user", "content": f"Write one QA pair about chunk {i}."}], seed=i,
                       max_new_tokens=256, temperature=0.7, top_p=0.95, schema=schema) for i in range(n)]
    backend = OpenAIBackend(base, "teacher", concurrency=concurrency, max_retries=5, backoff_s=0.01, timeout_s=30)
    try:
        backend.generate(reqs[:1])  # warm-up: first-use imports and the first connection are not throughput
        backend.stats.update(retries=0, rate_limited=0)
        t0, c0 = time.perf_counter(), time.process_time()
        results = backend.generate(reqs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        backend.close()
        proc.terminate()
        proc.join(10)
    ok = sum(r.ok for r in results)
    return {"concurrency": concurrency, "requests": n, "ok": ok, "wall_s": wall, "req_per_s": ok / wall,
            "ideal": concurrency / latency, "client_cpu_ms_per_request": 1000 * cpu / n, "retries": backend.stats["retries"], "rate_limited": backend.stats["rate_limited"]}


def run_bare(concurrency: int, n: int, latency: float) -> float:
    """requests/s of a bare httpx thread pool (no retries, no schema, no rate limits) against the same server."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_server_process, args=(latency, 0, ports), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1/chat/completions"
    client = httpx.Client(limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
    try:
        client.post(url, json={"warm": True})
        with ThreadPoolExecutor(concurrency) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda i: client.post(url, json={"i": i}).raise_for_status(), range(n)))
            return n / (time.perf_counter() - t0)
    finally:
        client.close()
        proc.terminate()
        proc.join(10)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per completion at the server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=4, help="requests per unit of concurrency")
    parser.add_argument("--rate-limit-every", type=int, default=20, help="every N-th request gets 429 + Retry-After: 0 (0: off)")
    parser.add_argument("--no-bare", dest="bare", action="store_false", help="skip the bare-httpx reference runs")
    args = parser.parse_args(argv)
    rows = []
    print(f"openai backend vs ideal concurrency/latency; server latency {args.latency:g}s, 429 every {args.rate_limit_every} requests")
    import os

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"{'concurrency':>11} {'requests':>8} {'ok':>5} {'retries':>7} {'req/s':>8} {'ideal':>8} {'ratio':>6} "
          f"{'bare httpx req/s':>16} {'vs bare':>7} {'client CPU ms/req':>17} target")
    for c in args.concurrency:
        r = run(c, args.requests * c, args.latency, args.rate_limit_every)
        r["ratio"] = r["req_per_s"] / r["ideal"]
        r["bare_req_per_s"] = run_bare(c, args.requests * c, args.latency) if args.bare else float("nan")
        rows.append(r)
        print(f"{c:>11} {r['requests']:>8} {r['ok']:>5} {r['retries']:>7} {r['req_per_s']:>8.1f} {r['ideal']:>8.1f} "
              f"{r['ratio']:>5.2f}x {r['bare_req_per_s']:>16.1f} {r['req_per_s'] / r['bare_req_per_s']:>6.2f}x "
              f"{r['client_cpu_ms_per_request']:>17.1f} {'ok' if r['ratio'] >= 0.9 else 'MISS'} (>= 0.9x)", flush=True)
    return rows


if __name__ == "__main__":
    main()
