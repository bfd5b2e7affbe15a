"""Declared steps. Each stage module states its steps next to the code that runs them: a step's name (its folder),
its stage, the steps whose outputs it reads, the settings that enter its hash, the function that runs it and the
estimate of its work. :func:`xinstruct.pipeline.hashed_steps` only puts the declarations in order and hashes them;
:func:`xinstruct.costs.plan_costs` (``xinstruct plan``) prices each declared step's estimate.

Adding a step to the pipeline is one :class:`StepSpec` in its stage's ``steps`` function::

    StepSpec("dedup_report", "generation", inputs=("candidates",), settings={"ngram": 5},
             run=lambda ctx: my_report(ctx.load("candidates"), ctx.step),
             cost=lambda est: Work(est.rows_out("candidates"), est.rows_out("candidates")))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from .config import Recipe, RoleConfig
from .hardware import resolve_dtype
from .inference import Engine, make_engine
from .rundir import Step

FRAME_TOKENS = 45  # a template's header and cue, as the cost estimates count it
INSTRUCTION_TOKENS = 24  # an instruction, as the cost estimates count it


@dataclass(frozen=True)
class Work:
    """A step's work, as its cost estimate states it: rows in and out, tokens to generate, to score (prefill) and to
    train, the role it trains (LoRA training is cheaper per token), the models its engines load (``loads``) and the
    trainings it starts (``trainings``; each pays loading, wrapping and saving once, as ``plan --probe`` measures)."""

    rows_in: float
    rows_out: float
    generate: float = 0
    score: float = 0
    train: float = 0
    role: RoleConfig | None = None
    loads: int = 0
    trainings: int = 0


@dataclass
class Estimate:
    """What a step's cost estimate reads: the recipe, the keep rates, the seed split, and the :class:`Work` of the
    steps estimated before it (:func:`xinstruct.costs.plan_costs` makes it and fills ``done`` in run order).

    Args:
        recipe (`Recipe`): the recipe.
        rates (`dict[str, float]`): keep rates ``webtext_kept``, ``gate_kept`` and ``keep_rate``.
        seeds (`int`): seed pairs per language.
        heldout (`int`): held-out seed pairs per language.
        webtexts (`int`, *optional*): web texts read per language (``None``: no limit, counted as none).
        processes (`int`): training processes (a ``max_steps`` training sees more rows with more of them).
        done (`dict[str, Work]`): the work of the steps estimated so far, by name.
        tokens (`dict[str, float]`): token counts measured on the recipe's own data (``plan --probe``,
            :func:`xinstruct.probe.measure_tokens`) that replace the stated ones: ``text``, ``generator_row``,
            ``follower_row``, ``rating_row``.
    """

    recipe: Recipe
    rates: dict[str, float]
    seeds: int
    heldout: int
    webtexts: int | None
    processes: int
    done: dict[str, Work] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)

    @property
    def langs(self) -> int:
        return len(self.recipe.languages)

    @property
    def heldout_rows(self) -> int:
        """Held-out seed pairs, all languages."""
        return self.heldout * self.langs

    @property
    def train_seeds(self) -> int:
        """Training seed pairs per language."""
        return self.seeds - self.heldout

    @property
    def text(self) -> int:
        """Tokens of a web text in a generator prompt (``candidates.text_tokens``, 512 when unset)."""
        return self.tokens.get("text", self.recipe.candidates.text_tokens or 512)

    @property
    def generator_row(self) -> int:
        """Tokens of a generator row: the frame, a web text and its instruction."""
        return self.tokens.get("generator_row", FRAME_TOKENS + self.text + INSTRUCTION_TOKENS)

    @property
    def follower_row(self) -> int:
        """Tokens of a follower (and final) training row, counted with twice the text budget."""
        return self.tokens.get("follower_row", FRAME_TOKENS + INSTRUCTION_TOKENS + 2 * self.text)

    @property
    def rating_row(self) -> int:
        """Tokens of a rated pair: the frame, the instruction and the response window."""
        return self.tokens.get("rating_row",
                               FRAME_TOKENS + INSTRUCTION_TOKENS + self.recipe.refinement.response_tokens)

    def rows_in(self, step: str) -> float:
        return self.done[step].rows_in

    def rows_out(self, step: str) -> float:
        return self.done[step].rows_out

    def train_tokens(self, role: RoleConfig, rows: float, max_row: int) -> float:
        """Tokens ``role``'s training goes through on ``rows`` rows of at most ``max_row`` tokens: ``max_steps`` x the
        global batch rows, or ``num_train_epochs`` (TRL default 3) x ``rows``, each cut at ``max_length``."""
        training = role.training
        if training.get("max_steps", -1) and training.get("max_steps", -1) > 0:
            batch = (training.get("per_device_train_batch_size", 8) * training.get("gradient_accumulation_steps", 1)
                     * self.processes)
            trained = training["max_steps"] * batch
        else:
            trained = rows * training.get("num_train_epochs", 3)
        return trained * min(training.get("max_length") or max_row, max_row)


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
        cost (`Callable[[Estimate], Work]`, *optional*): the step's rows and tokens, estimated from the recipe and the
            work of the steps before it (``xinstruct plan`` prices it; a declared step without one fails the plan).
    """

    name: str
    stage: str
    inputs: tuple[str, ...]
    settings: dict[str, Any]
    run: Callable[[StepContext], dict[str, Any]]
    cost: Callable[[Estimate], Work] | None = None


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
        engine = make_engine(self.recipe.engine_for(role), model, self.step.requests_path)
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
