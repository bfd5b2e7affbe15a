"""Role-aware model cards (generator, follower and evaluator of an iteration, final X-Instruction model) from
``hub_cards/model_card.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..prompts import FOLLOWER_TEMPLATE, GENERATOR_TEMPLATE, RATING_TEMPLATE
from ..run_report import iteration_report
from ..rundir import RunDir
from .dataset_repo import CITATION, PublishError
from .templates import template_path

ROLES = {"generator": GENERATOR_TEMPLATE, "follower": FOLLOWER_TEMPLATE, "evaluator": RATING_TEMPLATE,
         "final": FOLLOWER_TEMPLATE}
PER_ITERATION = ("follower", "evaluator")


def iteration_figures(run: RunDir, role: str, k: int) -> dict[str, Any]:
    """The held-out figures of iteration ``k``'s follower or evaluator (empty when the iteration has not finished)."""
    row = next((r for r in iteration_report(run.path, run.iterations) if r["iteration"] == k), None)
    if row is None:
        return {}
    if role == "follower":
        return {"language fidelity (held-out instructions)": row["follower_fidelity"],
                "language fidelity of the base model": row["base_fidelity"]}
    return {"held-out accuracy": row["evaluator_heldout_accuracy"],
            "held-out accuracy of a length-only classifier": row["length_baseline_accuracy"],
            "AUC of P(3), 3 vs 1": row["evaluator_auc_3v1"], "AUC of P(3), 3 vs 2": row["evaluator_auc_3v2"],
            "drop rate of planted negatives": row["planted_drop_rate"],
            "drop rate of real rows": row["real_drop_rate"]}


def _eval_results(figures: dict[str, Any], dataset: str | None, k: int) -> list[EvalResult]:
    """Each figure as a model-index entry (huggingface_hub ``EvalResult``)."""
    return [EvalResult(task_type="text-generation", task_name=f"X-Instruction refinement, iteration {k}",
                       dataset_type=dataset or "x-instruction", dataset_name=f"held-out seed pairs, iteration {k}",
                       metric_type=name.split(" (")[0].replace(" ", "_").lower(), metric_name=name, metric_value=value)
            for name, value in figures.items() if isinstance(value, int | float)]


def render_model_card(
    run_dir: str | Path,
    role: str,
    repo_id: str,
    dataset: str | None = None,
    dataset_revision: str | None = None,
    evaluation: dict[str, Any] | None = None,
    iteration: int | None = None,
) -> ModelCard:
    """The model card of ``role`` (``generator``, ``follower``, ``evaluator`` or ``final``) of a finished run.

    Args:
        repo_id: the model repo the card is for.
        dataset: dataset repo id recorded under ``datasets`` (and linked, with its revision).
        evaluation: metric name -> value, shown in the card when present. For the final model, by default
            the results of ``xinstruct evaluate --run`` (``<run>/eval/results.json``) when they exist; for the
            follower and the evaluator, that iteration's held-out figures. They also go into the card's
            ``model-index`` (``eval_results``).
        iteration: the refinement iteration of a follower or an evaluator (default: the last). Its card names the
            dataset revision it trained on and the one its ratings made, and links the previous and next
            iterations' revisions of ``repo_id``.
    """
    if role not in ROLES:
        raise PublishError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    run = RunDir(run_dir)
    recipe = run.recipe()
    k_max = run.iterations
    k = (iteration or k_max) if role in PER_ITERATION else None
    step = run.role_step(role, k)
    manifest = run.manifest(step)
    if not manifest:
        raise PublishError(f"{run.path} has no trained {role} (no finished {step} step); run the recipe first.")
    eval_results: list[Any] = []
    eval_file = run.eval_results()
    if role == "final" and evaluation is None and eval_file.exists():  # written by `xinstruct evaluate --run`
        from ..evaluation.report import card_eval_results

        eval_results, evaluation = card_eval_results(json.loads(eval_file.read_text(encoding="utf-8")))
    lineage = None
    if k is not None:
        if evaluation is None:
            evaluation = iteration_figures(run, role, k)
            eval_results = _eval_results(evaluation, dataset, k)
        lineage = {
            "iteration": k, "iterations": k_max, "step_hash": manifest.get("hash"),
            "trained_on": (f"iter-{k - 1}" if role == "follower" and k > 1 else None),
            "rated": f"iter-{k}" if role == "evaluator" else None,
            "previous": f"iter-{k - 1}" if k > 1 else None,
            "next": f"iter-{k + 1}" if run.finished(run.role_step(role, k + 1)) else None,
        }
    blocks = {"final": recipe["final"], "generator": recipe["generator"], "follower": recipe["refinement"]["follower"],
              "evaluator": recipe["refinement"]["evaluator"]}
    block = blocks[role]
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
    default_evaluation = ({"held-out pseudo-rating accuracy": manifest["heldout_accuracy"]}
                          if "heldout_accuracy" in manifest else None)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card.md")),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        role=role,
        base_model=base,
        iteration=k or k_max,
        lineage=lineage,
        languages=recipe["languages"],
        dataset=dataset,
        dataset_revision=dataset_revision,
        template=ROLES[role],
        lora=block.get("lora"),
        training=block.get("training") or {},
        metrics=manifest.get("metrics"),
        evaluation=evaluation or default_evaluation,
        likelihood=(recipe["refinement"].get("evaluator_kind") == "likelihood"),
        citation=CITATION,
    )
