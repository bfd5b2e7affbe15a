"""``xinstruct plan --probe``: measured rates on the recipe's own model, one prediction per declared step."""

from __future__ import annotations

import json

import pytest

from conftest import FAST, TINY_RECIPE
from xinstruct.config_loader import load_recipe
from xinstruct.probe import ProbeRates, TrainRate
from xinstruct.steps import Work


def test_a_prediction_adds_loads_tokens_and_each_trainings_fixed_cost():
    rates = ProbeRates(cpu="AVX2", dtype="float32", load_s=3.0, decode_tokens_per_s=50.0, decode_rows_per_s=1.0,
                       prefill_tokens_per_s=1000.0, train={"follower": TrainRate(tokens_per_s=200.0, setup_s=7.0)})
    work = Work(10, 10, generate=100, score=2000, train=400, loads=2, trainings=2)
    # 2 loads x 3 s + 100 / 50 + 2000 / 1000 = 10 s of inference; 2 trainings x 7 s + 400 / 200 = 16 s
    assert rates.predict(work, "follower", engines=1, fallback_train_tps=1.0) == pytest.approx(26.0)
    assert rates.predict(work, "follower", engines=2, fallback_train_tps=1.0) == pytest.approx(21.0)
    # a role the probe skipped trains at the datasheet rate, with no fixed cost
    assert rates.predict(work, "final", engines=1, fallback_train_tps=40.0) == pytest.approx(20.0)


def test_plan_probe_predicts_every_declared_step_next_to_a_finished_run(tiny_run, capsys):
    """A real probe of the tiny recipe (load, decode, prefill, a short training per role) prices every declared step;
    ``--run`` sets each step's measured seconds beside it, and ``--json`` carries the same under the step names."""
    from xinstruct.cli import main
    from xinstruct.pipeline import declared_steps

    run_dir, _ = tiny_run
    args = ["plan", str(TINY_RECIPE), *sum((["--set", s] for s in FAST), []), "--device", "cpu-2core",
            "--run", str(run_dir), "--probe"]
    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    names = [spec.name for spec in declared_steps(load_recipe(TINY_RECIPE, FAST))]
    assert list(plan["predicted_seconds"]) == names
    probe = plan["probe"]
    assert probe["load_s"] > 0 and probe["decode_tokens_per_s"] > 0 and probe["prefill_tokens_per_s"] > 0
    assert set(probe["train"]) | set(probe["skipped"]) >= {"generator", "follower", "final"}
    # token counts of the recipe's own rows: a rated pair is longer than its response window alone, a web text in a
    # generator prompt never longer than the recipe's cut
    tokens = probe["tokens"]
    assert set(tokens) == {"text", "rating_row", "follower_row", "generator_row", "follower_prompt",
                           "generator_prompt"}
    assert tokens["follower_prompt"] < tokens["follower_row"] and tokens["generator_prompt"] < tokens["generator_row"]
    window = load_recipe(TINY_RECIPE, FAST).refinement.response_tokens
    assert 0 < tokens["text"] <= 512 and tokens["rating_row"] > window
    for step in plan["steps"]:
        assert step["measured_seconds"] >= 0  # every step of the finished run has its wall time beside the prediction
    trained = {s["step"]: s for s in plan["steps"] if s["train_tokens"]}
    untrained = {s["step"]: s for s in plan["steps"] if not s["train_tokens"] and not s["score_tokens"]
                 and not s["generate_tokens"]}
    # a training step pays at least its fixed cost; a step that loads no model and has no tokens costs nothing
    assert all(s["probe_seconds"] > 0 for s in trained.values())
    assert all(s["probe_seconds"] == 0 for s in untrained.values())

    assert main([*args, "--probe-seconds", "0"]) == 0
    table = capsys.readouterr().out
    assert "| step | datasheet s | probe s | measured s | probe error |" in table
    assert "not probed (datasheet): generator" in table  # no time left for any training probe
