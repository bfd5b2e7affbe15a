"""Swapped pairs (step ``swaps``): the swap test of every iteration's rater and its planted negatives.

For ``refinement.planted_share`` of the candidates (chosen by a hash of the id), the same response with another
candidate's instruction: ``easy``, the next candidate of the same language and fold in a seeded order, and ``hard``
(``refinement.hard_swaps``), the nearest other instruction of the same language and fold by embedding. Donors come
from the candidate's own fold, so a cross-fitted rater never saw the swapped instruction either. A candidate whose
language and fold hold no other instruction gets no swap (counted).

The step also scores every real and swapped pair with the untrained base model (PMI and likelihood per token,
:mod:`.likelihood`): the reference that each iteration's swap AUC must beat. The pairs do not depend on the
iteration, so this is done once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from datasets import Dataset

from ..config import Recipe
from ..data.split import unit_hash
from ..inference import Engine
from .crossfit import fold_of
from .generation import fitter_for, instruction_embedder
from .likelihood import likelihood_features

KINDS = ("real", "easy", "hard")


def swap_donors(ids: list[str], languages: list[str], instructions: list[str], folds: list[int], share: float,
                seed: int, vectors: np.ndarray | None = None) -> tuple[dict[int, int], Counter]:
    """``{row: donor row}`` for ``share`` of the rows: the next row of the same language and fold in a seeded order
    with a different instruction, or with ``vectors`` (unit instruction embeddings) the most similar one. Also the
    count of picked rows left without a donor, per language."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(languages, folds)):
        groups[key].append(i)
    donors: dict[int, int] = {}
    missing: Counter = Counter()
    for (code, _), idx in sorted(groups.items()):
        order = sorted(idx, key=lambda i: unit_hash("plant:" + ids[i], seed))
        picked = {i for i in order if share >= 1 or unit_hash("pick:" + ids[i], seed) < share}
        for n, i in enumerate(order):
            if i not in picked:
                continue
            others = [j for j in order[n + 1:] + order[:n] if instructions[j] != instructions[i]]
            if not others:
                missing[code] += 1
            elif vectors is None:
                donors[i] = others[0]
            else:
                donors[i] = max(others, key=lambda j: float(vectors[i] @ vectors[j]))
    return donors, missing


def build_swaps(recipe: Recipe, candidates: Dataset, step, engine: Engine) -> dict[str, Any]:
    """Real and swapped pairs of the candidates with the base model's features (see the module doc)."""
    ref = recipe.refinement
    ids, languages, instructions = candidates["id"], candidates["language"], candidates["instruction"]
    folds = [fold_of(i, recipe.seed, ref.folds) for i in ids]
    fitter = fitter_for(recipe.base_model)
    responses = [fitter.head(text, ref.response_tokens)[0] for text in candidates["output"]]
    kinds = {"easy": swap_donors(ids, languages, instructions, folds, ref.planted_share, recipe.seed)}
    if ref.hard_swaps:
        vectors = instruction_embedder(recipe)(list(instructions))
        kinds["hard"] = swap_donors(ids, languages, instructions, folds, ref.planted_share, recipe.seed, vectors)
    rows = []
    for i in range(len(candidates)):  # a candidate's pairs next to each other: its response is scored once
        rows.append({"id": ids[i], "source_id": ids[i], "kind": "real", "instruction": instructions[i], "donor": ""})
        for kind, (donors, _) in kinds.items():
            if i in donors:
                rows.append({"id": f"swap-{kind}:{ids[i]}", "source_id": ids[i], "kind": kind,
                             "instruction": instructions[donors[i]], "donor": ids[donors[i]]})
    index = {cid: i for i, cid in enumerate(ids)}
    for row in rows:
        i = index[row["source_id"]]
        row.update({"language": languages[i], "fold": folds[i], "output": candidates[i]["output"],
                    "response": responses[i]})
    table = Dataset.from_list(rows)
    features = likelihood_features(engine, table["instruction"], table["response"], table["language"])
    table = table.add_column("base_likelihood", features[:, 0].tolist())
    table = table.add_column("base_pmi", features[:, 2].tolist())
    step.save(table)
    return {
        "rows_in": len(candidates),
        "rows_out": len(table),
        "pairs": dict(Counter(table["kind"])),
        "without_donor": {kind: dict(missing) for kind, (_, missing) in kinds.items()},
        "folds": ref.folds,
        **engine.report(),
    }
