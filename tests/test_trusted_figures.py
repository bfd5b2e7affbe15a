"""The evaluator's figures can fail: with real signal in the likelihoods it must rank level 3 above level 1 (AUC over
0.8), with shuffled levels it must stay near chance, the recall threshold chosen on the calibration half must keep
about ``keep_recall`` of the test half's gold pairs, and a rater must not score its own training rows higher.

The engine here stands in for a language model whose log-likelihoods carry a known signal: a response that holds
its instruction's key word is more likely after that instruction than after the generic one. Everything else (heads
per fold, calibration and test halves, references, swap test) is the project's own code path."""

import hashlib
import random

import pytest
from datasets import Dataset

from xinstruct.config_loader import load_recipe
from xinstruct.inference.base import Engine
from xinstruct.rundir import Step
from xinstruct.stages.evaluator import train_evaluator

SEEDS = 240


def _noise(*parts: str) -> float:
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return random.Random(digest).gauss(0.0, 1.0)


class SignalEngine(Engine):
    """log P(response | prompt) per token = -3 + strength * [the prompt's key word is in the response] + noise."""

    name = "signal"

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def loglik(self, prompts, continuations):
        out = []
        for prompt, text in zip(prompts, continuations):
            words = [w.strip(".") for w in prompt.split() if w.startswith("key")]
            match = any(w in text for w in words)
            per_token = -3.0 + self.strength * match + 0.5 * _noise(prompt, text)
            out.append((per_token * 10, 10))
        return out

    def generate(self, prompts, params):
        raise AssertionError("the evaluator does not generate")

    def score(self, prompts, options):
        raise AssertionError("a likelihood evaluator does not score options")

    def report(self):
        return {}

    def close(self):
        pass


def _pseudo(shuffle: bool) -> Dataset:
    rows = []
    rng = random.Random(0)
    for i in range(SEEDS):
        split = "heldout" if i % 2 else "train"
        other = (i + 2) % SEEDS
        texts = {3: f"maneno key{i} ya jibu {i}", 2: f"jibu fupi key{i}" if i % 3 else f"jibu fupi {i}",
                 1: f"maneno key{other} ya jibu {other}"}
        levels = [3, 2, 1]
        if shuffle:
            rng.shuffle(levels)
        for level, text in zip(levels, texts.values()):
            rows.append({"id": f"s{i}#{level}", "seed_id": f"s{i}", "group": f"g{i}", "fold": i % 4 // 2,
                         "language": "sw", "language_name": "Swahili", "instruction": f"Explain key{i}.",
                         "response": text, "response_tokens": 10, "level": level, "source": "t", "split": split})
    return Dataset.from_list(rows)


def _evaluate(tmp_path, pseudo: Dataset) -> dict:
    recipe = load_recipe(None, ["languages=[sw]", "base_model=tiny", "refinement.evaluator_kind=likelihood",
                                "refinement.keep_rule=recall", "refinement.keep_recall=0.9"])
    step = Step(tmp_path, "iter-1/evaluator", {})
    step.begin()
    return train_evaluator(recipe, pseudo, step, lambda model: SignalEngine(), tmp_path / "iter-1/follower")


def test_with_real_signal_the_evaluator_ranks_gold_above_mismatched(tmp_path):
    report = _evaluate(tmp_path, _pseudo(shuffle=False))
    interval = report["heldout"]["auc_3v1_interval"]
    assert report["heldout"]["auc_3v1"] > 0.8 and interval["low"] > 0.7
    assert report["folds"] == 2 and len(report["heads"]) == 2


def test_with_shuffled_levels_the_evaluator_stays_near_chance(tmp_path):
    report = _evaluate(tmp_path, _pseudo(shuffle=True))
    interval = report["heldout"]["auc_3v1_interval"]
    assert 0.35 < report["heldout"]["auc_3v1"] < 0.65 and interval["low"] < 0.5 < interval["high"]


def test_the_recall_threshold_from_the_calibration_half_holds_on_the_test_half(tmp_path):
    report = _evaluate(tmp_path, _pseudo(shuffle=False))
    recall = report["realised_recall"]
    assert report["heldout"]["calibration_rows"] > 0 and recall["n"] > 40  # graded on other rows than it was set on
    assert recall["low"] <= 0.9 <= recall["high"] and abs(recall["rate"] - 0.9) < 0.1


def test_the_swap_test_sees_a_rater_that_scores_its_own_training_rows_higher():
    from xinstruct.stages.rating import swap_test

    ids = [f"c{i}" for i in range(200)]
    trained = set(ids[:100])
    real = {i: {"p3": 0.6 + (0.3 if i in trained else 0.0) + 0.05 * _noise(i), "pmi": 0.0} for i in ids}
    swapped = Dataset.from_list([{"id": f"swap-easy:{i}", "source_id": i, "kind": "easy",
                                  "p3": 0.6 + 0.05 * _noise("s", i), "pmi": 0.0} for i in ids])
    table = Dataset.from_dict({"id": ids + list(swapped["id"]), "base_pmi": [_noise("b", i) for i in ids * 2]})
    gap = swap_test(real, table, swapped, True, trained, 0)["training_gap"]
    assert gap["inside"]["p3"]["auc"] == pytest.approx(1.0, abs=0.01)
    assert gap["outside"]["p3"]["auc"] == pytest.approx(0.5, abs=0.15)
    assert gap["gap_p3"] > 0.3 and abs(gap["gap_base_pmi"]) < 0.2  # the base model sees no difference
    excess = gap["excess_gap_p3_interval"]
    assert excess["low"] > 0.2 and excess["low"] <= excess["excess"] <= excess["high"]  # the gap is no accident


def test_the_excess_gap_interval_covers_zero_for_a_rater_that_does_not_remember():
    from xinstruct.stages.rating import swap_test

    ids = [f"c{i}" for i in range(60)]
    real = {i: {"p3": 0.6 + 0.1 * _noise(i), "pmi": 0.0} for i in ids}
    swapped = Dataset.from_list([{"id": f"swap-easy:{i}", "source_id": i, "kind": "easy",
                                  "p3": 0.55 + 0.1 * _noise("s", i), "pmi": 0.0} for i in ids])
    table = Dataset.from_dict({"id": ids + list(swapped["id"]), "base_pmi": [_noise("b", i) for i in ids * 2]})
    excess = swap_test(real, table, swapped, True, set(ids[:20]), 0)["training_gap"]["excess_gap_p3_interval"]
    assert (excess["inside"], excess["outside"]) == (20, 40)
    assert excess["low"] < 0 < excess["high"] and excess["high"] - excess["low"] > 0.2  # 60 pairs: wide


def test_drop_rates_their_ratio_and_the_operating_table():
    from xinstruct.stages.rating import planted_figures

    ids = [f"c{i}" for i in range(100)]
    rated = Dataset.from_dict({"id": ids, "rating": [3] * 100, "p3": [0.9 if i % 5 else 0.1 for i in range(100)]})
    swapped = Dataset.from_dict({"id": [f"s{i}" for i in range(100)], "source_id": ids, "kind": ["easy"] * 100,
                                 "rating": [1] * 100, "p3": [0.1 if i % 2 else 0.95 for i in range(100)]})
    out = planted_figures(rated, swapped, "recall", 0.5, {"p3": {"0.99": 0.99, "0.5": 0.5}}, seed=1)
    assert out["drop_rate_real"]["rate"] == 0.2 and out["drop_rate_easy"]["rate"] == 0.5
    assert out["drop_rate_hard"] is None and out["ratio_easy_vs_real"]["ratio"] == 2.5
    assert out["ratio_easy_vs_real"]["low"] < 2.5 < out["ratio_easy_vs_real"]["high"]
    assert [(op["score"], op["recall"]) for op in out["operating"]] == [("p3", 0.5), ("p3", 0.99)]
    assert out["operating"][1]["drop_rate_real"]["rate"] == 1.0 == out["operating"][1]["drop_rate_easy"]["rate"]
    assert out["operating"][1]["ratio_easy_vs_real"]["ratio"] == 1.0


def test_a_reference_that_ranks_the_wrong_way_up_counts_reversed():
    from xinstruct.quality import strongest_reference

    refs = {"length_only": {"auc_3v2": 0.5}, "likelihood": {"auc_3v2": {"auc": 0.03}}, "pmi": {"auc_3v2": 0.6}}
    assert strongest_reference(refs, "auc_3v2") == {"name": "likelihood (reversed)", "auc": 0.97}


def test_keep_score_pmi_keeps_by_the_raters_pmi_at_its_calibrated_threshold(tmp_path):
    """``keep_score: pmi`` thresholds the rater's PMI at the calibration half's recall level, whatever P(3) says; the
    recipe refuses it where no PMI exists (SFT evaluator) or no recall is calibrated."""
    from xinstruct.errors import RecipeError
    from xinstruct.stages.rating import effective_threshold, keep_rated

    sets = ["languages=[sw]", "base_model=tiny", "refinement.evaluator_kind=likelihood", "refinement.keep_rule=recall",
            "refinement.keep_recall=0.8", "refinement.keep_score=pmi"]
    recipe = load_recipe(None, sets)
    calibrated = {"keep_threshold_at_recall": 0.7, "pmi_thresholds_at_recall": {"0.5": 0.3, "0.8": 0.1}}
    assert effective_threshold(recipe, calibrated) == 0.1
    assert effective_threshold(load_recipe(None, sets[:-1]), calibrated) == 0.7
    rated = Dataset.from_dict({"id": ["a", "b", "c"], "language": ["sw"] * 3, "rating": [3, 3, 1],
                               "p3": [0.9, 0.2, 0.9], "pmi": [0.05, 0.4, 0.2]})
    step = Step(tmp_path, "iter-1/kept", {})
    step.begin()
    report = keep_rated(recipe, rated, step, 1, 0.1)
    assert step.load()["id"] == ["b", "c"] and report["keep_rule"] == "rater PMI >= 0.1000 (recall)"
    for wrong in (["refinement.evaluator_kind=sft"], ["refinement.keep_rule=argmax"]):
        with pytest.raises(RecipeError, match="keep_score: pmi"):
            load_recipe(None, sets + wrong)
