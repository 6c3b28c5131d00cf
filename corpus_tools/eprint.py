"""arXiv e-print files: type detection by magic bytes and safe, in-memory extraction.

``/e-print/ID`` (and each member of a bulk ``arXiv_src_YYMM_NNN.tar``) is a gzipped tar, a gzipped
single ``.tex``, a PDF, PostScript, or (old papers) plain TeX. Nothing is ever written to disk
and TeX is never run: members are read into a ``{relative path: bytes}`` dict after checking
every header. Archives with absolute paths, ``..``, symlinks, hard links or device/FIFO members
are refused as a whole; so are archives over the member-count or uncompressed-size caps.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zlib
from dataclasses import dataclass


class EprintError(ValueError):
    """The e-print cannot be used; ``reason`` is the code written to rejected.jsonl."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """Decompression-bomb guards for one paper."""

    max_bytes: int = 512 * 1024 * 1024
    max_members: int = 2_000


def sniff(data: bytes) -> str:
    """Kind of a (decompressed) payload: tar, gzip, pdf, ps, tex, html, empty or unknown."""
    if not data:
        return "empty"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar"
    if data[:5] == b"%PDF-":
        return "pdf"
    if data[:4] == b"%!PS":
        return "ps"
    head = data[:4096].lstrip()
    if head[:1] == b"<" and (b"<html" in head[:200].lower() or b"<!doctype html" in head[:200].lower()):
        return "html"
    if b"\\" in head or data[:1] == b"%" or b"\\documentclass" in data[:65536] or b"\\begin" in data[:65536]:
        return "tex"
    if b"\x00" not in head:
        return "text"
    return "unknown"


#: compressed bytes fed to zlib per call: keeps a stream of many (empty) gzip members linear
_GZIP_CHUNK = 1 << 16
#: decompressed bytes asked of zlib per call: a bomb's output arrives in steps of this size, so the
#: stream never holds more than the cap plus one step (a single unbounded call would hold the cap twice:
#: zlib's returned block plus the buffer it is appended to)
_GUNZIP_STEP = 1 << 20


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (possibly multi-member) with an output cap; truncated streams are errors.

    The input is fed in chunks, so what zlib copies into ``unused_data`` at each member's end is
    at most one chunk: thousands of members cost linear time, not quadratic. Output is asked for in
    bounded steps and collected in a ``BytesIO`` whose buffer ``getvalue()`` hands over without a
    copy: peak memory is about 1x the cap, whatever the compression ratio.
    """
    out = io.BytesIO()
    view = memoryview(data)
    pos, n = 0, len(data)
    while pos < n:
        while pos < n and data[pos] == 0:  # NUL padding between members
            pos += 1
        if pos >= n:
            break
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending: bytes | memoryview = b""  # input fed to zlib that it has not consumed yet
        while not d.eof:
            if not pending:
                if pos >= n:
                    raise EprintError("truncated", "gzip stream ends early")
                pending = view[pos : pos + _GZIP_CHUNK]
                pos += len(pending)
            try:
                got = d.decompress(pending, _GUNZIP_STEP)
            except zlib.error as exc:
                raise EprintError("corrupt_gzip", str(exc)) from None
            out.write(got)
            del got
            if out.tell() > limit:
                raise EprintError("archive_too_large", f"more than {limit} bytes uncompressed")
            pending = d.unconsumed_tail
        pos -= len(d.unused_data)  # the input after this member's end belongs to the next member
    return out.getvalue()


def _safe_name(name: str) -> str:
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise EprintError("unsafe_archive", f"absolute path {name!r}")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or "/../" in f"/{norm}/":
        raise EprintError("unsafe_archive", f"path traversal {name!r}")
    return norm


def untar(data: bytes, limits: Limits) -> dict[str, bytes]:
    """Read every regular member of a tar into memory after validating all headers first."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = []
        for count, member in enumerate(tar, 1):
            if count > limits.max_members:
                raise EprintError("archive_too_many_members", f"more than {limits.max_members} members")
            members.append(member)
    except tarfile.TarError as exc:
        raise EprintError("corrupt_tar", str(exc)) from None
    total = 0
    for member in members:
        name = _safe_name(member.name)
        if member.issym():
            raise EprintError("unsafe_archive", f"symlink {member.name!r} -> {member.linkname!r}")
        if member.islnk():
            raise EprintError("unsafe_archive", f"hard link {member.name!r} -> {member.linkname!r}")
        if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir()):
            raise EprintError("unsafe_archive", f"special file {member.name!r} (type {member.type!r})")
        if member.isfile():
            total += member.size
            if total > limits.max_bytes:
                raise EprintError("archive_too_large", f"members add up to more than {limits.max_bytes} bytes")
        del name
    files: dict[str, bytes] = {}
    extracted = 0  # decompressed bytes so far: nested .gz members count at their unpacked size
    for member in members:
        if not member.isfile():
            continue
        fh = tar.extractfile(member)
        if fh is None:
            continue
        try:
            blob = fh.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise EprintError("truncated", f"member {member.name!r}: {exc}") from None
        if len(blob) != member.size:
            raise EprintError("truncated", f"member {member.name!r} is shorter than its header says")
        name = _safe_name(member.name)
        if name.endswith(".gz") and blob[:2] == b"\x1f\x8b":  # a gzipped file inside the tar
            blob = gunzip(blob, max(0, limits.max_bytes - extracted))
            name = name[:-3]
        extracted += len(blob)
        if extracted > limits.max_bytes:
            raise EprintError("archive_too_large", f"members unpack to more than {limits.max_bytes} bytes")
        if name in files:
            raise EprintError("unsafe_archive", f"two members unpack to the same path {name!r}")
        files[name] = blob
    return files


def open_eprint(data: bytes, limits: Limits = Limits(), name: str = "main.tex") -> dict[str, bytes]:
    """Turn raw e-print bytes into ``{path: bytes}`` source files, or raise :class:`EprintError`.

    PDF-only and PostScript-only submissions raise with reason ``pdf_only`` / ``ps_only``.
    """
    kind = sniff(data)
    if kind == "gzip":
        data = gunzip(data, limits.max_bytes)
        kind = sniff(data)
        if kind == "gzip":
            raise EprintError("unsupported_format", "doubly gzipped payload")
    if kind == "tar":
        files = untar(data, limits)
        if not files:
            raise EprintError("empty", "the archive has no files")
        return files
    if len(data) > limits.max_bytes:
        raise EprintError("archive_too_large", f"more than {limits.max_bytes} bytes")
    if kind in ("tex", "text"):
        return {name: data}
    reasons = {"pdf": "pdf_only", "ps": "ps_only", "empty": "empty", "html": "unsupported_format"}
    raise EprintError(reasons.get(kind, "unsupported_format"), f"payload looks like {kind}")
