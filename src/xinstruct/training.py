"""One TRL SFT entry for every role: generator, follower, evaluator and final model.

Data are prompt/completion pairs, so TRL computes the loss on the completion only. The recipe's
``training`` block goes to :class:`trl.SFTConfig` unchanged; ``lora`` goes to :class:`peft.LoraConfig`.
Without ``bf16``/``fp16`` in the block, the precision is ``auto`` (:mod:`xinstruct.hardware`): bf16 where
the device runs it natively, fp32 elsewhere. By default the LM head runs only at the positions that carry
loss (``lm_head_on_loss_only``), which leaves the loss and gradients unchanged.

Nothing is dropped or cut silently: the metrics record the rows given, the rows TRL actually trained on
after its own filtering, and the rows whose completion ``max_length`` cut, with the reasons. The trained
model (LoRA merged in) is saved with its tokenizer, a generation config whose EOS is the tokenizer's,
and ``metrics.json``, written last and only once the weights are there (under FSDP and ZeRO-3 too: the sharded
weights are gathered for that save). A run killed mid-training resumes from its last checkpoint when the recipe saves
checkpoints (``save_strategy: steps``).
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from .config import LauncherConfig, Recipe, RoleConfig
from .errors import StageError
from .hardware import resolve_dtype
from .launcher import accelerate_command, check_final_save, launch_processes, launch_type
from .lm_head import lm_head_on_loss_positions, lm_head_restriction_status
from .models import resolve_model
from .rundir import MODEL

logger = logging.getLogger(__name__)

# SFTConfig defaults that differ from TRL's because of how this project runs (overridable in the recipe).
PROJECT_DEFAULTS: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "logging_steps": 10}

# SFTConfig fields that change logging or speed but not the trained weights (left out of step hashes).
NON_OUTPUT_KEYS = frozenset({
    "activation_checkpointing", "activation_checkpointing_kwargs", "gradient_checkpointing",
    "gradient_checkpointing_kwargs", "logging_steps", "logging_strategy", "report_to", "save_strategy", "save_steps",
    "save_total_limit", "dataloader_num_workers", "disable_tqdm", "log_level", "logging_dir", "push_to_hub",
    "hub_model_id",
})


def output_settings(training: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``training`` block that changes the trained model (for step hashes)."""
    return {k: v for k, v in sorted(training.items()) if k not in NON_OUTPUT_KEYS}


# what save_pretrained writes: one weights file, or an index naming its shards
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHTS_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def weights_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model's weights: a non-empty ``model.safetensors`` (or ``pytorch_model.bin``), or
    an index whose every shard is there. Adapter weights alone do not count: the saved model has its LoRA merged."""
    folder = Path(folder)
    if any((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in WEIGHTS_FILES):
        return True
    for name in WEIGHTS_INDEXES:
        if (folder / name).is_file():
            shards = set(json.loads((folder / name).read_text()).get("weight_map", {}).values())
            return bool(shards) and all((folder / s).is_file() and (folder / s).stat().st_size > 0 for s in shards)
    return False


def is_trained(folder: str | Path) -> bool:
    """Whether ``folder`` (a step's ``model/``) holds a finished training: ``metrics.json`` and complete weights."""
    return (Path(folder) / "metrics.json").is_file() and weights_complete(folder)


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def training_dtype(training: dict[str, Any] | None) -> str:
    """The precision a ``training`` block trains in: its own ``bf16``/``fp16`` when set, else ``auto``."""
    training = training or {}
    if training.get("bf16"):
        return "bfloat16"
    if training.get("fp16"):
        return "float16"
    if "bf16" in training or "fp16" in training:
        return "float32"
    return resolve_dtype("auto", "cpu" if training.get("use_cpu") else None)


def make_sft_config(training: dict[str, Any] | None, output_dir: str | Path, seed: int = 42):
    """:class:`trl.SFTConfig` from a recipe's ``training`` block, unchanged but for the project defaults
    (no reporting, no checkpoints unless asked), ``use_cpu=True`` without CUDA, and the ``auto`` precision
    (:func:`training_dtype`) unless the block sets ``bf16`` or ``fp16`` itself."""
    from trl import SFTConfig

    args: dict[str, Any] = {**PROJECT_DEFAULTS, "seed": seed, **(training or {})}
    if not torch.cuda.is_available():
        args.setdefault("use_cpu", True)
    if "bf16" not in args and "fp16" not in args:
        args["bf16"] = training_dtype(args) == "bfloat16"
    return SFTConfig(output_dir=str(output_dir), **args)


def row_accounting(tokenizer, rows: Dataset, max_length: int | None) -> dict[str, Any]:
    """Which rows ``max_length`` will cut (completion shortened) or empty (the prompt alone fills it, so TRL drops
    the row as fully masked), measured with the model's tokenizer before training."""
    if max_length is None or len(rows) == 0:
        return {"truncated": 0, "fully_masked": 0}
    prompts = tokenizer(list(rows["prompt"]))["input_ids"]
    full = tokenizer([p + c for p, c in zip(rows["prompt"], rows["completion"])])["input_ids"]
    eos = 1 if tokenizer.eos_token_id is not None else 0
    masked = sum(len(p) >= max_length for p in prompts)
    cut = sum(len(f) + eos > max_length and len(p) < max_length for p, f in zip(prompts, full))
    return {"truncated": cut, "fully_masked": masked}


def train_sft(
    model: str,
    train_dataset: Dataset,
    output_dir: str | Path,
    training: dict[str, Any] | None = None,
    lora: dict[str, Any] | None = None,
    seed: int = 42,
    trust_remote_code: bool = False,
    lm_head_on_loss_only: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` on prompt/completion rows with :class:`trl.SFTTrainer` and save the result.

    Args:
        model (`str`): model name for :func:`xinstruct.models.resolve_model`.
        train_dataset (`Dataset`): columns ``prompt`` and ``completion``.
        output_dir (`str` or `Path`): where checkpoints go; the final model is saved in ``output_dir/model``.
        training (`dict`, *optional*): :class:`trl.SFTConfig` arguments.
        lora (`dict`, *optional*): :class:`peft.LoraConfig` arguments; the adapter is merged before saving.
        seed (`int`, defaults to `42`): training seed (a ``seed`` in ``training`` wins).
        trust_remote_code (`bool`, defaults to `False`): passed to transformers.
        lm_head_on_loss_only (`bool`, defaults to `True`): see :func:`xinstruct.lm_head.lm_head_on_loss_positions`;
            whether it was actually applied is in the metrics (``lm_head_restricted``).

    Returns:
        The training metrics (``train_loss``, ``train_runtime``, ...), also written to ``model/metrics.json``,
        with the row accounting: ``rows_in``, ``train_rows`` (what TRL trained on), ``dropped`` and
        ``truncated`` (reason -> count), and ``lm_head_restricted`` (plus ``lm_head_restriction_off``, the reason,
        when it was asked for but could not be applied).
    """
    from trl import SFTTrainer

    # --- config ---------------------------------------------------------------------------------
    output_dir = Path(output_dir)
    sft_config = make_sft_config(training, output_dir / "checkpoints", seed)

    # --- model and tokenizer --------------------------------------------------------------------
    path = resolve_model(model)
    dtype = torch.bfloat16 if sft_config.bf16 else torch.float16 if sft_config.fp16 else torch.float32
    tokenizer, net, peft_config = _load_for_training(path, dtype, lora, trust_remote_code)

    # --- train (resuming from the last checkpoint if any) ---------------------------------------
    rows = train_dataset.select_columns(["prompt", "completion"])
    planned = row_accounting(tokenizer, rows, sft_config.max_length)
    with lm_head_on_loss_positions(lm_head_on_loss_only) as lm_head_restricted:
        trainer = SFTTrainer(model=net, args=sft_config, train_dataset=rows, processing_class=tokenizer,
                             peft_config=peft_config)
        trained = len(trainer.train_dataset)
        if trained == 0:
            raise StageError(
                f"TRL kept none of the {len(rows)} training rows: every prompt fills "
                f"max_length={sft_config.max_length}. "
                "Raise the role's training.max_length or shorten the prompts."
            )
        result = trainer.train(resume_from_checkpoint=_last_checkpoint(Path(sft_config.output_dir)))
    metrics = _training_metrics(trainer, result, len(rows), trained, planned, lm_head_on_loss_only, lm_head_restricted)

    # --- save (metrics.json last, once the weights are there) -----------------------------------
    save_final_model(trainer, tokenizer, peft_config is not None, path, dtype, output_dir, metrics)
    return metrics


def _load_for_training(path: str, dtype, lora: dict[str, Any] | None, trust_remote_code: bool):
    """The tokenizer (padding with EOS when it has no pad token), the model to train and the LoRA config (``None``
    without). LoRA: the frozen base in the training precision. Full fine-tuning: float32 master weights, bf16/fp16
    only through autocast (pure low-precision weights lose small updates)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gc.collect()  # an inference engine of the previous step may still hold memory
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    load_dtype = dtype if lora else torch.float32
    net = AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype, trust_remote_code=trust_remote_code)
    if not lora:
        return tokenizer, net, None
    from peft import LoraConfig

    return tokenizer, net, LoraConfig(task_type="CAUSAL_LM", **lora)


def _training_metrics(trainer, result, rows_in: int, trained: int, planned: dict[str, int], lm_head_asked: bool,
                      lm_head_restricted: bool) -> dict[str, Any]:
    """The metrics :func:`train_sft` returns and saves (see its docstring)."""
    metrics = dict(result.metrics)
    metrics["rows_in"] = rows_in
    metrics["train_rows"] = trained
    metrics["dropped"] = {"fully_masked_by_max_length": rows_in - trained} if trained < rows_in else {}
    metrics["truncated"] = {"completion_cut_at_max_length": planned["truncated"]} if planned["truncated"] else {}
    args = trainer.args
    metrics["dtype"] = "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"
    metrics["lm_head_on_loss_only"] = lm_head_asked  # asked for
    metrics["lm_head_restricted"] = lm_head_restricted  # applied (see lm_head_restriction_status)
    if lm_head_asked and not lm_head_restricted:
        metrics["lm_head_restriction_off"] = lm_head_restriction_status()[1]
    metrics["world_size"] = args.world_size
    # NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
    metrics["distributed_type"] = str(trainer.accelerator.distributed_type.value)
    metrics["loss_history"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seen = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    if seen:
        metrics["num_tokens"] = seen[-1]  # non-padding tokens trained on (TRL's count)
    return metrics


def save_final_model(trainer, tokenizer, lora: bool, base: str, dtype, output_dir: Path,
                     metrics: dict[str, Any]) -> None:
    """Save the trained model (LoRA merged in) with its tokenizer and generation config to ``output_dir/model``,
    then ``metrics.json``: written last, and only once the weights are there (:func:`weights_complete`), so that a
    folder with ``metrics.json`` is a finished model."""
    from transformers import GenerationConfig

    save_dir = output_dir / MODEL
    if trainer.args.world_size > 1 or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        _save_sharded(trainer, lora, base, dtype, output_dir, save_dir)
    elif trainer.is_world_process_zero():
        final = trainer.model.merge_and_unload() if lora else trainer.model
        final.save_pretrained(save_dir)
    if not trainer.is_world_process_zero():
        return
    if not weights_complete(save_dir):
        raise StageError(
            f"Training finished but {save_dir} holds no complete weights (model.safetensors, or an index with all its "
            f"shards), so no metrics.json was written and the step will train again. With FSDP, the final save must "
            f"gather a full state dict; with DeepSpeed ZeRO-3, set zero3_save_16bit_model: true in the accelerate "
            f"config (distributed type here: {trainer.accelerator.distributed_type.value}).")
    saved = (save_dir / "generation_config.json").exists()
    generation = GenerationConfig.from_pretrained(save_dir) if saved else GenerationConfig()
    generation.eos_token_id, generation.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    generation.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    (save_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("Saved %s (train_loss=%.4f)", save_dir, metrics.get("train_loss", float("nan")))


def gather_full_state_dict(trainer) -> bool:
    """Make the Trainer's next save gather FSDP's sharded weights into one full state dict (on the main process).

    With ``fsdp_state_dict_type: SHARDED_STATE_DICT`` (the right type for checkpoints during training: every process
    writes its shard), :meth:`transformers.Trainer.save_model` writes no weights at all; switching the plugin to
    ``FULL_STATE_DICT`` before the final save is what the transformers and TRL docs recommend. Returns whether it
    switched (``False`` without FSDP, or when the type is full already)."""
    if not trainer.is_fsdp_enabled:
        return False
    plugin = trainer.accelerator.state.fsdp_plugin
    if "FULL_STATE_DICT" in str(plugin.state_dict_type):
        return False
    plugin.set_state_dict_type("FULL_STATE_DICT")
    return True


def _save_sharded(trainer, lora: bool, base: str, dtype, output_dir: Path, save_dir: Path) -> None:
    """Save under DDP, FSDP or ZeRO-3 through the Trainer's own path, which gathers sharded parameters (every
    process takes part; the main one writes). A LoRA adapter is saved that way, then merged into the base model
    on the main process. Under FSDP the state dict is gathered whole first (:func:`gather_full_state_dict`)."""
    gather_full_state_dict(trainer)
    if not lora:
        trainer.save_model(str(save_dir))
        return
    adapter = output_dir / "adapter"
    trainer.save_model(str(adapter))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        # training is over: the base loads whole on this process alone, not partitioned by ZeRO-3's init (which would
        # wait for the other processes, already gone)
        unset_hf_deepspeed_config()
        base_model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        merged = PeftModel.from_pretrained(base_model, str(adapter)).merge_and_unload()
        merged.config.dtype = dtype
        merged.save_pretrained(save_dir)


# ------------------------------------------------------------------------------------------------
# launchers
# ------------------------------------------------------------------------------------------------


def train_role(recipe: Recipe, role: RoleConfig, train_dataset: Dataset, output_dir: str | Path) -> dict[str, Any]:
    """Train one role of ``recipe`` (its model, ``training``, ``lora``, LM-head setting, the recipe's seed and
    launcher) on prompt/completion rows; the model goes to ``output_dir/model``. Every stage trains through this."""
    return run_training(recipe.launcher, train_dataset, output_dir, model=recipe.model_for(role),
                        training=role.training, lora=role.lora, seed=recipe.seed,
                        lm_head_on_loss_only=role.lm_head_on_loss_only)


def role_settings(recipe: Recipe, role: RoleConfig) -> dict[str, Any]:
    """The settings of a role that change its trained model (for step hashes), the resolved precision included."""
    launched = recipe.launcher.type == "accelerate"  # the process count sets the global batch, so the weights
    return {"model": recipe.model_for(role), "lora": role.lora, "training": output_settings(role.training),
            "dtype": training_dtype(role.training), "seed": recipe.seed, "launcher": recipe.launcher.type,
            **({"processes": launch_processes(recipe.launcher)} if launched else {})}


def run_training(launcher: LauncherConfig, train_dataset: Dataset, output_dir: str | Path,
                 **sft: Any) -> dict[str, Any]:
    """Run :func:`train_sft` in this process (``launcher.type: python``) or through ``accelerate launch``; ``sft``
    are :func:`train_sft`'s keyword arguments (``model``, ``training``, ``lora``, ``seed``, ``lm_head_on_loss_only``).

    A model already saved in ``output_dir`` (the step's folder, cleared whenever its settings change) is
    reused: a step that stopped after training, before it finished, does not train again. Saved means
    :func:`is_trained`: ``metrics.json`` *and* complete weights; a folder with ``metrics.json`` but no weights trains
    again (resuming from its last checkpoint, if any). A launcher whose final save would write no weights is refused
    before training (:func:`check_final_save`).

    With accelerate, the dataset and the arguments are written to ``output_dir`` (``train_data/`` and
    ``train_spec.json``) and every process runs ``python -m xinstruct.training train_spec.json``.
    """
    output_dir = Path(output_dir)
    done = output_dir / MODEL / "metrics.json"  # written last, once the weights are there
    if is_trained(done.parent):  # the step stopped after training (e.g. its endpoint was not up yet): keep the model
        logger.info("%s is already trained with these settings; reusing it", done.parent)
        return json.loads(done.read_text())
    if done.exists():
        logger.warning("%s has metrics.json but no complete weights: training again (from the last checkpoint, if "
                       "any)", done.parent)
        done.unlink()
    check_final_save(launcher)
    if launcher.type == "python":
        return train_sft(train_dataset=train_dataset, output_dir=output_dir, **sft)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_dataset.save_to_disk(str(output_dir / "train_data"))
    training = {**(sft.get("training") or {}), **({"use_cpu": True} if launcher.cpu else {})}
    spec = {"data": str(output_dir / "train_data"), "output_dir": str(output_dir), **sft, "training": training}
    spec_path = output_dir / "train_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = accelerate_command(launcher, spec_path)
    logger.info("Launching: %s", " ".join(cmd))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise StageError(f"accelerate launch failed with exit code {proc.returncode} (its output is above): "
                         f"{' '.join(cmd)}")
    if not is_trained(done.parent):
        raise StageError(f"accelerate launch finished but {done.parent} holds no complete weights and metrics.json: "
                         f"{' '.join(cmd)}")
    metrics = json.loads(done.read_text())
    asked = launch_type(launcher)
    if asked in ("FSDP", "DEEPSPEED") and metrics.get("distributed_type") != asked:
        logger.warning("The accelerate config asks for %s but the training ran as %s (accelerate enables FSDP only on "
                       "GPUs and other accelerators, not on CPU).", asked, metrics.get("distributed_type"))
    return metrics


def _main(argv: list[str] | None = None) -> None:
    """Entry of one launched process: ``python -m xinstruct.training SPEC.json``."""
    from datasets import load_from_disk

    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=logging.INFO)
    data = load_from_disk(spec.pop("data"))
    train_sft(train_dataset=data, **spec)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # tear the process group down before the interpreter does: left to exit, a rank's gloo threads can abort it
        # ("terminate called without an active exception", seen once on a loaded 2-core machine)
        dist.destroy_process_group()


if __name__ == "__main__":
    _main()
