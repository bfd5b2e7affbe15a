"""The filters of the web-text step and of the candidate gate, on the runner of :mod:`xinstruct.data.filtering`.

Each filter has a ``name`` (the skip reason counted in the manifest) and decides keep or drop per row. Dropped
rows are kept, with their reason, in the step's ``dropped`` dataset. A step's filters are listed in one place:
:func:`webtext_filters` and :func:`candidate_filters`; a new filter is one class and one line there.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from itertools import groupby

from datasketch import MinHash, MinHashLSH

from ..config import FilterConfig
from ..errors import DataError
from . import lid
from .filtering import BatchFilter, Decision, Filter, FilterReport, FilterRunner, Row, RowFilter, Verdict

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


def minhash(text: str, ngram: int) -> MinHash:
    """The MinHash (64 permutations) of ``text``'s character ``ngram`` set (:func:`char_shingles`)."""
    mh = MinHash(num_perm=64, seed=1)
    mh.update_batch([s.encode() for s in char_shingles(text, ngram)])
    return mh


__all__ = [
    "Empty", "MinChars", "MaxChars", "ExactDuplicate", "NearDuplicate", "SeedDuplicate", "LanguageID", "FilterReport",
    "FilterRunner", "webtext_filters", "candidate_filters", "clean_text", "char_shingles", "minhash",
]


class Empty(RowFilter):
    """Drops rows whose ``column`` is empty."""

    name = "empty"

    def __init__(self, column: str = "text", name: str | None = None):
        super().__init__(name)
        self.column = column

    def check(self, row: Row) -> Verdict:
        return None if row[self.column] else self.name


class MinChars(RowFilter):
    """Drops rows whose ``column`` has fewer than ``limit`` characters."""

    name = "too_short"

    def __init__(self, limit: int, column: str = "text", name: str | None = None):
        super().__init__(name)
        self.limit, self.column = limit, column

    def outside(self, length: int) -> bool:
        return length < self.limit

    def check(self, row: Row) -> Verdict:
        return self.name if self.outside(len(row[self.column])) else None


class MaxChars(MinChars):
    """Drops rows whose ``column`` has more than ``limit`` characters."""

    name = "too_long"

    def outside(self, length: int) -> bool:
        return length > self.limit


class ExactDuplicate(RowFilter):
    """Drops a row whose ``column`` equals an earlier kept row's after Unicode NFC, whitespace clean-up and case
    folding. Remembers the texts of the current run."""

    name = "exact_duplicate"

    def __init__(self, column: str = "text", name: str | None = None):
        super().__init__(name)
        self.column = column
        self.seen: set[str] = set()

    def reset(self) -> None:
        self.seen = set()

    def check(self, row: Row) -> Verdict:
        key = _dedup_key(row[self.column])
        if key in self.seen:
            return self.name
        self.seen.add(key)
        return None


class NearDuplicate(RowFilter):
    """Drops a row whose character n-gram set has an estimated Jaccard similarity above ``threshold`` with an
    earlier kept row's (MinHash LSH, 64 permutations). Rows are keyed by ``id`` in the index of the current run."""

    name = "near_duplicate"

    def __init__(self, threshold: float, ngram: int, column: str = "text", name: str | None = None):
        super().__init__(name)
        self.threshold, self.ngram, self.column = threshold, ngram, column
        self.reset()

    def reset(self) -> None:
        self.lsh = MinHashLSH(threshold=self.threshold, num_perm=64)

    def check(self, row: Row) -> Verdict:
        mh = minhash(row[self.column], self.ngram)
        if self.lsh.query(mh):
            return self.name
        if row["id"] in self.lsh.keys:
            raise DataError(f"Row id {row['id']!r} names two different texts ({self.column!r}): ids must be unique "
                            "within a language (or leave the 'id' field out to let the project number the rows).")
        self.lsh.insert(row["id"], mh)
        return None


class SeedDuplicate(RowFilter):
    """Drops a row whose ``column`` equals a seed response (after Unicode NFC, whitespace clean-up and case
    folding) or nearly duplicates one (estimated Jaccard similarity of character n-gram sets above ``threshold``,
    MinHash LSH as in :class:`NearDuplicate`; ``None``: exact copies only). Primed once with every seed response,
    train and held out, of every language: a held-out response must not come back as a web text. Unlike the other
    duplicate filters it remembers nothing of the rows it checks."""

    name = "seed_duplicate"

    def __init__(self, texts: Sequence[str], threshold: float | None, ngram: int, column: str = "text",
                 name: str | None = None):
        super().__init__(name)
        self.ngram, self.column = ngram, column
        self.exact = {_dedup_key(t) for t in texts} - {""}
        self.lsh = MinHashLSH(threshold=threshold, num_perm=64) if threshold else None
        if self.lsh is not None:
            for i, key in enumerate(sorted(self.exact)):
                self.lsh.insert(str(i), minhash(key, ngram))

    def check(self, row: Row) -> Verdict:
        key = _dedup_key(row[self.column])
        if key in self.exact or (self.lsh is not None and key and self.lsh.query(minhash(key, self.ngram))):
            return self.name
        return None


class LanguageID(BatchFilter):
    """Drops rows whose ``column`` is not in the expected language: a row passes when that language is the
    detector's most likely one and its confidence is at least ``min_confidence`` (:func:`xinstruct.data.lid.detect`,
    one batch per expected language).

    Args:
        min_confidence: the confidence floor of the expected language.
        expected: the expected language; ``None``: each row's ``language`` column.
        column: the text to check.
        name: the skip reason.
        confidence_field: when set, every checked row gets the expected language's confidence in this column.

    Every checked row gets the detected language in a ``detected`` column.
    """

    name = "wrong_language"

    def __init__(self, min_confidence: float, expected: str | None = None, column: str = "text",
                 name: str | None = None, confidence_field: str | None = None):
        super().__init__(name)
        self.min_confidence, self.expected, self.column = min_confidence, expected, column
        self.confidence_field = confidence_field

    def decide(self, rows: Sequence[Row]) -> list[Verdict]:
        verdicts: list[Verdict] = [None] * len(rows)
        expected = [self.expected or row["language"] for row in rows]
        by_language = sorted(range(len(rows)), key=lambda i: expected[i])  # stable: input order within a language
        for language, group in groupby(by_language, key=lambda i: expected[i]):
            idx = list(group)
            for i, d in zip(idx, lid.detect([rows[i][self.column] for i in idx], language)):
                fields = {"detected": d.detected}
                if self.confidence_field:
                    fields[self.confidence_field] = d.confidence
                ok = d.detected == language and d.confidence >= self.min_confidence
                verdicts[i] = Decision(None if ok else self.name, fields)
        return verdicts


def webtext_filters(cfg: FilterConfig, seed_texts: Sequence[str] = ()) -> list[Filter]:
    """The web-text filters of ``cfg``, in order: empty, copies of a seed response (when ``seed_texts`` are given;
    before the length window so that every copy is counted as one), length window, exact and near duplicates
    (within each language), language ID (last: the slowest, one batch per language)."""
    filters: list[Filter] = [Empty()]
    if seed_texts:
        filters.append(SeedDuplicate(seed_texts, cfg.near_dup_threshold, cfg.near_dup_ngram))
    filters += [MinChars(cfg.min_chars), MaxChars(cfg.max_chars)]
    if cfg.dedup:
        filters.append(ExactDuplicate())
    if cfg.near_dup_threshold:
        filters.append(NearDuplicate(cfg.near_dup_threshold, cfg.near_dup_ngram))
    if cfg.lid:
        filters.append(LanguageID(cfg.lid_min_confidence))
    return filters


def candidate_filters(min_chars: int, english_min_confidence: float, lid_check: bool = True) -> list[Filter]:
    """The candidate gate's filters on the ``instruction`` column: empty, too short, not English (the
    detector's confidence of English goes into ``english_confidence``)."""
    filters: list[Filter] = [
        Empty("instruction", name="empty_instruction"),
        MinChars(min_chars, "instruction", name="too_short_instruction"),
    ]
    if lid_check:
        filters.append(LanguageID(english_min_confidence, "en", "instruction", name="non_english_instruction",
                                  confidence_field="english_confidence"))
    return filters
