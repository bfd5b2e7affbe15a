"""Refinement, the evaluator (steps ``iter-k/evaluator``): trained on the training pseudo-ratings, calibrated on one
half of the held-out pseudo-ratings and graded on the other, always next to the simple references that could beat it.

- ``evaluator_kind: sft`` fine-tunes a model to write the rating (the paper's evaluator).
- ``evaluator_kind: likelihood`` fits a rating head on a follower's likelihoods (:mod:`.likelihood`). Cross-fitted
  (``refinement.folds`` 2), each fold's follower scores only the seeds of its fold, whose level 2 the other fold's
  follower wrote, and gets its own head.

The held-out pseudo-ratings are split by seed group (:func:`.generation.test_half`): the calibration half sets the
P(3) threshold of ``keep_rule: recall``; the test half gives every reported figure, the realised recall of that
threshold among them. References on the test half: a length-only and a truncation-only classifier fitted on the
training rows, the base model's PMI and plain likelihood alone, and (likelihood kind) the scorer's own raw PMI and
likelihood, which the head must beat to be worth having.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..config import Recipe
from ..errors import StageError
from ..prompts import FOLLOWER_TEMPLATE
from ..quality import (
    OPERATING_RECALLS,
    LengthBaseline,
    TruncationBaseline,
    auc_interval,
    rate_interval,
    rating_figures,
    strongest_reference,
)
from ..rundir import MODEL, RATING_HEAD, Step, fold_dir
from ..training import train_role
from .generation import fitter_for, split_rows, test_half
from .likelihood import GENERIC_INSTRUCTION, LikelihoodHead, likelihood_features
from .rating_prompts import evaluator_training_set, fit_rating_prompts, score_ratings


def _folds_of(rows: Dataset) -> list[int]:
    return rows["fold"] if "fold" in rows.column_names else [0] * len(rows)


def _likelihood_heads(recipe: Recipe, train: Dataset, heldout: Dataset, make_engine, follower: Path
                      ) -> tuple[list[LikelihoodHead], list, np.ndarray]:
    """One head per fold, fitted on the training rows that fold's follower scores; P(1..3) and the features of every
    held-out row from the head and follower of its fold."""
    folds = recipe.refinement.folds
    heads, probs, features = [], [None] * len(heldout), np.zeros((len(heldout), 3))
    train_fold, held_fold = _folds_of(train), _folds_of(heldout)
    for f in range(folds):
        engine = make_engine(str(fold_dir(follower, f, folds) / MODEL))
        rows = train.select([i for i, g in enumerate(train_fold) if g == f])
        if len(set(rows["level"])) < 2:
            raise StageError(f"Fold {f} of the pseudo-ratings has {len(rows)} training row(s) with levels "
                             f"{sorted(set(rows['level']))}: a rating head needs several levels. Add seed pairs "
                             "(refinement.pseudo_ratings.seeds_per_language) or set refinement.cross_fit: false.")
        head = LikelihoodHead().fit(likelihood_features(engine, rows["instruction"], rows["response"],
                                                        rows["language"]), rows["level"])
        heads.append(head)
        idx = [i for i, g in enumerate(held_fold) if g == f]
        if idx:
            part = heldout.select(idx)
            x = likelihood_features(engine, part["instruction"], part["response"], part["language"])
            for i, p, row in zip(idx, head.predict_proba(x), x):
                probs[i], features[i] = p, row
    return heads, probs, features


def _sft_evaluator(recipe: Recipe, train: Dataset, heldout: Dataset, step: Step, make_engine
                   ) -> tuple[dict[str, Any], list]:
    """Fine-tune the evaluator to write the rating; P(1..3) of every held-out row."""
    role = recipe.refinement.evaluator
    fitter = fitter_for(recipe.model_for(role))
    data, cut = evaluator_training_set(recipe, train, fitter)
    report = {"responses_cut": cut, "metrics": train_role(recipe, role, data, step.path),
              "model": str(step.model_path)}
    if not len(heldout):
        return report, []
    engine = make_engine(str(step.model_path))
    prompts, _ = fit_rating_prompts(recipe, fitter, heldout["instruction"], heldout["response"], heldout["language"])
    scores = score_ratings(engine, prompts)
    return report, list(zip(scores["p1"], scores["p2"], scores["p3"]))


def level_aucs(levels: list[int], scores: list[float] | np.ndarray, seed: int) -> dict[str, Any]:
    """AUC (with a bootstrap interval) of a score for level 3 vs 1 and 3 vs 2."""
    by = {lv: [float(s) for s, t in zip(scores, levels) if t == lv] for lv in (1, 2, 3)}
    return {"auc_3v1": auc_interval(by[3], by[1], seed=seed), "auc_3v2": auc_interval(by[3], by[2], seed=seed)}


def references(recipe: Recipe, train: Dataset, test: Dataset, make_engine,
               scorer_features: np.ndarray | None) -> dict[str, Any]:
    """The simple references on the test half (see the module doc)."""
    levels, seed = test["level"], recipe.seed
    out: dict[str, Any] = {
        "length_only": rating_figures(levels, LengthBaseline().fit(train["response_tokens"], train["level"])
                                      .predict_proba(test["response_tokens"]), test["language"]),
        "truncation_only": rating_figures(levels, TruncationBaseline().fit(train["response"], train["level"])
                                          .predict_proba(test["response"]), test["language"]),
    }
    base = likelihood_features(make_engine(recipe.base_model), test["instruction"], test["response"], test["language"])
    out["base_pmi"] = level_aucs(levels, base[:, 2], seed)
    out["base_likelihood"] = level_aucs(levels, base[:, 0], seed)
    if scorer_features is not None:
        out["scorer_pmi"] = level_aucs(levels, scorer_features[:, 2], seed)
        out["scorer_likelihood"] = level_aucs(levels, scorer_features[:, 0], seed)
    return out


def train_evaluator(recipe: Recipe, pseudo: Dataset, step: Step, make_engine,
                    follower: str | Path | None = None) -> dict[str, Any]:
    """Train the evaluator on the training split (``sft``, or ``likelihood`` heads on the ``follower`` step's
    models), calibrate the keep threshold on the held-out calibration half and report every figure on the test
    half next to its references (see the module doc)."""
    ref = recipe.refinement
    train, heldout = split_rows(pseudo, "train"), split_rows(pseudo, "heldout")
    report: dict[str, Any] = {"rows_in": len(train), "heldout_rows": len(heldout), "kind": ref.evaluator_kind,
                              "folds": ref.folds if ref.evaluator_kind == "likelihood" else 1}
    heads, features = [], None
    if ref.evaluator_kind == "likelihood":
        heads, probs, features = _likelihood_heads(recipe, train, heldout, make_engine, Path(follower))
        report["model"] = str(follower)
    else:
        sft, probs = _sft_evaluator(recipe, train, heldout, step, make_engine)
        report.update(sft)
    threshold = None
    if len(heldout):
        is_test = test_half(heldout, recipe.seed)
        test_idx = [i for i, t in enumerate(is_test) if t]
        calib_gold = [probs[i][2] for i, t in enumerate(is_test) if not t and heldout[i]["level"] == 3]
        test = heldout.select(test_idx)
        test_probs = [probs[i] for i in test_idx]
        report["heldout"] = rating_figures(test["level"], test_probs, test["language"])
        report["heldout"]["calibration_rows"] = len(heldout) - len(test_idx)
        report["heldout_accuracy"] = report["heldout"]["accuracy"]
        report["references"] = references(recipe, train, test, make_engine,
                                          None if features is None else features[test_idx])
        report["strongest_reference"] = {key: strongest_reference(report["references"], key)
                                         for key in ("auc_3v1", "auc_3v2")}
        if calib_gold:  # keep_rule recall: the P(3) that keeps keep_recall of the calibration half's gold pairs
            threshold = round(float(np.quantile(calib_gold, 1 - ref.keep_recall)), 6)
            report["keep_threshold_at_recall"] = threshold
            # the thresholds of other recall levels, for the operating table of the ratings step
            recalls = sorted({*OPERATING_RECALLS, ref.keep_recall})
            report["thresholds_at_recall"] = {str(r): round(float(np.quantile(calib_gold, 1 - r)), 6)
                                              for r in recalls}
            if features is not None:  # the same for the follower's raw PMI alone, the simplest rule to compare with
                calib_pmi = [features[i, 2] for i, t in enumerate(is_test) if not t and heldout[i]["level"] == 3]
                report["pmi_thresholds_at_recall"] = {str(r): round(float(np.quantile(calib_pmi, 1 - r)), 6)
                                                      for r in recalls}
            gold = [p[2] for p, lv in zip(test_probs, test["level"]) if lv == 3]
            report["realised_recall"] = rate_interval(sum(p >= threshold for p in gold), len(gold))
    for f, head in enumerate(heads):
        fold_dir(step.path, f, len(heads)).mkdir(parents=True, exist_ok=True)
        head.save(fold_dir(step.path, f, len(heads)) / RATING_HEAD,
                  follower=str(fold_dir(Path(follower), f, len(heads)) / MODEL), fold=f, folds=len(heads),
                  generic_instruction=GENERIC_INSTRUCTION, template=FOLLOWER_TEMPLATE,
                  response_tokens=ref.response_tokens, keep_rule=ref.keep_rule,
                  keep_threshold={"threshold": ref.keep_threshold, "recall": threshold}.get(ref.keep_rule))
    if heads:
        report["heads"] = [str(fold_dir(step.path, f, len(heads)) / RATING_HEAD) for f in range(len(heads))]
    return report
