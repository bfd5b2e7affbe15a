"""Runs the steps of a recipe in order over a run directory, skipping finished ones.

Steps (folders of ``runs/<name>/``) and the stage they belong to:

===============  =============  ==============================================================
step             stage          output
===============  =============  ==============================================================
``seed``         generation     seed pairs
``webtext``      generation     filtered web texts (+ ``dropped`` with reasons)
``generator``    generation     the generator model (``generator/model``)
``candidates``   generation     (English instruction, native text) candidates (+ ``dropped``)
===============  =============  ==============================================================
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import Recipe
from .inference import make_engine
from .rundir import Step
from .stages import generation
from .training import output_settings

logger = logging.getLogger(__name__)

STEPS = ("seed", "webtext", "generator", "candidates")
STAGES = {"generation": STEPS}


@dataclass
class StepResult:
    """What happened to one step in a run."""

    name: str
    status: str  # "done" (ran now) or "skipped" (already finished with the same settings)
    seconds: float
    path: Path
    manifest: dict[str, Any]


def _resolve_until(until: str | None) -> str:
    if until is None:
        return STEPS[-1]
    if until in STAGES:
        return STAGES[until][-1]
    if until not in STEPS:
        raise ValueError(f"--until {until!r} is not a stage ({', '.join(STAGES)}) or step ({', '.join(STEPS)}).")
    return until


def plan(recipe: Recipe, run_dir: Path) -> dict[str, Step]:
    """The steps of a run with their settings hashes (nothing is read or written)."""
    data = recipe.data
    seed = Step(run_dir, "seed", {"seeds": dataclasses.asdict(data.seeds), "languages": recipe.languages})
    webtext = Step(
        run_dir,
        "webtext",
        {
            "webtext": {k: v for k, v in dataclasses.asdict(data.webtext).items() if k != "streaming"},
            "filters": dataclasses.asdict(data.filters),
            "languages": recipe.languages,
        },
    )
    role = recipe.generator
    generator = Step(
        run_dir,
        "generator",
        {"model": recipe.model_for(role), "lora": role.lora, "training": output_settings(role.training), "seed": recipe.seed},
        [seed],
    )
    candidates = Step(
        run_dir,
        "candidates",
        {
            "candidates": dataclasses.asdict(recipe.candidates),
            "seed": recipe.seed,
            "generator_hash": generator.hash,
        },
        [webtext, generator],
    )
    return {s.name: s for s in (seed, webtext, generator, candidates)}


def run(recipe: Recipe, run_dir: str | Path, until: str | None = None, echo: Callable[[str], None] = print) -> list[StepResult]:
    """Run (or resume) the recipe's steps up to ``until`` (a step or stage name) in ``run_dir``."""
    run_dir = Path(run_dir)
    last = _resolve_until(until)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))
    steps = plan(recipe, run_dir)
    results: list[StepResult] = []
    for name in STEPS[: STEPS.index(last) + 1]:
        step = steps[name]
        if step.is_done():
            echo(f"[{name}] already done (hash {step.hash}), skipped: {step.path}")
            results.append(StepResult(name, "skipped", 0.0, step.path, step.manifest() or {}))
            continue
        echo(f"[{name}] running ...")
        started = time.time()
        step.begin()
        report = _run_step(name, recipe, steps)
        manifest = step.finish(report)
        seconds = time.time() - started
        echo(f"[{name}] done in {seconds:.1f}s: {_summary(manifest)}")
        results.append(StepResult(name, "done", seconds, step.path, manifest))
    return results


def _run_step(name: str, recipe: Recipe, steps: dict[str, Step]) -> dict[str, Any]:
    if name == "seed":
        return generation.build_seed(recipe, steps["seed"])
    if name == "webtext":
        return generation.build_webtext(recipe, steps["webtext"])
    if name == "generator":
        return generation.train_generator(recipe, steps["seed"].load(), steps["generator"])
    if name == "candidates":
        model_dir = str(steps["generator"].path / "model")
        engine = make_engine(recipe.engine, model_dir)
        return generation.generate_candidates(recipe, steps["webtext"].load(), model_dir, steps["candidates"], engine)
    raise ValueError(name)


def _summary(manifest: dict[str, Any]) -> str:
    parts = []
    for key in ("rows_in", "rows_out"):
        if key in manifest:
            parts.append(f"{key}={manifest[key]}")
    if manifest.get("skipped"):
        parts.append(f"skipped={manifest['skipped']}")
    if "metrics" in manifest:
        parts.append(f"train_loss={manifest['metrics'].get('train_loss', float('nan')):.4f}")
    return ", ".join(parts) or "ok"
