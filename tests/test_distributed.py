"""Every distributed backend saves a model that loads and equals its one-process twin, a launch that would save no
weights is refused before training, and the training-memory estimate bounds the peak measured on the tiny model.

The DDP and ZeRO-3 twins run through the pipeline (``tests/test_pipeline.py``, the accelerate launch test); FSDP's is
here and needs two GPUs (see ``FSDP_NEEDS_GPUS``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from datasets import Dataset

from conftest import REPO
from xinstruct import launcher as launching
from xinstruct import training
from xinstruct.config import LauncherConfig, RoleConfig
from xinstruct.errors import RecipeError
from xinstruct.prompts import generator_example

CONFIGS = REPO / "recipes" / "accelerate_configs"


def _launcher(config: Path, **kw) -> LauncherConfig:
    return LauncherConfig(type="accelerate", config_file=str(config), **kw)


def test_shipped_accelerate_configs_save_whole_models():
    for name in ("ddp", "fsdp", "zero3"):
        assert launching.final_save_problem(_launcher(CONFIGS / f"{name}.yaml")) is None, name


def test_zero3_without_16bit_save_is_refused_before_training(tmp_path):
    """ZeRO-3 without ``zero3_save_16bit_model`` would end with a DeepSpeed checkpoint and no model: refused with one
    line that says what to set, before anything is launched or written."""
    config = yaml.safe_load((CONFIGS / "zero3.yaml").read_text())
    config["deepspeed_config"]["zero3_save_16bit_model"] = False
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump(config))
    launcher = _launcher(tmp_path / "zero3.yaml", cpu=True, num_processes=2)
    rows = Dataset.from_list([generator_example("Describe the sea.", "Bahari ni kubwa.")])
    with pytest.raises(RecipeError, match="zero3_save_16bit_model: true") as refused:
        training.run_training(launcher, rows, tmp_path / "step", model="tiny")
    assert "\n" not in str(refused.value) and not (tmp_path / "step").exists()
    launcher.extra_args = ["--zero3_save_16bit_model", "true"]  # the launch line can set it too
    assert launching.final_save_problem(launcher) is None


def test_fsdp_final_save_gathers_a_full_state_dict():
    """With ``SHARDED_STATE_DICT`` (the shipped fsdp.yaml, for checkpoints) transformers' ``Trainer.save_model`` writes
    no weights: it saves only when the plugin's type is ``FULL_STATE_DICT``. The final save switches the plugin to
    that type (accelerate then gathers the shards on the main process)."""
    import inspect

    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import Trainer

    condition = '"FULL_STATE_DICT" in str(self.accelerator.state.fsdp_plugin.state_dict_type)'
    assert condition in inspect.getsource(Trainer.save_model)  # the installed transformers still decides so
    assert yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())["fsdp_config"]["fsdp_state_dict_type"] == (
        "SHARDED_STATE_DICT")
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT")
    trainer = SimpleNamespace(is_fsdp_enabled=True, accelerator=SimpleNamespace(state=SimpleNamespace(
        fsdp_plugin=plugin)))
    assert "FULL_STATE_DICT" not in str(plugin.state_dict_type)
    assert training.gather_full_state_dict(trainer) is True
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert training.gather_full_state_dict(trainer) is False  # already full
    assert training.gather_full_state_dict(SimpleNamespace(is_fsdp_enabled=False)) is False


def _rows(n: int = 64) -> Dataset:
    texts = ["Bahari ni kubwa na ya buluu sana.", "Pika wali kwa maji na chumvi kidogo.", "Mvua inanyesha leo."]
    return Dataset.from_list([generator_example(f"Describe thing {i}.", texts[i % 3] * (1 + i % 4)) for i in range(n)])


def _accelerate_version() -> str:
    from importlib.metadata import version

    return version("accelerate")


FSDP_NEEDS_GPUS = (
    f"FSDP cannot run on this machine: accelerate {_accelerate_version()} turns FSDP on only for accelerator devices "
    "(AcceleratorState sets distributed_type FSDP only in its MULTI_GPU/MLU/SDAA/MUSA/NPU/XPU/HPU/NEURON branch); "
    "a CPU launch is MULTI_CPU, so fsdp.yaml on CPU trains as plain DDP, which the DDP twin test covers. This test "
    "needs 2 CUDA devices.")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=FSDP_NEEDS_GPUS)
def test_fsdp_trains_like_one_process(tmp_path, tiny_model):
    """FSDP (the shipped fsdp.yaml, SHARDED_STATE_DICT) on 2 GPUs at batch 4 saves a whole model equal to the
    one-process run at batch 8 (tolerances and reasons: ``tests/twins.py``). float32 (``--mixed_precision no``)."""
    from twins import LOSS_RTOL, UPDATE_RTOL, train_twin, update_difference

    from xinstruct.models import resolve_model

    launcher = _launcher(CONFIGS / "fsdp.yaml", num_processes=2, extra_args=["--mixed_precision", "no"])
    block = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "bf16": False,
             "activation_checkpointing": False}  # fsdp.yaml checkpoints activations itself
    metrics = training.run_training(launcher, _rows(), tmp_path / "fsdp", model="tiny", training=block, seed=7)
    assert metrics["distributed_type"] == "FSDP" and metrics["world_size"] == 2
    assert training.weights_complete(tmp_path / "fsdp" / "model")
    twin = train_twin(tmp_path / "fsdp" / "train_spec.json", tmp_path / "twin", batch=8)
    assert metrics["loss_history"] == pytest.approx(twin["loss_history"], rel=LOSS_RTOL)
    assert update_difference(tmp_path / "fsdp" / "model", tmp_path / "twin" / "model",
                             resolve_model("tiny")) <= UPDATE_RTOL


# ---------------------------------------------------------------------------------------------------------------------
# the memory estimate against a measured peak
# ---------------------------------------------------------------------------------------------------------------------

# The estimate may not be below the measured peak, nor more than this many times above it. Measured: 1.04x to 1.24x
# with short rows, 2.5x to 2.9x with generator rows, whose logits term assumes every position carries loss while TRL's
# LM head projects only the completion's few positions.
MEMORY_FACTOR = 3.0
# DDP's extra peak over one process is its buckets (4 bytes per parameter), plus, in some runs, gloo's working copy of
# the buckets during the all-reduce (on CPU only: NCCL reduces in place; and at most one 25 MB bucket per all-reduce
# for a real model, while the tiny model's 2.4 MB fit in one or two): between 1 and 2 bucket sets, within this
BUCKET_RTOL = 0.05

# every row alike, so that every micro-batch has the same shape in one process and in each of two
MEMORY_CASES = {
    # a generator row (a web text in the prompt, a short instruction as completion), 8 per step, the tiny recipe's
    # kind of step: the logits and activations dominate
    "generator_rows": ({"per_device_train_batch_size": 8, "max_length": 256},
                       [generator_example("Describe the sea.", "Bahari ni kubwa na ya buluu sana. " * 12)] * 32),
    # one short row per step: the weights, gradients, Adam state and DDP's buckets dominate
    "short_rows": ({"per_device_train_batch_size": 1, "max_length": 64},
                   [{"prompt": "Q:", "completion": "bahari ni kubwa"}] * 32),
}


@pytest.fixture(scope="module")
def tiny_bf16(tiny_model, tmp_path_factory) -> Path:
    """The tiny model saved in bfloat16: loading it as float32 allocates the weights through torch's allocator, which
    the probe measures (a float32 file would be memory-mapped, outside it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-bf16")
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def _measured_peak(tmp_path: Path, model: Path, block: dict, rows: list[dict], processes: int) -> int:
    """Peak tensor bytes of one process of this training (the largest over the processes), by ``memory_probe.py``."""
    spec = {"data": str(tmp_path / "data"), "output_dir": str(tmp_path / "out"), "model": str(model),
            "training": block, "lora": None, "seed": 42}
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    probe = [str(REPO / "tests" / "memory_probe.py"), str(tmp_path / "spec.json"), str(tmp_path)]
    cmd = [sys.executable, *probe]
    if processes > 1:  # as xinstruct.launcher.accelerate_command launches DDP on CPU
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *probe]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = [json.loads(p.read_text())["peak_bytes"] for p in sorted(tmp_path.glob("peak-*.json"))]
    assert len(peaks) == processes
    return max(peaks)


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_memory_estimate_bounds_the_measured_peak(tmp_path, tiny_bf16, case):
    """Full fine-tuning of the tiny model, alone and replicated on 2 CPU processes (DDP): the peak of torch's
    allocator measured during the whole training (``tests/memory_probe.py``) is at most the estimate, and the estimate
    at most ``MEMORY_FACTOR`` times it. What DDP adds to one process's peak is its gradient buckets, the estimate's
    4 bytes per parameter, and at times gloo's copy of them (see ``BUCKET_RTOL``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from xinstruct.costs import ModelShape, training_memory_gb

    settings, rows = MEMORY_CASES[case]
    block = {**settings, "max_steps": 2, "bf16": False, "use_cpu": True}
    config = AutoConfig.from_pretrained(tiny_bf16)
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_bf16).parameters())
    shape = ModelShape(params, config.vocab_size, config.hidden_size, config.num_hidden_layers)
    tok = AutoTokenizer.from_pretrained(tiny_bf16)
    longest = max(len(tok(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows)  # + EOS
    measured = {}
    for processes in (1, 2):
        measured[processes] = _measured_peak(tmp_path / str(processes), tiny_bf16, block, rows, processes)
        estimate = training_memory_gb(shape, RoleConfig(training=block), longest, processes, sharded=False) * 1e9
        print(f"{case}, {processes} process(es): measured peak {measured[processes] / 1e6:.2f} MB, "
              f"estimated {estimate / 1e6:.2f} MB ({estimate / measured[processes]:.2f}x)")
        assert measured[processes] <= estimate <= MEMORY_FACTOR * measured[processes]
    buckets = 4 * params
    print(f"DDP adds {(measured[2] - measured[1]) / 1e6:.2f} MB; buckets: {buckets / 1e6:.2f} MB")
    assert (1 - BUCKET_RTOL) * buckets <= measured[2] - measured[1] <= (1 + BUCKET_RTOL) * 2 * buckets
