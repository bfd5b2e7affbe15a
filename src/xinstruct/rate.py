"""``xinstruct rate RUN pairs.jsonl``: rate any (English instruction, native response) pairs with a finished run's
evaluator of one iteration, whatever its kind, through the same scoring code as the ratings step
(:func:`xinstruct.stages.rating.score_rows`).

A cross-fitted likelihood evaluator has one follower and one head per fold; rows from outside the run were seen by
neither, so each fold rates every row and the probabilities are averaged. (The run's own candidates are rated in
``iter-k/ratings`` by the fold that did not train on them; read them there.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset

from .errors import DataError, RunDirError
from .rundir import MODEL, RATING_HEAD, RECIPE, RunDir, fold_dir

FIELDS = ("instruction", "output", "language")


def read_pairs(path: str | Path) -> Dataset:
    """Read a JSONL file of pairs; a line that is not JSON or a pair that lacks a field is an error that names file
    and line (pair)."""
    from .data.readers import read_jsonl
    from .languages import get as get_language

    if not Path(path).is_file():
        raise DataError(f"{path}: no such file; give a JSONL file of pairs ({', '.join(FIELDS)}).")
    rows = []
    for n, row in enumerate(read_jsonl(Path(path)), 1):
        missing = [f for f in FIELDS if not str(row.get(f) or "").strip()]
        if missing:
            raise DataError(f"{path}: pair {n}: missing or empty {', '.join(missing)}; each line needs "
                            f"{', '.join(FIELDS)}.")
        get_language(row["language"])  # an unknown code is a clear error
        rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no pair to rate.")
    return Dataset.from_list(rows)


def rate_pairs(run_dir: str | Path, pairs: Dataset, iteration: int | None = None) -> tuple[Dataset, dict[str, Any]]:
    """``pairs`` with ``p1``, ``p2``, ``p3``, ``expected_rating`` and ``rating`` from iteration ``iteration``'s
    evaluator (default: the last), and what rated them."""
    from .config_loader import load_recipe
    from .inference import make_engine
    from .stages.generation import fitter_for
    from .stages.likelihood import LikelihoodHead
    from .stages.rating import score_rows
    from .stages.rating_prompts import RATING_COLUMNS, scores_from_probs

    run = RunDir(run_dir)
    recipe = load_recipe(run.path / RECIPE)
    k = iteration or run.iterations
    evaluator = run.path / run.role_step("evaluator", k)
    if not run.finished(run.role_step("evaluator", k)):
        raise RunDirError(f"{run.path} has no finished evaluator of iteration {k}; run the recipe first.")
    ref = recipe.refinement
    if ref.evaluator_kind == "likelihood":
        follower = run.path / run.role_step("follower", k)
        raters = [(fold_dir(follower, f, ref.folds) / MODEL, fold_dir(evaluator, f, ref.folds) / RATING_HEAD)
                  for f in range(ref.folds)]
    else:
        raters = [(evaluator / MODEL, None)]
    totals = None
    for model, head in raters:
        engine = make_engine(recipe.engine_for(ref.follower if head else ref.evaluator), str(model))
        try:
            scores = score_rows(recipe, pairs, engine, fitter_for(str(model)), LikelihoodHead.load(head) if head
                                else None)
        finally:
            engine.close()
        probs = list(zip(scores["p1"], scores["p2"], scores["p3"]))
        totals = probs if totals is None else [tuple(a + b for a, b in zip(t, p)) for t, p in zip(totals, probs)]
    averaged = scores_from_probs([[v / len(raters) for v in row] for row in totals])
    rated = pairs.remove_columns([c for c in RATING_COLUMNS if c in pairs.column_names])
    for col in RATING_COLUMNS:
        rated = rated.add_column(col, averaged[col])
    return rated, {"iteration": k, "kind": ref.evaluator_kind, "raters": [str(m) for m, _ in raters],
                   "rows": len(rated)}
