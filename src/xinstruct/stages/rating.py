"""Refinement, the rating side: the ratings of every candidate and its swapped copies (``iter-k/ratings``) and the
rows that meet the keep rule (``iter-k/kept``); the evaluator that rates is trained in :mod:`.evaluator`. See
:mod:`.refinement` for the iteration as a whole.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..config import Recipe
from ..errors import StageError
from ..inference import Engine
from ..quality import SCORE_NAMES, auc_interval, gap_interval, rate_interval, ratio_interval
from ..rundir import MODEL, RATING_HEAD, Step, fold_dir, iteration_step
from ..steps import StepContext, StepSpec, engine_settings
from ..training import role_settings
from .crossfit import other_fold
from .evaluator import train_evaluator
from .generation import fitter_for
from .likelihood import LikelihoodHead, likelihood_features
from .rating_prompts import RATING_COLUMNS, fit_rating_prompts, score_ratings, scores_from_probs

logger = logging.getLogger(__name__)
# the scores of the operating table, and the evaluator manifest's thresholds for them
OPERATING_SCORES = {"p3": "thresholds_at_recall", "pmi": "pmi_thresholds_at_recall"}

# ------------------------------------------------------------------------------------------------
# rating and filtering
# ------------------------------------------------------------------------------------------------


def effective_threshold(recipe: Recipe, evaluator_manifest: dict[str, Any] | None) -> float | None:
    """The threshold of the keep rule on its score (``keep_score``): ``keep_threshold`` (``threshold``), the
    evaluator's calibrated one (``recall``: keeps ``keep_recall`` of the held-out gold pairs of the calibration half,
    on P(3) or on the rater's PMI), or ``None`` (``argmax``)."""
    ref = recipe.refinement
    if ref.keep_rule == "threshold":
        return ref.keep_threshold
    if ref.keep_rule == "recall":
        manifest = evaluator_manifest or {}
        value = (manifest.get("keep_threshold_at_recall") if ref.keep_score == "p3" else
                 (manifest.get("pmi_thresholds_at_recall") or {}).get(str(ref.keep_recall)))
        if value is None:
            raise StageError("keep_rule: recall needs held-out level-3 pseudo-ratings to calibrate on; "
                             "hold out seed pairs (data.seeds.heldout_fraction) or use keep_rule: argmax / threshold.")
        return value
    return None


def rate_candidates(recipe: Recipe, pool: Dataset, swaps: Dataset, step: Step, engines: list[Engine], iteration: int,
                    raters: list[str], heads: list[str] | None = None, threshold: float | None = None,
                    trained_ids: set[str] | None = None, thresholds: dict[str, dict[str, float]] | None = None
                    ) -> dict[str, Any]:
    """Score every row of ``pool`` and its swapped copies (from the ``swaps`` step) with the evaluator, shard by shard
    (resumable). The real rows go to ``data``; the swapped ones (the planted negatives) to ``planted``, never further.

    ``engines[r]`` serves ``raters[r]`` (a folder: its tokenizer fits the responses to the budget): the SFT evaluator
    (one rater), or for ``evaluator_kind: likelihood`` the follower of fold ``r``, whose likelihoods feed ``heads[r]``.
    A cross-fitted pool row of fold ``f`` is rated by the other fold, whose follower never trained on it.
    ``trained_ids`` (the rows that trained this iteration's followers) split the swap test into rows inside and
    outside that set: the gap between them is what a rater scoring its own training rows would show.
    ``thresholds`` (``{score column: {recall: threshold}}``) add the drop rates at other recall levels, by P(3) and
    by the rater's raw PMI (the operating table).
    """
    ref = recipe.refinement
    base = pool.remove_columns([c for c in RATING_COLUMNS + ("iteration", "planted", "pmi") if c in pool.column_names])
    in_pool = set(base["id"])
    table = swaps.filter(lambda s: s in in_pool, input_columns="source_id")
    folds = len(engines)
    table = table.add_column("rater", [other_fold(f, folds) if heads else 0 for f in table["fold"]])
    fitter = fitter_for(raters[0])
    rating_heads = [LikelihoodHead.load(Path(h)) for h in heads] if heads else None

    scored = step.map_shards(table.select_columns(["id", "language", "instruction", "output", "rater"]),
                             ref.shard_size, lambda part, _: _score_by_rater(recipe, part, engines, fitter,
                                                                             rating_heads),
                             desc=f"rating (iteration {iteration})")
    scored = {row["id"]: row for row in scored}
    _, cut_total = fit_rating_prompts(recipe, fitter, table["instruction"], table["output"], table["language"])
    rated = base
    for col in RATING_COLUMNS:
        rated = rated.add_column(col, [scored[i][col] for i in base["id"]])
    if ref.keep_score == "pmi":  # the kept step thresholds it
        rated = rated.add_column("pmi", [scored[i]["pmi"] for i in base["id"]])
    rated = rated.add_column("iteration", [iteration] * len(base))
    swapped = table.filter(lambda k: k != "real", input_columns="kind")
    for col in (*RATING_COLUMNS, "likelihood", "pmi"):
        swapped = swapped.add_column(col, [scored[i][col] for i in swapped["id"]])
    step.save(rated)
    step.save(swapped, "planted")
    threshold = ref.keep_threshold if threshold is None and ref.keep_rule == "threshold" else threshold
    real_scores = {i: scored[i] for i in base["id"]}
    return {
        "rows_in": len(pool),
        "rows_out": len(rated),
        "rating_histogram": {str(k): v for k, v in sorted(Counter(rated["rating"]).items())},
        "mean_expected_rating": round(sum(rated["expected_rating"]) / max(1, len(rated)), 4),
        "responses_cut": cut_total,
        "keep_threshold": threshold,
        "raters": raters,
        "keep_score": ref.keep_score,
        "planted": planted_figures(rated if "pmi" in rated.column_names else
                                   rated.add_column("pmi", [scored[i]["pmi"] for i in base["id"]]), swapped,
                                   ref.keep_rule, threshold, thresholds, recipe.seed, ref.keep_score),
        "swap_test": swap_test(real_scores, table, swapped, bool(heads), trained_ids, recipe.seed),
        **engines[0].report(),
    }


def _score_by_rater(recipe: Recipe, part: Dataset, engines: list[Engine], fitter,
                    heads: list[LikelihoodHead] | None) -> Dataset:
    """:func:`score_rows` of one shard, each row by its ``rater`` (engine and head)."""
    columns = {col: [0.0] * len(part) for col in (*RATING_COLUMNS, "likelihood", "pmi")}
    for r in sorted(set(part["rater"])):
        idx = [i for i, x in enumerate(part["rater"]) if x == r]
        scores = score_rows(recipe, part.select(idx), engines[r], fitter, heads[r] if heads else None)
        for col, values in scores.items():
            for i, value in zip(idx, values):
                columns[col][i] = value
    columns["rating"] = [int(v) for v in columns["rating"]]
    return Dataset.from_dict({"id": part["id"], **columns})


def score_rows(recipe: Recipe, rows: Dataset, engine: Engine, fitter, head: LikelihoodHead | None = None
               ) -> dict[str, list]:
    """One rater's scores of ``rows`` (``instruction``, ``output``, ``language``): P(1), P(2), P(3), the expected
    and argmax rating, and the likelihood features behind them (zeros for an SFT evaluator). With a likelihood
    ``head``, ``engine`` serves the follower whose features it reads; without, the SFT evaluator. The response is
    cut to ``refinement.response_tokens`` (``fitter``: the rater's tokenizer), as when the evaluator was trained."""
    if head is not None:
        responses = [fitter.head(text, recipe.refinement.response_tokens)[0] for text in rows["output"]]
        x = likelihood_features(engine, rows["instruction"], responses, rows["language"])
        return {**scores_from_probs(head.predict_proba(x)), "likelihood": x[:, 0].tolist(), "pmi": x[:, 2].tolist()}
    prompts, _ = fit_rating_prompts(recipe, fitter, rows["instruction"], rows["output"], rows["language"])
    zeros = [0.0] * len(rows)
    return {**score_ratings(engine, prompts), "likelihood": zeros, "pmi": zeros}


def planted_figures(rated: Dataset, swapped: Dataset, rule: str, threshold: float | None,
                    thresholds: dict[str, dict[str, float]] | None = None, seed: int = 0,
                    score: str = "p3") -> dict[str, Any]:
    """Drop rates of the real rows and of each kind of swapped row under the keep rule (on ``score``), with Wilson
    intervals; the
    ratio of easy-swap to real drop rates with a paired bootstrap interval; and the same figures at the
    ``thresholds`` of other recall levels (``{score column: {recall: threshold}}``, calibrated on the evaluator's
    calibration half): the operating table, which shows what another ``keep_recall`` would trade and what a rule on
    the rater's raw PMI alone would do."""
    out = {"rows": len(swapped), "score": score, **_drop_figures(rated, swapped, rule, threshold, seed, score)}
    out["operating"] = [{"score": score, "recall": float(recall), "threshold": value,
                         **_drop_figures(rated, swapped, "recall", value, seed, score)}
                        for score, levels in (thresholds or {}).items()
                        for recall, value in sorted(levels.items(), key=lambda kv: float(kv[0]))]
    return out


def _drop_figures(rated: Dataset, swapped: Dataset, rule: str, threshold: float | None, seed: int,
                  score: str = "p3") -> dict[str, Any]:
    dropped = {}
    for kind, rows in (("real", rated), *((k, swapped.filter(lambda x, k=k: x == k, input_columns="kind"))
                                          for k in ("easy", "hard"))):
        dropped[kind] = dict(zip(rows["id"], (not keep for keep in keep_mask(rows, rule, threshold, score))))
    out = {f"drop_rate_{kind}": rate_interval(sum(flags.values()), len(flags)) for kind, flags in dropped.items()}
    sources = dict(zip(swapped["id"], swapped["source_id"]))
    real = dropped["real"]
    pairs = [(flag, real[sources[i]]) for i, flag in dropped["easy"].items() if sources[i] in real]
    out["ratio_easy_vs_real"] = ratio_interval([a for a, _ in pairs], [b for _, b in pairs], seed=seed)
    return out


def swap_test(real: dict[str, dict], table: Dataset, swapped: Dataset, likelihood: bool,
              trained_ids: set[str] | None, seed: int) -> dict[str, Any]:
    """AUC of each score for matched vs swapped pairs (paired bootstrap interval), per swap kind: the rater's P(3),
    the rater's raw PMI (likelihood kind) and the base model's PMI; and for easy swaps the same AUCs inside and
    outside ``trained_ids`` (the gap, and its excess over the base model's gap on the same rows)."""
    rows = {**{row["id"]: row for row in swapped}, **real}
    base_pmi = dict(zip(table["id"], table["base_pmi"]))
    names = ("p3", "pmi", "base_pmi") if likelihood else ("p3", "base_pmi")

    def value(name: str, row_id: str) -> float:
        return base_pmi[row_id] if name == "base_pmi" else rows[row_id][name]

    def aucs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
        return {name: auc_interval([value(name, a) for a, _ in pairs], [value(name, b) for _, b in pairs],
                                   paired=True, seed=seed) for name in names}

    out: dict[str, Any] = {}
    for kind in ("easy", "hard"):
        pairs = [(row["source_id"], row["id"]) for row in swapped if row["kind"] == kind]
        if not pairs:
            continue
        out[kind] = aucs(pairs)
        if kind == "easy" and trained_ids is not None:
            inside = [p for p in pairs if p[0] in trained_ids]
            outside = [p for p in pairs if p[0] not in trained_ids]
            gap: dict[str, Any] = {"rows_inside": len(inside), "rows_outside": len(outside)}
            if inside and outside:
                gap.update({"inside": aucs(inside), "outside": aucs(outside)})
                gap.update({f"gap_{name}": round(gap["inside"][name]["auc"] - gap["outside"][name]["auc"], 4)
                            for name in names})
                # the groups may differ in difficulty: the base model's gap on the same rows is the control, and
                # what the rater adds over it is what training on the rows would explain
                gap["excess_gap_p3"] = round(gap["gap_p3"] - gap["gap_base_pmi"], 4)
                gap["excess_gap_p3_interval"] = gap_interval(*(
                    tuple([value(n, pair[i]) for pair in group] for n in ("p3", "base_pmi") for i in (0, 1))
                    for group in (inside, outside)), seed=seed)
            out["training_gap"] = gap
    return out


def keep_mask(rated: Dataset, rule: str, threshold: float | None, score: str = "p3") -> list[bool]:
    """Which rows survive: ``argmax`` (most likely rating is 3), or ``threshold`` / ``recall`` (``score``, P(3)
    unless told, at least ``threshold``)."""
    if rule == "argmax":
        return [r == 3 for r in rated["rating"]]
    return [p >= threshold for p in rated[score]]


def keep_rated(recipe: Recipe, rated: Dataset, step: Step, iteration: int,
               threshold: float | None = None) -> dict[str, Any]:
    """Keep the rows that meet the keep rule (``threshold``: see :func:`effective_threshold`); an empty result is an
    error that says what to change."""
    ref = recipe.refinement
    threshold = ref.keep_threshold if threshold is None and ref.keep_rule == "threshold" else threshold
    mask = keep_mask(rated, ref.keep_rule, threshold, ref.keep_score)
    kept = rated.select([i for i, keep in enumerate(mask) if keep])
    per_in = Counter(rated["language"])
    per_kept = Counter(kept["language"])
    report = {
        "rows_in": len(rated),
        "rows_out": len(kept),
        "keep_rule": ref.keep_rule if ref.keep_rule == "argmax" else
        f"{SCORE_NAMES[ref.keep_score]} >= {threshold:.4f} ({ref.keep_rule})",
        "rows_in_per_language": dict(per_in),
        "rows_out_per_language": {code: per_kept.get(code, 0) for code in per_in},
        "skipped": {"below_keep_rule": len(rated) - len(kept)},
    }
    if len(kept) == 0:
        raise StageError(
            f"Iteration {iteration} kept no candidate: ratings {dict(Counter(rated['rating']))} under keep rule "
            f"{report['keep_rule']}. Lower refinement.keep_threshold with keep_rule: threshold, train the evaluator "
            "longer, or add data."
        )
    step.save(kept)
    return report


def rating_steps(recipe: Recipe, k: int) -> list[StepSpec]:
    """The evaluator, ratings and kept steps of iteration ``k`` (see :func:`.refinement.iteration_steps`)."""
    ref = recipe.refinement
    follower, pseudo = iteration_step(k, "follower"), iteration_step(k, "pseudo_ratings")
    evaluator, ratings = iteration_step(k, "evaluator"), iteration_step(k, "ratings")
    pool = iteration_step(k - 1, "kept") if k > 1 and ref.rate == "kept" else "candidates"
    trained_on = "candidates" if k == 1 else iteration_step(k - 1, "kept")
    likelihood = ref.evaluator_kind == "likelihood"  # the rating head reads the follower's likelihoods
    role = ref.follower if likelihood else ref.evaluator  # the role whose engine rates
    shared = {"response_tokens": ref.response_tokens, "max_length": ref.evaluator.training.get("max_length"),
              "evaluator_kind": ref.evaluator_kind, "folds": ref.folds}
    rule = {"keep_rule": ref.keep_rule, "keep_threshold": ref.keep_threshold, "keep_recall": ref.keep_recall,
            **({"keep_score": ref.keep_score} if ref.keep_score != "p3" else {})}  # P(3) recipes keep their hashes

    def rate(ctx: StepContext) -> dict[str, Any]:
        if likelihood:
            folder = ctx.steps[follower].path
            raters = [str(fold_dir(folder, f, ref.folds) / MODEL) for f in range(ref.folds)]
            heads = [str(fold_dir(ctx.steps[evaluator].path, f, ref.folds) / RATING_HEAD) for f in range(ref.folds)]
        else:
            raters, heads = [ctx.model(evaluator)], None
        trained = set(ctx.load(trained_on)["id"])
        calibrated = ctx.manifest(evaluator)
        return rate_candidates(ctx.recipe, ctx.load(pool), ctx.load("swaps"), ctx.step,
                               [ctx.engine(role, r) for r in raters], k, raters, heads,
                               effective_threshold(ctx.recipe, calibrated), trained,
                               {score: (calibrated or {})[key] for score, key in OPERATING_SCORES.items()
                                if (calibrated or {}).get(key)})

    return [
        StepSpec(evaluator, "refinement", (pseudo, follower) if likelihood else (pseudo,),
                 {**shared, "kind": ref.evaluator_kind, "keep_recall": ref.keep_recall, "seed": recipe.seed,
                  "base_model": recipe.base_model,
                  **({} if likelihood else role_settings(recipe, ref.evaluator)),
                  "engine": engine_settings(recipe, role)},
                 lambda ctx: train_evaluator(ctx.recipe, ctx.load(pseudo), ctx.step, ctx.engines(role),
                                             ctx.steps[follower].path)),
        StepSpec(ratings, "refinement", (evaluator, pool, "swaps", trained_on),
                 {"iteration": k, "rate": ref.rate, **shared, "seed": recipe.seed, **rule,
                  "engine": engine_settings(recipe, role)}, rate),
        StepSpec(iteration_step(k, "kept"), "refinement", (ratings,), rule,
                 lambda ctx: keep_rated(ctx.recipe, ctx.load(ratings), ctx.step, k,
                                        effective_threshold(ctx.recipe, ctx.manifest(evaluator)))),
    ]
