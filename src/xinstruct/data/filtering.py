"""Filtering: keep/drop decisions as small classes (filters), applied in order by one runner.

A filter has a ``name`` (the reason counted when it drops) and decides, for each row, keep (``None``) or drop
(a reason string, usually its ``name``). A decision may also be a :class:`Decision` carrying columns the
filter adds to the row (e.g. the language it detected). Two kinds:

* :class:`RowFilter`: decides one row at a time (``check``); may be stateful (deduplication remembers what it
  saw; ``reset`` clears that state at the start of every run).
* :class:`BatchFilter`: decides every row that reaches it at once (``decide``), e.g. a language-ID model that
  is fast on a batch.

:class:`FilterRunner` streams each row through consecutive row filters, then hands the survivors to the next
batch filter, and so on. Dropped rows therefore come out in the order they were dropped: rows dropped by row
filters in input order, followed by the rows each later batch filter drops. Kept rows keep the input order.
Counts (rows in and out, skips per reason) go into a :class:`FilterReport` per language.

Adding a filter means one class (here or in :mod:`xinstruct.data.filters`) and one line in the list that
builds a step's filters (:func:`~xinstruct.data.filters.webtext_filters`,
:func:`~xinstruct.data.filters.candidate_filters`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    """A filter's decision on one row: ``reason`` is ``None`` to keep it, else why it is dropped; ``fields``
    are columns the filter sets on the row either way (e.g. ``{"detected": "sw"}``)."""

    reason: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


Verdict = str | Decision | None
"""What a filter returns per row: ``None`` (keep), a reason string (drop) or a :class:`Decision`."""


def _as_decision(verdict: Verdict) -> Decision:
    if isinstance(verdict, Decision):
        return verdict
    return Decision(verdict or None)


class Filter(ABC):
    """A keep/drop block. ``name`` is the reason it counts when it drops (set per instance to reuse one class
    for several steps, e.g. ``empty`` for web texts and ``empty_instruction`` for candidates)."""

    name: str = ""

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = name

    def reset(self) -> None:
        """Forget any state (called by the runner at the start of every run, i.e. per language)."""
        return None

    @abstractmethod
    def decide(self, rows: Sequence[Row]) -> list[Verdict]:
        """One verdict per row, in order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class RowFilter(Filter):
    """A filter that decides one row at a time; implement :meth:`check`. Rows reach it in input order, each
    after every earlier row filter kept it, so a stateful filter sees exactly the rows still alive."""

    @abstractmethod
    def check(self, row: Row) -> Verdict:
        """The verdict on one row."""

    def decide(self, rows: Sequence[Row]) -> list[Verdict]:
        return [self.check(row) for row in rows]


class BatchFilter(Filter):
    """A filter that decides every row reaching it at once; implement :meth:`decide`. Never called with no
    rows. (The runner treats any filter that is not a :class:`RowFilter` this way.)"""


@dataclass
class FilterReport:
    """Counts of rows in, rows kept and skips per reason, per language, over one or more runs."""

    rows_in: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    skipped: dict[str, Counter] = field(default_factory=dict)

    def count(self, languages: Sequence[Any], reasons: Sequence[str | None]) -> None:
        """Count one run's rows: ``languages[i]`` is the language of row ``i``, ``reasons[i]`` its skip reason."""
        for language, reason in zip(languages, reasons):
            self.rows_in[language] += 1
            if reason is None:
                self.kept[language] += 1
            else:
                self.skipped.setdefault(reason, Counter())[language] += 1

    def reasons(self) -> Counter:
        """Skips per reason over all languages, in the order each reason was first met."""
        return Counter({reason: sum(c.values()) for reason, c in self.skipped.items()})

    def as_dict(self, sort_reasons: bool = True, per_language_skips: bool = True) -> dict[str, Any]:
        """Manifest counts: ``rows_in, rows_out, rows_in_per_language, rows_out_per_language, skipped`` and
        ``skipped_per_language`` (without it when ``per_language_skips`` is false). Reasons are sorted unless
        ``sort_reasons`` is false (then in the order first met)."""
        items = sorted(self.skipped.items()) if sort_reasons else list(self.skipped.items())
        out: dict[str, Any] = {
            "rows_in": sum(self.rows_in.values()),
            "rows_out": sum(self.kept.values()),
            "rows_in_per_language": dict(self.rows_in),
            "rows_out_per_language": dict(self.kept),
            "skipped": {reason: sum(c.values()) for reason, c in items},
        }
        if per_language_skips:
            out["skipped_per_language"] = {reason: dict(c) for reason, c in items}
        return out


@dataclass
class FilterResult:
    """One run's outcome. ``reasons[i]`` (``None``: kept) and ``fields[i]`` (columns set by filters) belong to
    input row ``i``; ``order`` lists the dropped rows' indices in the order they were dropped."""

    rows: Sequence[Row]
    reasons: list[str | None]
    fields: list[dict[str, Any]]
    order: list[int]

    @property
    def kept(self) -> list[dict[str, Any]]:
        """Kept rows in input order, with the columns filters set."""
        return [{**row, **f} for row, r, f in zip(self.rows, self.reasons, self.fields) if r is None]

    @property
    def dropped(self) -> list[dict[str, Any]]:
        """Dropped rows in drop order, with the columns filters set and their ``reason``."""
        return [{**self.rows[i], **self.fields[i], "reason": self.reasons[i]} for i in self.order]


class FilterRunner:
    """Applies an ordered list of filters to rows and counts the outcome in ``report``.

    Args:
        filters: the filters, in the order they apply.
        report: where counts accumulate over runs (a new one by default).
    """

    def __init__(self, filters: Iterable[Filter], report: FilterReport | None = None):
        self.filters = list(filters)
        self.report = report if report is not None else FilterReport()
        self._stages: list[Filter | list[RowFilter]] = []  # consecutive row filters fused; batch filters alone
        for f in self.filters:
            if not isinstance(f, RowFilter):
                self._stages.append(f)
            elif self._stages and isinstance(self._stages[-1], list):
                self._stages[-1].append(f)
            else:
                self._stages.append([f])

    def run(self, rows: Sequence[Row], language: str | None = None) -> FilterResult:
        """Filter ``rows``; stateful filters start afresh.

        Args:
            language: the language of every row (counted even when ``rows`` is empty); ``None``: each row's
                ``language`` column.
        """
        for f in self.filters:
            f.reset()
        reasons: list[str | None] = [None] * len(rows)
        fields: list[dict[str, Any]] = [{} for _ in rows]
        order: list[int] = []
        alive = list(range(len(rows)))

        def apply(i: int, verdict: Verdict) -> bool:
            decision = _as_decision(verdict)
            fields[i].update(decision.fields)
            if decision.reason is not None:
                reasons[i] = decision.reason
                order.append(i)
            return decision.reason is None

        for stage in self._stages:
            if not alive:
                break
            if isinstance(stage, list):
                alive = [i for i in alive if all(apply(i, f.check(rows[i])) for f in stage)]
            else:
                verdicts = stage.decide([rows[i] for i in alive])
                if len(verdicts) != len(alive):
                    raise ValueError(f"{stage!r} returned {len(verdicts)} verdicts for {len(alive)} rows")
                alive = [i for i, v in zip(alive, verdicts) if apply(i, v)]
        if language is not None:
            self.report.rows_in[language] += 0
            self.report.kept[language] += 0
            languages: Sequence[Any] = [language] * len(rows)
        else:
            languages = [row.get("language") for row in rows]
        self.report.count(languages, reasons)
        return FilterResult(rows, reasons, fields, order)
