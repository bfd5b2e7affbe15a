"""`xinstruct rate` applies a run's evaluator to any pairs with the code the ratings step uses: each fold's
follower and head give exactly the P(3) the ratings step stored for the candidates that fold rated, and a row from
outside the run gets the mean of the folds."""

import json

import pytest

from xinstruct.cli import main
from xinstruct.config_loader import load_recipe
from xinstruct.inference import make_engine
from xinstruct.rate import rate_pairs
from xinstruct.rundir import MODEL, RATING_HEAD, RECIPE, RunDir, fold_dir
from xinstruct.stages.crossfit import fold_of, other_fold
from xinstruct.stages.generation import fitter_for
from xinstruct.stages.likelihood import LikelihoodHead
from xinstruct.stages.rating import score_rows


def test_rate_uses_the_ratings_step_code_and_averages_the_folds(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    run = RunDir(run_dir)
    recipe = load_recipe(run_dir / RECIPE)
    folds = recipe.refinement.folds
    assert folds == 2
    stored = run.load("iter-2/ratings").select(range(6))
    rated, info = rate_pairs(run_dir, stored.select_columns(["instruction", "output", "language"]), 2)
    assert info["kind"] == "likelihood" and len(info["raters"]) == folds
    per_fold = []
    for f in range(folds):
        model = str(fold_dir(run_dir / "iter-2/follower", f, folds) / MODEL)
        head = LikelihoodHead.load(fold_dir(run_dir / "iter-2/evaluator", f, folds) / RATING_HEAD)
        engine = make_engine(recipe.engine_for(recipe.refinement.follower), model)  # the run's dtype
        per_fold.append(score_rows(recipe, stored, engine, fitter_for(model), head)["p3"])
    for i, row in enumerate(stored):
        rater = other_fold(fold_of(row["id"], recipe.seed, folds), folds)
        assert per_fold[rater][i] == pytest.approx(row["p3"], abs=1e-5)  # the ratings step's own score
        assert rated[i]["p3"] == pytest.approx(sum(p[i] for p in per_fold) / folds, abs=1e-6)
        assert rated[i]["rating"] in (1, 2, 3)


def test_rate_command_writes_ratings_and_refuses_bad_rows(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"instruction": "Explain topic 1.", "output": "Jibu la Kiswahili.", "language": "sw"})
                     + "\n", encoding="utf-8")
    out = tmp_path / "rated.jsonl"
    assert main(["rate", str(run_dir), str(pairs), "--out", str(out)]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert {"p1", "p2", "p3", "expected_rating", "rating"} <= set(row)
    assert row["p1"] + row["p2"] + row["p3"] == pytest.approx(1.0, abs=1e-6)
    pairs.write_text('{"instruction": "x", "language": "sw"}\n', encoding="utf-8")
    assert main(["rate", str(run_dir), str(pairs), "--out", str(out)]) == 2
    assert "pairs.jsonl: pair 1: missing or empty output" in capsys.readouterr().err
