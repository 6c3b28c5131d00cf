"""What the renderer does with each command and environment in prose: dropped front matter, unwrapped
markup, revision markup, layout arguments, symbols and accents as Unicode."""

from __future__ import annotations

from .macros import BUILTIN_MACROS

HARD_NL = "\x02"

DROP_ENVS = ("comment", "tikzpicture", "picture", "pspicture", "keywords", "titlepage", "CJK", "thebibliography",
             "references", "abstract")
FIGURE_ENVS = ("figure", "figure*", "wrapfigure", "SCfigure", "subfigure", "interactive", "animation")

_SECTION_LEVEL = {"part": "#", "chapter": "#", "section": "#", "subsection": "##", "subsubsection": "###",
                  "paragraph": "####", "subparagraph": "####"}
_FRONT_MATTER = (
    "title", "author", "affiliation", "affil", "altaffiliation", "altaffiltext", "institute", "email", "date", "keywords",
    "thanks", "shorttitle", "shortauthors", "received", "accepted", "published", "revised", "submitted", "journalinfo",
    "correspondingauthor", "titlerunning", "authorrunning", "offprints", "subjclass", "pacs", "collaboration", "address",
    "affilnum", "orcidlink", "submitjournal", "keyword", "KEYWORDS", "doi", "dedicated", "mail", "homepage",
    "bibliographystyle", "bibliography", "nocite", "label", "includegraphics", "vspace", "hspace", "setlength",
    "addtolength", "setcounter", "addtocounter", "pagestyle", "thispagestyle", "epsscale", "plotone", "linenumbers",
    "graphicspath", "newcounter", "renewenvironment", "newenvironment", "newtheorem", "hypersetup", "usepackage",
    "printbibliography", "altaffilmark", "facility", "facilities", "software", "tableofcontents", "phantom",
    "markboth", "settowidth", "fontsize", "selectfont", "resizebox", "epsfig", "psfig", "epsfxsize", "rotatebox",
    "titlehead", "pagerange", "pubyear", "volume", "copyrightyear", "journal", "footnotemark",
    "listoftodos", "color", "pagecolor", "definecolor", "defcitealias", "AuthorCallLimit", "shortauthor", "shorttitle", "def", "makeatletter", "makeatother",
    "definechangesauthor", "orcid", "arxiv", "newpage", "clearpage", "bigskip", "medskip", "smallskip", "centering",
)
_FRONT_NARGS = {"newenvironment": 3, "renewenvironment": 3, "setlength": 2, "addtolength": 2, "setcounter": 2,
                "addtocounter": 2, "markboth": 2, "settowidth": 2, "fontsize": 2, "resizebox": 2, "rotatebox": 1,
                "newtheorem": 2, "footnotemark": 0, "definecolor": 3, "pagecolor": 1, "listoftodos": 0,
                "makeatletter": 0, "makeatother": 0, "newpage": 0, "clearpage": 0, "bigskip": 0, "medskip": 0,
                "smallskip": 0, "centering": 0, "definechangesauthor": 1}
_UNWRAP = (
    "textbf", "textit", "textsl", "textsc", "textrm", "texttt", "textsf", "textup", "textnormal", "emph", "underline",
    "mbox", "hbox", "fbox", "makebox", "framebox", "text", "uline", "textmd", "em", "bf", "it", "url", "nolinkurl",
    "MakeUppercase", "uppercase", "lowercase", "textsuperscript", "textsubscript", "object", "dataset", "anchor",
    "acronym", "ac", "acs", "acl", "gls", "texorpdfstring", "hl", "highlight", "hlc", "uwave", "textcolor", "colorbox",
    "fcolorbox", "added", "sethlcolor", "ul",
)
#: arguments that are not text, per command: the text argument kept is the last one
_UNWRAP_NARGS = {"textcolor": 2, "colorbox": 2, "fcolorbox": 3, "texorpdfstring": 2, "parbox": 2}
#: colour / revision markup (ulem, soul, changes): deleted text goes, the replacement stays
_REVISION = {"st": None, "sout": None, "xout": None, "deleted": None, "replaced": 0, "comment": None,
             "todo": None, "marginpar": None, "marginnote": None}
#: arguments after \begin{name} that are layout, not text: (optional args, mandatory args)
_ENV_ARGS = {"minipage": (1, 1), "wrapfigure": (1, 2), "wraptable": (1, 2), "multicols": (0, 1), "multicols*": (0, 1),
             "list": (0, 2), "adjustbox": (0, 1), "tcolorbox": (1, 0), "mdframed": (1, 0), "spacing": (0, 1),
             "addmargin": (1, 1), "landscape": (0, 0), "center": (0, 0), "figure": (1, 0), "table": (1, 0)}
_TEXT_BUILTINS = {k: b for k, (n, b) in BUILTIN_MACROS.items() if n == 0 and not b.startswith("\\ensuremath")}

_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304", ".": "\u0307",
            "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328", "r": "\u030a", "d": "\u0323",
            "b": "\u0331"}
_SYMBOLS = {
    "o": "ø", "O": "Ø", "ss": "ß", "aa": "å", "AA": "Å", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "l": "ł",
    "L": "Ł", "i": "ı", "j": "ȷ", "ldots": "...", "dots": "...", "textellipsis": "...", "textendash": "–",
    "textemdash": "—", "textdegree": "°", "degree": "°", "textasciitilde": "~", "textbackslash": "\\",
    "textless": "<", "textgreater": ">", "textbar": "|", "S": "§", "P": "¶", "copyright": "©", "pounds": "£",
    "dag": "†", "ddag": "‡", "textregistered": "®", "texttrademark": "™", "LaTeX": "LaTeX", "TeX": "TeX",
    "quad": " ", "qquad": " ", "enspace": " ", "thinspace": " ", "newline": HARD_NL, "linebreak": HARD_NL,
    "par": HARD_NL + HARD_NL, "textperthousand": "‰", "textmu": "µ", "micro": "µ", "sim": "~", "pm": "±",
    "times": "×", "approx": "≈", "odot": "⊙", "textpm": "±", "texttimes": "×", "farcs": ".″", "farcm": ".′", "fdg": ".°",
    "acknowledgments": HARD_NL * 2 + "# Acknowledgments" + HARD_NL * 2,
    "acknowledgements": HARD_NL * 2 + "# Acknowledgements" + HARD_NL * 2,
    "item": HARD_NL + "- ", "noindent": "", "indent": "",
}
_WORDS = {**_TEXT_BUILTINS, **_SYMBOLS}

_ESCAPES = {"%": "\ue000", "&": "\ue001", "#": "\ue002", "_": "\ue003", "$": "\ue004", "{": "\ue005", "}": "\ue006"}
_UNESCAPE = {v: k for k, v in _ESCAPES.items()}
