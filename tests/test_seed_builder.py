"""Seed builder: English instruction set -> seed pairs by machine translation (tiny seq2seq model, offline)."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

from conftest import write_jsonl
from xinstruct.data.readers import DataError
from xinstruct.data.seed_builder import Translator, build_seed_pairs


@pytest.fixture(scope="module")
def tiny_translator(tmp_path_factory, tiny_model):
    """A random 1-layer BART with the tiny tokenizer plus NLLB-style language tokens."""
    out = tmp_path_factory.mktemp("tiny-mt")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.add_special_tokens({"additional_special_tokens": ["eng_Latn", "swh_Latn", "tam_Taml"]})
    cfg = BartConfig(
        vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_builds_one_file_per_language_keeping_the_english_instruction(tmp_path, tiny_translator):
    src = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Give three tips for staying healthy.", "output": "Eat well, sleep enough and exercise."},
            {"instruction": "Name a primary colour.", "output": "Red."},
            {"instruction": "", "output": "no instruction: skipped"},
        ],
    )
    out = build_seed_pairs(str(src), ["sw", "ta"], tiny_translator, tmp_path / "seeds", max_new_tokens=8)
    for code in ("sw", "ta"):
        rows = [json.loads(x) for x in (out / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["instruction"] for r in rows] == ["Give three tips for staying healthy.", "Name a primary colour."]
        assert all(r["language"] == code and r["source"] == f"mt:{tiny_translator}" for r in rows)
        assert all(isinstance(r["output"], str) for r in rows)


def test_target_language_token_is_forced_first(tiny_translator):
    tr = Translator(tiny_translator, max_new_tokens=4)
    forced = tr.target_token("tam_Taml")
    assert forced is not None
    enc = tr.tokenizer(["Hello"], return_tensors="pt")
    ids = tr.model.generate(**enc, max_new_tokens=4, forced_bos_token_id=forced)
    assert ids[0, 1].item() == forced
    assert tr.target_token("xyz_Zzzz") is None


def test_instruction_set_without_pairs_is_an_error(tmp_path, tiny_translator):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}])
    with pytest.raises(DataError, match="no rows with both"):
        build_seed_pairs(str(src), ["sw"], tiny_translator, tmp_path / "out")
