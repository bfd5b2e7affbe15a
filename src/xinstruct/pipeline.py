"""Runs a recipe's steps in order over a run directory, skipping finished ones.

=================  ==================  =====================================================================
stage              step (folder)       output
=================  ==================  =====================================================================
generation         ``seed``            seed pairs with their train / held-out split
generation         ``webtext``         filtered web texts (+ ``dropped`` with reasons)
generation         ``baseline``        the base model on the held-out pairs (the reference of every figure)
generation         ``generator``       the generator model (``generator/model``) and its held-out figures
generation         ``candidates``      (English instruction, native text) candidates (+ ``dropped``)
refinement         ``iter-k/follower``        follower model trained on the current kept set
refinement         ``iter-k/pseudo_ratings``  seed-based rating set, levels 3/2/1, with held-out split
refinement         ``iter-k/evaluator``       evaluator model and its held-out figures (vs length only)
refinement         ``iter-k/ratings``         P(1), P(2), P(3) per candidate (+ planted negatives, apart)
refinement         ``iter-k/kept``            rows that meet the keep rule
diversification    ``diversified``     equal share of every instruction cluster, per language
tuning             ``final``           the X-Instruction model (``final/model``) and its fidelity
=================  ==================  =====================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Recipe
from .errors import StageError
from .rundir import RunDir, Step
from .stages import diversification, generation, refinement, tuning
from .steps import InputHash, StepContext, StepSpec

logger = logging.getLogger(__name__)

STAGES = ("generation", "refinement", "diversification", "tuning")


@dataclass
class StepResult:
    """What happened to one step in a run."""

    name: str
    status: str  # "done" (ran now) or "skipped" (already finished with the same settings)
    seconds: float
    path: Path
    manifest: dict[str, Any]


def declared_steps(recipe: Recipe) -> list[StepSpec]:
    """Every step the stages declare for ``recipe``, in run order."""
    return [*generation.steps(recipe), *refinement.steps(recipe), *diversification.steps(recipe),
            *tuning.steps(recipe)]


def hashed_steps(recipe: Recipe, run_dir: str | Path) -> list[tuple[StepSpec, Step]]:
    """Every declared step of the recipe in order, with its folder in ``run_dir`` and its settings hash (the hashes
    of its inputs included); nothing is read or written."""
    built: dict[str, Step] = {}
    out: list[tuple[StepSpec, Step]] = []
    for spec in declared_steps(recipe):
        missing = [name for name in spec.inputs if name not in built]
        if missing:
            raise StageError(f"Step {spec.name} reads {', '.join(missing)}, which no earlier step writes.")
        settings = {k: built[v.step].hash if isinstance(v, InputHash) else v for k, v in spec.settings.items()}
        step = built[spec.name] = Step(run_dir, spec.name, settings, [built[name] for name in spec.inputs])
        out.append((spec, step))
    return out


def _select(steps: list[tuple[StepSpec, Step]], until: str | None, start: str | None) -> tuple[int, int]:
    names = [step.name for _, step in steps]

    def index(name: str, last: bool) -> int:
        if name in STAGES:
            hits = [i for i, (spec, _) in enumerate(steps) if spec.stage == name]
            return hits[-1] if last else hits[0]
        if name in names:
            return names.index(name)
        raise StageError(f"{name!r} is not a stage ({', '.join(STAGES)}) or a step ({', '.join(names)}).")

    first = index(start, last=False) if start else 0
    last = index(until, last=True) if until else len(steps) - 1
    if first > last:
        raise StageError(f"--from {start} comes after --until {until}.")
    return first, last


def run(
    recipe: Recipe,
    run_dir: str | Path,
    until: str | None = None,
    start: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[StepResult]:
    """Run (or resume) the recipe's steps in ``run_dir``.

    Args:
        until: stop after this stage or step.
        start: run again from this stage or step (``--from``): earlier steps must be finished; this step
            and the ones after it run even if finished.
    """
    run_dir = Path(run_dir)
    steps = hashed_steps(recipe, run_dir)
    first, last = _select(steps, until, start)
    for _, step in steps[:first]:
        if not step.is_done():
            raise StageError(f"--from {start}: step {step.name} has not finished; run without --from first.")
    RunDir(run_dir).write_recipe(recipe.to_dict())
    results: list[StepResult] = []
    every = {step.name: step for _, step in steps}
    for pos, (spec, step) in enumerate(steps[: last + 1]):
        forced = start is not None and pos >= first
        if step.is_done() and not forced:
            echo(f"[{step.name}] already done (hash {step.hash}), skipped")
            results.append(StepResult(step.name, "skipped", 0.0, step.path, step.manifest() or {}))
            continue
        echo(f"[{step.name}] running ...")
        started = time.time()
        step.begin()
        manifest = step.finish(StepContext(recipe, step, every).run(spec))
        seconds = time.time() - started
        echo(f"[{step.name}] done in {seconds:.1f}s: {_summary(manifest)}")
        results.append(StepResult(step.name, "done", seconds, step.path, manifest))
    return results


def _summary(manifest: dict[str, Any]) -> str:
    parts = [f"{key}={manifest[key]}" for key in ("rows_in", "rows_out") if key in manifest]
    if manifest.get("skipped"):
        parts.append(f"skipped={manifest['skipped']}")
    if "metrics" in manifest:
        parts.append(f"train_loss={manifest['metrics'].get('train_loss', float('nan')):.4f}")
    if "heldout_accuracy" in manifest:
        parts.append(f"heldout_accuracy={manifest['heldout_accuracy']}")
    return ", ".join(parts) or "ok"
