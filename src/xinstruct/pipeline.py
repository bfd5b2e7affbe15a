"""Runs a recipe's steps in order over a run directory, skipping finished ones.

=================  ==================  =====================================================================
stage              step (folder)       output
=================  ==================  =====================================================================
generation         ``seed``            seed pairs
generation         ``webtext``         filtered web texts (+ ``dropped`` with reasons)
generation         ``generator``       the generator model (``generator/model``)
generation         ``candidates``      (English instruction, native text) candidates (+ ``dropped``)
refinement         ``iter-k/follower``        follower model trained on the current kept set
refinement         ``iter-k/pseudo_ratings``  seed-based rating set, levels 3/2/1, with held-out split
refinement         ``iter-k/evaluator``       evaluator model and its held-out accuracy
refinement         ``iter-k/ratings``         P(1), P(2), P(3) and expected rating per candidate
refinement         ``iter-k/kept``            rows that meet the keep rule
diversification    ``diversified``     equal share of every instruction cluster, per language
tuning             ``final``           the X-Instruction model (``final/model``)
=================  ==================  =====================================================================
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

from .config import Recipe, RoleConfig
from .inference import make_engine
from .rundir import Step
from .stages import diversification, generation, refinement, tuning
from .training import output_settings

logger = logging.getLogger(__name__)

STAGES = ("generation", "refinement", "diversification", "tuning")


@dataclass
class PlannedStep:
    """A step of the plan: its folder and hash, its stage, and how to run it."""

    step: Step
    stage: str
    run: Callable[[], dict[str, Any]]


@dataclass
class StepResult:
    """What happened to one step in a run."""

    name: str
    status: str  # "done" (ran now) or "skipped" (already finished with the same settings)
    seconds: float
    path: Path
    manifest: dict[str, Any]


def _role_settings(recipe: Recipe, role: RoleConfig) -> dict[str, Any]:
    return {"model": recipe.model_for(role), "lora": role.lora, "training": output_settings(role.training),
            "seed": recipe.seed, "launcher": recipe.launcher.type}


def plan(recipe: Recipe, run_dir: str | Path) -> list[PlannedStep]:
    """Every step of the recipe in order, with its settings hash (nothing is read or written)."""
    run_dir = Path(run_dir)
    # the engine serving a role's model inside a step (endpoint answers are stored in <step>/requests)
    engine = lambda role, model, step: make_engine(recipe.engine_for(role), model, step.path / "requests")  # noqa: E731
    model_of = lambda step: str(step.path / "model")  # noqa: E731
    data = recipe.data
    out: list[PlannedStep] = []

    def add(step: Step, stage: str, run: Callable[[], dict[str, Any]]) -> Step:
        out.append(PlannedStep(step, stage, run))
        return step

    # --- generation --------------------------------------------------------------------------------
    seed = Step(run_dir, "seed", {"seeds": dataclasses.asdict(data.seeds), "languages": recipe.languages})
    add(seed, "generation", lambda: generation.build_seed(recipe, seed))
    webtext_settings = {k: v for k, v in dataclasses.asdict(data.webtext).items() if k != "streaming"}
    webtext = Step(run_dir, "webtext", {"webtext": webtext_settings, "filters": dataclasses.asdict(data.filters), "languages": recipe.languages})
    add(webtext, "generation", lambda: generation.build_webtext(recipe, webtext))
    generator = Step(run_dir, "generator", _role_settings(recipe, recipe.generator), [seed])
    add(generator, "generation", lambda: generation.train_generator(recipe, seed.load(), generator))
    candidates = Step(run_dir, "candidates", {"candidates": dataclasses.asdict(recipe.candidates), "seed": recipe.seed,
                                              "generator_hash": generator.hash}, [webtext, generator])
    add(candidates, "generation", lambda: generation.generate_candidates(
        recipe, webtext.load(), model_of(generator), candidates, engine(recipe.generator, model_of(generator), candidates)))

    # --- refinement --------------------------------------------------------------------------------
    ref = recipe.refinement
    train_src = pool_src = candidates
    for k in range(1, ref.iterations + 1):
        it = f"iter-{k}"
        follower = Step(run_dir, f"{it}/follower", _role_settings(recipe, ref.follower), [train_src])
        add(follower, "refinement", lambda f=follower, src=train_src: refinement.train_follower(recipe, src.load(), f))
        level2_from_follower = ref.pseudo_ratings.level_sources[2] == "follower"
        pseudo = Step(run_dir, f"{it}/pseudo_ratings",
                      {"pseudo_ratings": dataclasses.asdict(ref.pseudo_ratings), "seed": recipe.seed,
                       "base_model": None if level2_from_follower else recipe.base_model},
                      [seed, follower] if level2_from_follower else [seed])
        add(pseudo, "refinement", lambda p=pseudo, f=follower, l2=level2_from_follower: refinement.build_pseudo_ratings(
            recipe, seed.load(), p, engine(ref.follower if l2 else None, model_of(f) if l2 else recipe.base_model, p)))
        evaluator = Step(run_dir, f"{it}/evaluator", _role_settings(recipe, ref.evaluator), [pseudo])
        add(evaluator, "refinement", lambda e=evaluator, p=pseudo: refinement.train_evaluator(
            recipe, p.load(), e, lambda path, e=e: engine(ref.evaluator, path, e)))
        ratings = Step(run_dir, f"{it}/ratings", {"iteration": k, "rate": ref.rate}, [evaluator, pool_src])
        add(ratings, "refinement", lambda r=ratings, e=evaluator, src=pool_src, k=k: refinement.rate_candidates(
            recipe, src.load(), r, engine(ref.evaluator, model_of(e), r), k))
        kept = Step(run_dir, f"{it}/kept", {"keep_rule": ref.keep_rule, "keep_threshold": ref.keep_threshold}, [ratings])
        add(kept, "refinement", lambda kp=kept, r=ratings, k=k: refinement.keep_rated(recipe, r.load(), kp, k))
        train_src = kept
        pool_src = kept if ref.rate == "kept" else candidates

    # --- diversification and final tuning ----------------------------------------------------------
    div_settings = {k: v for k, v in dataclasses.asdict(recipe.diversification).items() if k != "batch_size"}
    diversified = Step(run_dir, "diversified", {**div_settings, "seed": recipe.seed}, [train_src])
    add(diversified, "diversification", lambda src=train_src: diversification.diversify(recipe, src.load(), diversified))
    final = Step(run_dir, "final", {**_role_settings(recipe, recipe.final), "assistant_share": recipe.final.assistant_share},
                 [diversified])
    add(final, "tuning", lambda: tuning.train_final(recipe, diversified.load(), final))
    return out


def _select(steps: list[PlannedStep], until: str | None, start: str | None) -> tuple[int, int]:
    names = [p.step.name for p in steps]

    def index(name: str, last: bool) -> int:
        if name in STAGES:
            hits = [i for i, p in enumerate(steps) if p.stage == name]
            return hits[-1] if last else hits[0]
        if name in names:
            return names.index(name)
        raise generation.StageError(f"{name!r} is not a stage ({', '.join(STAGES)}) or a step ({', '.join(names)}).")

    first = index(start, last=False) if start else 0
    last = index(until, last=True) if until else len(steps) - 1
    if first > last:
        raise generation.StageError(f"--from {start} comes after --until {until}.")
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
    steps = plan(recipe, run_dir)
    first, last = _select(steps, until, start)
    for p in steps[:first]:
        if not p.step.is_done():
            raise generation.StageError(f"--from {start}: step {p.step.name} has not finished; run without --from first.")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))
    results: list[StepResult] = []
    for pos, p in enumerate(steps[: last + 1]):
        step = p.step
        forced = start is not None and pos >= first
        if step.is_done() and not forced:
            echo(f"[{step.name}] already done (hash {step.hash}), skipped")
            results.append(StepResult(step.name, "skipped", 0.0, step.path, step.manifest() or {}))
            continue
        echo(f"[{step.name}] running ...")
        started = time.time()
        step.begin()
        manifest = step.finish(p.run())
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


def iteration_report(run_dir: str | Path, iterations: int) -> list[dict[str, Any]]:
    """Per iteration: rows in and kept per language, rating histogram, evaluator held-out accuracy,
    follower training loss (read from the manifests; iterations not run yet are left out)."""
    run_dir = Path(run_dir)
    report = []
    for k in range(1, iterations + 1):
        paths = {name: run_dir / f"iter-{k}" / name / "manifest.json" for name in ("follower", "evaluator", "ratings", "kept")}
        if not all(p.exists() for p in paths.values()):
            continue
        m = {name: yaml.safe_load(p.read_text()) for name, p in paths.items()}
        report.append({
            "iteration": k,
            "rows_in": m["kept"]["rows_in"],
            "kept": m["kept"]["rows_out"],
            "rows_in_per_language": m["kept"]["rows_in_per_language"],
            "kept_per_language": m["kept"]["rows_out_per_language"],
            "rating_histogram": m["ratings"]["rating_histogram"],
            "evaluator_heldout_accuracy": m["evaluator"].get("heldout_accuracy"),
            "follower_train_loss": m["follower"]["metrics"].get("train_loss"),
        })
    return report


def format_iteration_report(report: list[dict[str, Any]]) -> str:
    """The per-iteration report as a text table."""
    lines = ["iteration  rows_in  kept  evaluator_acc  follower_loss  ratings(1/2/3)   kept per language"]
    for r in report:
        hist = r["rating_histogram"]
        ratings = "/".join(str(hist.get(str(k), 0)) for k in (1, 2, 3))
        acc = "n/a" if r["evaluator_heldout_accuracy"] is None else f"{r['evaluator_heldout_accuracy']:.3f}"
        per_lang = " ".join(f"{c}:{n}/{r['rows_in_per_language'][c]}" for c, n in sorted(r["kept_per_language"].items()))
        lines.append(f"{r['iteration']:>9}  {r['rows_in']:>7}  {r['kept']:>4}  {acc:>13}  {r['follower_train_loss']:>13.4f}  {ratings:<15}  {per_lang}")
    return "\n".join(lines)
