"""Shared fixtures. Every test runs offline on the `tiny` model, built once per session into a
temporary cache (``XINSTRUCT_CACHE``)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # read when huggingface_hub is imported: set it first
# a private datasets cache: load_dataset of a local folder named like an earlier one must not reuse its cache
os.environ["HF_DATASETS_CACHE"] = __import__("tempfile").mkdtemp(prefix="xinstruct-test-datasets-")

import pytest  # noqa: E402

pytest_plugins = ["fake_hub"]  # the `hub` fixture (an in-process fake Hugging Face Hub)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_RECIPE = REPO / "recipes" / "tiny.yaml"
# float32 engines in tests: results must not depend on whether this CPU runs bf16 natively (dtype auto)
FAST = ["languages=[sw,ta,th]", "candidates.shard_size=4", "refinement.shard_size=4", "engine.dtype=float32"]


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    """Offline, quiet, and a private model cache for the whole session."""
    cache = Path(os.environ.get("XINSTRUCT_TEST_CACHE") or tmp_path_factory.mktemp("xinstruct-cache"))
    os.environ["XINSTRUCT_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


@pytest.fixture(scope="session")
def tiny_model(_offline_env) -> str:
    """Path of the built tiny model."""
    from xinstruct.models import resolve_model

    return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model):
    """One uninterrupted run of the complete loop (K=2) on three languages, shared by the pipeline and
    publishing tests (read-only: tests that change it copy it first)."""
    from xinstruct import training
    from xinstruct.config_loader import load_recipe
    from xinstruct.pipeline import run

    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    original = training.run_training

    def recording(launcher, train_dataset, output_dir, **sft):
        TRAINED[str(Path(output_dir).relative_to(run_dir))] = train_dataset.to_list()
        return original(launcher, train_dataset, output_dir, **sft)

    training.run_training = recording  # every training set of every role, for the leak test
    try:
        results = run(load_recipe(TINY_RECIPE, FAST), run_dir, echo=lambda s: None)
    finally:
        training.run_training = original
    return run_dir, results


TRAINED: dict[str, list[dict]] = {}  # step -> the prompt/completion rows it trained on (filled by tiny_run)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    from xinstruct.inference.local import LocalEngine

    return LocalEngine("tiny", batch_size=4, dtype="float32", progress=False)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def transformers_server(tiny_model, tmp_path_factory):
    """A real ``transformers serve`` on 127.0.0.1 (unpinned: it loads whatever model path a request names)."""
    from xinstruct.inference.server import TransformersServer

    server = TransformersServer(log=tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


def endpoint_override(*urls: str, **extra) -> str:
    """A ``--set`` that points the generator at endpoint servers (short timeouts and backoff for tests)."""
    import json

    block = {"type": "endpoint", "base_urls": list(urls), "concurrency": 4, "timeout": 5, "backoff": 0.05,
             "backoff_max": 0.5, **extra}
    return "generator.engine=" + json.dumps(block)


@pytest.fixture
def proxy(transformers_server):
    """Make fault-injecting proxies (``tests/serving.py``) in front of the session's real ``transformers serve``."""
    from serving import FaultProxy

    made = []

    def make(**kw):
        p = FaultProxy(transformers_server.url, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
