"""Refinement checks the method: where each pseudo-rating level comes from, the evaluator's prompt,
the keep rule, and the scores stored per candidate."""

import math

import pytest
from datasets import Dataset

from xinstruct.config import load_recipe
from xinstruct.inference.local import LocalEngine
from xinstruct.prompts import FOLLOWER_TEMPLATE, RATING_TEMPLATE
from xinstruct.rundir import Step
from xinstruct.stages.generation import StageError
from xinstruct.stages.refinement import (
    build_pseudo_ratings,
    evaluator_training_set,
    keep_mask,
    keep_rated,
    rate_candidates,
)

SEEDS = Dataset.from_list(
    [{"id": f"sw-{i}", "language": "sw", "instruction": f"Explain topic {i}.", "output": f"Jibu la Kiswahili namba {i}.", "source": "t"} for i in range(12)]
    + [{"id": f"ta-{i}", "language": "ta", "instruction": f"Describe thing {i}.", "output": f"தமிழ் பதில் {i}.", "source": "t"} for i in range(8)]
)


class RecordingEngine(LocalEngine):
    """The real tiny engine, remembering what it was asked and what it answered."""

    def __init__(self):
        super().__init__("tiny", batch_size=8, progress=False)
        self.calls = []

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        self.calls += list(zip(prompts, out))
        return out


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory, tiny_model):
    recipe = load_recipe(None, ["languages=[sw,ta]", "refinement.pseudo_ratings.decoding.max_new_tokens=6"])
    step = Step(tmp_path_factory.mktemp("run"), "iter-1/pseudo_ratings", {"t": 1})
    step.begin()
    engine = RecordingEngine()
    report = build_pseudo_ratings(recipe, SEEDS, step, engine)
    return step.load(), engine, report


def test_each_seed_gives_levels_3_2_1_from_the_right_sources(pseudo):
    rows, engine, report = pseudo
    assert report["rows_out"] == 3 * len(SEEDS)
    seeds = {r["id"]: r for r in SEEDS}
    answered = dict(engine.calls)
    for r in rows:
        seed = seeds[r["seed_id"]]
        assert r["instruction"] == seed["instruction"] and r["language"] == seed["language"]
        if r["level"] == 3:
            assert r["response"] == seed["output"] and r["source"] == "seed"
        elif r["level"] == 2:  # the follower's answer to the seed instruction, FOLLOWER template
            prompt = FOLLOWER_TEMPLATE.format(instruction=seed["instruction"], language_name=r["language_name"])
            assert r["response"] == answered[prompt] and r["source"] == "follower"
        else:  # another seed's response, same language, never its own
            other_id = r["source"].split(":", 1)[1]
            assert other_id != seed["id"] and seeds[other_id]["language"] == seed["language"]
            assert r["response"] == seeds[other_id]["output"]
    assert len(engine.calls) == len(SEEDS)


def test_heldout_split_keeps_all_levels_of_a_seed_together(pseudo):
    rows, _, report = pseudo
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["seed_id"], r["split"]) == r["split"]
    assert report["heldout_rows"] + report["train_rows"] == len(rows)
    assert report["heldout_rows"] % 3 == 0


def test_evaluator_learns_from_the_documented_rating_prompt(pseudo):
    rows, _, _ = pseudo
    data = evaluator_training_set(rows)
    for r, ex in zip(rows, data):
        assert ex["prompt"] == RATING_TEMPLATE.format(instruction=r["instruction"], response=r["response"], language_name=r["language_name"])
        assert ex["completion"] == str(r["level"])
    assert RATING_TEMPLATE.endswith("\n\n### Rating:\n")


def test_a_language_with_one_seed_cannot_have_mismatched_level_1(tmp_path, tiny_engine):
    recipe = load_recipe(None, ["languages=[sw]"])
    step = Step(tmp_path, "p", {})
    step.begin()
    with pytest.raises(StageError, match="sw has 1 seed pair"):
        build_pseudo_ratings(recipe, SEEDS.select([0]), step, tiny_engine)


RATED = Dataset.from_dict({
    "id": ["a", "b", "c", "d"], "language": ["sw", "sw", "ta", "ta"],
    "p1": [0.1, 0.2, 0.6, 0.3], "p2": [0.2, 0.5, 0.1, 0.3], "p3": [0.7, 0.3, 0.3, 0.4],
    "rating": [3, 2, 1, 3],
})


def test_keep_rule_argmax_and_threshold():
    assert keep_mask(RATED, "argmax", 0.5) == [True, False, False, True]
    assert keep_mask(RATED, "threshold", 0.35) == [True, False, False, True]
    assert keep_mask(RATED, "threshold", 0.3) == [True, True, True, True]
    assert keep_mask(RATED, "threshold", 0.5) == [True, False, False, False]


def test_only_rows_meeting_the_rule_survive(tmp_path):
    recipe = load_recipe(None, ["refinement.keep_rule=threshold", "refinement.keep_threshold=0.5"])
    step = Step(tmp_path, "kept", {})
    step.begin()
    report = keep_rated(recipe, RATED, step, 1)
    assert step.load()["id"] == ["a"]
    assert report["rows_out_per_language"] == {"sw": 1, "ta": 0} and report["skipped"] == {"not_rated_3": 3}


def test_an_iteration_that_keeps_nothing_says_what_to_change(tmp_path):
    recipe = load_recipe(None, ["refinement.keep_rule=threshold", "refinement.keep_threshold=0.9"])
    step = Step(tmp_path, "kept", {})
    step.begin()
    with pytest.raises(StageError, match="Iteration 2 kept no candidate.*keep_threshold"):
        keep_rated(recipe, RATED, step, 2)


def test_rating_stores_probabilities_expected_rating_and_argmax(tmp_path, tiny_engine):
    recipe = load_recipe(None, ["refinement.shard_size=3"])
    pool = SEEDS.select(range(7))
    step = Step(tmp_path, "ratings", {})
    step.begin()
    report = rate_candidates(recipe, pool, step, tiny_engine, iteration=1)
    rated = step.load()
    assert rated["id"] == pool["id"] and report["rows_out"] == 7
    for r in rated:
        assert math.isclose(r["p1"] + r["p2"] + r["p3"], 1.0, rel_tol=1e-5)
        assert math.isclose(r["expected_rating"], r["p1"] + 2 * r["p2"] + 3 * r["p3"], rel_tol=1e-6)
        assert r["rating"] == 1 + [r["p1"], r["p2"], r["p3"]].index(max(r["p1"], r["p2"], r["p3"]))
        assert r["iteration"] == 1
    assert sum(report["rating_histogram"].values()) == 7
