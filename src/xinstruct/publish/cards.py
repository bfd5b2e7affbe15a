"""Role-aware model cards (generator, evaluator, final X-Instruction model) from ``hub_cards/model_card.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..prompts import FOLLOWER_TEMPLATE, GENERATOR_TEMPLATE, RATING_TEMPLATE
from ..rundir import RunDir
from .dataset_repo import CITATION, PublishError
from .templates import template_path

ROLES = {"generator": GENERATOR_TEMPLATE, "evaluator": RATING_TEMPLATE, "final": FOLLOWER_TEMPLATE}


def render_model_card(
    run_dir: str | Path,
    role: str,
    repo_id: str,
    dataset: str | None = None,
    dataset_revision: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> ModelCard:
    """The model card of ``role`` (``generator``, ``evaluator`` or ``final``) of a finished run.

    Args:
        repo_id: the model repo the card is for.
        dataset: dataset repo id recorded under ``datasets`` (and linked, with its revision).
        evaluation: metric name -> value, shown in the card when present. For the final model, by default
            the results of ``xinstruct evaluate --run`` (``<run>/eval/results.json``) when they exist; they
            also go into the card's ``model-index`` (``eval_results``).
    """
    if role not in ROLES:
        raise PublishError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    run = RunDir(run_dir)
    recipe = run.recipe()
    step = run.role_step(role)
    manifest = run.manifest(step)
    if not manifest:
        raise PublishError(f"{run.path} has no trained {role} (no finished {step} step); run the recipe first.")
    eval_results: list[Any] = []
    eval_file = run.eval_results()
    if role == "final" and evaluation is None and eval_file.exists():  # written by `xinstruct evaluate --run`
        from ..evaluation.report import card_eval_results

        eval_results, evaluation = card_eval_results(json.loads(eval_file.read_text(encoding="utf-8")))
    block = recipe["final"] if role == "final" else recipe["generator"] if role == "generator" else recipe["refinement"]["evaluator"]
    base = block.get("model") or recipe["base_model"]
    card_data = ModelCardData(
        base_model=base,
        datasets=[dataset] if dataset else None,
        language=list(recipe["languages"]),
        library_name="transformers",
        pipeline_tag="text-generation",
        license="other",
        tags=["x-instruction", "trl", "sft", "cross-lingual", role] + (["lora"] if block.get("lora") else []),
        dataset_revision=dataset_revision,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card.md")),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        role=role,
        base_model=base,
        iteration=recipe["refinement"]["iterations"],
        languages=recipe["languages"],
        dataset=dataset,
        dataset_revision=dataset_revision,
        template=ROLES[role],
        lora=block.get("lora"),
        training=block.get("training") or {},
        metrics=manifest.get("metrics"),
        evaluation=evaluation or ({"held-out pseudo-rating accuracy": manifest["heldout_accuracy"]} if "heldout_accuracy" in manifest else None),
        citation=CITATION,
    )
