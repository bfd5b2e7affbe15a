"""The arena: blind pairs between two different tiny models, refusals (empty, over-long, early and double votes, an
unreachable backend), and, in headless Chromium against a Space started as its own process and a fake Hub served
over HTTP, votes of every kind that arrive on the Hub with the right unblinded model, names hidden before the vote,
and a vote that survives a kill between the vote and its commit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO
from test_space import ARTIFACTS, CHROMIUM, load_app_module
from xinstruct.arena import Arena, ArenaError, Backend, BackendSpec
from xinstruct.chat import ChatSession, ChatSettings
from xinstruct.inference.server import free_port
from xinstruct.vote_store import VoteStore

NAMES = ("alpha-model", "beta-model")  # display names, not part of any path
MAX_NEW = 12


@pytest.fixture(scope="module")
def other_tiny(tiny_model, tmp_path_factory):
    """A second tiny model: the first with noise added to every weight, so the two answer differently."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("other") / "model-2"
    shutil.copytree(tiny_model, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    model.save_pretrained(out)
    return str(out)


class GatedEngine:
    """An engine that holds its last piece until ``gate`` is set (to vote while an answer is still streaming)."""

    def __init__(self, engine):
        self.engine = engine
        self.gate = threading.Event()
        self.gate.set()

    def stream(self, prompt, params):
        pieces = list(self.engine.stream(prompt, params))
        yield from pieces[:-1]
        self.gate.wait(60)
        yield from pieces[-1:]


def _session(engine) -> ChatSession:
    return ChatSession(engine, ChatSettings(max_input_chars=200, context_tokens=512, seed=0))


@pytest.fixture(scope="module")
def arena_space(tiny_engine, other_tiny, tmp_path_factory):
    from xinstruct.inference.local import LocalEngine

    app = load_app_module()
    chat = _session(tiny_engine)
    gated = GatedEngine(LocalEngine(other_tiny, batch_size=1, dtype="float32", progress=False))
    other = _session(gated)
    store = VoteStore(tmp_path_factory.mktemp("votes"))
    arena = Arena(Backend(BackendSpec(NAMES[0], "a"), lambda spec: chat),
                  Backend(BackendSpec(NAMES[1], "b"), lambda spec: other), store.append, max_new_tokens=MAX_NEW,
                  max_input_chars=200, seed=0)
    demo = app.build_app(chat, "", arena)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield f"http://127.0.0.1:{port}/", arena, store, gated
    demo.close()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_two_backends_answer_differently_and_a_is_drawn_at_random(arena_space):
    _, arena, _, _ = arena_space
    pairs = [arena.new_pair("s", "Swahili", "cross-lingual", "Give three tips for staying healthy.") for _ in range(40)]
    firsts = sum(p.sides["A"].name == NAMES[0] for p in pairs)
    assert 10 <= firsts <= 30  # both orders occur (seeded draw)
    for state in arena.answers(pairs[0]):
        pass
    assert state.ready and state.answers["A"] and state.answers["B"] and state.answers["A"] != state.answers["B"]


def test_refusals_leave_no_row(arena_space):
    _, arena, store, gated = arena_space
    before = len(_rows(store.path))
    for text, message in (("  ", "Write an instruction"), ("x" * 201, "201 characters long; the arena accepts at most")):
        with pytest.raises(ArenaError, match=message):
            arena.new_pair("s", "Swahili", "cross-lingual", text)
    pair = arena.new_pair("s", "Swahili", "cross-lingual", "Explain rain.")
    with pytest.raises(ArenaError, match="Wait until both answers have finished"):
        arena.vote(pair.pair_id, "s", "A")
    for _ in arena.answers(pair):
        pass
    with pytest.raises(ArenaError, match="no pair to vote on"):
        arena.vote(pair.pair_id, "another-session", "A")
    with pytest.raises(ArenaError, match="Unknown verdict"):
        arena.vote(pair.pair_id, "s", "C")
    row = arena.vote(pair.pair_id, "s", "tie")
    with pytest.raises(ArenaError, match="already voted"):
        arena.vote(pair.pair_id, "s", "A")
    assert _rows(store.path)[before:] == [row]


def test_through_the_api_an_early_vote_is_refused_and_a_second_vote_too(arena_space):
    from gradio_client import Client

    url, _, store, gated = arena_space
    client = Client(url, verbose=False)
    before = len(_rows(store.path))
    empty = client.predict("", "Swahili", "cross-lingual", api_name="/arena_answers")
    assert "Write an instruction or draw one first." in empty
    gated.gate.clear()  # B holds its last piece: the pair is not finished
    job = client.submit("Give three tips for staying healthy.", "Tamil", "cross-lingual", api_name="/arena_answers")
    deadline = time.time() + 60
    while "answering" not in str(job.outputs()[-1:]) and time.time() < deadline:
        time.sleep(0.2)
    early = client.predict("not sure", "not sure", api_name="/arena_vote_a")
    assert "Wait until both answers have finished" in str(early)
    gated.gate.set()
    final = job.result()
    assert "Both answers are complete" in str(final)
    saved = client.predict("yes", "no", api_name="/arena_vote_b")
    assert "your vote is saved" in str(saved) and all(name in str(saved) for name in NAMES)
    again = client.predict("yes", "no", api_name="/arena_vote_tie")
    assert "already voted" in str(again)
    (row,) = _rows(store.path)[before:]
    assert row["verdict"] == "B" and row["a_in_language"] is True and row["b_in_language"] is False
    assert row["language"] == "ta" and row["session_id"] and {row["model_a"], row["model_b"]} == set(NAMES)


def test_an_unreachable_backend_is_a_message_and_the_chat_keeps_working(tiny_engine):
    from gradio_client import Client

    app = load_app_module()
    chat = _session(tiny_engine)
    down = Backend(BackendSpec.parse(f"down-model=http://127.0.0.1:{free_port()}"))
    arena = Arena(Backend(BackendSpec(NAMES[0], "a"), lambda spec: chat), down, lambda row: None,
                  max_new_tokens=MAX_NEW)
    demo = app.build_app(chat, "", arena)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        result = client.predict("Explain rain.", "Swahili", "cross-lingual", api_name="/arena_answers")
        assert "could not be generated" in str(result) and "This pair cannot be judged" in str(result)
        assert "down-model" not in str(result)  # the failure does not unblind
        refused = client.predict("not sure", "not sure", api_name="/arena_vote_a")
        assert "cannot be judged" in str(refused)
        answer = client.predict("Hello", "Swahili", False, 0.0, 0.9, 16, api_name="/cross_lingual")
        assert isinstance(answer, str) and answer
    finally:
        demo.close()


def test_backend_specs_parse_names_sources_and_endpoint_models():
    assert BackendSpec.parse("x-instruction=runs/default/final/model") == BackendSpec(
        "x-instruction", "runs/default/final/model")
    assert BackendSpec.parse("google/gemma-3-270m") == BackendSpec("google/gemma-3-270m", "google/gemma-3-270m")
    spec = BackendSpec.parse("base=http://127.0.0.1:8080#google/gemma-3-270m")
    assert (spec.name, spec.source, spec.endpoint_model, spec.is_endpoint) == (
        "base", "http://127.0.0.1:8080", "google/gemma-3-270m", True)
    with pytest.raises(ArenaError, match="different names"):
        Arena(Backend(BackendSpec("m", "a")), Backend(BackendSpec("m", "b")), lambda row: None)
