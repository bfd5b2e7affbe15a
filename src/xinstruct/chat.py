"""Chat with an X-Instruction model: the prompts of the two chat modes, multi-turn folding, and the backend
chosen from the environment. The Gradio Space (``space/app.py``) is a thin UI over this module.

Modes (what the model receives):

- **cross-lingual**: the user writes in English and picks a language; the prompt is the official
  FOLLOWER template ``"... ### Instruction:\\n{instruction} Answer in {Language}. \\n\\n### Response:"`` (or its
  assistant-style variant), byte for byte.
- **zero-shot**: the user writes in the target language; the prompt is the same frame without the
  ``" Answer in {Language}."`` clause (:data:`xinstruct.prompts.ZERO_SHOT_TEMPLATE`).

Multi-turn. The paper's models are single-turn, so earlier turns are folded into the instruction slot::

    Earlier in this conversation:
    User: {message 1}
    Assistant: {answer 1}
    ...

    User: {current message}

A first turn has no history, so its prompt is exactly the single-turn template. At most ``max_turns``
earlier turns are kept, and the oldest are dropped until the prompt plus ``max_new_tokens`` fits the
model's context.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import languages
from .inference import Engine, GenerationParams
from .prompts import mode_prompt

HISTORY_HEADER = "Earlier in this conversation:"


class InputTooLong(ValueError):
    """The user's message is over the length cap (the message is shown to the user)."""


def fold_history(history: list[tuple[str, str]], message: str) -> str:
    """The instruction for ``message`` with earlier (user, assistant) turns folded in (see the module docstring)."""
    if not history:
        return message
    lines = [HISTORY_HEADER]
    for user, assistant in history:
        lines += [f"User: {user}", f"Assistant: {assistant}"]
    return "\n".join(lines) + f"\n\nUser: {message}"


def build_prompt(mode: str, message: str, language: str, assistant_style: bool = False,
                 history: list[tuple[str, str]] | None = None) -> str:
    """The exact prompt for one chat turn.

    Args:
        mode: ``cross-lingual`` or ``zero-shot``.
        message: the user's message (English in cross-lingual mode, the target language in zero-shot).
        language: language code or English name ("sw" or "Swahili"); used by the cross-lingual template.
        assistant_style: the assistant-style variant of the cross-lingual template.
        history: earlier (user, assistant) turns, oldest first, already trimmed.
    """
    name = language_name(language) if mode == "cross-lingual" else ""
    return mode_prompt(mode, fold_history(history or [], message), name, assistant_style)


def language_name(language: str) -> str:
    """English name of a registered language given by code or name; any other text is taken as a name
    (so the UI can offer languages beyond the registry)."""
    language = language.strip()
    if not language:
        raise ValueError("Pick an output language.")
    lang = languages.find(language)
    return lang.name if lang else language


def fit_history(history: list[tuple[str, str]], prompt_of: Callable[[list[tuple[str, str]]], str],
                count_tokens: Callable[[str], int], budget: int, max_turns: int) -> list[tuple[str, str]]:
    """The last ``max_turns`` turns, minus the oldest ones while ``count_tokens(prompt_of(turns)) > budget``."""
    kept = list(history[-max_turns:]) if max_turns > 0 else []
    while kept and count_tokens(prompt_of(kept)) > budget:
        kept.pop(0)
    return kept


@dataclass
class ChatSettings:
    """Limits of a chat deployment (read from the environment by :func:`settings_from_env`)."""

    max_input_chars: int = 2000
    max_turns: int = 4
    context_tokens: int = 2048
    concurrency_limit: int = 1
    queue_size: int = 16
    seed: int | None = None  # None: a fresh sampling seed per reply; set it for reproducible demos and tests


class ChatSession:
    """One backend engine plus the limits: turns a chat request into a prompt and streams the answer.

    Args:
        engine: the engine that generates (local or endpoint).
        settings: limits; ``context_tokens`` bounds prompt + answer.
        count_tokens: token counter of the model (default: about 4 characters per token).
    """

    def __init__(self, engine: Engine, settings: ChatSettings | None = None,
                 count_tokens: Callable[[str], int] | None = None):
        self.engine = engine
        self.settings = settings or ChatSettings()
        self.count_tokens = count_tokens or (lambda text: len(text) // 4 + 1)
        # one limit for every tab of the app (each Gradio event has its own concurrency_limit)
        self.slots = threading.BoundedSemaphore(self.settings.concurrency_limit)

    def prompt(self, mode: str, message: str, language: str, assistant_style: bool,
               history: list[tuple[str, str]], max_new_tokens: int) -> str:
        """Check the cap, fit the history into the context and build the prompt."""
        message = message.strip()
        if not message:
            raise InputTooLong("Write a message first.")
        if len(message) > self.settings.max_input_chars:
            raise InputTooLong(
                f"Your message is {len(message)} characters long; this demo accepts at most "
                f"{self.settings.max_input_chars}. Shorten it and send it again."
            )
        budget = max(1, self.settings.context_tokens - max_new_tokens)
        kept = fit_history(history, lambda h: build_prompt(mode, message, language, assistant_style, h),
                           self.count_tokens, budget, self.settings.max_turns)
        prompt = build_prompt(mode, message, language, assistant_style, kept)
        used = self.count_tokens(prompt)
        if used > budget:
            raise InputTooLong(
                f"Your message needs {used} tokens with the prompt; with {max_new_tokens} new tokens the model's "
                f"context of {self.settings.context_tokens} leaves room for {budget}. "
                f"Shorten it or lower max new tokens."
            )
        return prompt

    def reply(self, mode: str, message: str, language: str, assistant_style: bool, history: list[tuple[str, str]],
              temperature: float, top_p: float, max_new_tokens: int, seed: int | None = None) -> Iterator[str]:
        """Yield the answer so far, growing piece by piece (``seed``: default ``settings.seed``, else a fresh one)."""
        prompt = self.prompt(mode, message, language, assistant_style, history, max_new_tokens)
        params = GenerationParams(max_new_tokens=int(max_new_tokens), do_sample=temperature > 0,
                                  temperature=max(float(temperature), 1e-5), top_p=float(top_p),
                                  seed=next(s for s in (seed, self.settings.seed, random.randrange(2**31))
                                            if s is not None))
        text = ""
        with self.slots:
            pieces = self.engine.stream(prompt, params)
            try:
                for piece in pieces:
                    text += piece
                    yield text
            finally:
                pieces.close()  # a user who stops the answer stops the generation


def settings_from_env(local: bool) -> ChatSettings:
    """Limits from ``XINSTRUCT_MAX_INPUT_CHARS``, ``XINSTRUCT_MAX_TURNS``, ``XINSTRUCT_CONTEXT_TOKENS``,
    ``XINSTRUCT_CONCURRENCY`` and ``XINSTRUCT_QUEUE_SIZE``. A local model serves one request at a time by
    default; an endpoint takes 8."""
    env = os.environ.get
    return ChatSettings(
        max_input_chars=int(env("XINSTRUCT_MAX_INPUT_CHARS", "2000")),
        max_turns=int(env("XINSTRUCT_MAX_TURNS", "4")),
        context_tokens=int(env("XINSTRUCT_CONTEXT_TOKENS", "2048")),
        concurrency_limit=int(env("XINSTRUCT_CONCURRENCY", "1" if local else "8")),
        queue_size=int(env("XINSTRUCT_QUEUE_SIZE", "16")),
    )


def default_model(runs_dir: str | Path = "runs") -> str:
    """The final model of the most recent local run (``runs/*/final/model``), else the offline Gemma-3-270M."""
    from .rundir import RunDir

    runs = [RunDir(d) for d in Path(runs_dir).iterdir()] if Path(runs_dir).is_dir() else []
    finals = [run.model("final") for run in runs if (run.model("final") / "config.json").exists()]
    if finals:
        return str(max(finals, key=lambda p: (p / "config.json").stat().st_mtime))
    return "gemma-3-270m"


def is_endpoint_url(source: str) -> bool:
    """Whether a backend ``source`` is an ``http(s)://`` server URL (else a Hub id or local path loaded here)."""
    return source.startswith(("http://", "https://"))


def session_for(source: str, endpoint_model: str = "tgi", max_retries: int = 3,
                timeout: float = 120.0) -> tuple[ChatSession, str]:
    """A chat session over ``source``, and a one-line description of it.

    Args:
        source: an ``http(s)://`` URL of a TGI / vLLM / OpenAI-compatible server (the token comes from ``HF_TOKEN``
            and is never shown), or a Hub id or local path loaded here.
        endpoint_model: the model name sent to an endpoint (TGI ignores it; vLLM checks it).
        max_retries, timeout: of an endpoint's requests.
    """
    from .inference import engine_config, make_engine

    if is_endpoint_url(source):
        config = engine_config("endpoint", base_urls=[source], model=endpoint_model, max_retries=max_retries,
                               timeout=timeout)
        engine = make_engine(config, endpoint_model, progress=False)
        return ChatSession(engine, settings_from_env(local=False)), f"an inference endpoint (model {endpoint_model})"
    engine = make_engine(engine_config("local", batch_size=1), source, progress=False)
    context = getattr(engine.model.config, "max_position_embeddings", None) or 2048
    settings = settings_from_env(local=True)
    settings.context_tokens = min(settings.context_tokens, int(context))
    engine.max_input_tokens = settings.context_tokens  # the history is fitted to this, so nothing is cut off
    counter = lambda text: len(engine.tokenizer(text)["input_ids"])  # noqa: E731
    return ChatSession(engine, settings, counter), f"local model {source}"


def source_from_env() -> str:
    """The chat backend the environment asks for (what :func:`session_for` takes).

    - ``XINSTRUCT_ENDPOINT``: a TGI / vLLM / OpenAI-compatible URL (``XINSTRUCT_ENDPOINT_MODEL`` names the
      model, default ``tgi``; the token comes from ``HF_TOKEN`` and is never shown);
    - else ``XINSTRUCT_MODEL``: a Hub id or local path loaded here;
    - else the final model of the last local run, else Gemma-3-270M (offline).
    """
    return (os.environ.get("XINSTRUCT_ENDPOINT") or os.environ.get("XINSTRUCT_MODEL")
            or default_model(os.environ.get("XINSTRUCT_RUNS", "runs")))


def session_from_env() -> tuple[ChatSession, str]:
    """The chat session over :func:`source_from_env`, and a one-line description of it."""
    return session_for(source_from_env(), os.environ.get("XINSTRUCT_ENDPOINT_MODEL", "tgi"))
