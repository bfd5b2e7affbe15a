"""Offline language identification with `lingua` (``lingua-language-detector`` on PyPI).

Why lingua: it ships its models inside the wheel (no download at run time), covers all ten paper
languages plus English (and 64 others, so near neighbours such as Malay vs Indonesian or Hindi vs
Marathi compete instead of being forced into a wrong match), is accurate on short text (what the
English-instruction gate sees) and runs in Rust. fastText's lid.176 is faster but its model must be
downloaded; ``langid`` is older and weaker on short text.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """What the detector says of one text: the most likely language and the confidence of the asked one."""

    detected: str | None
    confidence: float


@functools.lru_cache(maxsize=1)
def _detector():
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().build()


def _lingua_language(code: str):
    from lingua import IsoCode639_1, Language

    try:
        return Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
    except AttributeError:
        return None


def is_supported(code: str) -> bool:
    """Whether the detector knows language ``code`` (added languages may not be covered)."""
    return _lingua_language(code) is not None


def detect(texts: list[str], expected: str) -> list[Detection]:
    """Detect the language of each text and the confidence that it is in ``expected``.

    Texts are NFC-normalised first. Uses lingua's parallel batch API.
    """
    target = _lingua_language(expected)
    if target is None:
        raise ValueError(f"Language ID does not cover {expected!r}; set data.filters.lid: false for it.")
    det = _detector()
    norm = [unicodedata.normalize("NFC", t) for t in texts]
    best = det.detect_languages_in_parallel_of(norm)
    conf = det.compute_language_confidence_in_parallel(norm, target)
    return [
        Detection(b.iso_code_639_1.name.lower() if b is not None else None, float(c))
        for b, c in zip(best, conf)
    ]
