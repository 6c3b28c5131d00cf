"""Bundled standard packages and classes: their definitions are not the paper's macros."""

from __future__ import annotations

import posixpath
import re

#: packages and classes from CTAN / the journals that e-prints bundle; their definitions are not the paper's macros
STANDARD_PACKAGES = frozenset(
    """aastex aastex6 aastex61 aastex62 aastex63 aastex631 aastex7 aasjournal aaspp4 emulateapj emulateapj5 mnras mn2e
    aa aa-package revtex4 revtex4-1 revtex4-2 elsarticle natbib hyperref graphicx graphics color xcolor amsmath amssymb
    amsthm amsfonts url ulem soul changes lineno float subfigure subcaption caption deluxetable longtable
    multirow booktabs tabularx array geometry fancyhdr setspace times txfonts newtxtext newtxmath mathptmx
    epsfig epsf psfig apjfonts pdflscape lscape rotating wrapfig sidecap placeins afterpage bm xspace
    siunitx tikz pgf pgfplots listings minted fancyvrb verbatim comment enumitem microtype cleveref
    varioref algorithm algorithmic algorithmicx algpseudocode todonotes marginnote framed mdframed tcolorbox
    orcidlink academicons fontawesome natbib_aa biblatex xr xr-hyperref threeparttable etoolbox xstring
    ifthen calc keyval kvoptions""".split()
)
#: a local package bigger than this that declares itself with ``\\ProvidesPackage`` is treated as a library
LIBRARY_STY_CHARS = 40_000
_PROVIDES = re.compile(r"\\Provides(?:Package|Class|File)\s*\{")


def is_library_sty(name: str, text: str) -> bool:
    """True for a bundled standard package/class (its definitions are not the paper's macros)."""
    stem = posixpath.splitext(posixpath.basename(name))[0].lower()
    if name.endswith(".cls") or stem in STANDARD_PACKAGES:
        return True
    return len(text) > LIBRARY_STY_CHARS and bool(_PROVIDES.search(text))
