"""The endpoint engine against a real ``transformers serve`` on 127.0.0.1 (tiny model): the generation stage
gives the local engine's rows, survives injected faults, resumes after a real kill without re-sending an
answered request, and fails clearly on bad servers."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_from_disk

from conftest import FAST, endpoint_override
from conftest import TINY_RECIPE as TINY
from xinstruct.config_loader import load_recipe
from xinstruct.inference import GenerationParams
from xinstruct.inference.endpoint import EndpointEngine, EndpointError
from xinstruct.inference.replay import ReplayStore
from xinstruct.pipeline import run

# greedy decoding of the barely trained tiny generator repeats one word for every text, which language ID does not
# call English: the gate's LID check is off here, so the comparison covers every row
GREEDY = ["candidates.decoding.do_sample=false", "candidates.lid=false", "candidates.shard_size=1000"]
UPSTREAM = ("seed", "webtext", "baseline", "generator")




@pytest.fixture(scope="module")
def server(transformers_server):
    """The session's real ``transformers serve`` (it loads the model each request names, here the run's generator)."""
    return transformers_server


def cli_args(run_dir, *overrides):
    args = [sys.executable, "-m", "xinstruct.cli", "run", str(TINY), "--run-dir", str(run_dir),
            "--until", "candidates"]
    for item in FAST + GREEDY + list(overrides):
        args += ["--set", item]
    return args


def online_env():
    """The test session sets HF_HUB_OFFLINE; a run that talks to a server must not (see EndpointEngine)."""
    return {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}


def prepared_run(tiny_run, path):
    """A run folder holding the reference run's seed, web texts and trained generator (skipped by hash)."""
    for name in UPSTREAM:
        shutil.copytree(tiny_run[0] / name, path / name)
    return path


def candidate_rows(run_dir):
    kept = load_from_disk(str(run_dir / "candidates" / "data"))
    dropped = load_from_disk(str(run_dir / "candidates" / "dropped"))
    return sorted(zip(kept["id"], kept["instruction"])), sorted(dropped["id"])


@pytest.fixture(scope="module")
def local_candidates(tiny_run, tmp_path_factory):
    run_dir = prepared_run(tiny_run, tmp_path_factory.mktemp("local"))
    run(load_recipe(TINY, FAST + GREEDY), run_dir, until="candidates", echo=lambda s: None)
    return candidate_rows(run_dir)


@pytest.fixture(scope="module")
def endpoint_run(tiny_run, server, tmp_path_factory):
    run_dir = prepared_run(tiny_run, tmp_path_factory.mktemp("endpoint"))
    results = run(load_recipe(TINY, FAST + GREEDY + [endpoint_override(server.url)]), run_dir, until="candidates",
                  echo=lambda s: None)
    return run_dir, results


def test_generation_stage_through_the_endpoint_gives_the_local_rows(endpoint_run, local_candidates):
    run_dir, results = endpoint_run
    # seed and web texts are reused; the baseline and the generator measure with the greedy decoding asked here
    assert [r.status for r in results][:2] == ["skipped"] * 2 and results[-1].status == "done"
    kept, dropped = candidate_rows(run_dir)
    assert [i for i, _ in kept] == [i for i, _ in local_candidates[0]] and dropped == local_candidates[1]
    # greedy decoding on the server (one sequence at a time) writes the local engine's instructions
    assert kept == local_candidates[0]
    manifest = json.loads((run_dir / "candidates" / "manifest.json").read_text())
    stats = manifest["engine_stats"]
    assert manifest["engine"] == "endpoint" and stats["answered"] == stats["requests"] == manifest["rows_in"]
    assert stats["retries"] == 0 and stats["completion_tokens"] > 0
    answers = (run_dir / "candidates" / "requests" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == manifest["rows_in"]


def test_every_row_completes_when_a_fifth_of_requests_fail(tiny_run, proxy, endpoint_run, tmp_path):
    faulty = proxy(fault_rate=0.2, faults=("429", "503", "timeout"), hang=2.5, seed=1)
    run_dir = prepared_run(tiny_run, tmp_path / "faulty")
    run(load_recipe(TINY, FAST + GREEDY + [endpoint_override(faulty.url, timeout=2)]), run_dir, until="candidates",
        echo=lambda s: None)
    assert candidate_rows(run_dir) == candidate_rows(endpoint_run[0])
    # the generator step measures the trained generator through the same endpoint before candidate generation
    steps = [json.loads((run_dir / name / "manifest.json").read_text())["engine_stats"]
             for name in ("generator", "candidates")]
    injected = {k: v for k, v in faulty.outcomes.items() if not k.startswith("upstream")}
    assert set(injected) == {"429", "503", "timeout"}
    kinds = {k: sum(s["retries_by_kind"].get(k, 0) for s in steps)
             for k in {k for s in steps for k in s["retries_by_kind"]}}
    stats = {"failed": sum(s["failed"] for s in steps), "retries": sum(s["retries"] for s in steps)}
    assert stats["failed"] == 0 and stats["retries"] == sum(kinds.values()) >= sum(injected.values())
    assert kinds["http-429"] == injected["429"] and kinds["http-503"] == injected["503"]
    # an injected hang is a timeout; a real answer slower than the 2 s timeout on a busy server is one too
    assert kinds["timeout"] >= injected["timeout"] and set(kinds) == {"http-429", "http-503", "timeout"}


def test_a_killed_endpoint_run_resends_no_answered_request(tiny_run, proxy, endpoint_run, tmp_path):
    counting = proxy(delay=0.15)
    run_dir = prepared_run(tiny_run, tmp_path / "killed")
    args = cli_args(run_dir, endpoint_override(counting.url, concurrency=2))
    answers = run_dir / "candidates" / "requests" / "answers.jsonl"
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=online_env())
        deadline = time.time() + 180
        while (time.time() < deadline and proc.poll() is None
               and (not answers.exists() or len(answers.read_text().splitlines()) < 10)):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert answers.exists(), log.read_text()[-2000:]
    stored = {json.loads(line)["key"] for line in answers.read_text().splitlines() if line.endswith("}")}
    total = json.loads((run_dir / "webtext" / "manifest.json").read_text())["rows_out"]
    assert 10 <= len(stored) < total, "the kill should land mid-step"
    sent_before = len(counting.forwarded)

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300, env=online_env())
    assert resumed.returncode == 0, resumed.stderr
    sent_after = counting.forwarded[sent_before:]
    assert not stored & set(sent_after), "an answered request was sent again"
    assert len(sent_after) == total - len(stored)  # the rest, including those in flight at the kill
    measured = json.loads((run_dir / "generator" / "manifest.json").read_text())["engine_stats"]["requests"]
    assert len(set(counting.forwarded)) == total + measured  # + the generator's held-out measurement, sent once
    assert candidate_rows(run_dir) == candidate_rows(endpoint_run[0])
    stats = json.loads((run_dir / "candidates" / "manifest.json").read_text())["engine_stats"]
    assert stats["replayed"] == len(stored)


def test_failed_requests_are_recorded_and_only_they_are_sent_next_time(server, proxy, tiny_model, tmp_path):
    broken = proxy(fault_rate=1.0, faults=("503",))
    healthy = proxy()
    prompts = [f"Row {i}: tell me something" for i in range(6)]
    params = GenerationParams(max_new_tokens=4, do_sample=False)
    store = tmp_path / "requests"
    first = EndpointEngine([healthy.url], tiny_model, store=ReplayStore(store), progress=False)
    first.generate(prompts[:4], params)  # four answers stored
    flaky = EndpointEngine([broken.url], tiny_model, max_retries=2, backoff=0.01, concurrency=1,
                           store=ReplayStore(store), progress=False)
    with pytest.raises(EndpointError, match="No answer from"):
        flaky.generate(prompts, params)  # the two new rows fail; nothing was answered in this call
    failures = ReplayStore(store).failures()
    assert len(failures) == 1 and "503" in failures[0]["error"] and failures[0]["attempts"] == 3

    sent_before = len(healthy.forwarded)
    again = EndpointEngine([healthy.url], tiny_model, store=ReplayStore(store), progress=False)
    out = again.generate(prompts, params)
    assert (len(healthy.forwarded) - sent_before == 2 and again.stats["replayed"] == 4
            and all(isinstance(t, str) for t in out))


def test_partial_failures_finish_the_others_then_raise(server, proxy, tiny_model, tmp_path):
    half = proxy(fault_rate=0.5, faults=("malformed",), seed=0)  # the first request passes
    engine = EndpointEngine([half.url], tiny_model, max_retries=0, concurrency=1, store=ReplayStore(tmp_path),
                            progress=False)
    prompts = [f"Question {i}?" for i in range(12)]
    with pytest.raises(EndpointError,
                       match=r"requests failed \(after up to 0 retries\) "
                             r".*malformed JSON.*failures.jsonl.*run again"):
        engine.generate(prompts, GenerationParams(max_new_tokens=3, do_sample=False))
    assert engine.stats["failed"] == half.outcomes["malformed"] > 0
    assert len(ReplayStore(tmp_path)) == 12 - engine.stats["failed"]


def test_a_request_the_server_refuses_fails_alone(server, proxy, tiny_model, tmp_path):
    picky = proxy(refuse_marker="VERY LONG")
    prompts = [f"Row {i}" for i in range(6)]
    prompts[3] = "Row 3 VERY LONG"
    engine = EndpointEngine([picky.url], tiny_model, concurrency=1, store=ReplayStore(tmp_path), progress=False)
    with pytest.raises(EndpointError, match=r"1 of 6 requests failed .*\(422\).*max-input-tokens"):
        engine.generate(prompts, GenerationParams(max_new_tokens=2, do_sample=False))
    assert picky.outcomes["422"] == 1 and len(ReplayStore(tmp_path)) == 5  # not retried; the others are stored
    # refused before anything was answered (a field the server does not know, say): the call stops at once
    engine = EndpointEngine([picky.url], tiny_model, concurrency=1, progress=False)
    with pytest.raises(EndpointError, match="No request of this call was answered"):
        engine.generate(["VERY LONG first", "fine"], GenerationParams(max_new_tokens=2, do_sample=False))


def test_several_base_urls_share_the_load_and_cover_a_dead_one(server, proxy, tiny_model):
    a, b = proxy(), proxy()
    engine = EndpointEngine([a.url, b.url], tiny_model, concurrency=2, progress=False)
    engine.generate([f"Item {i}" for i in range(12)], GenerationParams(max_new_tokens=2, do_sample=False))
    assert len(a.forwarded) > 0 and len(b.forwarded) > 0 and len(a.forwarded) + len(b.forwarded) == 12
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    engine = EndpointEngine([dead, a.url], tiny_model, concurrency=2, balance="round-robin", backoff=0.01,
                            progress=False)
    out = engine.generate([f"Other {i}" for i in range(8)], GenerationParams(max_new_tokens=2, do_sample=False))
    assert len(out) == 8 and engine.stats["retries_by_kind"].get("connection", 0) > 0


def test_unreachable_server_fails_clearly_after_the_retry_budget(tiny_run, tmp_path):
    run_dir = prepared_run(tiny_run, tmp_path / "unreachable")
    args = cli_args(run_dir, endpoint_override("http://127.0.0.1:9", max_retries=2))
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=online_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "No answer from http://127.0.0.1:9 after 2 retries" in out.stderr and "ConnectError" in out.stderr
    # nothing lost: the earlier steps are intact and the failure is on record for the next run (the generator step
    # is the first to send requests: it measures the trained generator through the endpoint)
    assert (run_dir / "webtext" / "manifest.json").exists()
    assert any("ConnectError" in p.read_text() for p in run_dir.glob("*/requests/failures.jsonl"))


def test_offline_mode_is_refused_up_front_with_the_reason(tiny_run, tmp_path):
    run_dir = prepared_run(tiny_run, tmp_path / "offline")
    out = subprocess.run(cli_args(run_dir, endpoint_override("http://127.0.0.1:9")), capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "HF_HUB_OFFLINE is set" in out.stderr and "Traceback" not in out.stderr


def test_401_names_the_token_variable_and_never_the_token(server, proxy, tiny_model, monkeypatch):
    guarded = proxy(token="s3cret-test-token")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    engine = EndpointEngine([guarded.url], tiny_model, progress=False)
    with pytest.raises(EndpointError, match=r"refused the request \(401\).*Set HF_TOKEN"):
        engine.generate(["Hello"], GenerationParams(max_new_tokens=2))
    monkeypatch.setenv("MY_ENDPOINT_TOKEN", "s3cret-test-token")
    engine = EndpointEngine([guarded.url], tiny_model, token_env="MY_ENDPOINT_TOKEN", progress=False)
    assert len(engine.generate(["Hello"], GenerationParams(max_new_tokens=2))) == 1
    assert guarded.auth_headers[-1] == "Bearer s3cret-test-token"


def test_404_for_a_model_the_server_refuses(server, proxy, tiny_model):
    vllm_like = proxy(served_model="xinstruct-generator")
    engine = EndpointEngine([vllm_like.url], "some-other-model", progress=False)
    with pytest.raises(EndpointError, match=r"404 for model 'some-other-model'.*does not exist.*engine.model"):
        engine.generate(["Hello"], GenerationParams(max_new_tokens=2))
    assert vllm_like.outcomes["404"] == 1  # not retried


def test_a_real_transformers_serve_names_the_model_it_loaded(server, proxy, tiny_model, caplog):
    counting = proxy()
    # the first request loads the model (until then an unpinned server may list nothing: a warning, not an error)
    EndpointEngine([counting.url], tiny_model, progress=False).generate(["Hello"], GenerationParams(max_new_tokens=2))
    caplog.clear()
    engine = EndpointEngine([counting.url], tiny_model, progress=False)
    with caplog.at_level(logging.WARNING):
        engine.generate(["Hello again"], GenerationParams(max_new_tokens=2))
    served = engine.served[counting.url]  # GET /v1/models lists the loaded model under the path it was asked by
    assert served is not None and tiny_model in served.names and served.on_demand
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [] and len(counting.forwarded) == 2


def test_malformed_json_is_retried_then_reported(server, proxy, tiny_model):
    garbage = proxy(fault_rate=1.0, faults=("malformed",))
    engine = EndpointEngine([garbage.url], tiny_model, max_retries=2, backoff=0.01, progress=False)
    with pytest.raises(EndpointError, match="malformed JSON"):
        engine.generate(["Hello"], GenerationParams(max_new_tokens=2))
    assert garbage.outcomes["malformed"] == 3


def test_scoring_on_a_server_without_logprobs_says_what_to_use(server, tiny_model):
    engine = EndpointEngine([server.url], tiny_model, progress=False)
    with pytest.raises(EndpointError, match="returned no logprobs.*transformers serve ignores"):
        engine.score(["### Rating:\n"], ["1", "2", "3"])


@pytest.mark.parametrize("route", ["completions", "chat", "generate"])
def test_scores_from_server_logprobs_equal_the_local_scores(route, tiny_engine, tmp_path):
    from serving import LogprobServer

    from xinstruct.prompts import RATING_OPTIONS, rating_prompt

    server = LogprobServer(tiny_engine)
    try:
        prompts = [rating_prompt("Describe rain.", text, "Swahili") for text in ("Mvua ni maji.", "Jua kali.")]
        engine = EndpointEngine([server.url], "evaluator", score_route=route, top_logprobs=len(tiny_engine.tokenizer),
                                store=ReplayStore(tmp_path), progress=False)
        remote = engine.score(prompts, list(RATING_OPTIONS))
        local = tiny_engine.score(prompts, list(RATING_OPTIONS))
        for got, want in zip(remote, local):
            assert got == pytest.approx(want, abs=1e-4)
        assert server.paths[0] == {"completions": "/v1/completions", "chat": "/v1/chat/completions",
                                   "generate": "/generate"}[route]
        # a second call is answered from the store
        assert engine.score(prompts, list(RATING_OPTIONS)) == remote and len(server.paths) == 2
    finally:
        server.close()


def test_a_saved_login_token_is_never_sent_to_an_endpoint(server, proxy, tiny_model, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    saved = tmp_path / "token"
    saved.write_text("hf_savedLOGINtokenNOTFORTHIRDPARTIES")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(saved))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert huggingface_hub.get_token() == "hf_savedLOGINtokenNOTFORTHIRDPARTIES"  # the login huggingface_hub would use
    watching = proxy()
    engine = EndpointEngine([watching.url], tiny_model, progress=False)
    engine.generate(["Hello"], GenerationParams(max_new_tokens=2))
    list(engine.stream("Hello", GenerationParams(max_new_tokens=2)))
    assert watching.auth_headers == ["", ""]


def test_replay_store_survives_a_line_cut_by_a_kill(tmp_path):
    (tmp_path / "answers.jsonl").write_text('{"key": "a", "answer": "first"}\n{"key": "b", "answer": "cut sh')
    store = ReplayStore(tmp_path)
    assert store.truncated_lines == 1 and store.get("a") == "first" and "b" not in store
    store.put("c", "after the resume")
    store.close()
    again = ReplayStore(tmp_path)
    assert again.get("c") == "after the resume" and len(again) == 2
