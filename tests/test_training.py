"""One SFT entry: completion-only loss, LoRA merged, model + tokenizer + metrics saved."""

import json

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from xinstruct.prompts import generator_example
from xinstruct.training import train_sft

PAIRS = [("Explain how to cook rice.", "Pika wali kwa maji na chumvi kidogo."), ("Describe the sea.", "Bahari ni kubwa na ya buluu.")] * 8


def _data():
    return Dataset.from_list([generator_example(i, o) for i, o in PAIRS])


def test_full_sft_learns_and_saves_everything(tmp_path, tiny_model):
    metrics = train_sft("tiny", _data(), tmp_path, {"num_train_epochs": 4, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1})
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
    train_sft("tiny", _data(), tmp_path, {"max_steps": 2}, lora={"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})
    saved = tmp_path / "model"
    assert not (saved / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_a_step_stopped_after_training_does_not_train_again(tmp_path, tiny_model, monkeypatch):
    from xinstruct import training
    from xinstruct.config import LauncherConfig

    args = (LauncherConfig(), "tiny", _data(), tmp_path, {"max_steps": 1, "per_device_train_batch_size": 8})
    first = training.run_training(*args)
    weights = next((tmp_path / "model").glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    monkeypatch.setattr(training, "train_sft", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    assert training.run_training(*args) == first and weights.stat().st_mtime_ns == stamp
