"""Recipes: loading, overrides, and clear errors for bad keys and values."""

import pytest
from trl import SFTConfig

from conftest import REPO, endpoint_override
from conftest import TINY_RECIPE as TINY
from xinstruct import languages
from xinstruct.config_loader import load_recipe
from xinstruct.errors import RecipeError
from xinstruct.inference import make_engine
from xinstruct.inference.endpoint import EndpointEngine
from xinstruct.training import make_sft_config


def test_shipped_recipes_load():
    default = load_recipe(REPO / "recipes" / "default.yaml")
    tiny = load_recipe(REPO / "recipes" / "tiny.yaml")
    assert default.base_model == "gemma-3-270m" and len(default.languages) == 10
    assert default.generator.lora is not None
    assert tiny.base_model == "tiny" and tiny.languages == default.languages


def test_training_block_goes_to_sft_config_unchanged():
    recipe = load_recipe(REPO / "recipes" / "default.yaml")
    cfg = make_sft_config(recipe.generator.training, "/tmp/x")
    assert isinstance(cfg, SFTConfig)
    for key, value in recipe.generator.training.items():
        assert getattr(cfg, key) == value, key


def test_set_overrides_nested_keys():
    r = load_recipe(REPO / "recipes" / "tiny.yaml",
                    ["candidates.shard_size=5", "generator.training.learning_rate=1e-4", "languages=[sw,ta]"])
    assert r.candidates.shard_size == 5
    assert r.generator.training["learning_rate"] == 1e-4
    assert r.languages == ["sw", "ta"]


def test_unknown_recipe_key_names_it_and_the_nearest():
    with pytest.raises(RecipeError, match=r"'shard_sise' in candidates.*Did you mean 'shard_size'"):
        load_recipe(REPO / "recipes" / "tiny.yaml", ["candidates.shard_sise=3"])


def test_unknown_sft_config_key_is_an_error():
    with pytest.raises(RecipeError, match=r"'learning_rat' in generator.training.*'learning_rate'"):
        load_recipe(None, ["generator.training.learning_rat=0.1"])


def test_unknown_language_lists_known_codes():
    with pytest.raises(RecipeError, match=r"Unknown language code 'xx'.*bn, fi, hi, id, sw, ta, th, tr, ur, vi"):
        load_recipe(None, ["languages=[sw,xx]"])


def test_extra_language_from_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("languages: [am]\nextra_languages:\n  am: {name: Amharic, script: Ethi, flores: amh_Ethi}\n"
                    "data: {filters: {lid: false}}\n")
    r = load_recipe(path)
    assert languages.get("am").name == "Amharic" and r.languages == ["am"]


def test_wrong_type_is_reported():
    with pytest.raises(RecipeError, match="seed must be of type int"):
        load_recipe(None, ["seed=abc"])


def test_serving_recipes_extend_their_base_and_point_roles_at_servers(tmp_path):
    tgi = load_recipe(REPO / "recipes" / "serving" / "tgi.yaml")
    base = load_recipe(REPO / "recipes" / "gemma-7b" / "config_lora.yaml")
    assert tgi.base_model == base.base_model and tgi.generator.training == base.generator.training
    assert tgi.engine_for(tgi.refinement.evaluator).base_urls == ["http://127.0.0.1:8082"]
    assert tgi.engine_for(tgi.refinement.evaluator).score_route == "generate"
    vllm = load_recipe(REPO / "recipes" / "serving" / "vllm.yaml")
    assert (len(vllm.engine_for(vllm.generator).base_urls) == 2
            and vllm.engine_for(vllm.generator).model == "xinstruct-generator")
    local = load_recipe(REPO / "recipes" / "serving" / "transformers-serve.yaml")
    assert (local.engine_for(local.refinement.evaluator).type == "local"
            and local.engine_for(local.generator).type == "endpoint")
    assert local.candidates.decoding.max_new_tokens == 32 and local.candidates.decoding.min_new_tokens == 0  # merged
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends itself"):
        load_recipe(tmp_path / "a.yaml")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").rglob("*.yaml")
                                        if "accelerate_configs" not in p.parts))
def test_every_recipe_builds_every_role_config_from_any_directory(path, tmp_path, monkeypatch):
    from peft import LoraConfig

    monkeypatch.chdir(tmp_path)  # config paths resolve relative to the recipe file, not the working directory
    recipe = load_recipe(REPO / path)
    roles = [recipe.generator, recipe.refinement.follower, recipe.refinement.evaluator, recipe.final]
    for role in roles:
        assert isinstance(make_sft_config(role.training, tmp_path / "out"), SFTConfig)
        if role.lora:
            LoraConfig(task_type="CAUSAL_LM", **role.lora)
    if recipe.launcher.config_file:
        from pathlib import Path

        assert Path(recipe.launcher.config_file).is_file()


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").rglob("*.yaml")
                                        if "accelerate_configs" not in p.parts))
def test_plan_prints_the_cost_of_every_recipe(path, capsys):
    """Every declared step states its own cost estimate, and the plan prices each one, in run order."""
    from xinstruct.cli import main
    from xinstruct.pipeline import declared_steps, hashed_steps

    recipe = load_recipe(REPO / path)
    assert [spec.name for spec in declared_steps(recipe) if spec.cost is None] == []
    assert main(["plan", str(REPO / path), "--device", "a100-80gb"]) == 0
    table = capsys.readouterr().out
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:-1] == [step.name for _, step in hashed_steps(recipe, "/nonexistent")]  # between header and total
    assert "**total**" in table and "Web texts needed per language" in table


def test_the_run_layout_names_every_declared_step():
    """Readers find a step by rundir's names: each declared step is one of them, or an iteration's step (iter-k/)."""
    from xinstruct import rundir
    from xinstruct.pipeline import declared_steps

    recipe = load_recipe(REPO / "recipes" / "default.yaml")
    once = {rundir.SEED, rundir.WEBTEXT, rundir.BASELINE, rundir.GENERATOR, rundir.CANDIDATES, rundir.SWAPS,
            rundir.DIVERSIFIED, rundir.FINAL}
    per_iteration = {rundir.iteration_step(k, name) for k in range(1, recipe.refinement.iterations + 1)
                     for name in rundir.ITERATION_STEPS}
    names = [spec.name for spec in declared_steps(recipe)]
    assert len(names) == len(set(names)) and set(names) == once | per_iteration


def test_a_step_declared_without_a_cost_estimate_stops_the_plan(monkeypatch):
    from xinstruct import costs
    from xinstruct.errors import StageError
    from xinstruct.steps import StepSpec

    recipe = load_recipe(TINY)
    declared = costs.declared_steps(recipe)
    report = StepSpec("dedup_report", "generation", ("candidates",), {}, lambda ctx: {})
    monkeypatch.setattr(costs, "declared_steps", lambda r: [*declared, report])
    with pytest.raises(StageError, match="Step dedup_report .* declares no cost estimate"):
        costs.plan_costs(recipe)


def test_plan_costs_follow_swaps_and_cross_fitting():
    """Swapped copies (easy + hard per planted candidate) are scored once by the base model (``swaps``) and rated
    every iteration; the generic pass of the likelihood features runs once per distinct response; cross-fitting
    trains one follower per fold (with ``max_steps``: twice the training tokens)."""
    from xinstruct.costs import plan_costs
    from xinstruct.steps import FRAME_TOKENS, INSTRUCTION_TOKENS

    def steps(*overrides):
        recipe = load_recipe(REPO / "recipes" / "default.yaml", list(overrides))
        return recipe, {r["step"]: r for r in plan_costs(recipe, "cpu-2core")["steps"]}

    recipe, default = steps()  # likelihood, planted_share 1.0, hard_swaps, cross_fit
    rating_row = FRAME_TOKENS + INSTRUCTION_TOKENS + recipe.refinement.response_tokens
    candidates = default["candidates"]["rows_out"]
    assert default["swaps"]["rows_in"] == candidates and default["swaps"]["rows_out"] == 3 * candidates
    assert default["swaps"]["score_tokens"] == 4 * candidates * rating_row  # 3 pairs + 1 generic pass each
    assert default["iter-1/ratings"]["score_tokens"] == 4 * candidates * rating_row
    _, easy = steps("refinement.planted_share=0.5", "refinement.hard_swaps=false")
    assert easy["swaps"]["rows_out"] == 1.5 * candidates
    assert easy["iter-2/ratings"]["score_tokens"] == 2.5 * candidates * rating_row
    _, single = steps("refinement.cross_fit=false")
    assert default["iter-1/follower"]["train_tokens"] == 2 * single["iter-1/follower"]["train_tokens"] > 0
    assert default["iter-1/pseudo_ratings"]["generate_tokens"] == single["iter-1/pseudo_ratings"]["generate_tokens"]
    _, sft = steps("refinement.evaluator_kind=sft", "refinement.keep_score=p3")  # the SFT evaluator has no PMI
    assert sft["iter-1/ratings"]["score_tokens"] == 3 * candidates * rating_row  # no generic pass


def test_plan_reads_keep_rates_from_a_finished_run(tmp_path):
    import json

    from xinstruct.costs import plan_costs, rates_from_run

    for step, manifest in {"webtext": {"rows_in": 100, "rows_out": 50}, "candidates": {"rows_in": 50, "rows_out": 40},
                           "iter-1/kept": {"rows_in": 40, "rows_out": 10}}.items():
        (tmp_path / step).mkdir(parents=True)
        (tmp_path / step / "manifest.json").write_text(json.dumps(manifest))
    rates = rates_from_run(tmp_path)
    assert rates == {"webtext_kept": 0.5, "gate_kept": 0.8, "keep_rate": 0.25}
    recipe = load_recipe(REPO / "recipes" / "default.yaml")
    costs = plan_costs(recipe, "cpu-2core", rates)
    assert costs["webtexts_needed_per_language"] == 60 and costs["enough"] is False  # 6 / (0.5 * 0.8 * 0.25)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("*/config_*.yaml")))
def test_paper_recipe_fits_the_hardware_it_names(path):
    """The ``# Hardware: Nx <device>`` line of a paper-scale recipe matches its launcher's process count, and the
    estimated training memory of every role (batch, longest row, vocabulary, sharding) fits that device."""
    from xinstruct.costs import DEVICES, hardware_line, plan_costs

    line = hardware_line(REPO / path)
    assert line, f"{path} names no hardware"
    count, device = line
    costs = plan_costs(load_recipe(REPO / path), device)
    assert costs["processes"] == count
    assert costs["memory_gb"] and all(gb is not None for gb in costs["memory_gb"].values())
    assert max(costs["memory_gb"].values()) <= DEVICES[device]["memory_gb"]


def test_memory_estimate_refuses_gemma_7b_lora_on_24gb():
    """The issue's own case: Gemma-7B LoRA (17 GB of bf16 weights + float32 logits of a 256k vocabulary) on a 24 GB
    GPU does not fit; on 40 GB it does."""
    from xinstruct.costs import plan_costs

    costs = plan_costs(load_recipe(REPO / "recipes/gemma-7b/config_lora.yaml"), "l4-24gb")
    assert max(costs["memory_gb"].values()) > 24 > 2 * 8.54  # weights alone fit, the logits tip it over


def test_recipe_engine_blocks_per_role():
    recipe = load_recipe(TINY, [endpoint_override("http://127.0.0.1:8080", model="gen"),
                                "refinement.evaluator.engine={type: local}"])
    assert recipe.engine_for(recipe.generator).type == "endpoint"
    generator = recipe.engine_for(recipe.generator)  # another kind: only the settings every kind has carry over
    assert generator.model == "gen" and not hasattr(generator, "batch_size")
    assert generator.max_input_tokens == recipe.engine.max_input_tokens and generator.dtype == recipe.engine.dtype
    assert recipe.engine_for(recipe.refinement.evaluator).type == "local"
    assert recipe.engine_for(recipe.refinement.follower) == recipe.engine
    engine = make_engine(recipe.engine_for(recipe.generator), "tiny")
    assert isinstance(engine, EndpointEngine) and engine.model == "gen" and engine.concurrency == 4
    with pytest.raises(RecipeError, match="base_urls is empty"):
        load_recipe(TINY, ["generator.engine={type: endpoint}"])
    with pytest.raises(RecipeError, match="Did you mean 'concurrency'"):
        load_recipe(TINY, ["generator.engine={type: endpoint, base_urls: [http://x], concurency: 3}"])
    with pytest.raises(RecipeError, match="Unknown recipe key 'score_route' in engine"):  # a local engine has none
        load_recipe(TINY, ["engine.score_route=logits"])
    with pytest.raises(RecipeError, match="score_route is 'logits'"):
        load_recipe(TINY, [endpoint_override("http://127.0.0.1:8080", score_route="logits")])


def test_readme_plan_block_is_what_plan_generates_now(tmp_path, capsys):
    """The README's paper-scale table is generated by ``xinstruct plan ... --readme`` and is not stale: generating it
    again from the recipes gives the same text. A file without the block is a one-line error."""
    from xinstruct.cli import main

    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    text = readme.read_text(encoding="utf-8")
    command = text.split("<!-- plan:begin -->\nGenerated by `", 1)[1].split("`", 1)[0]
    args = command.split()[1:]  # plan RECIPE... --readme README.md
    paths = [a for a in args if a.endswith(".yaml")]
    assert len(paths) == len(list((REPO / "recipes").glob("*/config_*.yaml")))
    with pytest.MonkeyPatch.context() as m:
        m.chdir(REPO)
        assert main(["plan", *paths, "--readme", str(readme)]) == 0
    block = lambda t: t.split("<!-- plan:begin -->", 1)[1].split("<!-- plan:end -->", 1)[0].split("\n", 2)[2]  # noqa: E731
    assert block(readme.read_text(encoding="utf-8")) == block(text)
    empty = tmp_path / "EMPTY.md"
    empty.write_text("no block\n")
    assert main(["plan", str(REPO / paths[0]), "--readme", str(empty)]) == 2
    assert "error:" in capsys.readouterr().err
