"""The held-out split of the seed pairs, by group, so that no held-out pair has a twin in training.

Seed pairs are grouped across languages: two pairs are in one group when their English instructions are the
same after normalisation (:func:`normalise_instruction`), or when they carry the same ``group`` value (``xinstruct
seed-build`` writes ``mt-<n>`` for every language's translation of source row ``n``). Both keys are joined by
union-find, so a chain of shared keys is one group. A group is wholly held out or wholly trained.

Per language, about ``max(minimum, ceil(fraction * n))`` pairs are held out: groups are taken in the order of a
seeded hash of their key (:func:`unit_hash`); a language may end with a few more held-out pairs than its target
when a group spans several languages. At least 2 pairs per language stay for training (level 1 of the
pseudo-ratings needs a partner).

:func:`calibration_half` splits held-out rows into a calibration half and a test half, again by group.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from ..errors import StageError

logger = logging.getLogger(__name__)

__all__ = [
    "SeedSplit", "unit_hash", "normalise_instruction", "row_groups", "group_keys", "split_seeds",
    "calibration_half",
]

_SPACES = re.compile(r"\s+")
_SEED_BUILD_ID = re.compile(r"-mt-(\d+)$")


def unit_hash(key: str, seed: int) -> float:
    """A deterministic number in [0, 1) for ``key`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def normalise_instruction(text: str) -> str:
    """The grouping form of an English instruction: Unicode NFKC, case folded, whitespace collapsed, trailing
    punctuation (any Unicode ``P*`` character) and spaces stripped."""
    s = _SPACES.sub(" ", unicodedata.normalize("NFKC", text or "").casefold()).strip()
    end = len(s)
    while end and (s[end - 1].isspace() or unicodedata.category(s[end - 1]).startswith("P")):
        end -= 1
    return s[:end]


def row_groups(seeds: Dataset) -> list[str | None]:
    """The source-row group of each seed pair (``None``: none): the ``group`` column when there is one, else, for
    rows written by ``xinstruct seed-build`` before it wrote that column (source ``mt:<model>``, id ending in
    ``-mt-<n>``), ``mt-<n>``."""
    if "group" in seeds.column_names:
        return [str(g) if g not in (None, "") else None for g in list(seeds["group"])]
    sources = list(seeds["source"]) if "source" in seeds.column_names else [""] * len(seeds)
    out: list[str | None] = []
    for id_, source in zip(list(seeds["id"]), sources):
        m = _SEED_BUILD_ID.search(str(id_)) if str(source or "").startswith("mt:") else None
        out.append(f"mt-{m.group(1)}" if m else None)
    return out


def group_keys(instructions: Sequence[str], groups: Sequence[str | None] | None = None) -> list[str]:
    """The group key of each row: rows sharing a normalised instruction or a (non-empty) ``groups`` value are one
    group (union-find over both keys). A group's key is its smallest member key, ``group:<value>`` before
    ``instruction:<normalised text>`` (an instruction that normalises to nothing keeps its case-folded text)."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is always the smallest key of its set

    groups = groups if groups is not None else [None] * len(instructions)
    row_keys = []
    for instruction, group in zip(instructions, groups, strict=True):
        norm = normalise_instruction(instruction) or _SPACES.sub(" ", (instruction or "").casefold()).strip()
        key = "instruction:" + norm
        find(key)
        if group:
            union("group:" + group, key)
        row_keys.append(key)
    return [find(k) for k in row_keys]


@dataclass(frozen=True)
class SeedSplit:
    """The split of a seed set, row by row.

    Attributes:
        split: ``train`` or ``heldout`` per row.
        group: the group key per row (:func:`group_keys`).
        targets: the held-out target per language, ``max(minimum, ceil(fraction * n))``.
    """

    split: list[str]
    group: list[str]
    languages: list[str] = field(repr=False)
    targets: dict[str, int]

    def heldout_per_language(self) -> dict[str, int]:
        """Held-out pairs per language."""
        out = {code: 0 for code in sorted(self.targets)}
        for code, s in zip(self.languages, self.split):
            out[code] += s == "heldout"
        return out

    def heldout_groups(self) -> int:
        """Number of groups held out."""
        return len({g for g, s in zip(self.group, self.split) if s == "heldout"})

    def shared_groups(self) -> int:
        """Number of groups that span more than one language."""
        langs: dict[str, set[str]] = {}
        for g, code in zip(self.group, self.languages):
            langs.setdefault(g, set()).add(code)
        return sum(len(v) > 1 for v in langs.values())


def split_seeds(seeds: Dataset, fraction: float, minimum: int, seed: int) -> SeedSplit:
    """Split ``seeds`` (columns ``id, language, instruction``, optional ``source`` and ``group``) into ``train``
    and ``heldout`` by group (see the module docstring).

    Groups are visited in the order of ``unit_hash("heldout:" + key, seed)``. First pass: a group is held out when
    every language it has rows in is still below its target (a language overshoots only by the group's extra rows
    in it). Second pass, for languages still short: a group is held out when some language in it is below its
    target (other languages may overshoot). A group is never held out if a language would keep fewer than 2
    training pairs.

    Raises:
        StageError: a language has too few pairs to hold out its target and keep 2 for training, or none of its
            pairs can be held out without another language keeping fewer than 2.
    """
    languages = list(seeds["language"])
    keys = group_keys(list(seeds["instruction"]), row_groups(seeds))
    sizes: dict[str, int] = {}
    for code in languages:
        sizes[code] = sizes.get(code, 0) + 1
    targets = {code: max(minimum, math.ceil(fraction * n)) for code, n in sizes.items()}
    for code, n in sizes.items():
        if n - targets[code] < 2:
            raise StageError(
                f"Language {code} has {n} seed pair(s): holding out {targets[code]} (data.seeds.heldout_fraction / "
                "heldout_min_per_language) leaves fewer than 2 to train on. Add seed pairs or hold out fewer."
            )
    members: dict[str, dict[str, int]] = {}  # group -> language -> rows
    for key, code in zip(keys, languages):
        counts = members.setdefault(key, {})
        counts[code] = counts.get(code, 0) + 1
    order = sorted(members, key=lambda k: (unit_hash("heldout:" + k, seed), k))
    held = {code: 0 for code in sizes}
    chosen: set[str] = set()

    def take(k: str) -> None:
        if all(sizes[code] - held[code] - c >= 2 for code, c in members[k].items()):  # 2 stay for training
            chosen.add(k)
            for code, c in members[k].items():
                held[code] += c

    for k in order:
        if all(held[code] < targets[code] for code in members[k]):
            take(k)
    for k in order:
        if k not in chosen and any(held[code] < targets[code] for code in members[k]):
            take(k)
    short = {code: (held[code], targets[code]) for code in sorted(sizes) if held[code] < targets[code]}
    empty = [code for code, (h, _) in short.items() if h == 0]
    if empty:
        raise StageError(
            f"No seed pair of {', '.join(empty)} can be held out: every group of theirs spans languages that would "
            "keep fewer than 2 pairs to train on. Add seed pairs or hold out fewer."
        )
    if short:
        logger.warning("Held out fewer seed pairs than the target (held, target) so that every language keeps 2 "
                       "to train on, because of groups spanning languages: %s", short)
    split = ["heldout" if k in chosen else "train" for k in keys]
    return SeedSplit(split, keys, languages, targets)


def calibration_half(group_keys: list[str], seed: int) -> list[bool]:
    """``True`` for rows in the calibration half, ``False`` for the test half, decided per group: the distinct
    groups are ordered by ``unit_hash("calibration:" + key, seed)`` and the first ``ceil(groups / 2)`` are the
    calibration half. No group straddles both halves; about half of the groups (not of the rows) calibrate."""
    distinct = sorted(set(group_keys), key=lambda k: (unit_hash("calibration:" + k, seed), k))
    calibrate = set(distinct[: math.ceil(len(distinct) / 2)])
    return [k in calibrate for k in group_keys]
