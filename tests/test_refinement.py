"""Refinement checks the method: where each pseudo-rating level comes from, that no held-out seed reaches a
training row, that levels cannot be told apart by length, the evaluator's prompt and budget, the keep rule,
planted negatives, and the scores stored per candidate."""

import json
import math

import pytest
from datasets import Dataset

from xinstruct.budget import PromptFitter, load_tokenizer
from xinstruct.config_loader import load_recipe
from xinstruct.errors import StageError
from xinstruct.inference.local import LocalEngine
from xinstruct.prompts import FOLLOWER_TEMPLATE, RATING_TEMPLATE, rating_prompt
from xinstruct.rundir import Step
from xinstruct.stages.generation import heldout_split
from xinstruct.stages.rating import keep_mask, keep_rated, rate_candidates
from xinstruct.stages.rating_prompts import evaluator_training_set, fit_rating_prompts
from xinstruct.stages.refinement import build_pseudo_ratings

LONG = " ".join(f"neno{i}" for i in range(80))  # a response far over the budget below
ROWS = (
    [{"id": f"sw-{i}", "language": "sw", "instruction": f"Explain topic {i}.",
      "output": f"Jibu la Kiswahili namba {i}. {LONG}", "source": "t"} for i in range(12)]
    + [{"id": f"ta-{i}", "language": "ta", "instruction": f"Describe thing {i}.",
        "output": f"தமிழ் பதில் {i}. {LONG}", "source": "t"} for i in range(8)]
)
_SEEDS = Dataset.from_list(ROWS)
SEEDS = _SEEDS.add_column("split", heldout_split(_SEEDS, 0.25, 2, 42))
BUDGET = 12


class RecordingEngine(LocalEngine):
    """The real tiny engine, remembering what it was asked and what it answered."""

    def __init__(self):
        super().__init__("tiny", batch_size=8, progress=False)
        self.calls = []

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        self.calls += list(zip(prompts, out))
        return out


def _recipe(*extra):
    return load_recipe(None, ["languages=[sw,ta]", "base_model=tiny", f"refinement.response_tokens={BUDGET}",
                              "refinement.pseudo_ratings.decoding.min_new_tokens=4", *extra])


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory, tiny_model):
    step = Step(tmp_path_factory.mktemp("run"), "iter-1/pseudo_ratings", {"t": 1})
    step.begin()
    engine = RecordingEngine()
    report = build_pseudo_ratings(_recipe(), SEEDS, step, engine, {"fidelity": 0.0})
    return step.load(), engine, report


def test_heldout_split_covers_every_language_with_at_least_the_minimum():
    split = dict(zip(SEEDS["id"], SEEDS["split"]))
    assert sum(s == "heldout" for i, s in split.items() if i.startswith("sw")) == 3  # ceil(0.25 * 12)
    assert sum(s == "heldout" for i, s in split.items() if i.startswith("ta")) == 2  # ceil(0.25 * 8)
    few = Dataset.from_list(ROWS[12:15])
    with pytest.raises(StageError, match="ta has 3 seed pair"):
        heldout_split(few, 0.1, 2, 42)


def test_each_seed_gives_levels_3_2_1_from_the_right_sources(pseudo):
    rows, engine, report = pseudo
    seeds = {r["id"]: r for r in SEEDS}
    answered = dict(engine.calls)
    fitter = PromptFitter(load_tokenizer("tiny"))
    assert len(engine.calls) == len(SEEDS)
    assert report["rows_out"] == 3 * len(SEEDS) - report["skipped"].get("empty_level2_answer", 0)
    for r in rows:
        seed = seeds[r["seed_id"]]
        assert r["instruction"] == seed["instruction"] and r["language"] == seed["language"]
        if r["level"] == 3:
            assert seed["output"].startswith(r["response"]) and r["source"] == "seed"
        elif r["level"] == 2:  # the follower's answer to the seed instruction, FOLLOWER template
            prompt = FOLLOWER_TEMPLATE.format(instruction=seed["instruction"], language_name=r["language_name"])
            assert answered[prompt].strip().startswith(r["response"]) and r["source"] == "follower"
        else:  # another seed's response, same language, never its own
            other_id = r["source"].split(":", 1)[1]
            assert other_id != seed["id"] and seeds[other_id]["language"] == seed["language"]
            assert seeds[other_id]["output"].startswith(r["response"])
        assert r["response_tokens"] == fitter.length(r["response"]) <= BUDGET


def test_no_heldout_seed_reaches_a_training_row(pseudo):
    rows, _, report = pseudo
    seeds = {r["id"]: r for r in SEEDS}
    heldout_outputs = {r["output"][:40] for r in SEEDS if r["split"] == "heldout"}
    for r in rows:
        assert r["split"] == seeds[r["seed_id"]]["split"]  # all levels of a seed stay together
        if r["split"] == "train":
            assert r["response"][:40] not in heldout_outputs  # not as level 3, not as another row's level 1
            if r["level"] == 1:
                assert seeds[r["source"].split(":", 1)[1]]["split"] == "train"
    assert report["heldout_rows"] > 0 and report["heldout_rows"] + report["train_rows"] == len(rows)


def test_levels_of_a_seed_have_the_same_length(pseudo):
    rows, _, report = pseudo
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed_id"], set()).add(r["response_tokens"])
    assert all(len(lengths) == 1 for lengths in by_seed.values())
    assert len(set(report["response_tokens"].values())) == 1  # mean length per level: equal


def test_every_level_is_cut_so_none_ends_where_its_text_ended(pseudo):
    rows, engine, _ = pseudo
    fitter = PromptFitter(load_tokenizer("tiny"))
    seeds = {r["id"]: r for r in SEEDS}
    answered = dict(engine.calls)
    for r in rows:
        seed = seeds[r["seed_id"]]
        if r["level"] == 3:
            full = seed["output"]
        elif r["level"] == 2:
            full = answered[FOLLOWER_TEMPLATE.format(instruction=seed["instruction"],
                                                     language_name=r["language_name"])].strip()
        else:
            full = seeds[r["source"].split(":", 1)[1]]["output"]
        assert r["response_tokens"] < fitter.length(full), r["id"]  # strictly shorter than the text it comes from


def test_an_empty_level2_answer_is_dropped_and_counted(tmp_path, tiny_model):
    class Silent(RecordingEngine):
        def generate(self, prompts, params):
            return ["" if "topic 1." in p else "jibu" for p in prompts]

    step = Step(tmp_path, "p", {})
    step.begin()
    report = build_pseudo_ratings(_recipe(), SEEDS, step, Silent())
    assert report["skipped"] == {"empty_level2_answer": 1}
    rows = step.load()
    assert "sw-1#2" not in rows["id"] and {"sw-1#3", "sw-1#1"} <= set(rows["id"])


def test_evaluator_learns_from_the_documented_rating_prompt_within_the_budget(pseudo):
    rows, _, _ = pseudo
    fitter = PromptFitter(load_tokenizer("tiny"))
    frame = max(fitter.length(rating_prompt(r["instruction"], "", r["language_name"]), special=True) for r in rows)
    recipe = _recipe(f"refinement.evaluator.training={{max_length: {frame + 8}}}")
    data, _ = evaluator_training_set(recipe, rows, fitter)
    for r, ex in zip(rows, data):
        assert ex["completion"] == str(r["level"])
        assert ex["prompt"].startswith(
            RATING_TEMPLATE.split("{instruction}")[0].format(language_name=r["language_name"]))
        assert (f"### Instruction:\n{r['instruction']}\n\n" in ex["prompt"]
                and ex["prompt"].endswith("\n\n### Rating:\n"))
        assert fitter.length(ex["prompt"], special=True) <= frame + 6  # max_length - digit - EOS: TRL never cuts it


def test_rating_prompts_cut_the_response_never_the_frame(tiny_model):
    fitter = PromptFitter(load_tokenizer("tiny"))
    frame = fitter.length(rating_prompt("Explain topic 1.", "", "Swahili"), special=True)
    recipe = _recipe(f"refinement.evaluator.training={{max_length: {frame + 12}}}", "refinement.response_tokens=500")
    prompts, cut = fit_rating_prompts(recipe, fitter, ["Explain topic 1."], [ROWS[1]["output"]], ["sw"])
    assert cut == 1 and prompts[0].endswith("\n\n### Rating:\n") and "Explain topic 1." in prompts[0]
    assert frame < fitter.length(prompts[0], special=True) <= frame + 10
    with pytest.raises(StageError, match="frame alone"):
        fit_rating_prompts(recipe, fitter, ["word " * 60], ["x"], ["sw"])


def test_a_language_with_one_seed_cannot_have_mismatched_level_1(tmp_path, tiny_engine):
    step = Step(tmp_path, "p", {})
    step.begin()
    one = SEEDS.select([0]).map(lambda r: {"split": "train"})
    with pytest.raises(StageError, match="sw has 1 seed pair"):
        build_pseudo_ratings(_recipe(), one, step, tiny_engine)


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
    assert report["rows_out_per_language"] == {"sw": 1, "ta": 0} and report["skipped"] == {"below_keep_rule": 3}


def test_an_iteration_that_keeps_nothing_says_what_to_change(tmp_path):
    recipe = load_recipe(None, ["refinement.keep_rule=threshold", "refinement.keep_threshold=0.9"])
    step = Step(tmp_path, "kept", {})
    step.begin()
    with pytest.raises(StageError, match="Iteration 2 kept no candidate.*keep_threshold"):
        keep_rated(recipe, RATED, step, 2)


POOL = Dataset.from_list([{"id": r["id"], "language": r["language"], "instruction": r["instruction"],
                           "output": r["output"], "source": "t"} for r in ROWS])


def test_swaps_take_another_instruction_of_the_same_language_and_fold():
    from xinstruct.stages.crossfit import fold_of
    from xinstruct.stages.swaps import swap_donors

    ids, langs, instructions = POOL["id"], POOL["language"], POOL["instruction"]
    folds = [fold_of(i, 7, 2) for i in ids]
    donors, missing = swap_donors(ids, langs, instructions, folds, 1.0, 7)
    assert len(donors) + sum(missing.values()) == len(POOL)  # every row swapped or counted
    for i, j in donors.items():
        assert i != j and langs[i] == langs[j] and folds[i] == folds[j] and instructions[i] != instructions[j]
    assert swap_donors(ids, langs, instructions, folds, 1.0, 7)[0] == donors  # deterministic
    import numpy as np

    vectors = np.eye(len(POOL))
    vectors[1] = vectors[0] * 0.9 + vectors[1] * 0.1  # row 1's instruction is nearest to row 0's
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hard, _ = swap_donors(ids, langs, instructions, [0] * len(POOL), 1.0, 7, vectors)
    assert hard[0] == 1 and hard[1] == 0


def test_rating_stores_probabilities_and_swapped_rows_never_leave_it(tmp_path, tiny_model, tiny_engine):
    from xinstruct.stages.swaps import build_swaps

    recipe = _recipe("refinement.shard_size=3", "refinement.keep_rule=threshold", "refinement.keep_threshold=0.0",
                     "refinement.evaluator_kind=sft", "refinement.hard_swaps=false")
    swaps = Step(tmp_path, "swaps", {})
    swaps.begin()
    build_swaps(recipe, POOL, swaps, tiny_engine)
    step = Step(tmp_path, "ratings", {})
    step.begin()
    report = rate_candidates(recipe, POOL, swaps.load(), step, [tiny_engine], 1, ["tiny"],
                             trained_ids=set(POOL["id"][:10]))
    rated = step.load()
    assert rated["id"] == POOL["id"] and report["rows_out"] == len(POOL)
    for r in rated:
        assert math.isclose(r["p1"] + r["p2"] + r["p3"], 1.0, rel_tol=1e-5)
        assert math.isclose(r["expected_rating"], r["p1"] + 2 * r["p2"] + 3 * r["p3"], rel_tol=1e-6)
        assert r["rating"] == 1 + [r["p1"], r["p2"], r["p3"]].index(max(r["p1"], r["p2"], r["p3"]))
        assert r["iteration"] == 1
    assert sum(report["rating_histogram"].values()) == len(POOL)
    planted = step.load("planted")
    assert len(planted) == report["planted"]["rows"] == len(POOL) and set(planted["kind"]) == {"easy"}
    # threshold 0 keeps all
    assert report["planted"]["drop_rate_easy"]["rate"] == 0.0 == report["planted"]["drop_rate_real"]["rate"]
    easy = report["swap_test"]["easy"]
    assert easy["p3"]["positives"] == easy["p3"]["negatives"] == len(POOL)
    gap = report["swap_test"]["training_gap"]
    assert (gap["rows_inside"], gap["rows_outside"]) == (10, 10)
    kept_step = Step(tmp_path, "kept", {})
    kept_step.begin()
    keep_rated(recipe, rated, kept_step, 1)
    assert not set(kept_step.load()["id"]) & set(planted["id"])  # swapped rows never reach the kept set
    # rate: kept: the next iteration rates a kept set, which carries the last ratings (and the PMI of keep_score pmi)
    again = Step(tmp_path, "iter-2/ratings", {})
    again.begin()
    pool = kept_step.load().add_column("pmi", [0.0] * len(kept_step.load()))
    recipe.refinement.keep_score = "pmi"  # the ratings then store the PMI again (the recipe check is not the point)
    rate_candidates(recipe, pool, swaps.load(), again, [tiny_engine], 2, ["tiny"])
    assert again.load()["id"] == pool["id"] and set(again.load()["iteration"]) == {2}
    assert "pmi" in again.load().column_names


@pytest.mark.parametrize("kind", ["sft", "likelihood"])
def test_evaluator_is_measured_on_heldout_rows_next_to_length_only(pseudo, tmp_path, tiny_model, kind):
    from xinstruct.stages.evaluator import train_evaluator
    from xinstruct.stages.generation import test_half

    rows, _, _ = pseudo
    recipe = _recipe(f"refinement.evaluator_kind={kind}", "refinement.cross_fit=false",
                     "refinement.evaluator.training={max_steps: 2, max_length: 256}")
    follower = tmp_path / "iter-1/follower"
    follower.mkdir(parents=True)
    (follower / "model").symlink_to(tiny_model)
    step = Step(tmp_path, "iter-1/evaluator", {})
    step.begin()
    report = train_evaluator(recipe, rows, step, lambda path: LocalEngine(path, batch_size=8, progress=False),
                             follower)
    heldout = rows.filter(lambda s: s == "heldout", input_columns="split")
    test = sum(test_half(heldout, recipe.seed))
    assert 0 < test < len(heldout) and report["heldout"]["calibration_rows"] == len(heldout) - test
    refs = report["references"]
    for figures in (report["heldout"], refs["length_only"], refs["truncation_only"]):
        assert figures["rows"] == test and sum(figures["confusion"].values()) == test
    for name in ("base_pmi", "base_likelihood"):
        assert set(refs[name]) == {"auc_3v1", "auc_3v2"}
    assert report["strongest_reference"]["auc_3v1"]["name"].removesuffix(" (reversed)") in refs
    if kind == "sft":
        assert report["metrics"]["train_rows"] == report["rows_in"] and (step.path / "model" / "config.json").exists()
    else:
        head = json.loads((step.path / "rating_head.json").read_text())
        assert head["follower"] == str(follower / "model") and head["response_tokens"] == BUDGET
        assert head["generic_instruction"] and "{instruction}" in head["template"]
        assert {"scorer_pmi", "scorer_likelihood"} <= set(refs)


def test_likelihood_head_learns_levels_from_features():
    import numpy as np

    from xinstruct.stages.likelihood import LikelihoodHead

    rng = np.random.default_rng(0)
    levels = [1, 2, 3] * 40
    centers = {1: [-3.0, -2.0, -1.0], 2: [-1.0, -1.2, 0.2], 3: [-2.0, -2.5, 0.5]}
    features = np.array([np.array(centers[lv]) + rng.normal(0, 0.15, 3) for lv in levels])
    head = LikelihoodHead().fit(features, levels)
    predicted = [1 + int(np.argmax(p)) for p in head.predict_proba(features)]
    assert sum(p == t for p, t in zip(predicted, levels)) / len(levels) > 0.9


def test_loglik_sums_the_continuation_log_probabilities(tiny_engine):
    import torch

    prompt, continuation = "Explain topic 1.", " Jibu la Kiswahili"
    (total, n), = tiny_engine.loglik([prompt], [continuation])
    tok, model = tiny_engine.tokenizer, tiny_engine.model
    p_ids = tok(prompt)["input_ids"]
    c_ids = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([p_ids + c_ids])).logits[0].float()
    expected = torch.log_softmax(logits[len(p_ids) - 1 : -1], -1).gather(1, torch.tensor(c_ids)[:, None]).sum()
    assert n == len(c_ids) and total == pytest.approx(float(expected), abs=1e-3)
    batched = tiny_engine.loglik([prompt, "A much longer prompt than the first one, padded on the left."],
                                 [continuation] * 2)
    assert batched[0][0] == pytest.approx(total, abs=1e-3)


def test_recall_keep_rule_uses_the_threshold_calibrated_on_heldout_gold_pairs(tmp_path):
    from xinstruct.stages.rating import effective_threshold

    recipe = load_recipe(None, ["refinement.keep_rule=recall", "refinement.keep_recall=0.9"])
    assert effective_threshold(recipe, {"keep_threshold_at_recall": 0.35}) == 0.35
    with pytest.raises(StageError, match="keep_rule: recall needs held-out"):
        effective_threshold(recipe, {})
    step = Step(tmp_path, "kept", {})
    step.begin()
    report = keep_rated(recipe, RATED, step, 1, 0.35)
    assert step.load()["id"] == ["a", "d"] and report["keep_rule"] == "P(3) >= 0.3500 (recall)"
    assert effective_threshold(load_recipe(None), {"keep_threshold_at_recall": 0.35}) is None  # argmax
