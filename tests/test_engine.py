"""Local engine: batching does not change results, sampling is seeded, scoring is one forward pass."""

import math

import pytest
import torch

from xinstruct.errors import ModelError
from xinstruct.inference import GenerationParams
from xinstruct.prompts import generator_prompt

PROMPTS = [generator_prompt(t) for t in ["Habari", "Leo ni siku nzuri sana ya kwenda sokoni na kununua matunda",
                                         "வணக்கம் நண்பர்களே", "Merhaba dünya, bugün hava güzel"]]


def test_batched_length_sorted_generation_equals_one_by_one(tiny_engine):
    greedy = GenerationParams(max_new_tokens=12, do_sample=False)
    batched = tiny_engine.generate(PROMPTS, greedy)
    tiny_engine.batch_size = 1
    try:
        single = [tiny_engine.generate([p], greedy)[0] for p in PROMPTS]
    finally:
        tiny_engine.batch_size = 4
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


def test_sampling_is_reproducible_with_a_seed(tiny_engine):
    p = GenerationParams(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=1.0, seed=7)
    assert tiny_engine.generate(PROMPTS, p) == tiny_engine.generate(PROMPTS, p)
    other = tiny_engine.generate(PROMPTS, GenerationParams(max_new_tokens=10, do_sample=True, temperature=1.0,
                                                           top_p=1.0, seed=8))
    assert other != tiny_engine.generate(PROMPTS, p)


def test_score_gives_option_probabilities_from_next_token_logits(tiny_engine):
    options = ["1", "2", "3"]
    probs = tiny_engine.score(PROMPTS, options)
    assert len(probs) == len(PROMPTS)
    for row in probs:
        assert math.isclose(sum(row), 1.0, rel_tol=1e-5)
    # reference: the unpadded last-position logits of one prompt, computed by hand
    ids = tiny_engine.option_token_ids(options)
    enc = tiny_engine.tokenizer(PROMPTS[1], return_tensors="pt")
    with torch.inference_mode():
        logits = tiny_engine.model(**enc).logits[0, -1]
    expected = torch.softmax(logits[ids], -1).tolist()
    assert probs[1] == pytest.approx(expected, abs=1e-4)


def test_multi_token_option_is_refused(tiny_engine):
    """Rating options a tokenizer splits are a ModelError: the CLI prints it as one ``error:`` line."""
    with pytest.raises(ModelError, match="single tokens: rate with another model"):
        tiny_engine.score(PROMPTS[:1], ["an option of several words", "1"])


def test_empty_prompt_list(tiny_engine):
    assert tiny_engine.generate([], GenerationParams()) == []


def test_two_worker_processes_give_the_rows_of_one_engine(tiny_engine):
    """``engine.devices: 2`` on CPU: two worker processes, whole batches handed out, merged in input order. Sampled
    generation, option scores and log-likelihoods equal those of one in-process engine (batch size 4, so the 11
    prompts make 3 batches spread over both workers)."""
    from xinstruct.inference import engine_config, make_engine
    from xinstruct.inference.pool import DevicePool

    prompts = [generator_prompt(f"Maandishi {i} " + "neno " * (i % 5)) for i in range(11)]
    sampled = GenerationParams(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=0.95, seed=5)
    pool = make_engine(engine_config("local", devices=2, batch_size=4, dtype="float32"), "tiny", progress=False)
    try:
        assert isinstance(pool, DevicePool) and len(pool.devices) == 2
        assert pool.generate(prompts, sampled) == tiny_engine.generate(prompts, sampled)
        assert pool.score(prompts, ["1", "2", "3"]) == tiny_engine.score(prompts, ["1", "2", "3"])
        answers = [f"jibu {i}" for i in range(11)]
        assert pool.loglik(prompts, answers) == tiny_engine.loglik(prompts, answers)
        assert pool.stats["prompts"] == 11 and pool.stats["new_tokens"] > 0
        workers = list(pool._workers)
    finally:
        pool.close()
    assert not any(w.is_alive() for w in workers)
