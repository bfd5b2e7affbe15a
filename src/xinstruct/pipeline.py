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

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import Recipe, RoleConfig
from .hardware import resolve_dtype
from .inference import make_engine
from .rundir import Step
from .stages import diversification, generation, refinement, tuning
from .training import role_settings

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


def _engine_settings(recipe: Recipe, role: RoleConfig | None) -> dict[str, Any]:
    """The engine settings that change a step's outputs: the resolved dtype and the input limit. The kind (local or
    endpoint) is left out, so a step can move to a server and still resume from what it wrote."""
    cfg = recipe.engine_for(role)
    return {"dtype": resolve_dtype(cfg.dtype, cfg.device), "max_input_tokens": cfg.max_input_tokens}


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
    ref = recipe.refinement
    seed = Step(run_dir, "seed", {"seeds": dataclasses.asdict(data.seeds), "languages": recipe.languages, "seed": recipe.seed})
    add(seed, "generation", lambda: generation.build_seed(recipe, seed))
    measured = {"candidates": dataclasses.asdict(recipe.candidates), "answers": dataclasses.asdict(ref.pseudo_ratings.decoding),
                "response_tokens": ref.response_tokens, "embedder": recipe.diversification.embedder}
    webtext_settings = {k: v for k, v in dataclasses.asdict(data.webtext).items() if k != "streaming"}
    webtext = Step(run_dir, "webtext", {"webtext": webtext_settings, "filters": dataclasses.asdict(data.filters), "languages": recipe.languages,
                                        "seed": recipe.seed if data.webtext.shuffle_buffer else None})
    add(webtext, "generation", lambda: generation.build_webtext(recipe, webtext))
    baseline = Step(run_dir, "baseline", {**measured, "base_model": recipe.base_model, "engine": _engine_settings(recipe, None)}, [seed])
    add(baseline, "generation", lambda: generation.measure_baseline(recipe, seed.load(), baseline, engine(None, recipe.base_model, baseline)))
    base_figure = lambda key: (baseline.manifest() or {}).get(key)  # noqa: E731
    generator = Step(run_dir, "generator", {**role_settings(recipe, recipe.generator), **measured,
                                            "engine": _engine_settings(recipe, recipe.generator)}, [seed, baseline])
    add(generator, "generation", lambda: generation.train_generator(
        recipe, seed.load(), generator, lambda path: engine(recipe.generator, path, generator), baseline.manifest() or {}))
    candidates = Step(run_dir, "candidates", {"candidates": dataclasses.asdict(recipe.candidates), "seed": recipe.seed,
                                              "generator_hash": generator.hash, "engine": _engine_settings(recipe, recipe.generator)},
                      [webtext, generator])
    add(candidates, "generation", lambda: generation.generate_candidates(
        recipe, webtext.load(), model_of(generator), candidates, engine(recipe.generator, model_of(generator), candidates)))

    # --- refinement --------------------------------------------------------------------------------
    rating_settings = {"response_tokens": ref.response_tokens, "max_length": ref.evaluator.training.get("max_length"),
                       "evaluator_kind": ref.evaluator_kind}
    train_src = pool_src = candidates
    for k in range(1, ref.iterations + 1):
        it = f"iter-{k}"
        follower = Step(run_dir, f"{it}/follower", {**role_settings(recipe, ref.follower),
                                                    "assistant_share": recipe.final.assistant_share}, [train_src])
        add(follower, "refinement", lambda f=follower, src=train_src: refinement.train_follower(recipe, src.load(), f))
        level2_from_follower = ref.pseudo_ratings.level_sources[2] == "follower"
        l2_role = ref.follower if level2_from_follower else None
        pseudo = Step(run_dir, f"{it}/pseudo_ratings",
                      {"pseudo_ratings": dataclasses.asdict(ref.pseudo_ratings), "seed": recipe.seed,
                       "response_tokens": ref.response_tokens, "evaluator_model": recipe.model_for(ref.evaluator),
                       "base_model": None if level2_from_follower else recipe.base_model,
                       "engine": _engine_settings(recipe, l2_role)},
                      [seed, follower] if level2_from_follower else [seed])
        add(pseudo, "refinement", lambda p=pseudo, f=follower, l2=l2_role: refinement.build_pseudo_ratings(
            recipe, seed.load(), p, engine(l2, model_of(f) if l2 else recipe.base_model, p), base_figure("fidelity")))
        likelihood = ref.evaluator_kind == "likelihood"  # the rating head reads the follower's likelihoods
        ev_role = ref.follower if likelihood else ref.evaluator
        evaluator = Step(run_dir, f"{it}/evaluator", {**rating_settings, "kind": ref.evaluator_kind, "keep_recall": ref.keep_recall,
                                                      **({} if likelihood else role_settings(recipe, ref.evaluator)),
                                                      "engine": _engine_settings(recipe, ev_role)},
                         [pseudo, follower] if likelihood else [pseudo])
        add(evaluator, "refinement", lambda e=evaluator, p=pseudo, f=follower, r=ev_role: refinement.train_evaluator(
            recipe, p.load(), e, lambda path, e=e, r=r: engine(r, path, e), model_of(f)))
        ratings = Step(run_dir, f"{it}/ratings", {"iteration": k, "rate": ref.rate, **rating_settings, "seed": recipe.seed,
                                                  "planted_share": ref.planted_share, "keep_rule": ref.keep_rule,
                                                  "keep_threshold": ref.keep_threshold, "keep_recall": ref.keep_recall,
                                                  "engine": _engine_settings(recipe, ev_role)}, [evaluator, pool_src])
        rater = model_of(follower if likelihood else evaluator)  # the model the rating engine serves
        head = str(evaluator.path / refinement.HEAD_FILE) if likelihood else None
        threshold = lambda e=evaluator: refinement.effective_threshold(recipe, e.manifest())  # noqa: E731
        add(ratings, "refinement", lambda r=ratings, src=pool_src, k=k, m=rater, h=head, role=ev_role, t=threshold:
            refinement.rate_candidates(recipe, src.load(), r, engine(role, m, r), k, m, h, t()))
        kept = Step(run_dir, f"{it}/kept", {"keep_rule": ref.keep_rule, "keep_threshold": ref.keep_threshold,
                                            "keep_recall": ref.keep_recall}, [ratings])
        add(kept, "refinement", lambda kp=kept, r=ratings, k=k, t=threshold: refinement.keep_rated(recipe, r.load(), kp, k, t()))
        train_src = kept
        pool_src = kept if ref.rate == "kept" else candidates

    # --- diversification and final tuning ----------------------------------------------------------
    div_settings = {k: v for k, v in dataclasses.asdict(recipe.diversification).items() if k != "batch_size"}
    diversified = Step(run_dir, "diversified", {**div_settings, "seed": recipe.seed, "languages": recipe.languages}, [train_src])
    add(diversified, "diversification", lambda src=train_src: diversification.diversify(recipe, src.load(), diversified))
    final = Step(run_dir, "final", {**role_settings(recipe, recipe.final), "assistant_share": recipe.final.assistant_share,
                                    **measured, "engine": _engine_settings(recipe, recipe.final)}, [diversified, seed])
    add(final, "tuning", lambda: tuning.train_final(recipe, diversified.load(), final, seed.load(),
                                                    lambda path: engine(recipe.final, path, final), base_figure("fidelity")))
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
