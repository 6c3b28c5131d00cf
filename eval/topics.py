"""Topics for per-topic accuracy: the data's ``topic`` field, else a keyword tagger.

The tagger maps a question (and its options) to one astro-ph subfield:

====  ==========================================  ==========================================
code  subfield                                    example keywords
====  ==========================================  ==========================================
GA    Astrophysics of Galaxies                    galaxy, interstellar, milky way, quasar host
CO    Cosmology and Nongalactic Astrophysics      cosmic microwave, dark energy, hubble constant
EP    Earth and Planetary Astrophysics            exoplanet, protoplanetary, asteroid, comet
HE    High Energy Astrophysical Phenomena         black hole, neutron star, gamma-ray, supernova
IM    Instrumentation and Methods                 telescope, interferometer, detector, survey
SR    Solar and Stellar Astrophysics              star, stellar, sun, solar, main sequence
====  ==========================================  ==========================================

Rule: count whole-word/phrase keyword hits per subfield over the lower-cased question text
(options count half); the subfield with most hits wins, ties go to the earlier code in the
order above; no hit at all gives ``"unclassified"``. It is a rough guide for reports, not a
classifier to publish numbers with.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .data import Question

UNCLASSIFIED = "unclassified"

SUBFIELDS: dict[str, str] = {
    "GA": "Astrophysics of Galaxies",
    "CO": "Cosmology and Nongalactic Astrophysics",
    "EP": "Earth and Planetary Astrophysics",
    "HE": "High Energy Astrophysical Phenomena",
    "IM": "Instrumentation and Methods for Astrophysics",
    "SR": "Solar and Stellar Astrophysics",
}

KEYWORDS: dict[str, tuple[str, ...]] = {
    "GA": (
        "galaxy", "galaxies", "galactic", "milky way", "interstellar", "ism", "spiral arm", "bulge",
        "halo", "dwarf galaxy", "tully-fisher", "rotation curve", "star formation rate", "molecular cloud",
        "globular cluster", "agn host", "merger", "stellar population", "h i", "hi gas",
    ),
    "CO": (
        "cosmology", "cosmological", "cosmic microwave", "cmb", "dark energy", "hubble constant",
        "big bang", "inflation", "redshift", "baryon acoustic", "large-scale structure", "reionization",
        "nucleosynthesis", "dark matter", "sigma_8", "lambda cdm", "lcdm", "cluster of galaxies",
        "galaxy clusters", "weak lensing",
    ),
    "EP": (
        "exoplanet", "exoplanets", "planet", "planets", "planetary", "protoplanetary", "asteroid",
        "comet", "kuiper", "meteorite", "solar system", "habitable", "transit", "radial velocity",
        "hot jupiter", "moon", "debris disk", "oumuamua", "interstellar object",
    ),
    "HE": (
        "black hole", "neutron star", "pulsar", "magnetar", "gamma-ray", "gamma ray", "x-ray",
        "supernova", "supernovae", "gravitational wave", "cosmic ray", "accretion", "jet", "blazar",
        "quasar", "active galactic nuclei", "agn", "neutrino", "grb", "relativistic",
    ),
    "IM": (
        "telescope", "interferometer", "interferometry", "detector", "spectrograph", "instrument",
        "survey", "adaptive optics", "calibration", "alma", "jwst", "photometry", "astrometry",
        "gaia", "machine learning", "pipeline", "ccd", "observatory", "resolution",
    ),
    "SR": (
        "star", "stars", "stellar", "sun", "solar", "main sequence", "red giant", "white dwarf",
        "binary", "asteroseismology", "convection", "nuclear burning", "hertzsprung", "protostar",
        "stellar wind", "sunspot", "coronal", "chromosphere", "initial mass function", "brown dwarf",
    ),
}


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern[str]]:
    return {
        code: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b")
        for code, words in KEYWORDS.items()
    }


def tag_text(question: str, options: tuple[str, ...] = ()) -> str:
    """The astro-ph subfield code for a question, or ``"unclassified"``."""
    q = question.lower()
    o = " ".join(options).lower()
    best, best_score = UNCLASSIFIED, 0.0
    for code, pattern in _patterns().items():
        score = len(pattern.findall(q)) + 0.5 * len(pattern.findall(o))
        if score > best_score:
            best, best_score = code, score
    return best


def topics_for(questions: list[Question]) -> tuple[list[str], str]:
    """(topic per question, source): the data's topics if every question has one, else keywords."""
    if questions and all(q.topic for q in questions):
        return [q.topic for q in questions], "data"  # type: ignore[misc]
    return [q.topic or tag_text(q.question, q.options) for q in questions], "keywords"
