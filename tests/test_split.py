"""Held-out hygiene: the seed split is by cross-language group (no held-out pair has a twin in training), web texts
that copy a seed response are dropped and counted, and the calibration/test halves never share a group."""

import json
import math
from collections import Counter, defaultdict

import pytest
from datasets import Dataset

from conftest import write_jsonl
from xinstruct.config import DataConfig, FilterConfig, SeedConfig, WebTextConfig
from xinstruct.config_loader import load_recipe
from xinstruct.data.filters import SeedDuplicate, webtext_filters
from xinstruct.data.sample import sample_file
from xinstruct.data.seeds import load_seeds
from xinstruct.data.split import calibration_half, group_keys, normalise_instruction, split_seeds, unit_hash
from xinstruct.data.webtext import load_webtext
from xinstruct.errors import StageError
from xinstruct.rundir import Step
from xinstruct.stages.generation import build_seed, build_webtext, heldout_split, steps
from xinstruct.stages.generation import unit_hash as generation_unit_hash

SEED = 42


def sides(keys, split):
    """group -> set of sides it has rows on."""
    out = defaultdict(set)
    for k, s in zip(keys, split):
        out[k].add(s)
    return out


def leaked_instructions(instructions, split):
    train = {normalise_instruction(i) for i, s in zip(instructions, split) if s == "train"}
    held = {normalise_instruction(i) for i, s in zip(instructions, split) if s == "heldout"}
    return train & held


def test_unit_hash_moved_but_still_importable_from_generation():
    assert generation_unit_hash is unit_hash
    assert 0 <= unit_hash("x", 1) < 1 and unit_hash("x", 1) == unit_hash("x", 1) != unit_hash("x", 2)


def test_normalised_instruction_ignores_case_spacing_width_and_trailing_punctuation():
    forms = ["Explain why the sky is blue.", "  explain why  the SKY is blue ", "Explain why the sky is blue?!",
             "Ｅｘｐｌａｉｎ why the sky is blue。", "Explain why the sky is blue\u2026"]
    assert {normalise_instruction(f) for f in forms} == {"explain why the sky is blue"}
    assert normalise_instruction("Explain why the sea is blue.") != normalise_instruction(forms[0])


# (a) instructions shared across languages, in varied surface forms --------------------------------------------------
def _shared_rows():
    variants = [lambda s: s, str.upper, lambda s: s.rstrip(".") + "!", lambda s: "  " + s.replace(" ", "  "),
                lambda s: s.rstrip(".") + "。"]
    base = [f"Describe the history of place number {i} in detail." for i in range(30)]
    rows = []
    for li, code in enumerate(["fi", "id", "vi"]):
        for j in range(20):
            n = (j + li * 7) % 30  # overlapping subsets: most instructions are in two or three languages
            rows.append({"id": f"{code}-{j}", "language": code, "instruction": variants[(j + li) % 5](base[n]),
                         "output": f"{code} answer {n}", "source": "t"})
    return Dataset.from_list(rows)


def test_shared_instruction_is_never_on_both_sides():
    seeds = _shared_rows()
    langs_per_instruction = defaultdict(set)
    for i, code in zip(seeds["instruction"], seeds["language"]):
        langs_per_instruction[normalise_instruction(i)].add(code)
    assert sum(len(v) > 1 for v in langs_per_instruction.values()) >= 15  # the test set really shares instructions
    for fraction in (0.1, 0.25, 0.4):
        for seed in range(5):
            result = split_seeds(seeds, fraction, 2, seed)
            assert leaked_instructions(seeds["instruction"], result.split) == set(), (fraction, seed)
            assert all(len(s) == 1 for s in sides(result.group, result.split).values())
            assert heldout_split(seeds, fraction, 2, seed) == result.split
            held = Counter(c for c, s in zip(seeds["language"], result.split) if s == "heldout")
            for code in ("fi", "id", "vi"):
                target = max(2, math.ceil(fraction * 20))
                assert target <= held[code] <= target + 3, (fraction, seed, code, held)
                assert 20 - held[code] >= 2


# (b) seed-build style: the same instruction list in every language, a `group` column --------------------------------
def _seed_build_files(root, languages, n):
    for code in languages:
        write_jsonl(root / f"{code}.jsonl", [
            {"id": f"{code}-mt-{i:05d}", "language": code, "instruction": f"Give advice number {i} on saving water.",
             "output": f"{code} translation {i}", "source": "mt:some/model", "group": f"mt-{i:05d}"}
            for i in range(n)])
    return root


@pytest.mark.parametrize("fraction,minimum,n", [(0.1, 2, 30), (0.25, 2, 13), (0.1, 1, 3)])
def test_seed_build_groups_are_wholly_on_one_side(tmp_path, fraction, minimum, n):
    languages = ["sw", "ta", "th"]
    root = _seed_build_files(tmp_path / "seeds", languages, n)
    seeds, _ = load_seeds(SeedConfig(path=str(root)), languages)
    result = split_seeds(seeds, fraction, minimum, SEED)
    source_row = [i.rsplit("-", 1)[1] for i in seeds["id"]]
    by_row = sides(source_row, result.split)
    assert all(len(s) == 1 for s in by_row.values())
    assert {s for v in by_row.values() for s in v} == {"train", "heldout"}
    target = max(minimum, math.ceil(fraction * n))
    for code in languages:
        split = [s for c, s in zip(seeds["language"], result.split) if c == code]
        assert split.count("heldout") == target and split.count("train") >= 2


def test_group_column_joins_rows_whose_instructions_differ():
    languages = ["sw", "ta", "th"]
    rows = [{"id": f"{code}-{i}", "language": code, "instruction": f"{code} paraphrase {i} of instruction {i}.",
             "output": f"{code} {i}", "source": "t", "group": f"mt-{i:05d}"} for code in languages for i in range(20)]
    seeds = Dataset.from_list(rows)
    for seed in range(5):
        result = split_seeds(seeds, 0.25, 2, seed)
        by_group = sides(seeds["group"], result.split)
        assert all(len(s) == 1 for s in by_group.values()), seed
        assert sum(s == {"heldout"} for s in by_group.values()) == 5  # ceil(0.25 * 20) rows = groups per language
        assert len(set(result.group)) == 20
    # without the column the instructions alone would not join them: the split would straddle groups
    plain = split_seeds(seeds.remove_columns("group"), 0.25, 2, SEED)
    assert any(len(s) > 1 for s in sides(seeds["group"], plain.split).values())


def test_group_and_instruction_keys_chain_into_one_group():
    keys = group_keys(["Say hi.", "say hi", "Greet me.", "Other."], [None, "g1", "g1", None])
    assert keys[0] == keys[1] == keys[2] != keys[3]


def test_too_few_seeds_to_keep_two_for_training_is_an_error():
    seeds = Dataset.from_list([{"id": f"ta-{i}", "language": "ta", "instruction": f"Do {i}.", "output": "x",
                                "source": "t"} for i in range(3)])
    with pytest.raises(StageError, match="ta has 3 seed pair"):
        heldout_split(seeds, 0.1, 2, SEED)


def test_a_big_group_is_never_held_out_at_the_cost_of_training_pairs():
    rows = [{"id": f"sw-{i}", "language": "sw", "instruction": "The same instruction.", "output": f"a{i}",
             "source": "t"} for i in range(4)]
    rows += [{"id": f"sw-x{i}", "language": "sw", "instruction": f"Other {i}.", "output": "b", "source": "t"}
             for i in range(2)]
    seeds = Dataset.from_list(rows)
    for seed in range(10):
        split = heldout_split(seeds, 0.1, 1, seed)
        assert split.count("train") >= 2
        assert len({s for s in split[:4]}) == 1  # the big group stays whole


# (c) the bundled sample seeds ----------------------------------------------------------------------------------------
def test_bundled_sample_seeds_split_without_leak(tmp_path):
    recipe = load_recipe(None, [])
    assert recipe.data.seeds.path == "sample"
    step = Step(tmp_path, "seed", {"t": 1})
    step.begin()
    report = build_seed(recipe, step)
    seeds = step.load()
    assert {"split", "group"} <= set(seeds.column_names)
    assert leaked_instructions(seeds["instruction"], seeds["split"]) == set()
    assert all(len(s) == 1 for s in sides(seeds["group"], seeds["split"]).values())
    assert report["shared_instruction_groups"] >= 5  # the sample really shares instructions across languages
    assert report["heldout_groups"] == len({g for g, s in zip(seeds["group"], seeds["split"]) if s == "heldout"})
    n = Counter(seeds["language"])
    cfg = recipe.data.seeds
    assert set(report["heldout_per_language"]) == set(recipe.languages)
    for code, held in report["heldout_per_language"].items():
        target = max(cfg.heldout_min_per_language, math.ceil(cfg.heldout_fraction * n[code]))
        assert target <= held <= target + 1, (code, held, target)
        assert n[code] - held >= 2


# (d) web texts that copy a seed response -----------------------------------------------------------------------------
def _sample_texts(code, n):
    lines = sample_file("webtext", code).read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["text"] for x in lines[:n]]


def test_webtext_copying_a_seed_response_is_dropped_and_counted(tmp_path):
    a, b, c, d = _sample_texts("sw", 4)
    seed_responses = [a, b, "Jibu fupi la mbegu."]
    write_jsonl(tmp_path / "web" / "sw.jsonl", [
        {"id": "exact", "text": "  " + a.upper() + " "},  # equal after NFC, whitespace and case folding
        {"id": "near", "text": b[:-12] + " hivyo basi."},  # a near copy
        {"id": "other", "text": c},  # a different text survives
        {"id": "other2", "text": d},
    ])
    data = DataConfig(webtext=WebTextConfig(path=str(tmp_path / "web")), filters=FilterConfig(lid=False))
    kept, dropped, report = load_webtext(data, ["sw"], 0, seed_responses)
    assert kept["id"] == ["other", "other2"]
    assert sorted(zip(dropped["id"], dropped["reason"])) == [("exact", "seed_duplicate"), ("near", "seed_duplicate")]
    assert report["skipped"] == {"seed_duplicate": 2}
    assert report["skipped_per_language"] == {"seed_duplicate": {"sw": 2}}
    assert report["rows_in"] == 4 and report["rows_out"] == 2
    # without the seeds the same texts are kept: the drop is the seed check's
    kept_plain, _, _ = load_webtext(data, ["sw"], 0)
    assert set(kept_plain["id"]) == {"exact", "near", "other", "other2"}


def test_seed_duplicate_filter_exact_only_without_threshold():
    text = _sample_texts("sw", 1)[0]
    f = SeedDuplicate([text], None, 5)
    assert f.check({"id": "1", "text": text.lower()}) == "seed_duplicate"
    assert f.check({"id": "2", "text": text[:-12] + " hivyo basi."}) is None
    f.reset()  # the runner resets per language: the seeds stay
    assert f.check({"id": "3", "text": text}) == "seed_duplicate"
    names = [x.name for x in webtext_filters(FilterConfig(), [text])]
    assert names[:2] == ["empty", "seed_duplicate"]


def test_webtext_step_reads_the_seeds_and_drops_heldout_copies(tmp_path):
    recipe = load_recipe(None, ["languages=[sw]", f"data.webtext.path={tmp_path / 'web'}", "data.filters.lid=false"])
    spec = next(s for s in steps(recipe) if s.name == "webtext")
    assert "seed" in spec.inputs
    texts = _sample_texts("sw", 5)
    seeds = Dataset.from_list([{"id": f"sw-{i}", "language": "sw", "instruction": f"Q{i}.", "output": t,
                                "source": "t", "split": "heldout" if i == 0 else "train", "group": f"g{i}"}
                               for i, t in enumerate(texts[:2])])
    write_jsonl(tmp_path / "web" / "sw.jsonl", [{"id": f"w{i}", "text": t} for i, t in enumerate(texts)])
    step = Step(tmp_path / "run", "webtext", {"t": 1})
    step.begin()
    report = build_webtext(recipe, step, seeds)
    assert report["skipped"] == {"seed_duplicate": 2}
    assert step.load()["id"] == ["w2", "w3", "w4"]
    assert sorted(step.load("dropped")["id"]) == ["w0", "w1"]  # w0 copies the held-out seed, w1 a training one


# (e) calibration and test halves -------------------------------------------------------------------------------------
def test_calibration_half_splits_by_group_about_half():
    keys = [f"group:{i}" for i in range(41) for _ in range(1 + i % 3)]  # groups of 1 to 3 rows
    half = calibration_half(keys, SEED)
    assert len(half) == len(keys)
    by_group = defaultdict(set)
    for k, h in zip(keys, half):
        by_group[k].add(h)
    assert all(len(v) == 1 for v in by_group.values())  # no group straddles the halves
    calibrating = sum(v == {True} for v in by_group.values())
    assert calibrating == 21  # ceil(41 / 2) groups
    assert 0.35 < sum(half) / len(half) < 0.65
    assert calibration_half(keys, SEED) == half  # deterministic
    assert calibration_half(keys, SEED + 1) != half  # seeded
    assert calibration_half(list(reversed(keys)), SEED) == list(reversed(half))  # decided per group, not by position
