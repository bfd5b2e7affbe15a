"""Chat prompts: the two modes, multi-turn folding within the context, the input cap, streaming engines."""

import pytest

from xinstruct.chat import (
    ChatSession,
    ChatSettings,
    InputTooLong,
    build_prompt,
    fit_history,
    fold_history,
    language_name,
)
from xinstruct.errors import EndpointError
from xinstruct.inference import GenerationParams
from xinstruct.inference.endpoint import EndpointEngine
from xinstruct.prompts import FOLLOWER_TEMPLATE, ZERO_SHOT_TEMPLATE

FRAME = ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
         "\n\n### Instruction:\n")


def test_first_turn_prompts_are_the_single_turn_templates():
    assert build_prompt("cross-lingual", "Give three tips.", "sw") == (
        FRAME + "Give three tips. Answer in Swahili. \n\n### Response:")
    assert build_prompt("cross-lingual", "Give three tips.", "Tamil", assistant_style=True) == (
        FRAME + "Give three tips. Answer in Tamil and the style of an AI assistant. \n\n### Response:")
    assert build_prompt("zero-shot", "Toa vidokezo vitatu.", "sw") == FRAME + "Toa vidokezo vitatu. \n\n### Response:"
    assert ZERO_SHOT_TEMPLATE == FOLLOWER_TEMPLATE.replace(" Answer in {language_name}.", "")


def test_earlier_turns_are_folded_into_the_instruction():
    history = [("Hi", "Habari"), ("Name a fruit", "Embe")]
    folded = fold_history(history, "And a vegetable?")
    assert folded == ("Earlier in this conversation:\nUser: Hi\nAssistant: Habari\nUser: Name a fruit\nAssistant: Embe"
                      "\n\nUser: And a vegetable?")
    assert build_prompt("cross-lingual", "And a vegetable?", "sw", history=history) == FOLLOWER_TEMPLATE.format(
        instruction=folded, language_name="Swahili")


def test_history_keeps_the_last_turns_that_fit():
    history = [(f"question {i} " * 20, f"answer {i} " * 20) for i in range(6)]
    words = lambda text: len(text.split())  # noqa: E731
    prompt_of = lambda h: build_prompt("zero-shot", "now", "sw", history=h)  # noqa: E731
    assert fit_history(history, prompt_of, words, budget=10_000, max_turns=3) == history[-3:]
    kept = fit_history(history, prompt_of, words, budget=130, max_turns=6)
    assert kept == history[-(len(kept)):] and 0 < len(kept) < 6 and words(prompt_of(kept)) <= 130
    assert fit_history(history, prompt_of, words, budget=5, max_turns=6) == []


def test_language_names_codes_and_free_names():
    assert language_name("ta") == "Tamil" and language_name("swahili") == "Swahili"
    assert language_name("Amharic") == "Amharic"  # beyond the registry: used as given
    with pytest.raises(ValueError, match="Pick an output language"):
        language_name(" ")


def test_session_caps_input_and_streams(tiny_engine):
    session = ChatSession(tiny_engine, ChatSettings(max_input_chars=50))
    with pytest.raises(InputTooLong, match="60 characters long; this demo accepts at most 50"):
        session.prompt("zero-shot", "x" * 60, "sw", False, [], 16)
    small = ChatSession(tiny_engine, ChatSettings(context_tokens=64), lambda text: len(text.split()))
    with pytest.raises(InputTooLong, match="leaves room for 48"):
        small.prompt("zero-shot", "word " * 40, "sw", False, [], 16)  # 40 words + the frame > 64 - 16
    partial = list(session.reply("cross-lingual", "Say hello", "sw", False, [], 0.0, 1.0, 24))
    assert partial and all(b.startswith(a) for a, b in zip(partial, partial[1:]))


def test_closing_a_stream_stops_the_generation(tiny_engine):
    import time

    prompt = build_prompt("cross-lingual", "Describe the sea.", "sw")
    pieces = tiny_engine.stream(prompt, GenerationParams(max_new_tokens=4000, do_sample=True, temperature=1.0, seed=1))
    next(pieces)
    started = time.perf_counter()
    pieces.close()  # joins the generation thread, which must stop at the next token
    assert time.perf_counter() - started < 5


def test_local_streaming_equals_generation(tiny_engine):
    prompt = build_prompt("cross-lingual", "Describe the sea.", "sw")
    params = GenerationParams(max_new_tokens=24, do_sample=False)
    pieces = list(tiny_engine.stream(prompt, params))
    assert "".join(pieces).strip() == tiny_engine.generate([prompt], params)[0]


def test_chat_backend_from_the_environment_streams_through_the_endpoint(proxy, tiny_model, monkeypatch):
    from xinstruct.chat import session_from_env

    flaky = proxy(fault_rate=0.0)
    monkeypatch.setenv("XINSTRUCT_ENDPOINT", flaky.url)
    monkeypatch.setenv("XINSTRUCT_ENDPOINT_MODEL", tiny_model)
    session, description = session_from_env()
    assert isinstance(session.engine, EndpointEngine) and session.engine.base_urls == [flaky.url]
    assert description == f"an inference endpoint (model {tiny_model})"  # the URL is not shown to visitors
    partial = list(session.reply("cross-lingual", "Say hello", "sw", False, [], 1.0, 1.0, 24))
    assert len(partial) > 1 and all(b.startswith(a) for a, b in zip(partial, partial[1:]))
    prompt = session.prompt("cross-lingual", "Say hello", "sw", False, [], 24)
    greedy = GenerationParams(max_new_tokens=24, do_sample=False)
    streamed = "".join(session.engine.stream(prompt, greedy))
    assert streamed.strip() == session.engine.generate([prompt], greedy)[0]
    # a refused stream is an error with the server's reason, before any text
    guarded = proxy(token="other-token")
    with pytest.raises(EndpointError, match=r"\(401\)"):
        list(EndpointEngine([guarded.url], tiny_model, progress=False).stream(prompt, greedy))
