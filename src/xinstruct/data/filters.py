"""Web-text filters. Each filter has a ``name`` (the skip reason counted in the manifest) and decides
keep or drop per text. Dropped texts are kept, with their reason, in the step's ``dropped`` dataset.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from datasketch import MinHash, MinHashLSH

from ..config import FilterConfig
from . import lid

_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unicode NFC and collapsed whitespace: the form every stage stores."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text or "")).strip()


def _dedup_key(text: str) -> str:
    return clean_text(text).casefold()


def char_shingles(text: str, n: int) -> set[str]:
    """Character n-grams of the case-folded text without spaces: script-agnostic (Thai has no spaces)."""
    s = _dedup_key(text).replace(" ", "")
    return {s[i : i + n] for i in range(max(1, len(s) - n + 1))}


@dataclass
class FilterReport:
    """Counts of kept rows and of skips per reason, per language."""

    rows_in: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    skipped: dict[str, Counter] = field(default_factory=dict)

    def skip(self, language: str, reason: str) -> None:
        self.skipped.setdefault(reason, Counter())[language] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_in": sum(self.rows_in.values()),
            "rows_out": sum(self.kept.values()),
            "rows_in_per_language": dict(self.rows_in),
            "rows_out_per_language": dict(self.kept),
            "skipped": {reason: sum(c.values()) for reason, c in sorted(self.skipped.items())},
            "skipped_per_language": {reason: dict(c) for reason, c in sorted(self.skipped.items())},
        }


class WebTextFilter:
    """Length window, exact and near-duplicate removal, and a language-ID check, in that order.

    Duplicates are looked for within each language. The language check runs last (it is the slowest)
    and in one batch per language.
    """

    def __init__(self, config: FilterConfig):
        self.config = config

    def apply(self, rows: list[dict[str, Any]], language: str, report: FilterReport) -> tuple[list[dict], list[dict]]:
        """Return (kept rows, dropped rows with a ``reason``) for the rows of one language."""
        cfg = self.config
        kept: list[dict] = []
        dropped: list[dict] = []
        seen: set[str] = set()
        lsh = MinHashLSH(threshold=cfg.near_dup_threshold, num_perm=64) if cfg.near_dup_threshold else None
        report.rows_in[language] += len(rows)

        def drop(row: dict, reason: str, detected: str | None = None) -> None:
            report.skip(language, reason)
            dropped.append({**row, "reason": reason, "detected": detected})

        for row in rows:
            text = row["text"]
            if not text:
                drop(row, "empty")
            elif len(text) < cfg.min_chars:
                drop(row, "too_short")
            elif len(text) > cfg.max_chars:
                drop(row, "too_long")
            elif cfg.dedup and _dedup_key(text) in seen:
                drop(row, "exact_duplicate")
            else:
                seen.add(_dedup_key(text))
                if lsh is not None:
                    mh = MinHash(num_perm=64, seed=1)
                    mh.update_batch([s.encode() for s in char_shingles(text, cfg.near_dup_ngram)])
                    if lsh.query(mh):
                        drop(row, "near_duplicate")
                        continue
                    lsh.insert(row["id"], mh)
                kept.append(row)
        if cfg.lid and kept:
            detections = lid.detect([r["text"] for r in kept], language)
            passed = []
            for row, d in zip(kept, detections):
                if d.detected == language and d.confidence >= cfg.lid_min_confidence:
                    passed.append(row)
                else:
                    drop(row, "wrong_language", detected=d.detected)
            kept = passed
        report.kept[language] += len(kept)
        return kept, dropped
