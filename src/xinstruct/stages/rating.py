"""Refinement, the rating side: the evaluator (steps ``iter-k/evaluator``), the ratings of every candidate
(``iter-k/ratings``) and the rows that meet the keep rule (``iter-k/kept``). See :mod:`.refinement` for the
iteration as a whole.

Rating prompts, in training and in rating alike, hold the whole frame (template, instruction, cue) and a
response cut to ``refinement.response_tokens``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..budget import PromptFitter
from ..config import Recipe
from ..errors import StageError
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import RATING_OPTIONS, rating_prompt
from ..quality import LengthBaseline, auc, rating_figures
from ..rundir import RATING_HEAD, Step, iteration_step
from ..steps import StepContext, StepSpec, engine_settings
from ..training import role_settings, train_role
from .generation import fitter_for, split_rows, unit_hash
from .likelihood import LikelihoodHead, likelihood_features

logger = logging.getLogger(__name__)

RATING_COLUMNS = ("p1", "p2", "p3", "expected_rating", "rating")


def rating_prompt_limit(recipe: Recipe) -> int | None:
    """The longest rating prompt: the evaluator's ``max_length`` less its completion (the digit and EOS), so that
    TRL never cuts a training row; the same limit holds when rating."""
    max_length = recipe.refinement.evaluator.training.get("max_length", 1024)
    return None if max_length is None else max_length - 2


def fit_rating_prompts(recipe: Recipe, fitter: PromptFitter, instructions: list[str], responses: list[str],
                       languages: list[str]) -> tuple[list[str], int]:
    """Rating prompts with the response cut to ``refinement.response_tokens`` and to the prompt limit (the frame
    and the instruction are never cut); and how many responses were cut."""
    budget, limit = recipe.refinement.response_tokens, rating_prompt_limit(recipe)
    fitted = []
    for instruction, response, code in zip(instructions, responses, languages):
        name = get_language(code).name
        render = lambda r, i=instruction, n=name: rating_prompt(i, r, n)  # noqa: E731
        fitted.append(fitter.fit(render, response, limit, budget))
    return [f.prompt for f in fitted], sum(f.cut for f in fitted)


def evaluator_training_set(recipe: Recipe, pseudo: Dataset, fitter: PromptFitter) -> tuple[Dataset, int]:
    """Pseudo-ratings as rating-prompt examples whose completion is exactly the level ("1", "2" or "3"); and how
    many responses the prompt budget cut."""
    prompts, cut = fit_rating_prompts(recipe, fitter, pseudo["instruction"], pseudo["response"], pseudo["language"])
    return Dataset.from_dict({"prompt": prompts, "completion": [str(level) for level in pseudo["level"]]}), cut


def score_ratings(engine: Engine, prompts: list[str]) -> dict[str, list]:
    """P(1), P(2), P(3), expected rating and argmax rating of each rating prompt, from one forward pass each."""
    return scores_from_probs(engine.score(prompts, list(RATING_OPTIONS)))


def scores_from_probs(probs: list) -> dict[str, list]:
    """The stored rating columns from (P(1), P(2), P(3)) per row."""
    return {
        "p1": [p[0] for p in probs],
        "p2": [p[1] for p in probs],
        "p3": [p[2] for p in probs],
        "expected_rating": [p[0] + 2 * p[1] + 3 * p[2] for p in probs],
        "rating": [1 + max(range(3), key=lambda j: p[j]) for p in probs],
    }


def train_evaluator(recipe: Recipe, pseudo: Dataset, step: Step, make_engine,
                    follower: str | None = None) -> dict[str, Any]:
    """Train the evaluator on the training split (``evaluator_kind``: ``sft`` fine-tunes a model to write the
    rating; ``likelihood`` fits a rating head on the ``follower``'s likelihoods, see :mod:`.likelihood`); on the
    held-out split: its figures next to a length-only classifier fitted on the same training rows."""
    role = recipe.refinement.evaluator
    train = split_rows(pseudo, "train")
    heldout = split_rows(pseudo, "heldout")
    report: dict[str, Any] = {"rows_in": len(train), "heldout_rows": len(heldout),
                              "kind": recipe.refinement.evaluator_kind}
    if recipe.refinement.evaluator_kind == "likelihood":
        engine = make_engine(follower)
        features = likelihood_features(engine, train["instruction"], train["response"], train["language"])
        head = LikelihoodHead().fit(features, train["level"])
        head.save(step.path / RATING_HEAD, follower=follower)
        report.update({"model": follower, "head": str(step.path / RATING_HEAD)})
        predict = lambda rows: head.predict_proba(  # noqa: E731
            likelihood_features(engine, rows["instruction"], rows["response"], rows["language"]))
    else:
        fitter = fitter_for(recipe.model_for(role))
        data, cut = evaluator_training_set(recipe, train, fitter)
        report.update({"responses_cut": cut, "metrics": train_role(recipe, role, data, step.path),
                       "model": str(step.model_path)})
        engine = None

        def predict(rows: Dataset) -> list:
            nonlocal engine
            engine = make_engine(str(step.model_path))
            prompts, _ = fit_rating_prompts(recipe, fitter, rows["instruction"], rows["response"], rows["language"])
            scores = score_ratings(engine, prompts)
            return list(zip(scores["p1"], scores["p2"], scores["p3"]))
    if len(heldout):
        probs = predict(heldout)
        report.update(engine.report())
        figures = rating_figures(heldout["level"], probs, heldout["language"])
        gold = sorted(p[2] for p, level in zip(probs, heldout["level"]) if level == 3)
        if gold:  # keep_rule recall: the P(3) that keeps keep_recall of the held-out gold pairs
            report["keep_threshold_at_recall"] = round(float(np.quantile(gold, 1 - recipe.refinement.keep_recall)), 6)
        report["heldout"] = figures
        report["heldout_accuracy"] = figures["accuracy"]
        baseline = LengthBaseline().fit(train["response_tokens"], train["level"])
        report["length_baseline"] = rating_figures(heldout["level"],
                                                   baseline.predict_proba(heldout["response_tokens"]),
                                                   heldout["language"])
    return report


# ------------------------------------------------------------------------------------------------
# rating and filtering
# ------------------------------------------------------------------------------------------------


def plant_negatives(pool: Dataset, share: float, seed: int) -> Dataset:
    """Planted negatives: copies of ``share`` of the pool (chosen by a hash of the id), each with the instruction
    of another row of the same language (a different instruction). ``planted`` marks them; their ids start with
    ``planted:``. Languages with fewer than two distinct instructions get none."""
    if share <= 0 or len(pool) == 0:
        return pool.select([]).add_column("planted", [])
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, code in enumerate(pool["language"]):
        by_lang[code].append(i)
    instructions, ids = pool["instruction"], pool["id"]
    picks: list[tuple[int, int]] = []
    for idx in by_lang.values():
        order = sorted(idx, key=lambda i: unit_hash("plant:" + ids[i], seed))
        for n, i in enumerate(order[: round(share * len(idx))]):
            donors = [j for j in order[n + 1 :] + order[:n] if instructions[j] != instructions[i]]
            if donors:
                picks.append((i, donors[0]))
    rows = pool.select([i for i, _ in picks])
    rows = rows.map(lambda r, k: {"id": f"planted:{r['id']}", "instruction": instructions[picks[k][1]]},
                    with_indices=True)
    return rows.add_column("planted", [True] * len(rows))


def effective_threshold(recipe: Recipe, evaluator_manifest: dict[str, Any] | None) -> float | None:
    """The P(3) threshold of the keep rule: ``keep_threshold`` (``threshold``), the evaluator's calibrated one
    (``recall``: keeps ``keep_recall`` of the held-out gold pairs), or ``None`` (``argmax``)."""
    ref = recipe.refinement
    if ref.keep_rule == "threshold":
        return ref.keep_threshold
    if ref.keep_rule == "recall":
        value = (evaluator_manifest or {}).get("keep_threshold_at_recall")
        if value is None:
            raise StageError("keep_rule: recall needs held-out level-3 pseudo-ratings to calibrate on; "
                             "hold out seed pairs (data.seeds.heldout_fraction) or use keep_rule: argmax / threshold.")
        return value
    return None


def rate_candidates(recipe: Recipe, pool: Dataset, step: Step, engine: Engine, iteration: int, evaluator: str,
                    head: str | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Score every row of ``pool`` and the planted negatives with the evaluator, shard by shard (resumable). The
    real rows go to ``data``; the planted ones to ``planted``, never further.

    ``engine`` serves the model ``evaluator`` (a folder: its tokenizer fits the responses to the budget): the SFT
    evaluator, or for ``evaluator_kind: likelihood`` the follower whose likelihoods feed the rating ``head``."""
    ref = recipe.refinement
    base = pool.remove_columns([c for c in RATING_COLUMNS + ("iteration", "planted") if c in pool.column_names])
    planted = plant_negatives(base, ref.planted_share, recipe.seed + iteration)
    rows = concatenate_datasets([base.add_column("planted", [False] * len(base)), planted])
    fitter = fitter_for(evaluator)

    rating_head = LikelihoodHead.load(Path(head)) if head else None

    def shard(part: Dataset, index: int) -> Dataset:
        if rating_head is not None:
            responses = [fitter.head(text, ref.response_tokens)[0] for text in part["output"]]
            probs = rating_head.predict_proba(likelihood_features(engine, part["instruction"], responses,
                                                                  part["language"]))
            scores = scores_from_probs(probs)
        else:
            prompts, _ = fit_rating_prompts(recipe, fitter, part["instruction"], part["output"], part["language"])
            scores = score_ratings(engine, prompts)
        out = part
        for col in RATING_COLUMNS:
            out = out.add_column(col, scores[col])
        return out.add_column("iteration", [iteration] * len(part))

    rated_all = step.map_shards(rows, ref.shard_size, shard, desc=f"rating (iteration {iteration})")
    _, cut_total = fit_rating_prompts(recipe, fitter, rated_all["instruction"], rated_all["output"],
                                      rated_all["language"])
    is_planted = rated_all["planted"]
    rated = rated_all.select([i for i, p in enumerate(is_planted) if not p]).remove_columns("planted")
    planted_rated = rated_all.select([i for i, p in enumerate(is_planted) if p])
    step.save(rated)
    step.save(planted_rated, "planted")
    threshold = ref.keep_threshold if threshold is None and ref.keep_rule == "threshold" else threshold
    real_kept = keep_mask(rated, ref.keep_rule, threshold)
    planted_kept = keep_mask(planted_rated, ref.keep_rule, threshold)
    drop = lambda mask: round(1 - sum(mask) / len(mask), 4) if mask else None  # noqa: E731
    return {
        "rows_in": len(pool),
        "rows_out": len(rated),
        "rating_histogram": {str(k): v for k, v in sorted(Counter(rated["rating"]).items())},
        "mean_expected_rating": round(sum(rated["expected_rating"]) / max(1, len(rated)), 4),
        "responses_cut": cut_total,
        "keep_threshold": threshold,
        "planted": {
            "rows": len(planted_rated),
            "share": ref.planted_share,
            "drop_rate_planted": drop(planted_kept),
            "drop_rate_real": drop(real_kept),
            "auc_real_vs_planted": auc(rated["p3"], planted_rated["p3"]),
            "rating_histogram": {str(k): v for k, v in sorted(Counter(planted_rated["rating"]).items())},
        },
        **engine.report(),
    }


def keep_mask(rated: Dataset, rule: str, threshold: float | None) -> list[bool]:
    """Which rows survive: ``argmax`` (most likely rating is 3), or ``threshold`` / ``recall`` (P(3) >= threshold)."""
    if rule == "argmax":
        return [r == 3 for r in rated["rating"]]
    return [p >= threshold for p in rated["p3"]]


def keep_rated(recipe: Recipe, rated: Dataset, step: Step, iteration: int,
               threshold: float | None = None) -> dict[str, Any]:
    """Keep the rows that meet the keep rule (``threshold``: see :func:`effective_threshold`); an empty result is an
    error that says what to change."""
    ref = recipe.refinement
    threshold = ref.keep_threshold if threshold is None and ref.keep_rule == "threshold" else threshold
    mask = keep_mask(rated, ref.keep_rule, threshold)
    kept = rated.select([i for i, keep in enumerate(mask) if keep])
    per_in = Counter(rated["language"])
    per_kept = Counter(kept["language"])
    report = {
        "rows_in": len(rated),
        "rows_out": len(kept),
        "keep_rule": ref.keep_rule if ref.keep_rule == "argmax" else f"P(3) >= {threshold:.4f} ({ref.keep_rule})",
        "rows_in_per_language": dict(per_in),
        "rows_out_per_language": {code: per_kept.get(code, 0) for code in per_in},
        "skipped": {"not_rated_3": len(rated) - len(kept)},
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
    likelihood = ref.evaluator_kind == "likelihood"  # the rating head reads the follower's likelihoods
    role = ref.follower if likelihood else ref.evaluator  # the role whose engine rates
    shared = {"response_tokens": ref.response_tokens, "max_length": ref.evaluator.training.get("max_length"),
              "evaluator_kind": ref.evaluator_kind}
    rule = {"keep_rule": ref.keep_rule, "keep_threshold": ref.keep_threshold, "keep_recall": ref.keep_recall}

    def rate(ctx: StepContext) -> dict[str, Any]:
        rater = ctx.model(follower if likelihood else evaluator)  # the model the rating engine serves
        head = str(ctx.steps[evaluator].path / RATING_HEAD) if likelihood else None
        return rate_candidates(ctx.recipe, ctx.load(pool), ctx.step, ctx.engine(role, rater), k, rater, head,
                               effective_threshold(ctx.recipe, ctx.manifest(evaluator)))

    return [
        StepSpec(evaluator, "refinement", (pseudo, follower) if likelihood else (pseudo,),
                 {**shared, "kind": ref.evaluator_kind, "keep_recall": ref.keep_recall,
                  **({} if likelihood else role_settings(recipe, ref.evaluator)),
                  "engine": engine_settings(recipe, role)},
                 lambda ctx: train_evaluator(ctx.recipe, ctx.load(pseudo), ctx.step, ctx.engines(role),
                                             ctx.model(follower))),
        StepSpec(ratings, "refinement", (evaluator, pool),
                 {"iteration": k, "rate": ref.rate, **shared, "seed": recipe.seed, "planted_share": ref.planted_share,
                  **rule, "engine": engine_settings(recipe, role)}, rate),
        StepSpec(iteration_step(k, "kept"), "refinement", (ratings,), rule,
                 lambda ctx: keep_rated(ctx.recipe, ctx.load(ratings), ctx.step, k,
                                        effective_threshold(ctx.recipe, ctx.manifest(evaluator)))),
    ]
