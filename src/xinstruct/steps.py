"""Declared steps. Each stage module states its steps next to the code that runs them: a step's name (its folder),
its stage, the steps whose outputs it reads, the settings that enter its hash, and the function that runs it.
:func:`xinstruct.pipeline.plan` only puts the declarations in order and hashes them.

Adding a step to the pipeline is one :class:`StepSpec` in its stage's ``steps`` function::

    StepSpec("dedup_report", "generation", inputs=("candidates",), settings={"ngram": 5},
             run=lambda ctx: my_report(ctx.load("candidates"), ctx.step))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from .config import Recipe, RoleConfig
from .hardware import resolve_dtype
from .inference import Engine, make_engine
from .rundir import Step


@dataclass(frozen=True)
class InputHash:
    """A settings value that stands for the hash of the input step ``step`` (resolved when the plan is made)."""

    step: str


@dataclass(frozen=True)
class StepSpec:
    """A step as its stage declares it.

    Args:
        name (`str`): the step's folder in the run directory (``candidates``, ``iter-2/ratings``).
        stage (`str`): the stage it belongs to (``generation``, ``refinement``, ``diversification``, ``tuning``).
        inputs (`tuple[str, ...]`): the steps whose outputs it reads; their hashes enter its hash, so a change
            upstream runs it again.
        settings (`dict`): the settings that change its output (never batch sizes, devices or URLs).
        run (`Callable[[StepContext], dict]`): does the work and returns the manifest's report.
    """

    name: str
    stage: str
    inputs: tuple[str, ...]
    settings: dict[str, Any]
    run: Callable[[StepContext], dict[str, Any]]


@dataclass
class StepContext:
    """What a running step sees: the recipe, its own :class:`~xinstruct.rundir.Step`, and the steps planned before
    it."""

    recipe: Recipe
    step: Step
    steps: dict[str, Step]
    built: list[Engine] = dataclasses.field(default_factory=list)  # engines made for this step, closed at its end

    def load(self, name: str) -> Dataset:
        """The data of an earlier step."""
        return self.steps[name].load()

    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest of an earlier step (empty when it has none)."""
        return self.steps[name].manifest() or {}

    def model(self, name: str) -> str:
        """The model an earlier training step saved."""
        return str(self.steps[name].model_path)

    def engine(self, role: RoleConfig | None, model: str) -> Engine:
        """The engine that serves ``model`` for ``role`` in this step (endpoint answers are stored in
        ``<step>/requests``, so a killed step re-sends nothing)."""
        engine = make_engine(self.recipe.engine_for(role), model, self.step.path / "requests")
        self.built.append(engine)
        return engine

    def close(self) -> None:
        """Close every engine the step made (worker processes, devices, replay files), before the next step trains."""
        while self.built:
            self.built.pop().close()

    def run(self, spec: StepSpec) -> dict[str, Any]:
        """Run ``spec`` in this context and close its engines, whatever happens."""
        try:
            return spec.run(self)
        finally:
            self.close()

    def engines(self, role: RoleConfig | None) -> Callable[[str], Engine]:
        """A factory of :meth:`engine` for a model path known only while the step runs (a model it trains)."""
        return lambda model: self.engine(role, model)


def engine_settings(recipe: Recipe, role: RoleConfig | None) -> dict[str, Any]:
    """The engine settings that change a step's outputs: the resolved dtype, the input limit and the local engine's
    sampling scheme. The kind (local or endpoint) is left out, so a step can move to a server and still resume from
    what it wrote."""
    from .inference.local import SAMPLING

    cfg = recipe.engine_for(role)
    return {"dtype": resolve_dtype(cfg.dtype, getattr(cfg, "device", None)), "max_input_tokens": cfg.max_input_tokens,
            "sampling": SAMPLING}


def measured_settings(recipe: Recipe) -> dict[str, Any]:
    """The settings of the held-out measurements (baseline, generator, final): the decoding of instructions and of
    answers, the response budget and the embedder of the similarity figures."""
    return {"candidates": dataclasses.asdict(recipe.candidates),
            "answers": dataclasses.asdict(recipe.refinement.pseudo_ratings.decoding),
            "response_tokens": recipe.refinement.response_tokens, "embedder": recipe.diversification.embedder}
