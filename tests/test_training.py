"""One SFT entry: completion-only loss, LoRA merged, model + tokenizer + metrics saved."""

import json
import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from xinstruct.prompts import generator_example
from xinstruct.training import train_sft

PAIRS = [("Explain how to cook rice.", "Pika wali kwa maji na chumvi kidogo."),
         ("Describe the sea.", "Bahari ni kubwa na ya buluu.")] * 8


def _data():
    return Dataset.from_list([generator_example(i, o) for i, o in PAIRS])


def test_full_sft_learns_and_saves_everything(tmp_path, tiny_model):
    metrics = train_sft("tiny", _data(), tmp_path, {"num_train_epochs": 4, "per_device_train_batch_size": 8,
                                                    "learning_rate": 5e-3, "logging_steps": 1})
    saved = tmp_path / "model"
    assert (saved / "metrics.json").exists() and json.loads((saved / "metrics.json").read_text())["train_rows"] == 16
    losses = metrics["loss_history"]
    assert len(losses) == 8 and losses[-1] < losses[0] * 0.8
    tok = AutoTokenizer.from_pretrained(saved)
    assert GenerationConfig.from_pretrained(saved).eos_token_id == tok.eos_token_id
    AutoModelForCausalLM.from_pretrained(saved)


def test_loss_is_on_the_completion_only(tmp_path, tiny_model):
    from trl import SFTTrainer

    from xinstruct.training import make_sft_config

    tok = AutoTokenizer.from_pretrained(tiny_model)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=make_sft_config({"max_steps": 1}, tmp_path),
        train_dataset=_data(),
        processing_class=tok,
    )
    row = trainer.train_dataset[0]
    prompt_len = len(tok(_data()[0]["prompt"])["input_ids"])
    labels = row["labels"]
    assert all(x == -100 for x in labels[:prompt_len])
    assert all(x != -100 for x in labels[prompt_len:]) and len(labels) > prompt_len
    assert labels[-1] == tok.eos_token_id  # the completion ends with EOS, so the model learns to stop


def test_lora_is_merged_into_a_plain_model(tmp_path, tiny_model):
    train_sft("tiny", _data(), tmp_path, {"max_steps": 2},
              lora={"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})
    saved = tmp_path / "model"
    assert not (saved / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_a_step_stopped_after_training_does_not_train_again(tmp_path, tiny_model, monkeypatch):
    from xinstruct import training
    from xinstruct.config import LauncherConfig

    args = (LauncherConfig(), _data(), tmp_path)
    sft = {"model": "tiny", "training": {"max_steps": 1, "per_device_train_batch_size": 8}}
    first = training.run_training(*args, **sft)
    weights = next((tmp_path / "model").glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    monkeypatch.setattr(training, "train_sft", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    assert training.run_training(*args, **sft) == first and weights.stat().st_mtime_ns == stamp


def test_metrics_without_weights_is_not_reused(tmp_path, tiny_model, monkeypatch, caplog):
    """A model folder with metrics.json but no weights (what FSDP's sharded save used to leave) is not taken as
    trained: the step trains again and saves the weights."""
    from xinstruct import training
    from xinstruct.config import LauncherConfig

    args = (LauncherConfig(), _data(), tmp_path)
    sft = {"model": "tiny", "training": {"max_steps": 1, "per_device_train_batch_size": 8}}
    training.run_training(*args, **sft)
    for weights in (tmp_path / "model").glob("*.safetensors"):
        weights.unlink()
    assert (tmp_path / "model" / "metrics.json").exists() and not training.is_trained(tmp_path / "model")
    calls = []
    train_sft_ = training.train_sft
    monkeypatch.setattr(training, "train_sft", lambda *a, **k: calls.append(1) or train_sft_(*a, **k))
    with caplog.at_level(logging.WARNING, logger="xinstruct.training"):
        training.run_training(*args, **sft)
    assert calls == [1] and "no complete weights" in caplog.text
    assert training.is_trained(tmp_path / "model")
    AutoModelForCausalLM.from_pretrained(tmp_path / "model")


def test_sharded_weights_count_only_with_every_shard(tmp_path):
    from xinstruct.training import weights_complete

    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 16)
    assert not weights_complete(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert not weights_complete(tmp_path)  # an empty shard is a cut write
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 16)
    assert weights_complete(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"x" * 16)
    assert not weights_complete(tmp_path / "adapter")  # the saved model has its LoRA merged: an adapter is not one


def _trainer(tmp_path, model_path, data, lm_head_on_loss_only):
    from trl import SFTTrainer

    from xinstruct.lm_head import lm_head_on_loss_positions
    from xinstruct.training import make_sft_config

    torch.manual_seed(0)
    with lm_head_on_loss_positions(lm_head_on_loss_only):
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path),
                             processing_class=AutoTokenizer.from_pretrained(model_path),
                             args=make_sft_config({"max_steps": 1, "per_device_train_batch_size": 4, "bf16": False},
                                                  tmp_path),
                             train_dataset=data)
    return trainer


def _loss_and_grads(trainer, lm_head_on_loss_only):
    from xinstruct.lm_head import lm_head_on_loss_positions

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model
    model.zero_grad()
    with lm_head_on_loss_positions(lm_head_on_loss_only):
        loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_lm_head_on_loss_positions_leaves_loss_and_gradients_unchanged(tmp_path, tiny_model):
    """The LM head restricted to completion positions gives TRL's default loss and gradients (fp32, tiny model)."""
    data = _data()
    ours = _loss_and_grads(_trainer(tmp_path / "a", tiny_model, data, True), True)
    trl_default = _loss_and_grads(_trainer(tmp_path / "b", tiny_model, data, False), False)
    assert torch.allclose(ours[0], trl_default[0], rtol=1e-5, atol=1e-6)
    assert ours[1].keys() == trl_default[1].keys() and len(ours[1]) > 0
    for name, grad in ours[1].items():
        assert torch.allclose(grad, trl_default[1][name], rtol=1e-4, atol=1e-6), name


def test_lm_head_switch_changes_what_trl_projects(tmp_path, tiny_model, monkeypatch):
    """The switch is not a no-op: with it, TRL's kernel receives only the loss positions."""
    import trl.trainer.utils as trl_utils

    seen = []
    original = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *a: seen.append(hidden.shape[0]) or original(hidden, *a))
    trainer = _trainer(tmp_path, tiny_model, _data(), True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for flag in (True, False):
        _loss_and_grads(trainer, flag)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert seen[0] == labelled < seen[1] == batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)


def test_rows_cut_or_dropped_by_max_length_are_counted(tmp_path, tiny_model):
    long_prompt = generator_example("Describe the sea.", "Bahari " * 200)
    rows = Dataset.from_list([generator_example(i, o) for i, o in PAIRS[:6]] + [long_prompt])
    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt_len = max(len(tok(generator_example(i, o)["prompt"])["input_ids"]) for i, o in PAIRS)
    metrics = train_sft("tiny", rows, tmp_path, {"max_steps": 1, "max_length": prompt_len + 3,
                                                 "per_device_train_batch_size": 4})
    assert metrics["rows_in"] == 7 and metrics["train_rows"] == 6
    assert metrics["dropped"] == {"fully_masked_by_max_length": 1}  # the long prompt fills max_length: TRL drops it
    assert metrics["truncated"]["completion_cut_at_max_length"] >= 1  # completions longer than 3 tokens are cut


def test_dtype_auto_follows_the_hardware(monkeypatch):
    import torch

    from xinstruct import hardware
    from xinstruct.training import training_dtype

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.auto_dtype() == "float32" and training_dtype({}) == "float32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert hardware.auto_dtype() == "bfloat16" and hardware.cpu_kind() == "AVX512-BF16"
    assert training_dtype({}) == "bfloat16" and training_dtype({"bf16": False}) == "float32"
    # torch's AVX2 kernels forced (ATEN_CPU_CAPABILITY=avx2) on the same CPU: bf16 would be emulated, so float32
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert hardware.cpu_kind() == "AVX2" and hardware.auto_dtype() == "float32"


# --- the LM-head restriction patches a private TRL name: it must say when it is off -------------------------------


def _kernel_rows(monkeypatch):
    """Rows TRL's LM-head kernel receives per call, with the CPU autocast dtype active then (None: no autocast)."""
    import trl.trainer.utils as trl_utils

    seen = []
    original = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        seen.append((hidden.shape[0], torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
        return original(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    return seen


def test_lm_head_restriction_is_on_with_the_installed_trl():
    import trl
    from packaging.specifiers import SpecifierSet

    from xinstruct.lm_head import TRL_LM_HEAD_VERIFIED, lm_head_on_loss_positions, lm_head_restriction_status

    on, why = lm_head_restriction_status()
    assert on, why
    assert trl.__version__ in SpecifierSet(TRL_LM_HEAD_VERIFIED)
    with lm_head_on_loss_positions(True) as restricted:
        assert restricted
    with lm_head_on_loss_positions(False) as restricted:
        assert not restricted


def test_trl_is_bounded_and_the_installed_one_is_in_the_bounds():
    """pyproject bounds TRL (and transformers) above, and the installed TRL is within the bounds."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    from conftest import REPO

    deps = {r.name: r for r in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                                   ["dependencies"])}
    for name in ("trl", "transformers"):
        assert any(s.operator in ("<", "<=", "~=", "==") for s in deps[name].specifier), name
        assert version(name) in deps[name].specifier, name


def _break_trl(how, monkeypatch):
    import types

    import trl
    import trl.trainer.sft_trainer as sft_module
    import trl.trainer.utils as trl_utils

    if how == "name removed":
        monkeypatch.delattr(trl_utils, "_use_triton")
    elif how == "name not read":  # a fused head that no longer looks the switch up
        unread = types.FunctionType((lambda model, **kw: None).__code__, vars(trl_utils), "add_fused_lm_head")
        monkeypatch.setattr(trl_utils, "add_fused_lm_head", unread)
        monkeypatch.setattr(sft_module, "add_fused_lm_head", unread)
    else:
        monkeypatch.setattr(trl, "__version__", how)


@pytest.mark.parametrize(("how", "reason"), [("name removed", "no longer exists"),
                                             ("name not read", "no longer reads"),
                                             ("2.0.0", "outside the versions"), ("1.15.2", "outside the versions")])
def test_lm_head_restriction_off_warns_loudly_once(how, reason, monkeypatch, caplog):
    import trl.trainer.utils as trl_utils

    from xinstruct import lm_head

    monkeypatch.setattr(lm_head, "_LM_HEAD_WARNED", set())
    _break_trl(how, monkeypatch)
    switch = getattr(trl_utils, "_use_triton", None)
    on, why = lm_head.lm_head_restriction_status()
    assert not on and reason in why
    with caplog.at_level(logging.WARNING, logger="xinstruct.lm_head"):
        for _ in range(2):
            with lm_head.lm_head_on_loss_positions(True) as restricted:
                assert not restricted
                assert getattr(trl_utils, "_use_triton", None) is switch  # nothing patched
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and "LM-HEAD RESTRICTION IS OFF" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    message = warnings[0].getMessage()
    assert why in message and "262k" in message and "TRL_LM_HEAD_VERIFIED" in message and "pip install" in message


def test_training_runs_with_the_restriction_off_and_says_so(tmp_path, tiny_model, monkeypatch, caplog):
    """A TRL outside the verified range: a WARNING, TRL's default LM head (every position), and the metrics say off."""
    from xinstruct import lm_head

    monkeypatch.setattr(lm_head, "_LM_HEAD_WARNED", set())
    _break_trl("2.0.0", monkeypatch)
    seen = _kernel_rows(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="xinstruct.lm_head"):
        metrics = train_sft("tiny", _data(), tmp_path, {"max_steps": 1, "per_device_train_batch_size": 4,
                                                        "bf16": False, "logging_steps": 1})
    assert "LM-HEAD RESTRICTION IS OFF" in caplog.text
    assert metrics["lm_head_on_loss_only"] is True and metrics["lm_head_restricted"] is False
    assert "outside the versions" in metrics["lm_head_restriction_off"]
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["lm_head_restricted"] is False and len(metrics["loss_history"]) == 1
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [generator_example(i, o) for i, o in PAIRS[:4]]
    longest = max(len(tok(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows)  # + EOS
    assert seen and seen[0][0] == 4 * (longest - 1)  # every position of the padded batch, not the loss ones


def _bf16_autocast_on_cpu() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    except RuntimeError:
        return False


@pytest.mark.skipif(not _bf16_autocast_on_cpu(), reason="bf16 autocast does not run on this CPU "
                    f"({torch.backends.cpu.get_cpu_capability()})")
def test_lm_head_restriction_in_bf16_with_packing_keeps_the_loss(tmp_path, tiny_model, monkeypatch):
    """bf16 autocast and TRL packing (padding-free, several documents in one row): two SGD steps give the same
    losses with the restriction as without it. The second loss follows the first step's gradient (SGD, lr 1), so it
    checks the gradients too. Tolerance: 1e-3 relative (bf16's epsilon is 7.8e-3; the restricted kernel gets the
    same rows, so the losses are expected equal up to bf16 matmul blocking)."""
    from trl import SFTTrainer

    packed = []
    compute_loss = SFTTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        packed.append((inputs["input_ids"].shape[0], int((inputs["position_ids"] == 0).sum())))
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "compute_loss", spy)
    seen = _kernel_rows(monkeypatch)
    args = {"max_steps": 2, "per_device_train_batch_size": 4, "bf16": True, "packing": True, "max_length": 128,
            "logging_steps": 1, "learning_rate": 1.0, "optim": "sgd"}
    runs = {}
    for restricted in (True, False):
        seen.clear()
        metrics = train_sft("tiny", _data(), tmp_path / str(restricted), args, lm_head_on_loss_only=restricted)
        assert metrics["dtype"] == "bfloat16" and metrics["lm_head_restricted"] is restricted
        runs[restricted] = (metrics["loss_history"], list(seen))
    assert all(rows == 1 and documents > 1 for rows, documents in packed)  # packed: several documents per row
    (ours, ours_rows), (trl_default, default_rows) = runs[True], runs[False]
    assert len(ours) == 2 and ours[1] < ours[0]  # the first step moved the weights
    assert ours == pytest.approx(trl_default, rel=1e-3)
    assert all(dtype == torch.bfloat16 for _, dtype in ours_rows + default_rows)  # the LM head ran under bf16
    assert all(0 < a < b for (a, _), (b, _) in zip(ours_rows, default_rows))  # only the loss positions
