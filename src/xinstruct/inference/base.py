"""The engine interface every stage uses: ``generate`` texts and ``score`` fixed continuations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings shared by every engine.

    Args:
        max_new_tokens (`int`, defaults to `64`): tokens generated at most per prompt.
        min_new_tokens (`int`, defaults to `0`): EOS is not allowed before this many tokens.
        do_sample (`bool`, defaults to `True`): sample; ``False`` decodes greedily.
        temperature (`float`, defaults to `0.7`): sampling temperature.
        top_p (`float`, defaults to `0.9`): nucleus mass.
        repetition_penalty (`float`, defaults to `1.0`): transformers' repetition penalty.
        seed (`int`, defaults to `0`): seed set before each call, so a call is reproducible.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0


class Engine(ABC):
    """Runs a causal LM over prompts (plain text; templates are applied by the caller)."""

    name: str = "engine"
    stats: dict

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
            f"The {self.name} engine cannot score continuations (log-likelihoods); serve this role with a local engine."
        )
