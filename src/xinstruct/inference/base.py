"""The engine interface every stage uses (``generate`` texts and ``score`` fixed continuations), the settings every
engine kind has, and the registry of kinds.

This module is the bottom of :mod:`xinstruct.inference`: engine configs and engines build on it, and of the package
it imports only :mod:`xinstruct.errors`, :mod:`xinstruct.hardware` and :mod:`xinstruct.schema`. The registry names
each kind's modules as strings; they are imported when a recipe or a call asks for that kind, so reading a recipe
imports no engine.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from ..errors import RecipeError
from ..hardware import DTYPES
from ..schema import build_block, check_choice


@dataclass(frozen=True)
class Decoding:
    """Decoding settings: a recipe's ``decoding`` blocks and the engines' parameters alike.

    Args:
        max_new_tokens (`int`, *optional*, defaults to `64`): tokens generated at most per row.
        min_new_tokens (`int`, *optional*, defaults to `0`): EOS is suppressed before this many tokens (an
            under-trained generator otherwise often stops at once, giving empty instructions).
        do_sample (`bool`, *optional*, defaults to `True`): sample; ``False`` decodes greedily.
        temperature (`float`, *optional*, defaults to `0.7`): sampling temperature.
        top_p (`float`, *optional*, defaults to `0.9`): nucleus sampling mass.
        repetition_penalty (`float`, *optional*, defaults to `1.0`): transformers' repetition penalty.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0

    def with_seed(self, seed: int) -> GenerationParams:
        """The engine parameters of one call (a shard of a step is sampled with its own seed)."""
        return GenerationParams(**{f.name: getattr(self, f.name) for f in fields(Decoding)}, seed=seed)


@dataclass(frozen=True)
class GenerationParams(Decoding):
    """The parameters of one engine call: :class:`Decoding` plus the seed set before the call (``seed``, defaults
    to `0`), so a call is reproducible."""

    seed: int = 0


@dataclass
class EngineConfig:
    """The settings every engine kind has: the recipe's ``engine`` block (and a role's ``engine`` keys) are read into
    the config class of their ``type`` (:data:`ENGINES`). Only ``dtype`` and
    ``max_input_tokens`` change a step's rows, so only they enter step hashes; a step can move between kinds and
    resume from what it wrote.

    Args:
        type (`str`, *optional*, defaults to `"local"`): the engine kind: ``local`` or ``endpoint``.
        dtype (`str`, *optional*, defaults to `"auto"`): weights dtype: ``auto`` (bfloat16 where the hardware runs it
            natively: CUDA with bf16, a CPU with AVX512-BF16 or AMX; float32 elsewhere), ``float32``, ``bfloat16`` or
            ``float16``. A server keeps its own; there it only names the precision in step hashes.
        max_input_tokens (`int`, *optional*, defaults to `1024`): the longest prompt the engine accepts. Stages fit
            their prompts to it by cutting the content (a web text, a response), never the template or the
            instruction; a prompt still over it is an error, not a silent cut.
    """

    type: str = "local"
    dtype: str = "auto"
    max_input_tokens: int = 1024

    @classmethod
    def from_block(cls, raw: Any, where: str) -> EngineConfig:
        """The config of an ``engine`` block: an instance of the config class registered for its ``type``
        (``local`` when absent), every key checked (:func:`~xinstruct.schema.build_block` builds recipe fields of
        this class with it)."""
        if not isinstance(raw, dict):
            raise RecipeError(f"{where} must be a mapping, got {raw!r}.")
        return build_block(config_class(raw.get("type", "local"), f"{where}.type"), raw, where)

    def check(self, where: str) -> None:
        """Raise a :class:`~xinstruct.errors.RecipeError` naming ``where`` for a value that cannot work."""
        check_choice(self.dtype, DTYPES, f"{where}.dtype")
        if self.max_input_tokens < 1:
            raise RecipeError(f"{where}.max_input_tokens must be >= 1.")


class Engine(ABC):
    """Runs a causal LM over prompts (plain text; templates are applied by the caller). A kind of engine is a subclass,
    an :class:`EngineConfig` subclass and a function that builds the one from the other, registered in
    :data:`ENGINES`."""

    name: str = "engine"
    stats: dict

    def close(self) -> None:
        """Release what the engine holds (worker processes and their devices, open files). Engines also close when
        garbage-collected; steps close theirs when they end."""
        return None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report(self) -> dict:
        """What a step's manifest records about the engine: its kind and counters (rows, tokens, retries...)."""
        return {"engine": self.name, "engine_stats": dict(getattr(self, "stats", {}))}

    @abstractmethod
    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Return one continuation per prompt, in the prompts' order, without the prompt."""

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """Yield the continuation of one prompt piece by piece as it is generated (for chat UIs).
        Engines that cannot stream yield the whole text once."""
        yield self.generate([prompt], params)[0]

    @abstractmethod
    def score(self, prompts: list[str], options: list[str]) -> list[list[float]]:
        """Return, per prompt, the probabilities of each fixed continuation in ``options``
        (renormalised over the options), from a single forward pass; no text is parsed."""

    def loglik(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """Return, per row, the summed log-probability of ``continuation`` after ``prompt`` and its token count."""
        raise NotImplementedError(
            f"The {self.name} engine cannot score continuations (log-likelihoods); "
            f"serve this role with a local engine."
        )


class EngineKind(NamedTuple):
    """A kind of engine, as ``"module:name"`` strings imported on first use.

    Args:
        config (`str`): its :class:`EngineConfig` subclass, the settings of an ``engine`` block of this ``type``.
        build (`str`): the function ``build(config, model, requests_dir=None, progress=True) -> Engine`` that makes
            the engine a config describes, serving ``model`` (``requests_dir``: where an engine that talks to servers
            stores their answers, to replay them after a crash).
    """

    config: str
    build: str


# engine type -> its kind; adding a kind of engine is one line here
ENGINES: dict[str, EngineKind] = {
    "local": EngineKind("xinstruct.inference.local_config:LocalConfig", "xinstruct.inference.pool:build_local_engine"),
    "endpoint": EngineKind("xinstruct.inference.endpoint_config:EndpointConfig",
                           "xinstruct.inference.endpoint:build_endpoint_engine"),
}


def _load(kind: str, part: str, where: str) -> Any:
    """The ``part`` (``config`` or ``build``) of engine kind ``kind``, imported."""
    if kind not in ENGINES:
        raise RecipeError(f"{where} is {kind!r}; use one of: {', '.join(ENGINES)}.")
    module, name = getattr(ENGINES[kind], part).split(":")
    return getattr(importlib.import_module(module), name)


def config_class(kind: str, where: str = "engine.type") -> type[EngineConfig]:
    """The config class registered for engine kind ``kind``."""
    return _load(kind, "config", where)


def engine_builder(kind: str, where: str = "engine.type") -> Callable[..., Engine]:
    """The function registered to build engines of kind ``kind`` (see :class:`EngineKind`)."""
    return _load(kind, "build", where)
