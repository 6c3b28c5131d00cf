"""Network harvest against a local replay server: rate limit, retries, timeouts, resume.

The server is a real HTTP server on 127.0.0.1 (http.server in a thread) that replays arXiv: API
Atom pages (filtered by the submittedDate range of the query, paginated by start/max_results),
OAI-PMH pages with a resumption token, e-prints, and queued faults per path prefix: "429"
(Retry-After), "503", "hang" (no answer before the client's timeout), "truncate" (a body shorter
than its Content-Length), "404". Every request is logged with arrival time and User-Agent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from corpus_tools.download import download_eprints
from corpus_tools.harvest_api import date_slices, harvest_api, slice_query
from corpus_tools.harvest_oai import harvest_oai
from corpus_tools.http import HarvestError, PoliteSession, RateLimiter, ResponseCache
from corpus_tools.retry import RetryPolicy, retry_after_seconds

from conftest import SAMPLE_CORPUS

ENTRY = re.compile(r"  <entry>.*?</entry>\n", re.S)


class Replay:
    """Holds the recorded responses, the fault queues and the request log."""

    def __init__(self, corpus: Path):
        self.corpus = corpus
        atom = (corpus / "arxiv_api_feed.atom").read_text(encoding="utf-8")
        self.head = atom[: atom.index("  <entry>")]
        self.entries = ENTRY.findall(atom)
        self.oai = {1: (corpus / "oai_pmh_listrecords_page1.xml").read_bytes(), 2: (corpus / "oai_pmh_listrecords_page2.xml").read_bytes()}
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.retry_after = "1"

    def fault(self, prefix: str, *kinds: str) -> None:
        with self.lock:
            self.faults.setdefault(prefix, []).extend(kinds)

    def take_fault(self, path: str) -> str | None:
        with self.lock:
            for prefix, queue in self.faults.items():
                if path.startswith(prefix) and queue:
                    return queue.pop(0)
        return None

    def api_page(self, query: dict[str, list[str]]) -> bytes:
        search = query.get("search_query", [""])[0]
        start = int(query.get("start", ["0"])[0])
        size = int(query.get("max_results", ["10"])[0])
        entries = self.entries
        m = re.search(r"submittedDate:\[(\d{8})\d* TO (\d{8})\d*\]", search)
        if m:
            lo, hi = m.group(1), m.group(2)
            entries = [e for e in entries if lo <= re.search(r"<published>(\d{4})-(\d\d)-(\d\d)", e).expand(r"\1\2\3") <= hi]
        page = entries[start : start + size]
        head = re.sub(r"<opensearch:totalResults>\d+<", f"<opensearch:totalResults>{len(entries)}<", self.head)
        head = re.sub(r"<opensearch:startIndex>\d+<", f"<opensearch:startIndex>{start}<", head)
        return (head + "".join(page) + "</feed>\n").encode()


def make_handler(replay: Replay):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/xml", headers: dict | None = None, length: int | None = None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            with replay.lock:
                replay.log.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            fault = replay.take_fault(url.path)
            if fault == "429":
                return self._send(429, b"slow down", "text/plain", {"Retry-After": replay.retry_after})
            if fault == "503":
                return self._send(503, b"busy", "text/plain")
            if fault == "404":
                return self._send(404, b"not found", "text/plain")
            if fault == "hang":
                time.sleep(1.5)
                self.close_connection = True
                return None
            body, ctype = self._body(url)
            if body is None:
                return self._send(404, b"not found", "text/plain")
            if fault == "truncate":
                self._send(200, body[: len(body) // 2], ctype, length=len(body))
                self.close_connection = True
                return None
            return self._send(200, body, ctype)

        def _body(self, url):
            query = parse_qs(url.query)
            if url.path == "/api/query":
                return replay.api_page(query), "application/atom+xml"
            if url.path == "/oai":
                if "resumptionToken" in query:
                    return (replay.oai[2], "text/xml") if query["resumptionToken"][0] == "4185721|11" else (
                        b'<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
                        b'<error code="badResumptionToken">expired</error></OAI-PMH>', "text/xml")
                return replay.oai[1], "text/xml"
            if url.path.startswith("/e-print/"):
                key = url.path[len("/e-print/") :].replace("/", "_")
                path = replay.corpus / "eprints" / key
                return (path.read_bytes(), "application/x-eprint-tar") if path.exists() else (None, "")
            return None, ""

    return Handler


class ReplayServer:
    """Context manager running the replay server in a thread; ``url`` is its base URL."""

    def __init__(self, corpus: Path):
        self.replay = Replay(corpus)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.replay))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ReplayServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self, prefix: str = "") -> list[str]:
        return [p for _, p, _ in self.replay.log if p.startswith(prefix)]


pytestmark = pytest.mark.skipif(not SAMPLE_CORPUS.exists(), reason="examples/sample_corpus is not present")

SAMPLE_IDS = {json.loads(line)["id"] for line in (SAMPLE_CORPUS / "metadata.jsonl").read_text().splitlines()} if SAMPLE_CORPUS.exists() else set()


@pytest.fixture
def server():
    with ReplayServer(SAMPLE_CORPUS) as srv:
        yield srv


def _session(tmp_path=None, interval=0.0, **kw) -> PoliteSession:
    cache = ResponseCache(tmp_path / "http") if tmp_path is not None else None
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff", 0.05)
    return PoliteSession("astro@example.org", interval=interval, cache=cache, **kw)


def _gaps(server, prefix=""):
    times = [t for t, p, _ in server.replay.log if p.startswith(prefix)]
    return [b - a for a, b in zip(times, times[1:])]


def test_rate_limiter_spaces_calls_with_fake_clock():
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    lim = RateLimiter(3.0, clock=lambda: now[0], sleep=sleep)
    lim.wait()
    now[0] += 1.0
    lim.wait()
    lim.wait(at_least=10.0)
    assert slept == pytest.approx([2.0, 10.0])


def test_retry_policy_doubles_caps_jitters_and_lets_retry_after_win(monkeypatch):
    plain = RetryPolicy(max_retries=5, backoff_s=2.0, max_backoff_s=10.0)
    assert [plain.delay(n) for n in range(4)] == [2.0, 4.0, 8.0, 10.0]
    assert plain.delay(3, "3") == 3.0 and plain.delay(0, "120") == 10.0  # Retry-After wins, capped
    assert plain.delay(1, "not a date") == 4.0 and plain.delay(10_000) == 10.0
    assert plain.retries(503) and plain.retries(429) and not plain.retries(404) and not plain.retries(408)
    monkeypatch.setattr("corpus_tools.retry.random.random", lambda: 0.0)
    jittered = RetryPolicy(backoff_s=2.0, max_backoff_s=10.0, jitter=True, retry_status=frozenset({408}))
    assert jittered.delay(1) == 2.0 and jittered.delay(1, "5") == 5.0  # x0.5 at the lowest; none on Retry-After
    assert jittered.retries(408) and not jittered.retries(503)


def test_real_requests_are_spaced_by_the_interval_and_identify_us(server):
    s = _session(interval=0.25)
    for _ in range(4):
        s.fetch(server.url + "/oai", params={"verb": "ListRecords", "metadataPrefix": "arXiv", "set": "physics:astro-ph"}, use_cache=False)
    gaps = _gaps(server)
    assert len(gaps) == 3 and min(gaps) >= 0.24
    assert all("mailto:astro@example.org" in ua for _, _, ua in server.replay.log)


def test_429_honours_retry_after_and_503_backs_off(server):
    server.replay.fault("/e-print/", "429", "503")
    s = _session(interval=0.01)
    reply = s.fetch(server.url + "/e-print/2401.00417", use_cache=False)
    assert reply.status == 200 and reply.content[:2] == b"\x1f\x8b"
    gaps = _gaps(server, "/e-print/")
    assert len(gaps) == 2 and gaps[0] >= 0.95  # waited Retry-After: 1
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def test_hung_connection_times_out_and_truncated_body_is_retried(server):
    server.replay.fault("/e-print/", "hang", "truncate")
    s = _session(interval=0.0, timeout=0.3)
    reply = s.fetch(server.url + "/e-print/2403.01234", use_cache=False)
    assert reply.content == (SAMPLE_CORPUS / "eprints" / "2403.01234").read_bytes()
    assert len(server.paths("/e-print/")) == 3


def test_gives_up_after_retries_and_does_not_retry_404(server):
    server.replay.fault("/e-print/", "503", "503", "503")
    with pytest.raises(HarvestError, match="gave up after 3 attempts"):
        _session(max_retries=2).fetch(server.url + "/e-print/2401.00417", use_cache=False)
    with pytest.raises(HarvestError) as err:
        _session().fetch(server.url + "/e-print/9999.99999", use_cache=False)
    assert err.value.status == 404 and len(server.paths("/e-print/9999")) == 1


def test_api_harvest_with_the_arxiv_client_paginates_and_slices(server, tmp_path):
    s = _session(tmp_path)
    recs = harvest_api(s, tmp_path, ["astro-ph"], "2005-01-01", "2025-12-31", slice_days=2000, page_size=4,
                       api_url=server.url + "/api/query")
    assert {r["id"] for r in recs} == SAMPLE_IDS and len(recs) == len(SAMPLE_IDS)
    ara = next(r for r in recs if r["id"] == "2310.14159")
    assert ara["doi"].startswith("10.1146/annurev-astro") and ara["categories"]
    assert all("submittedDate:[" in p or "submittedDate%3A%5B" in p for p in server.paths("/api/query"))
    assert slice_query(["astro-ph", "gr-qc"], *date_slices("2024-01-01", "2024-01-07", 7)[0]) == (
        "(cat:astro-ph* OR cat:gr-qc*) AND submittedDate:[202401010000 TO 202401072359]")


def test_api_harvest_resumes_after_a_crash_without_duplicates(server, tmp_path):
    api = server.url + "/api/query"
    # 8 yearly-ish slices; the 4th slice's request fails for good -> the harvest dies
    server.replay.fault("/api/query", *["ok"] * 3, "503", "503")
    s = _session(tmp_path, max_retries=1)
    with pytest.raises(HarvestError):
        harvest_api(s, tmp_path, ["astro-ph"], "2005-01-01", "2025-12-31", slice_days=1000, page_size=50, api_url=api)
    done_before = sorted(p.name for p in (tmp_path / "api" / "astro-ph").glob("*.jsonl"))
    assert 0 < len(done_before) < 8
    seen_before = len(server.paths("/api/query"))
    recs = harvest_api(_session(tmp_path), tmp_path, ["astro-ph"], "2005-01-01", "2025-12-31", slice_days=1000, page_size=50, api_url=api)
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted(SAMPLE_IDS) and len(ids) == len(set(ids))
    # finished slices were not asked for again
    assert len(server.paths("/api/query")) - seen_before == 8 - len(done_before)


def test_oai_harvest_follows_resumption_token_and_resumes(server, tmp_path):
    oai = server.url + "/oai"
    first = harvest_oai(_session(tmp_path), tmp_path, oai, max_pages=1)  # "killed" after one page
    assert len(first) == 10
    again = harvest_oai(_session(tmp_path), tmp_path, oai)
    assert {r["id"] for r in again} == SAMPLE_IDS and len(again) == 20
    tokens = [p for p in server.paths("/oai") if "resumptionToken" in p]
    assert len(server.paths("/oai")) == 2 and len(tokens) == 1  # page 1 was not fetched twice
    rec = next(r for r in again if r["id"] == "1205.2468")
    assert rec["authors"][0] == "Renée Lefèvre" and rec["journal_ref"].startswith("A&A")


def test_oai_expired_token_restarts_from_newest_datestamp(server, tmp_path):
    oai = server.url + "/oai"
    harvest_oai(_session(tmp_path), tmp_path, oai, max_pages=1)
    state = tmp_path / "oai" / "physics_astro-ph_all_now" / "state.json"
    data = json.loads(state.read_text())
    data["token"] = "expired-token"
    state.write_text(json.dumps(data))
    recs = harvest_oai(_session(tmp_path), tmp_path, oai)
    assert {r["id"] for r in recs} >= {r for r in SAMPLE_IDS if r.startswith(("astro-ph", "12", "23"))}
    assert any("from=" in p for p in server.paths("/oai"))


def test_eprint_download_is_resumable_and_records_404(server, tmp_path):
    recs = [{"id": "2401.00417"}, {"id": "astro-ph/0601001"}, {"id": "9999.00001"}]
    s = _session()
    paths, failed = download_eprints(s, recs, tmp_path / "eprints", server.url + "/e-print/{id}")
    assert set(paths) == {"2401.00417", "astro-ph/0601001"} and failed == {"9999.00001": "eprint_not_found"}
    assert paths["astro-ph/0601001"].name == "astro-ph_0601001"
    n = len(server.paths("/e-print/"))
    download_eprints(s, recs[:2], tmp_path / "eprints", server.url + "/e-print/{id}")
    assert len(server.paths("/e-print/")) == n  # already downloaded: not fetched again


def test_transient_download_failures_keep_the_stage_unfinished(server, tmp_path):
    """Papers whose download failed after retries are retried by the next run, never cached as rejected."""
    from types import SimpleNamespace

    from corpus_tools import sources

    server.replay.fault("/e-print/2401.00417", *["503"] * 10)  # more than the session's retries
    cfg = SimpleNamespace(source="oai_pmh", categories=["astro-ph"], include_gr_qc=False, date_from=None, date_to=None,
                          max_papers=None, eprint_url=server.url + "/e-print/{id}")
    records = [{"id": "2401.00417", "categories": ["astro-ph.GA"]}, {"id": "astro-ph/0601001", "categories": ["astro-ph"]}]
    session = _session(tmp_path, max_retries=1)
    orig = (sources._session, sources._harvest)
    sources._session = lambda cfg, cache: session
    sources._harvest = lambda cfg, cache, session, progress: records
    try:
        with pytest.raises(sources.SourceError, match=r"1 e-print download\(s\) failed after retries \(2401.00417\); rerun"):
            sources.gather_network(cfg, tmp_path, lambda *a: None)
        server.replay.faults.clear()
        gathered = sources.gather_network(cfg, tmp_path, lambda *a: None)  # the rerun fetches only the missing one
    finally:
        sources._session, sources._harvest = orig
    assert {i["meta"]["id"] for i in gathered.inputs} == {"2401.00417", "astro-ph/0601001"} and gathered.rejected == []


@pytest.mark.parametrize("bad", ["..", ".", "../etc", "2401.00417/../../x", "", "2401.00417 "])
def test_paper_key_refuses_non_arxiv_ids(bad):
    from corpus_tools.records import paper_key

    with pytest.raises(ValueError, match="not an arXiv id"):
        paper_key(bad)
    assert paper_key("astro-ph/0601001v2") == "astro-ph_0601001v2" and paper_key("2403.01234") == "2403.01234"
