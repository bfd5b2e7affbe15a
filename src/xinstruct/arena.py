"""A blind pairwise arena: two anonymous answers to one instruction from two backends, a vote, and the vote as a row.

The paper's headline figures are GPT-4 pairwise win rates; this is the human version a native speaker can run in a
browser (the Space's *Arena* tab is a thin UI over this module). One matchup, per vote:

1. a voter picks a language and a mode, and an instruction: drawn from an evaluation question set (English for
   *cross-lingual*, the language's own version for *zero-shot*) or typed in;
2. which backend answers as **A** is drawn at random for every pair; both answers are generated with the same
   decoding (greedy, ``max_new_tokens``) and streamed side by side;
3. the voter says A, B, tie or both bad (and, optionally, whether each answer is in the requested language); the
   backend names are shown only after the vote, and the vote becomes a row (see :data:`VOTE_FIELDS`) that
   :class:`xinstruct.vote_store.VoteStore` appends to disk and pushes to the Hub.

Refused, with a message and no row: an empty or over-long instruction (nothing is generated), a vote before both
answers have finished (or on a pair where a backend failed), a second vote on the same pair, a vote on another
session's pair.
"""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import languages
from .chat import ChatSession, is_endpoint_url

logger = logging.getLogger(__name__)

VERDICTS = ("A", "B", "tie", "both_bad")
# a vote row, in order (its datasets features: xinstruct.evaluation.votes.vote_features)
VOTE_FIELDS = ("time", "session_id", "pair_id", "language", "mode", "instruction", "question_id", "answer_a",
               "answer_b", "model_a", "model_b", "candidate", "baseline", "verdict", "a_in_language", "b_in_language",
               "max_new_tokens")
MAX_OPEN_PAIRS = 10_000  # pairs kept in memory for voting; the oldest are forgotten first


class ArenaError(ValueError):
    """A request the arena refuses; the message is shown to the voter as it is."""


@dataclass(frozen=True)
class BackendSpec:
    """One side of the matchup: a display name (shown after the vote, stored in the rows) and where it answers.

    Written ``[NAME=]SOURCE``: SOURCE is a Hub id or local path (loaded in the Space) or an ``http(s)://`` URL of a
    TGI / vLLM / OpenAI-compatible server, optionally ``URL#MODEL`` (the model name sent; default ``tgi``).
    """

    name: str
    source: str
    endpoint_model: str = "tgi"

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        text = text.strip()
        if not text:
            raise ArenaError("An arena backend is empty: write [NAME=]MODEL_OR_URL.")
        named = re.match(r"^([\w.\-/ ()]+?)=(.+)$", text)
        name, source = (named.group(1).strip(), named.group(2).strip()) if named else ("", text)
        source, _, model = source.partition("#") if is_endpoint_url(source) else (source, "", "")
        return cls(name or (model or source), source, model or "tgi")

    @property
    def is_endpoint(self) -> bool:
        return is_endpoint_url(self.source)


class Backend:
    """A :class:`BackendSpec` and its chat session, built on first use; a failed build is retried at the next use.

    Args:
        spec: name and source.
        build: ``build(spec) -> ChatSession`` (default: :func:`xinstruct.chat.session_for`).
    """

    def __init__(self, spec: BackendSpec, build: Callable[[BackendSpec], ChatSession] | None = None):
        self.spec = spec
        self._build = build or _build_session
        self._session: ChatSession | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    def session(self) -> ChatSession:
        with self._lock:
            if self._session is None:
                self._session = self._build(self.spec)
            return self._session


def _build_session(spec: BackendSpec) -> ChatSession:
    from .chat import session_for

    return session_for(spec.source, spec.endpoint_model, max_retries=1, timeout=60.0)[0]


@dataclass
class Pair:
    """One matchup shown to one voter: the instruction, which backend is A, and both answers as they grow."""

    pair_id: str
    session_id: str
    language: str  # code
    mode: str
    instruction: str
    question_id: str | None
    sides: dict[str, Backend]  # "A" / "B" -> backend
    answers: dict[str, str] = field(default_factory=lambda: {"A": "", "B": ""})
    finished: dict[str, bool] = field(default_factory=lambda: {"A": False, "B": False})
    errors: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    voted: bool = False

    @property
    def ready(self) -> bool:
        """Both answers finished without an error: the pair can be voted on."""
        return all(self.finished.values()) and not any(self.errors.values())


class Arena:
    """Matchups between ``candidate`` and ``baseline``; every vote goes to ``record(row)``.

    Args:
        candidate, baseline: the two backends (the candidate is the model under test; win rates are its).
        record: called with each vote row (a dict with :data:`VOTE_FIELDS`); e.g. ``VoteStore.append``.
        max_new_tokens: of both answers (greedy decoding).
        max_input_chars: longest instruction accepted.
        seed: seeds the A/B draw (``None``: a fresh draw every time).
    """

    def __init__(self, candidate: Backend, baseline: Backend, record: Callable[[dict[str, Any]], None],
                 max_new_tokens: int = 256, max_input_chars: int = 2000, seed: int | None = None):
        if candidate.name == baseline.name:
            raise ArenaError(f"Both arena backends are named {candidate.name!r}: give them different names "
                             "(NAME=MODEL_OR_URL), or the votes cannot tell them apart.")
        self.candidate, self.baseline = candidate, baseline
        self.record = record
        self.max_new_tokens = max_new_tokens
        self.max_input_chars = max_input_chars
        self.rng = random.Random(seed)
        self.pairs: OrderedDict[str, Pair] = OrderedDict()
        self.lock = threading.Lock()

    def warm(self) -> None:
        """Load both backends now (a failure is logged, and retried at the first pair), so the first voter does not
        wait for a model to load."""
        for backend in (self.candidate, self.baseline):
            try:
                backend.session()
            except Exception as error:  # noqa: BLE001 - the tab says it when a voter asks
                logger.warning("arena backend %s is not ready: %s", backend.name, _one_line(error))

    def new_pair(self, session_id: str, language: str, mode: str, instruction: str,
                 question_id: str | None = None) -> Pair:
        """Check the instruction, draw which backend is A, and open the pair (nothing is generated yet)."""
        instruction = (instruction or "").strip()
        if not instruction:
            raise ArenaError("Write an instruction or draw one first.")
        if len(instruction) > self.max_input_chars:
            raise ArenaError(f"The instruction is {len(instruction)} characters long; the arena accepts at most "
                             f"{self.max_input_chars}. Shorten it.")
        if mode not in ("cross-lingual", "zero-shot"):
            raise ArenaError(f"Unknown mode {mode!r}: use cross-lingual or zero-shot.")
        code = language_code(language)
        with self.lock:
            first = self.rng.random() < 0.5
            sides = {"A": self.candidate, "B": self.baseline} if first else {"A": self.baseline, "B": self.candidate}
            pair = Pair(uuid.uuid4().hex, session_id, code, mode, instruction, question_id, sides)
            self.pairs[pair.pair_id] = pair
            while len(self.pairs) > MAX_OPEN_PAIRS:
                self.pairs.popitem(last=False)
        return pair

    def answers(self, pair: Pair) -> Iterator[Pair]:
        """Generate both answers at once, yielding ``pair`` each time either grows; a backend that fails leaves its
        message in ``pair.errors`` (the other answer still finishes)."""
        updates: queue.Queue = queue.Queue()
        stop = threading.Event()
        workers = [threading.Thread(target=self._answer, args=(pair, side, updates, stop), daemon=True)
                   for side in ("A", "B")]
        for worker in workers:
            worker.start()
        try:
            running = 2
            while running:
                side, text, error = updates.get()
                if text is not None:
                    pair.answers[side] = text
                else:
                    pair.errors[side] = error
                    pair.finished[side] = True
                    running -= 1
                yield pair
        finally:
            stop.set()  # the voter left: the generations stop at their next piece

    def _answer(self, pair: Pair, side: str, updates: queue.Queue, stop: threading.Event) -> None:
        backend = pair.sides[side]
        name = languages.get(pair.language).name
        try:
            pieces = backend.session().reply(pair.mode, pair.instruction, name, False, [], 0.0, 1.0,
                                              self.max_new_tokens, seed=0)
            try:
                for text in pieces:
                    updates.put((side, text, None))
                    if stop.is_set():
                        break
            finally:
                pieces.close()
            updates.put((side, None, None))
        except Exception as error:  # noqa: BLE001 - shown to the voter, the other side goes on
            logger.warning("arena backend %s failed: %s", side, error)
            updates.put((side, None, f"Answer {side} could not be generated: {_one_line(error)}"))

    def vote(self, pair_id: str | None, session_id: str, verdict: str, a_in_language: bool | None = None,
             b_in_language: bool | None = None) -> dict[str, Any]:
        """Record a vote on an open pair of this session and return its row (which carries the unblinded names)."""
        if verdict not in VERDICTS:
            raise ArenaError(f"Unknown verdict {verdict!r}: use one of {', '.join(VERDICTS)}.")
        with self.lock:
            pair = self.pairs.get(pair_id or "")
            if pair is None or pair.session_id != session_id:
                raise ArenaError("There is no pair to vote on: get two answers first.")
            if pair.voted:
                raise ArenaError("You already voted on this pair. Draw or write a new instruction.")
            if not all(pair.finished.values()):
                raise ArenaError("Wait until both answers have finished, then vote.")
            if not pair.ready:
                raise ArenaError("One answer could not be generated, so this pair cannot be judged. Try again.")
            pair.voted = True
        row = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "session_id": session_id,
               "pair_id": pair.pair_id, "language": pair.language, "mode": pair.mode,
               "instruction": pair.instruction, "question_id": pair.question_id,
               "answer_a": pair.answers["A"], "answer_b": pair.answers["B"],
               "model_a": pair.sides["A"].name, "model_b": pair.sides["B"].name,
               "candidate": self.candidate.name, "baseline": self.baseline.name, "verdict": verdict,
               "a_in_language": a_in_language, "b_in_language": b_in_language, "max_new_tokens": self.max_new_tokens}
        try:
            self.record(row)
        except Exception:
            with self.lock:
                pair.voted = False  # not saved: the voter may try again
            raise
        return row


def language_code(language: str) -> str:
    """The code of ``language`` (a code or an English name, as :func:`xinstruct.languages.find` reads it); an
    :class:`ArenaError` otherwise."""
    lang = languages.find(language)
    if lang is None:
        raise ArenaError(f"Unknown language {language!r}: pick one of the list.")
    return lang.code


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


def default_specs(runs_dir: str = "runs") -> tuple[str, str] | None:
    """The final model of the most recent local run and that run's base model, as ``NAME=SOURCE`` specs; ``None``
    without a finished run."""
    from pathlib import Path

    from .chat import default_model
    from .rundir import RunDir

    final = default_model(runs_dir)
    if not Path(final).is_dir():
        return None
    run = RunDir(Path(final).parents[1])
    base = run.recipe().get("base_model")
    return (f"{run.path.name}-final={final}", f"{base}={base}") if base else None


def arena_from_env(record: Callable[[dict[str, Any]], None],
                   shared: dict[str, ChatSession] | None = None) -> tuple[Arena | None, str]:
    """The arena the environment asks for, and a line about its backends (or why there is none).

    ``XINSTRUCT_ARENA_CANDIDATE`` and ``XINSTRUCT_ARENA_BASELINE`` (``[NAME=]MODEL_OR_URL``; default: the final model
    of the last local run and its base model), ``XINSTRUCT_ARENA_MAX_NEW_TOKENS`` (256),
    ``XINSTRUCT_MAX_INPUT_CHARS`` (2000), ``XINSTRUCT_ARENA_SEED`` (unset: a fresh A/B draw each time).
    ``shared``: sessions already loaded (by the chat tabs), by source, reused instead of loading a model twice.
    """
    import os

    env = os.environ.get
    specs = (env("XINSTRUCT_ARENA_CANDIDATE"), env("XINSTRUCT_ARENA_BASELINE"))
    if not all(specs):
        specs = default_specs(env("XINSTRUCT_RUNS", "runs")) or (None, None)
    if not all(specs):
        return None, ("The arena needs two backends: set XINSTRUCT_ARENA_CANDIDATE and XINSTRUCT_ARENA_BASELINE "
                      "([NAME=]MODEL_OR_URL), or finish a local run (`make run`).")
    shared = shared or {}

    def build(spec: BackendSpec) -> ChatSession:
        return shared[spec.source] if spec.source in shared else _build_session(spec)

    candidate, baseline = (Backend(BackendSpec.parse(s), build) for s in specs)
    seed = env("XINSTRUCT_ARENA_SEED")
    arena = Arena(candidate, baseline, record, max_new_tokens=int(env("XINSTRUCT_ARENA_MAX_NEW_TOKENS", "256")),
                  max_input_chars=int(env("XINSTRUCT_MAX_INPUT_CHARS", "2000")),
                  seed=int(seed) if seed else None)
    return arena, f"{candidate.name} vs {baseline.name}"
