"""A distributed training and its one-process twin: the same rows, seed and settings, in one process at the global
batch. Used by the DDP, ZeRO-3 and FSDP tests.

What should be equal: with P processes of per-device batch b (and the same gradient accumulation), an optimizer step
sees P*b rows. accelerate shards the batches, not the rows: process i takes the batches i, i+P, ... of b rows of one
permutation, seeded alike on every process (SeedableRandomSampler, seed = the training seed), so step k trains on
the rows [k*P*b, (k+1)*P*b) of that permutation: the rows the one-process run at batch P*b takes at step k. TRL's
loss is summed over the completion tokens and divided by the tokens of the whole global batch
(``average_tokens_across_devices``, on by default), so the all-reduced gradient is the one-process gradient; the
tiny Llama has no dropout, LoRA's initialisation is seeded by TRL before the adapter is built, and everything runs
in float32. Only the order of the float additions differs (the all-reduce, ZeRO-3's partitioned reduce, the
padding of each process's micro-batch), about 1e-7 relative per operation.

Tolerances: the logged losses within ``LOSS_RTOL`` relative; the saved weights' update (trained minus base) within
``UPDATE_RTOL`` of the twin's update, measured as the largest ||update - twin update|| / ||twin update|| over the
weight tensors. A norm, not the largest element: Adam divides each gradient element by its own running scale, so an
element whose gradient is a rounding-level cancellation can move by a whole learning rate either way in two equal
runs; such elements are few and weigh little in the norm. A run at the wrong global batch (one process at b) misses
by more than 10x ``UPDATE_RTOL``, which the tests check too, so the tolerance tells equal from different.
"""

from __future__ import annotations

import json
from pathlib import Path

LOSS_RTOL = 1e-4
UPDATE_RTOL = 1e-3


def train_twin(spec_path: Path, output_dir: Path, batch: int) -> dict:
    """Train in this process what the launched ``train_spec.json`` trained, at per-device batch ``batch``; the
    metrics."""
    from datasets import load_from_disk

    from xinstruct.training import train_sft

    spec = json.loads(Path(spec_path).read_text())
    data = load_from_disk(spec.pop("data"))
    spec["training"] = {**spec["training"], "per_device_train_batch_size": batch}
    return train_sft(train_dataset=data, **{**spec, "output_dir": str(output_dir)})


def _weights(folder) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return {name: p.detach().double() for name, p in model.state_dict().items()}


def update_difference(model_dir, twin_dir, base_dir) -> float:
    """The largest ||update - twin update|| / ||twin update|| over the weight tensors that the twin moved, where an
    update is the saved weights minus the base model's."""
    model, twin, base = _weights(model_dir), _weights(twin_dir), _weights(base_dir)
    assert model.keys() == twin.keys() == base.keys()
    worst = 0.0
    for name, start in base.items():
        moved = (twin[name] - start).norm()
        if moved > 0:
            worst = max(worst, float(((model[name] - start) - (twin[name] - start)).norm() / moved))
    return worst
