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


# (figure name in the card, metric id in model-index, key of the iteration report, the model's own figure?)
FIGURES = {
    "follower": (("language fidelity (held-out instructions)", "language_fidelity", "follower_fidelity", True),
                 ("language fidelity of the base model", "language_fidelity", "base_fidelity", False)),
    "evaluator": (("held-out accuracy", "accuracy", "evaluator_heldout_accuracy", True),
                  ("held-out accuracy of a length-only classifier", "accuracy", "length_baseline_accuracy", False),
                  ("AUC of P(3), 3 vs 1", "roc_auc_3v1", "evaluator_auc_3v1", True),
                  ("AUC of P(3), 3 vs 2", "roc_auc_3v2", "evaluator_auc_3v2", True),
                  ("drop rate of planted negatives", "planted_drop_rate", "planted_drop_rate", True),
                  ("drop rate of real rows", "real_drop_rate", "real_drop_rate", False)),
}


def iteration_figures(run: RunDir, role: str, k: int) -> tuple[dict[str, Any], list[EvalResult]]:
    """The held-out figures of iteration ``k``'s follower or evaluator, as the card's table (the model's figures next
    to their references) and as ``model-index`` entries (the model's own figures only). The follower's fidelity is its
    own only when it answered the seed instructions (``level_sources[2]: follower``)."""
    row = next((r for r in iteration_report(run.path, run.iterations) if r["iteration"] == k), None)
    if row is None:
        return {}, []
    level2 = ((run.recipe().get("refinement") or {}).get("pseudo_ratings") or {}).get("level_sources", {})
    if role == "follower" and str(level2.get(2, level2.get("2", "follower"))) != "follower":
        return {}, []  # the level-2 answers (and their fidelity) came from the base model
    table, results = {}, []
    for name, metric, key, own in FIGURES[role]:
        value = row.get(key)
        if value is None:
            continue
        table[name] = value
        if own and isinstance(value, int | float):
            results.append(EvalResult(
                task_type="text-classification" if role == "evaluator" else "text-generation",
                task_name=f"X-Instruction {role}, refinement iteration {k}",
                dataset_type="x-instruction-heldout-seeds",
                dataset_name=f"held-out seed pairs of the run (iteration {k})", metric_type=metric, metric_name=name,
                metric_value=value))
    return table, results


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
            evaluation, eval_results = iteration_figures(run, role, k)
        lineage = {
            "iteration": k, "iterations": k_max, "step_hash": manifest.get("hash"),
            "trained_on": (f"iter-{k - 1}" if role == "follower" and k > 1 else None),
            "rated": f"iter-{k}" if role == "evaluator" else None,
            "previous": f"iter-{k - 1}" if k > 1 else None,
            "next": f"iter-{k + 1}" if run.finished(run.role_step(role, k + 1)) else None,
        }
    likelihood = recipe["refinement"].get("evaluator_kind") == "likelihood"
    blocks = {"final": recipe["final"], "generator": recipe["generator"], "follower": recipe["refinement"]["follower"],
              # a likelihood evaluator is the follower's weights plus a rating head
              "evaluator": recipe["refinement"]["follower" if likelihood else "evaluator"]}
    block = blocks[role]
    if role == "evaluator" and likelihood:
        manifest = run.manifest(run.role_step("follower", k))  # the training behind the weights
    # the data a model trained on: the final model on the published set; follower k on the kept set of k - 1
    trained_on = (dataset_revision if role == "final" else
                  lineage["trained_on"] if lineage and lineage["trained_on"] else None)
    trained_on_dataset = dataset if role == "final" or trained_on else None
    base = block.get("model") or recipe["base_model"]
    card_data = ModelCardData(
        base_model=base,
        datasets=[trained_on_dataset] if trained_on_dataset else None,
        language=list(recipe["languages"]),
        library_name="transformers",
        pipeline_tag="text-generation",
        license="other",
        tags=["x-instruction", "trl", "sft", "cross-lingual", role] + (["lora"] if block.get("lora") else []),
        dataset_revision=trained_on,
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
        iteration=k or k_max,
        lineage=lineage,
        languages=recipe["languages"],
        dataset=dataset,
        trained_on_dataset=trained_on_dataset,
        dataset_revision=trained_on,
        template=ROLES[role],
        lora=block.get("lora"),
        training=block.get("training") or {},
        metrics=manifest.get("metrics"),
        evaluation=evaluation,
        likelihood=likelihood,
        citation=CITATION,
    )
