"""The engine interface every stage uses: ``generate`` texts and ``score`` fixed continuations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path


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
    the config class of their ``type`` (:data:`xinstruct.inference.ENGINES`). Only ``dtype`` and
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

    def check(self, where: str) -> None:
        """Raise a :class:`~xinstruct.errors.RecipeError` naming ``where`` for a value that cannot work."""
        from ..config import check_choice
        from ..errors import RecipeError
        from ..hardware import DTYPES

        check_choice(self.dtype, DTYPES, f"{where}.dtype")
        if self.max_input_tokens < 1:
            raise RecipeError(f"{where}.max_input_tokens must be >= 1.")

    def make(self, model: str, requests_dir: str | Path | None = None, progress: bool = True) -> Engine:
        """The engine this config describes, serving ``model`` (``requests_dir``: where an engine that talks to
        servers stores their answers, to replay them after a crash)."""
        raise NotImplementedError(f"{type(self).__name__} does not build an engine; register a config of a kind.")


class Engine(ABC):
    """Runs a causal LM over prompts (plain text; templates are applied by the caller). A kind of engine is a subclass
    plus an :class:`EngineConfig` subclass whose :meth:`EngineConfig.make` builds it, registered in
    :data:`xinstruct.inference.ENGINES`."""

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
