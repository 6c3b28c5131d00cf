"""Bytes -> TeX source text: byte-order marks, UTF-8, the declared ``inputenc``, undeclared 8-bit
Russian (KOI8-R / cp1251), cp1252, latin-1; line endings normalised. Never fails."""

from __future__ import annotations

import re

_INPUTENC = re.compile(rb"\\usepackage\s*\[([^\]]*)\]\s*\{inputenc\}")
_LATIN = {"latin1": "latin-1", "latin9": "iso8859-15", "ansinew": "cp1252", "cp1252": "cp1252", "applemac": "mac_roman",
          "latin2": "iso8859-2", "cp1250": "cp1250", "utf8": "utf-8", "utf8x": "utf-8", "cp1251": "cp1251",
          "koi8-r": "koi8-r", "koi8-u": "koi8-u", "cp866": "cp866"}


def decode_tex(data: bytes) -> tuple[str, str]:
    """Decode TeX source bytes; returns (text, encoding used), line endings normalised to ``\\n``.

    A UTF-16/UTF-32 byte-order mark (or NUL-interleaved ASCII without one) selects that
    encoding; else UTF-8 (BOM stripped); else the ``inputenc`` option the file declares; else
    cp1252, else latin-1 (which never fails). CRLF and bare CR become LF, so paragraph breaks
    survive. Papers are never dropped for a decode error.
    """
    text, enc = _decode(data)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, enc


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def _decode(data: bytes) -> tuple[str, str]:
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(enc, "replace"), enc
    head = data[:400]
    if len(head) >= 8 and head.count(0) * 3 >= len(head):  # UTF-16 without a BOM: every other byte NUL
        enc = "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        return data.decode(enc, "replace"), enc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    m = _INPUTENC.search(data)
    if m:
        for opt in m.group(1).decode("ascii", "replace").split(","):
            enc = _LATIN.get(opt.strip().lower())
            if enc and enc != "utf-8":
                try:
                    return data.decode(enc), enc
                except UnicodeDecodeError:
                    break
    cyr = _cyrillic_8bit(data)
    if cyr:
        return data.decode(cyr, "replace"), cyr
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


_HIGH_RUN = re.compile(rb"[\xc0-\xff]{3,}")


def _cyrillic_8bit(data: bytes) -> str | None:
    """``koi8-r`` or ``cp1251`` for undeclared 8-bit Russian text (else None).

    Western accents are lone high bytes inside ASCII words; Cyrillic words are runs of them. In
    Russian text lower case dominates: KOI8-R puts it at 0xC0-0xDF, cp1251 at 0xE0-0xFF.
    """
    runs = _HIGH_RUN.findall(data[:200_000])
    if sum(map(len, runs)) < 200:
        return None
    high = sum(1 for b in data[:200_000] if b >= 0x80)
    if sum(map(len, runs)) < 0.6 * high:
        return None
    low = sum(1 for r in runs for b in r if b < 0xE0)
    return "koi8-r" if low > sum(map(len, runs)) - low else "cp1251"
