"""Role-aware model cards (generator, follower and evaluator of an iteration, final X-Instruction model) from
``hub_cards/model_card.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..prompts import FOLLOWER_TEMPLATE, GENERATOR_TEMPLATE, RATING_TEMPLATE
from ..run_report import iteration_report
from ..rundir import RunDir, iteration_name
from .dataset_repo import CITATION, PublishError, refinement_facts
from .templates import template_path

ROLES = {"generator": GENERATOR_TEMPLATE, "follower": FOLLOWER_TEMPLATE, "evaluator": RATING_TEMPLATE,
         "final": FOLLOWER_TEMPLATE}
PER_ITERATION = ("follower", "evaluator")


# Each figure of an iteration's follower or evaluator, with the references it stands next to in the card:
# (figure in the card, metric id in model-index, path to the model's own value in the iteration report, path to what
# the card shows for it (with its interval where the report has one), references as (label, path)). Only the model's
# own value goes into model-index.
FIGURES: dict[str, tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]],
                         ...]] = {
    "follower": (
        ("language fidelity (held-out instructions)", "language_fidelity", ("follower_fidelity",),
         ("follower_fidelity",), (("base model", ("base_fidelity",)),)),
        ("relevance@1 (chrF retrieval of its own gold response)", "relevance_at_1",
         ("follower_relevance", "retrieval@1"), ("follower_relevance", "retrieval@1_interval"),
         (("base model", ("base_relevance", "retrieval@1_interval")), ("chance", ("follower_relevance", "chance@1")))),
    ),
    "evaluator": (
        ("held-out accuracy", "accuracy", ("evaluator_heldout_accuracy",), ("evaluator_heldout_accuracy",),
         (("length-only classifier", ("length_baseline_accuracy",)),
          ("truncation-only classifier", ("truncation_baseline_accuracy",)))),
        ("AUC of P(3), 3 vs 1", "roc_auc_3v1", ("evaluator_auc_3v1",), ("evaluator_auc_3v1_interval",),
         (("strongest reference", ("strongest_reference_3v1",)),)),
        ("AUC of P(3), 3 vs 2", "roc_auc_3v2", ("evaluator_auc_3v2",), ("evaluator_auc_3v2_interval",),
         (("strongest reference", ("strongest_reference_3v2",)),)),
        ("swap AUC of P(3), each candidate vs a swapped instruction", "swap_auc",
         ("swap_auc", "auc"), ("swap_auc",), (("base model PMI", ("swap_auc_base_pmi",)),)),
        ("drop rate of planted negatives", "planted_drop_rate", ("planted_drop_rate",), ("drop_rates", "easy"),
         (("real rows", ("drop_rates", "real")),)),
    ),
}
ON_THE_POOL = {"swap_auc", "planted_drop_rate"}  # measured on the real candidate pool, not on held-out seeds


def _at(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def _shown(value: Any) -> str | None:
    """A figure as the card shows it: ``0.83``, ``0.49 [0.44, 0.54]`` with its interval, ``name 0.61`` for a named
    reference; ``None`` when the report lacks it."""
    if isinstance(value, dict):
        centre = value.get("auc", value.get("rate"))
        if centre is None:
            return None
        if "name" in value:
            return f"{value['name']} {centre:.2f}"
        if value.get("low") is not None and value.get("high") is not None:
            return f"{centre:.2f} [{value['low']:.2f}, {value['high']:.2f}]"
        return f"{centre:.2f}"
    return None if value is None else f"{value:.2f}"


def iteration_figures(run: RunDir, role: str, k: int) -> tuple[dict[str, dict[str, str]], list[EvalResult]]:
    """The figures of iteration ``k``'s follower or evaluator, as the card's table (figure name -> the
    model's value and its references, side by side) and as ``model-index`` entries (the model's own figures only).
    The follower's figures are its own only when it answered the seed instructions (``level_sources[2]:
    follower``)."""
    row = next((r for r in iteration_report(run.path, run.iterations) if r["iteration"] == k), None)
    if row is None:
        return {}, []
    level2 = ((run.recipe().get("refinement") or {}).get("pseudo_ratings") or {}).get("level_sources", {})
    if role == "follower" and str(level2.get(2, level2.get("2", "follower"))) != "follower":
        return {}, []  # the level-2 answers (and their fidelity and relevance) came from the base model
    table, results = {}, []
    for name, metric, own, shown, references in FIGURES[role]:
        value = _at(row, own)
        if value is None:
            continue
        refs = [(label, _shown(_at(row, path))) for label, path in references]
        table[name] = {"value": _shown(_at(row, shown)) or _shown(value),
                       "reference": "; ".join(f"{label}: {text}" for label, text in refs if text is not None) or "n/a"}
        if isinstance(value, int | float):
            pool = metric in ON_THE_POOL
            results.append(EvalResult(
                task_type="text-classification" if role == "evaluator" else "text-generation",
                task_name=f"X-Instruction {role}, refinement iteration {k}",
                dataset_type="x-instruction-candidates" if pool else "x-instruction-heldout-seeds",
                dataset_name=(f"the run's candidates and their swapped copies (iteration {k})" if pool else
                              f"held-out seed pairs of the run, test half (iteration {k})"),
                metric_type=metric, metric_name=name, metric_value=value))
    return table, results


def _lineage(run: RunDir, role: str, k: int, step_hash: str | None) -> dict[str, Any]:
    """Where iteration ``k``'s follower or evaluator sits: the revisions it trained on, rated, and the previous and
    next iterations' revisions (each named after its iteration, :func:`~xinstruct.rundir.iteration_name`)."""
    return {
        "iteration": k, "iterations": run.iterations, "step_hash": step_hash,
        "trained_on": iteration_name(k - 1) if role == "follower" and k > 1 else None,
        "rated": iteration_name(k) if role == "evaluator" else None,
        "previous": iteration_name(k - 1) if k > 1 else None,
        "next": iteration_name(k + 1) if run.finished(run.role_step(role, k + 1)) else None,
    }


def _role_training(run: RunDir, recipe: dict[str, Any], role: str, k: int | None, manifest: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The recipe block of the weights a role's card describes, the manifest of their training and (likelihood
    evaluator) the rating head's pushed settings: a likelihood evaluator is the follower's weights plus a head."""
    likelihood = recipe["refinement"].get("evaluator_kind") == "likelihood"
    blocks = {"final": recipe["final"], "generator": recipe["generator"], "follower": recipe["refinement"]["follower"],
              "evaluator": recipe["refinement"]["follower" if likelihood else "evaluator"]}
    head = None
    if role == "evaluator" and likelihood:
        manifest = run.manifest(run.role_step("follower", k))  # the training behind the weights
        if (path := run.rating_head(k)) is not None:
            head = {key: value for key, value in json.loads(path.read_text(encoding="utf-8")).items()
                    if key not in ("follower", "mean", "std", "weight", "bias")}  # what the pushed JSON carries
    return blocks[role], manifest, head


def render_model_card(run_dir: str | Path, role: str, repo_id: str, dataset: str | None = None,
                      dataset_revision: str | None = None, evaluation: dict[str, Any] | None = None,
                      iteration: int | None = None) -> ModelCard:
    """The model card of ``role`` (``generator``, ``follower``, ``evaluator`` or ``final``) of a finished run.

    The follower's, evaluator's and final model's cards state how the run rated and kept its data
    (:func:`.dataset_repo.refinement_facts`); the generator's does not (it precedes refinement, so growing a run
    leaves its card unchanged). The evaluator's card says how to rate pairs with it (``xinstruct rate``, or by hand
    from ``rating_head.json``).

    Args:
        repo_id: the model repo the card is for.
        dataset: dataset repo id recorded under ``datasets`` (and linked, with its revision).
        evaluation: metric name -> value, shown in the card when present. For the final model, by default
            the results of ``xinstruct evaluate --run`` (``<run>/eval/results.json``) when they exist; for the
            follower and the evaluator, that iteration's figures from the run report, each next to its references
            (:func:`iteration_figures`). They also go into the card's ``model-index`` (``eval_results``; the
            model's own figures only).
        iteration: the refinement iteration of a follower or an evaluator (default: the last). Its card names the
            dataset revision it trained on and the one its ratings made, and links the previous and next
            iterations' revisions of ``repo_id``.
    """
    if role not in ROLES:
        raise PublishError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    run = RunDir(run_dir)
    recipe, k_max = run.recipe(), run.iterations
    k = (iteration or k_max) if role in PER_ITERATION else None
    manifest = run.manifest(step := run.role_step(role, k))
    if not manifest:
        raise PublishError(f"{run.path} has no trained {role} (no finished {step} step); run the recipe first.")
    eval_results, evaluation, figures = _card_figures(run, role, k, evaluation)
    lineage = _lineage(run, role, k, manifest.get("hash")) if k is not None else None
    likelihood = recipe["refinement"].get("evaluator_kind") == "likelihood"
    block, manifest, head = _role_training(run, recipe, role, k, manifest)
    refinement = refinement_facts(run, recipe)  # K, evaluator kind and folds, keep rule and threshold, window
    # a cross-fitted follower (and the likelihood evaluator on its weights) is pushed as fold 0's model
    fold = ({"folds": refinement["folds"], "rows": manifest.get("fold_0_rows"), "rows_in": manifest.get("rows_in")}
            if role in PER_ITERATION and refinement["folds"] > 1 else None)
    # the data a model trained on: the final model on the published set; follower k on the kept set of k - 1
    trained_on = (dataset_revision if role == "final" else
                  lineage["trained_on"] if lineage and lineage["trained_on"] else None)
    trained_on_dataset = dataset if role == "final" or trained_on else None
    base = block.get("model") or recipe["base_model"]
    card_data = ModelCardData(
        base_model=base, datasets=[trained_on_dataset] if trained_on_dataset else None,
        language=list(recipe["languages"]), library_name="transformers", pipeline_tag="text-generation",
        license="other", tags=_tags(role, block), dataset_revision=trained_on, model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None)
    return ModelCard.from_template(
        card_data, template_path=str(template_path("model_card.md")), model_name=repo_id.split("/")[-1],
        repo_id=repo_id, role=role, base_model=base, iteration=k or k_max, lineage=lineage,
        languages=recipe["languages"], dataset=dataset, trained_on_dataset=trained_on_dataset,
        dataset_revision=trained_on,
        # a likelihood evaluator scores the response after the follower's prompt (the head's template)
        template=(head or {}).get("template", FOLLOWER_TEMPLATE) if role == "evaluator" and likelihood
        else ROLES[role],
        lora=block.get("lora"), training=block.get("training") or {},
        metrics=manifest.get("metrics") or manifest.get("fold_0_metrics"), evaluation=evaluation, figures=figures,
        refinement=refinement, applied_threshold=refinement["thresholds"].get(k) if k else None, fold=fold,
        head=head, likelihood=likelihood, citation=CITATION)


def _tags(role: str, block: dict[str, Any]) -> list[str]:
    """A model card's tags: the project, the method, the role, and ``lora`` when the role trained an adapter."""
    return ["x-instruction", "trl", "sft", "cross-lingual", role] + (["lora"] if block.get("lora") else [])


def _card_figures(run: RunDir, role: str, k: int | None, evaluation: dict[str, Any] | None
                  ) -> tuple[list[Any], dict[str, Any] | None, dict[str, Any] | None]:
    """A card's ``model-index`` results, its evaluation table and its figures next to their references: the final
    model's from ``xinstruct evaluate --run`` (when run), a follower's or evaluator's from its iteration's report;
    an ``evaluation`` passed in is shown as given."""
    eval_results: list[Any] = []
    figures = None
    eval_file = run.eval_results()
    if role == "final" and evaluation is None and eval_file.exists():  # written by `xinstruct evaluate --run`
        from ..evaluation.report import card_eval_results

        eval_results, evaluation = card_eval_results(json.loads(eval_file.read_text(encoding="utf-8")))
    if k is not None and evaluation is None:  # the iteration's figures, each next to its references
        figures, eval_results = iteration_figures(run, role, k)
    return eval_results, evaluation, figures
