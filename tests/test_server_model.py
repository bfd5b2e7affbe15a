"""The endpoint engine asks each server which model it serves before it sends any row (``GET /v1/models``, TGI's
``GET /info``), against small real HTTP servers on 127.0.0.1."""

import logging

import pytest
from serving import ModelServer

from xinstruct.errors import EndpointError
from xinstruct.inference import GenerationParams, engine_config, make_engine
from xinstruct.inference.endpoint import EndpointEngine
from xinstruct.inference.replay import ReplayStore

PARAMS = GenerationParams(max_new_tokens=4, do_sample=False)
ROWS = [f"Row {i}: say something" for i in range(5)]


@pytest.fixture
def model_server():
    made = []

    def make(**kw):
        made.append(ModelServer(**kw))
        return made[-1]

    yield make
    for server in made:
        server.close()


def engine(server, model, **kw):
    return EndpointEngine([server.url], model, concurrency=2, max_retries=1, backoff=0.01, progress=False, **kw)


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("says", ["v1/models", "info"])
def test_a_server_of_another_model_stops_every_call_before_any_row(says, model_server, tmp_path):
    # vLLM/SGLang list their models; TGI names its model in /info and answers any model= with it
    other = model_server(models=["meta-llama/Llama-3.1-8B"]) if says == "v1/models" else model_server(
        info="meta-llama/Llama-3.1-8B")
    gen = engine(other, "xinstruct-generator", store=ReplayStore(tmp_path))
    pattern = rf"{other.url} serves 'meta-llama/Llama-3.1-8B' \(GET {other.url}/{says}\), not the expected model " \
              r"'xinstruct-generator'.*nothing was sent"
    with pytest.raises(EndpointError, match=pattern):
        gen.generate(ROWS, PARAMS)
    with pytest.raises(EndpointError, match=pattern):  # a mismatch is not remembered as checked
        gen.score(ROWS, ["1", "2"])
    with pytest.raises(EndpointError, match=pattern):
        list(gen.stream(ROWS[0], PARAMS))
    assert other.posts == []  # not one generation or scoring request
    assert ReplayStore(tmp_path).failures() == [] and gen.stats["sent"] == 0


def test_several_base_urls_are_all_checked_before_any_row(model_server):
    right, wrong = model_server(models=["gen"]), model_server(info="other")
    gen = EndpointEngine([right.url, wrong.url], "gen", progress=False)
    with pytest.raises(EndpointError, match=rf"{wrong.url} serves 'other'.*'gen'"):
        gen.generate(ROWS, PARAMS)
    assert right.posts == [] and wrong.posts == []


@pytest.mark.parametrize("garbled", [False, True])
def test_a_server_that_does_not_say_is_used_with_one_warning(garbled, model_server, caplog):
    silent = model_server(garbled=garbled)  # 404 on both routes, or 200 with a body that is not JSON
    gen = engine(silent, "xinstruct-generator")
    with caplog.at_level(logging.WARNING):
        assert gen.generate(ROWS, PARAMS) == ["Habari."] * len(ROWS)
        gen.generate(["Another row"], PARAMS)
    said = warnings(caplog)
    assert len(said) == 1 and silent.url in said[0] and "does not say which model it serves" in said[0]
    assert silent.gets == ["/v1/models", "/info"]  # asked once per engine
    assert len(silent.posts) == len(ROWS) + 1


def test_a_server_of_the_expected_model_is_used(model_server, caplog):
    vllm = model_server(models=["base-model", "xinstruct-generator/"])  # a LoRA beside its base; a trailing slash
    with caplog.at_level(logging.WARNING):
        gen = engine(vllm, "xinstruct-generator", route="chat")
        assert gen.generate(ROWS, PARAMS) == ["Habari."] * len(ROWS)
        assert gen.generate(["More"], PARAMS) == ["Habari."]
    assert vllm.gets == ["/v1/models"] and len(vllm.posts) == len(ROWS) + 1 and warnings(caplog) == []
    assert {body["model"] for _, body in vllm.posts} == {"xinstruct-generator"}


def test_tgi_is_checked_against_its_model_id_and_a_local_path_leniently(model_server, tmp_path):
    folder = tmp_path / "generator"
    folder.mkdir()
    tgi = model_server(info=str(folder) + "/")
    assert engine(tgi, str(folder)).generate(ROWS, PARAMS) == ["Habari."] * len(ROWS)
    assert tgi.gets == ["/v1/models", "/info"]
    # model "tgi" is what TGI answers to whatever it serves: nothing to compare, nothing asked
    assert engine(tgi, "tgi").generate(ROWS, PARAMS) == ["Habari."] * len(ROWS) and len(tgi.gets) == 2


def test_a_transformers_serve_list_without_the_model_is_no_mismatch(model_server, caplog):
    # an unpinned transformers serve lists the models it can load and loads the one a request names
    serve = model_server(models=["Qwen/Qwen3-0.6B"], on_demand=True)
    with caplog.at_level(logging.WARNING):
        assert engine(serve, "/models/generator").generate(ROWS, PARAMS) == ["Habari."] * len(ROWS)
    assert warnings(caplog) == []


def test_check_model_can_be_turned_off(model_server):
    other = model_server(models=["some-other-model"])
    gen = engine(other, "xinstruct-generator", check_model=False)
    assert gen.generate(ROWS, PARAMS) == ["Habari."] * len(ROWS)
    assert other.gets == [] and len(other.posts) == len(ROWS)
    assert make_engine(engine_config("endpoint", base_urls=[other.url]), "gen").check_model is True  # the default
    assert make_engine(engine_config("endpoint", base_urls=[other.url], check_model=False), "gen").check_model is False


def test_a_step_whose_server_serves_another_model_stops_before_sending_a_row(tiny_run, model_server, tmp_path):
    """The candidates step of a real run, its generator pointed at a server that serves another model: ``xinstruct
    run`` stops with one error line naming both models and a non-zero exit; the server got no generation request."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import FAST, TINY_RECIPE, endpoint_override

    run_dir = tmp_path / "run"
    for step in ("seed", "webtext", "baseline", "generator"):
        shutil.copytree(tiny_run[0] / step, run_dir / step)
    other = model_server(models=["meta-llama/Llama-3.1-8B"])
    cmd = [sys.executable, "-m", "xinstruct.cli", "run", str(TINY_RECIPE), "--run-dir", str(run_dir),
           "--until", "candidates"]
    for item in [*FAST, endpoint_override(other.url, model="xinstruct-generator", max_retries=0)]:
        cmd += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # offline, the engine sends nothing
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "meta-llama/Llama-3.1-8B" in errors[0] and "xinstruct-generator" in errors[0]
    assert other.posts == [] and "/v1/models" in other.gets
    assert not (run_dir / "candidates" / "manifest.json").exists()
