"""E-print type detection and safe extraction: malicious archives are refused, nothing is written."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from corpus_tools.eprint import EprintError, Limits, open_eprint, sniff

from conftest import SAMPLE_CORPUS


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


GOOD = ("main.tex", b"\\documentclass{article}\\begin{document}Hi\\end{document}")


@pytest.mark.parametrize(
    "members, reason, needle",
    [
        ([GOOD, ("../../evil.tex", b"owned")], "unsafe_archive", "traversal"),
        ([GOOD, ("figs/../../evil.tex", b"owned")], "unsafe_archive", "traversal"),
        ([GOOD, ("/tmp/evil.tex", b"owned")], "unsafe_archive", "absolute"),
        ([GOOD, _special("link.tex", tarfile.SYMTYPE, "/etc/passwd")], "unsafe_archive", "symlink"),
        ([GOOD, _special("hard.tex", tarfile.LNKTYPE, "main.tex")], "unsafe_archive", "hard link"),
        ([GOOD, _special("dev", tarfile.CHRTYPE)], "unsafe_archive", "special file"),
        ([GOOD, _special("fifo", tarfile.FIFOTYPE)], "unsafe_archive", "special file"),
    ],
)
def test_malicious_members_are_refused(tmp_path, members, reason, needle):
    before = set(Path("/tmp").iterdir())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(EprintError) as err:
            open_eprint(_tar(members))
    finally:
        os.chdir(cwd)
    assert err.value.reason == reason and needle in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing extracted anywhere
    assert not (Path("/tmp") / "evil.tex").exists()
    assert not [p for p in set(Path("/tmp").iterdir()) - before if "evil" in p.name or p.name in ("link.tex", "hard.tex", "dev", "fifo")]


def test_nested_gzip_members_count_at_their_unpacked_size():
    """Five gzipped 1 MB files in a tar must not unpack past a 1.5 MB cap (each gets no own allowance)."""
    big = gzip.compress(b"x" * 1_000_000, mtime=0)
    members = [GOOD] + [(f"part{i}.tex.gz", big) for i in range(5)]
    with pytest.raises(EprintError) as err:
        open_eprint(_tar(members), Limits(max_bytes=1_500_000, max_members=20))
    assert err.value.reason == "archive_too_large"
    # the same archive with a large enough cap unpacks fine: the limit, not the format, refused it
    files = open_eprint(_tar(members), Limits(max_bytes=10_000_000, max_members=20))
    assert len(files["part4.tex"]) == 1_000_000


def test_members_that_unpack_to_the_same_path_are_refused():
    members = [GOOD, ("a.tex", b"one"), ("a.tex.gz", gzip.compress(b"two", mtime=0))]
    with pytest.raises(EprintError) as err:
        open_eprint(_tar(members))
    assert err.value.reason == "unsafe_archive" and "same path 'a.tex'" in str(err.value)


def test_too_many_members_is_a_bomb():
    members = [(f"f{i}.tex", b"x") for i in range(30)]
    with pytest.raises(EprintError) as err:
        open_eprint(_tar(members), Limits(max_bytes=1_000_000, max_members=20))
    assert err.value.reason == "archive_too_many_members"


def test_gzip_bomb_is_stopped_while_decompressing():
    bomb = gzip.compress(b"\0" * 5_000_000)  # ~5 kB that inflates to 5 MB
    assert len(bomb) < 20_000
    with pytest.raises(EprintError) as err:
        open_eprint(bomb, Limits(max_bytes=1_000_000))
    assert err.value.reason == "archive_too_large"


def test_tar_members_adding_up_beyond_the_cap_are_refused():
    members = [("a.tex", b"a" * 600), ("b.tex", b"b" * 600)]
    with pytest.raises(EprintError) as err:
        open_eprint(_tar(members, gz=False), Limits(max_bytes=1000))
    assert err.value.reason == "archive_too_large"


def test_truncated_gzip_and_tar_are_errors_not_partial_papers():
    data = _tar([GOOD, ("b.tex", b"y" * 5000)])
    with pytest.raises(EprintError) as err:
        open_eprint(data[: len(data) // 2])
    assert err.value.reason in ("truncated", "corrupt_gzip")


@pytest.mark.parametrize(
    "payload, kind",
    [(b"%PDF-1.5\n...", "pdf"), (b"%!PS-Adobe-3.0", "ps"), (gzip.compress(b"x"), "gzip"), (b"", "empty"),
     (b"\\documentclass{article}", "tex"), (b"<!DOCTYPE html><html>", "html")],
)
def test_sniff_by_magic_bytes(payload, kind):
    assert sniff(payload) == kind


def test_ustar_detected_at_offset_257_and_dirs_skipped():
    dirinfo = _special("sections", tarfile.DIRTYPE)
    files = open_eprint(_tar([dirinfo, ("sections/intro.tex", b"intro"), GOOD], gz=False))
    assert set(files) == {"sections/intro.tex", "main.tex"}


def test_bundled_sample_formats():
    if not SAMPLE_CORPUS.exists():
        pytest.skip("examples/sample_corpus not present")
    multi = open_eprint((SAMPLE_CORPUS / "eprints" / "2403.01234").read_bytes())
    assert {"main.tex", "macros.tex", "sections/intro.tex", "results.tex"} <= set(multi)
    single = open_eprint((SAMPLE_CORPUS / "eprints" / "2401.00417").read_bytes())
    assert len(single) == 1 and b"\\documentclass" in next(iter(single.values()))
    with pytest.raises(EprintError) as err:
        open_eprint((SAMPLE_CORPUS / "eprints" / "2402.07789").read_bytes())
    assert err.value.reason == "pdf_only"
