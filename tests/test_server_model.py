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
