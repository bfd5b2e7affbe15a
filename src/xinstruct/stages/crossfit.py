"""Cross-fitting: which fold a row belongs to, and which fold's model may rate it.

A model never rates a row it trained on: with two folds, the follower of fold ``f`` trains on the pool rows of
fold ``f`` and rates the rows of the other fold; a seed pair scored by fold ``f`` gets its level-2 answer from the
other fold's follower. With one fold (no cross-fitting) every row is fold 0 and the one model does everything.
"""

from __future__ import annotations

from ..data.split import unit_hash


def fold_of(key: str, seed: int, folds: int) -> int:
    """The fold of a row (its id, or a seed pair's group), by a seeded hash: stable across runs and machines."""
    return 0 if folds == 1 else int(unit_hash("fold:" + key, seed) * folds)


def other_fold(fold: int, folds: int) -> int:
    """The fold whose model rates (or answers for) rows of ``fold``: the next one, or 0 with one fold."""
    return (fold + 1) % folds
