"""Stage 4, final tuning: SFT of the base model on the diversified set with the FOLLOWER template
(a recipe-set share uses the assistant-style variant). The result is the X-Instruction model, saved in
``final/model`` with its tokenizer and a generation config whose EOS is the tokenizer's."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from ..config import Recipe
from ..rundir import Step
from ..training import run_training
from .refinement import follower_training_set


def final_training_set(recipe: Recipe, diversified: Dataset) -> Dataset:
    """The diversified rows as FOLLOWER-template examples (assistant variant for ``final.assistant_share``)."""
    return follower_training_set(diversified, recipe.final.assistant_share, recipe.seed)


def train_final(recipe: Recipe, diversified: Dataset, step: Step) -> dict[str, Any]:
    """Train and save the X-Instruction model."""
    role = recipe.final
    data = final_training_set(recipe, diversified)
    metrics = run_training(recipe.launcher, recipe.model_for(role), data, step.path, role.training, role.lora, recipe.seed)
    return {"rows_in": len(diversified), "metrics": metrics, "model": str(step.path / "model")}
