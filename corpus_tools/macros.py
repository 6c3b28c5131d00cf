"""Built-in table of journal / astronomy macros that papers use without defining them.

AASTeX, MNRAS and A&A class files define shorthands such as ``\\msun``, ``\\kms`` and the journal
abbreviations used in reference lists (``\\apj``, ``\\aap``). A paper's source never defines
them, so a converter that only expands user macros (RedPajama) or drops unknown ones
(pylatexenc) loses ``10^{12}\\msun`` -> ``10^12``. Here every entry is ``name -> (nargs, body)``.
Bodies wrapped in ``\\ensuremath{...}`` are math: the renderer keeps them bare inside math and
wraps them in ``$...$`` in running text. A user definition of the same name always wins.
"""

from __future__ import annotations

_MATH: dict[str, str] = {
    # solar / planetary units
    "msun": r"M_\odot", "Msun": r"M_\odot", "msol": r"M_\odot", "Msol": r"M_\odot", "Mo": r"M_\odot",
    "lsun": r"L_\odot", "Lsun": r"L_\odot", "lsol": r"L_\odot", "Lsol": r"L_\odot",
    "rsun": r"R_\odot", "Rsun": r"R_\odot", "rsol": r"R_\odot", "Rsol": r"R_\odot",
    "mearth": r"M_\oplus", "Mearth": r"M_\oplus", "rearth": r"R_\oplus", "Rearth": r"R_\oplus",
    "mjup": r"M_{\rm Jup}", "Mjup": r"M_{\rm Jup}", "rjup": r"R_{\rm Jup}", "Rjup": r"R_{\rm Jup}",
    "sun": r"\odot", "earth": r"\oplus",
    "kms": r"{\rm km\,s^{-1}}", "kmps": r"{\rm km\,s^{-1}}", "kmsec": r"{\rm km\,s^{-1}}",
    "degr": r"^\circ", "degree": r"^\circ", "arcmin": r"^\prime", "arcsec": r"^{\prime\prime}",
    "micron": r"\mu{\rm m}", "la": r"\lesssim", "ga": r"\gtrsim", "lapprox": r"\lesssim", "gapprox": r"\gtrsim",
    "Msunyr": r"M_\odot\,{\rm yr^{-1}}", "mpc": r"{\rm Mpc}", "kpc": r"{\rm kpc}",
}

_TEXT: dict[str, str] = {
    # journal abbreviations (AASTeX aasjournal.bst / MNRAS / A&A)
    "aj": "AJ", "actaa": "Acta Astron.", "araa": "ARA&A", "apj": "ApJ", "apjl": "ApJL", "apjlett": "ApJL",
    "apjs": "ApJS", "apjsupp": "ApJS", "ao": "Appl. Opt.", "applopt": "Appl. Opt.", "apss": "Ap&SS",
    "aap": "A&A", "astap": "A&A", "aapr": "A&A Rev.", "aaps": "A&AS", "aapss": "A&AS", "azh": "AZh",
    "baas": "BAAS", "bac": "Bull. Astron. Inst. Czechoslovakia", "caa": "Chinese Astron. Astrophys.",
    "cjaa": "Chinese J. Astron. Astrophys.", "icarus": "Icarus", "jcap": "JCAP", "jrasc": "JRASC",
    "memras": "MmRAS", "mnras": "MNRAS", "na": "New A", "nar": "New A Rev.", "pra": "Phys. Rev. A",
    "prb": "Phys. Rev. B", "prc": "Phys. Rev. C", "prd": "Phys. Rev. D", "pre": "Phys. Rev. E",
    "prl": "Phys. Rev. Lett.", "pasa": "PASA", "pasp": "PASP", "pasj": "PASJ", "rmxaa": "Rev. Mexicana Astron. Astrofis.",
    "qjras": "QJRAS", "skytel": "S&T", "solphys": "Sol. Phys.", "sovast": "Soviet Ast.", "ssr": "Space Sci. Rev.",
    "zap": "ZAp", "nat": "Nature", "iaucirc": "IAU Circ.", "aplett": "Astrophys. Lett.",
    "apspr": "Astrophys. Space Phys. Res.", "bain": "Bull. Astron. Inst. Netherlands", "fcp": "Fund. Cosmic Phys.",
    "gca": "Geochim. Cosmochim. Acta", "grl": "Geophys. Res. Lett.", "jcp": "J. Chem. Phys.", "jgr": "J. Geophys. Res.",
    "jqsrt": "J. Quant. Spec. Radiat. Transf.", "memsai": "Mem. Soc. Astron. Italiana", "nphysa": "Nucl. Phys. A",
    "physrep": "Phys. Rep.", "physscr": "Phys. Scr", "planss": "Planet. Space Sci.", "procspie": "Proc. SPIE",
    "maps": "M&PS", "psj": "PSJ", "rnaas": "RNAAS", "aas": "AAS",
    # common text shorthands
    "etal": "et al.", "ie": "i.e.", "eg": "e.g.", "cf": "cf.", "vs": "vs.", "etc": "etc.", "AA": "Å",
    "Angstrom": "Å", "angstrom": "Å",
}

#: name -> (number of arguments, body)
BUILTIN_MACROS: dict[str, tuple[int, str]] = {
    **{name: (0, r"\ensuremath{" + body + "}") for name, body in _MATH.items()},
    **{name: (0, body) for name, body in _TEXT.items()},
    # \ion{Fe}{2} -> Fe II (AASTeX)
    "ion": (2, r"#1\,\romannumeral#2"),
    "nodata": (0, "..."),
}

_ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI", "7": "VII", "8": "VIII", "9": "IX", "10": "X"}


def roman(numeral: str) -> str:
    """Roman numeral for 1..10 (used by ``\\ion``); other input is returned unchanged."""
    return _ROMAN.get(numeral.strip(), numeral)
