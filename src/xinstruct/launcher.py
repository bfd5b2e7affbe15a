"""How a training step is launched: the ``accelerate launch`` command line, the accelerate config a recipe names, and
the checks made before any training (a launch whose final save would write no weights is refused). No torch here:
``xinstruct plan`` and the recipe check read these without paying for it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .config import LauncherConfig
from .errors import RecipeError


def accelerate_command(launcher: LauncherConfig, spec_path: Path) -> list[str]:
    """The ``accelerate launch`` command line of one training step.

    ``cpu: true`` runs ``num_processes`` processes with torchrun on the CPU (DDP over gloo): accelerate's own
    ``--cpu`` flag starts a single process unless MPI is set up, so the launch goes through ``--multi_gpu``
    and the step's ``use_cpu=True`` picks the gloo backend.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launcher.config_file:
        cmd += ["--config_file", launcher.config_file]
    if launcher.num_processes:
        cmd += ["--num_processes", str(launcher.num_processes)]
    if launcher.cpu:
        # DDP goes through --multi_gpu; a DeepSpeed config keeps its own type (ZeRO-3 runs on CPU over gloo)
        if launch_type(launcher) in ("MULTI_GPU", "NO"):
            cmd += ["--multi_gpu"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if not launcher.num_processes:
            cmd += ["--num_processes", "2"]
    cmd += list(launcher.extra_args)
    cmd += ["--module", "xinstruct.training", str(spec_path)]
    return cmd


def accelerate_config(launcher: LauncherConfig) -> dict[str, Any]:
    """The accelerate config file a launcher names, as a dict (empty without one)."""
    if launcher.type != "accelerate" or not launcher.config_file:
        return {}
    import yaml

    return yaml.safe_load(Path(launcher.config_file).read_text()) or {}


def final_save_problem(launcher: LauncherConfig) -> str | None:
    """Why the final save of a launch would write no model weights, or ``None`` when it writes them.

    DeepSpeed ZeRO-3 leaves every process a shard of each weight: the Trainer saves a model only when the config
    gathers 16-bit weights on save (``zero3_save_16bit_model: true``, or ``stage3_gather_16bit_weights_on_model_save``
    in a ``deepspeed_config_file``); otherwise it writes a DeepSpeed checkpoint that ``from_pretrained`` cannot load.
    FSDP needs no setting: :func:`gather_full_state_dict` switches to a full state dict for the final save."""
    config = accelerate_config(launcher)
    if config.get("distributed_type") != "DEEPSPEED":
        return None
    deepspeed = config.get("deepspeed_config") or {}
    stage, gather = deepspeed.get("zero_stage"), deepspeed.get("zero3_save_16bit_model")
    source = "zero3_save_16bit_model"
    ds_file = deepspeed.get("deepspeed_config_file")
    if ds_file and Path(ds_file).is_file():
        zero = json.loads(Path(ds_file).read_text()).get("zero_optimization", {})
        stage, source = zero.get("stage", stage), "zero_optimization.stage3_gather_16bit_weights_on_model_save"
        gather = zero.get("stage3_gather_16bit_weights_on_model_save", gather)
    flag = "--zero3_save_16bit_model"
    if flag in launcher.extra_args[:-1]:  # the launch line wins over the config file
        gather = launcher.extra_args[launcher.extra_args.index(flag) + 1].lower() == "true"
    if stage == 3 and gather not in (True, "true"):
        return (f"{launcher.config_file}: DeepSpeed ZeRO-3 without {source}: true saves no model weights at the end "
                f"of training (only a DeepSpeed checkpoint); set it to true (as recipes/accelerate_configs/zero3.yaml "
                f"does).")
    return None


def check_final_save(launcher: LauncherConfig) -> None:
    """Refuse, before any training, a launcher whose final save would write no weights (:func:`final_save_problem`)."""
    problem = final_save_problem(launcher)
    if problem:
        raise RecipeError(problem)


def launch_type(launcher: LauncherConfig) -> str:
    """The ``distributed_type`` an accelerate launch asks for (``NO`` without a config file)."""
    return str(accelerate_config(launcher).get("distributed_type", "NO"))


def launch_processes(launcher: LauncherConfig) -> int:
    """How many training processes a launcher starts (``num_processes``, else the config file's, else 1)."""
    if launcher.type != "accelerate":
        return 1
    return int(launcher.num_processes or accelerate_config(launcher).get("num_processes", 1))
