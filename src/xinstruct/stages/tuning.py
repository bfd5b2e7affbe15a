"""Stage 4, final tuning: SFT of the base model on the diversified set with the FOLLOWER template
(a recipe-set share uses the assistant-style variant). The result is the X-Instruction model, saved in
``final/model`` with its tokenizer and a generation config whose EOS is the tokenizer's. It is then measured
as the follower is: language fidelity of its answers to the held-out English seed instructions of every
language, next to the base model's."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from ..config import Recipe
from ..rundir import BASELINE, DIVERSIFIED, FINAL, SEED, Step
from ..steps import Estimate, StepSpec, Work, engine_settings, measured_settings
from ..training import role_settings, train_role
from .generation import answer_figures, answer_seed_instructions, split_rows
from .refinement import follower_training_set


def final_training_set(recipe: Recipe, diversified: Dataset) -> Dataset:
    """The diversified rows as FOLLOWER-template examples (assistant variant for ``final.assistant_share``)."""
    return follower_training_set(diversified, recipe.final.assistant_share, recipe.seed)


def train_final(recipe: Recipe, diversified: Dataset, step: Step, seeds: Dataset, make_engine,
                baseline: dict | None = None) -> dict[str, Any]:
    """Train and save the X-Instruction model, then measure its language fidelity and relevance on the held-out
    test pairs, next to the base model's (``baseline``: the baseline step's manifest)."""
    base = baseline or {}
    data = final_training_set(recipe, diversified)
    metrics = train_role(recipe, recipe.final, data, step.path)
    model = str(step.model_path)
    report: dict[str, Any] = {"rows_in": len(diversified), "assistant_style_rows": sum(
        "style of an AI assistant" in p for p in data["prompt"]), "metrics": metrics, "model": model}
    heldout = split_rows(seeds, "heldout")
    if len(heldout):
        engine = make_engine(model)
        answers = answer_seed_instructions(recipe, heldout, engine)
        step.save(heldout.add_column("answer", answers), "heldout")
        report.update({**answer_figures(recipe, heldout, answers), "base_fidelity": base.get("fidelity"),
                       "base_relevance": base.get("relevance"), **engine.report()})
    return report


def _final_cost(est: Estimate) -> Work:
    """SFT on the diversified rows, then an answer to every held-out seed instruction."""
    rows, final = est.rows_out(DIVERSIFIED), est.recipe.final
    return Work(rows, rows, train=est.train_tokens(final, rows, est.follower_row),
                generate=est.heldout_rows * est.recipe.refinement.response_tokens, role=final, loads=1, trainings=1)


def steps(recipe: Recipe) -> list[StepSpec]:
    """The ``final`` step."""
    settings = {**role_settings(recipe, recipe.final), "assistant_share": recipe.final.assistant_share,
                **measured_settings(recipe), "engine": engine_settings(recipe, recipe.final)}
    return [StepSpec(FINAL, "tuning", (DIVERSIFIED, SEED), settings,
                     lambda ctx: train_final(ctx.recipe, ctx.load(DIVERSIFIED), ctx.step, ctx.load(SEED),
                                             ctx.engines(recipe.final), ctx.manifest(BASELINE)), cost=_final_cost)]
