"""``xinstruct plan RECIPE``: what a run will cost, before it starts. Nothing is loaded or downloaded.

For every declared step: rows in and out, tokens to generate, to score (prefill) and to train, as the step's own
estimate states them (``StepSpec.cost``, next to its declaration in its stage), and the time and GPU-hours at stated
throughputs. Rows out of the filters follow stated rates: by default the rates of a finished run (``--run RUN_DIR``),
otherwise the defaults below. It also says how many web texts per language the run needs to end with
``target_per_language`` rows after the gate and K rounds of filtering.

Throughputs are per accelerator, from the model size: training at ``mfu`` of the bf16 peak (6 x params FLOP per
token; 4 x params with LoRA, which computes no weight gradients of the frozen base), prefill at ``prefill_efficiency``
of the peak (2 x params FLOP per token), decoding bounded by memory bandwidth at ``decode_batch`` rows per step. All
are stated in the table and can be overridden.

Inference runs on ``engine.devices`` devices (``all``: as many as the launcher's processes), training on the
launcher's processes. Memory per device is estimated for every trained role (:func:`training_memory_gb`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Recipe
from .errors import StageError
from .launcher import accelerate_config, launch_processes
from .pipeline import declared_steps
from .probe import ProbeRates
from .rundir import CANDIDATES, KEPT, WEBTEXT, RunDir, iteration_step
from .steps import FRAME_TOKENS, Estimate, Work

# Peak dense bf16 FLOP/s, memory bandwidth (bytes/s) and memory (GB) per device; ``cpu-2core`` is this project's CI
# machine.
DEVICES: dict[str, dict[str, float]] = {
    "h100-80gb": {"peak_flops": 989e12, "bandwidth": 3.35e12, "memory_gb": 80},
    "a100-80gb": {"peak_flops": 312e12, "bandwidth": 2.0e12, "memory_gb": 80},
    "a100-40gb": {"peak_flops": 312e12, "bandwidth": 1.55e12, "memory_gb": 40},
    "l40s-48gb": {"peak_flops": 362e12, "bandwidth": 0.86e12, "memory_gb": 48},
    "l4-24gb": {"peak_flops": 121e12, "bandwidth": 0.3e12, "memory_gb": 24},
    "cpu-2core": {"peak_flops": 0.09e12, "bandwidth": 0.02e12, "memory_gb": 24},
}


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a model: parameters, and (for memory) vocabulary, hidden size and layers."""

    params: float
    vocab: int | None = None
    hidden: int | None = None
    layers: int | None = None


# from each model's config.json
KNOWN_MODELS = {
    "gemma-3-270m": ModelShape(0.27e9, 262_144, 640, 18),
    "tiny": ModelShape(0.6e6),
    "google/gemma-7b": ModelShape(8.54e9, 256_000, 3072, 28),
    "meta-llama/Meta-Llama-3-8B": ModelShape(8.03e9, 128_256, 4096, 32),
    "Qwen/Qwen2.5-1.5B": ModelShape(1.54e9, 151_936, 1536, 28),
}
DEFAULT_RATES = {"webtext_kept": 0.8, "gate_kept": 0.95, "keep_rate": 0.5}


@dataclass
class Throughput:
    """Tokens per second per device for the three kinds of work."""

    train: float
    prefill: float
    decode: float


def model_params(name: str, override: float | None = None) -> float:
    """Parameters of a model from its name (``7b``, ``1.5B``, ``270m``) or the known built-ins; ``override`` wins."""
    if override:
        return override
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name].params
    match = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", Path(name).name)
    if not match:
        raise ValueError(f"Cannot tell the size of {name!r} from its name; pass --params (e.g. 7e9).")
    return float(match.group(1)) * (1e9 if match.group(2).lower() == "b" else 1e6)


def throughput(device: str, params: float, mfu: float = 0.4, prefill_efficiency: float = 0.5,
               decode_batch: int = 64) -> Throughput:
    """Stated throughputs of ``device`` for a model of ``params`` parameters (bf16 weights)."""
    spec = DEVICES[device]
    decode_per_step = spec["bandwidth"] / (2 * params)  # every step reads all weights once
    return Throughput(
        train=mfu * spec["peak_flops"] / (6 * params),
        prefill=prefill_efficiency * spec["peak_flops"] / (2 * params),
        decode=min(decode_batch * decode_per_step, prefill_efficiency * spec["peak_flops"] / (2 * params)),
    )


def rates_from_run(run_dir: str | Path) -> dict[str, float]:
    """Keep rates measured by a finished run: web-text filters, the candidate gate, the mean keep rate of
    refinement."""
    run = RunDir(run_dir)
    rates = dict(DEFAULT_RATES)
    web, cand = run.manifest(WEBTEXT), run.manifest(CANDIDATES)
    if web and cand:
        rates["webtext_kept"] = web["rows_out"] / max(1, web.get("rows_in", web["rows_out"]))
        rates["gate_kept"] = cand["rows_out"] / max(1, cand["rows_in"])
        kept, k = [], 1
        while run.finished(iteration_step(k, KEPT)):
            kept.append(run.manifest(iteration_step(k, KEPT)))
            k += 1
        if kept:
            rates["keep_rate"] = sum(k["rows_out"] / max(1, k["rows_in"]) for k in kept) / len(kept)
    return rates


def _sharded(recipe: Recipe) -> bool:
    """True when the launcher shards weights, gradients and optimizer state over the processes (FSDP, ZeRO-3)."""
    accelerate = accelerate_config(recipe.launcher)
    return accelerate.get("distributed_type") == "FSDP" or (
        accelerate.get("distributed_type") == "DEEPSPEED"
        and (accelerate.get("deepspeed_config") or {}).get("zero_stage") == 3)


def training_memory_gb(shape: ModelShape, role, row_tokens: int, processes: int, sharded: bool) -> float | None:
    """Peak memory per device of one role's training, in GB (``None`` when the model's shape is unknown).

    Weights and state: full fine-tuning keeps float32 master weights, gradients and two Adam moments (16 bytes per
    parameter), divided over the processes when FSDP or ZeRO-3 shards them; LoRA keeps the frozen base in the
    training precision (2 bytes per parameter with ``bf16``/``fp16``, else 4) on every process. Full fine-tuning
    replicated over several processes (DDP) adds DDP's gradient buckets: torch's reducer copies every gradient into
    flat buckets for the all-reduce (``gradient_as_bucket_view`` is off in transformers' Trainer), so they hold a
    second float32 copy of the gradients, 4 bytes per trainable parameter (``bucket_cap_mb``, 25 MB, sizes each
    bucket, not their total); LoRA's buckets hold only the adapters' gradients, in the margin. Full fine-tuning also
    builds the gradient of the (tied) embedding / LM-head matrix whole once more before adding it to ``.grad``
    (vocabulary x hidden x 4 bytes; measured on the tiny model: its peak is exactly 16 bytes per parameter plus
    this). Plus the float32 logits of one micro-batch (batch x tokens x vocabulary x 4 bytes, tokens being the longest
    row the role can see: ``max_length`` or the row's content budget, whichever is smaller), the activations
    (with activation checkpointing, TRL's default: one hidden state per layer, 2 bytes for half-precision weights,
    else 4 (autocast keeps the residual stream of float32 weights in float32); without: about 34 bytes per hidden unit
    and layer), and 20% for the CUDA context, one layer's live activations and fragmentation. Checked against the
    peak measured on the tiny model (``tests/test_distributed.py``).
    """
    if shape.vocab is None or shape.hidden is None or shape.layers is None:
        return None
    training = role.training
    batch = training.get("per_device_train_batch_size", 8)
    tokens = min(training.get("max_length") or row_tokens, row_tokens)
    half = training.get("bf16") or training.get("fp16")
    if role.lora:
        state = (2 if half else 4) * shape.params
    else:
        state = 16 * shape.params / (processes if sharded else 1) + 4 * shape.vocab * shape.hidden
        state += 4 * shape.params if processes > 1 and not sharded else 0  # DDP's gradient buckets
    logits = batch * tokens * shape.vocab * 4
    checkpointing = training.get("activation_checkpointing", training.get("gradient_checkpointing", True))
    hidden_bytes = (2 if role.lora and half else 4) if checkpointing else 34
    activations = batch * tokens * shape.hidden * shape.layers * hidden_bytes
    return 1.2 * (state + logits + activations) / 1e9


def _estimate(recipe: Recipe, rates: dict[str, float], seeds_per_language: int | None, processes: int,
              tokens: dict[str, float] | None = None) -> Estimate:
    """What the steps' estimates read: the seed pairs per language (``--seeds-per-language``, the recipe's limit, 20
    for the sample, else 1000) and their held-out share, the web texts read per language (28 for the sample), and
    token counts measured by a probe (``tokens``)."""
    web, seeds = recipe.data.webtext, recipe.data.seeds
    per_lang_web = web.limit_per_language or (28 if web.path == "sample" else None)
    per_lang_seed = seeds_per_language or seeds.limit_per_language or (20 if seeds.path == "sample" else 1000)
    held = max(seeds.heldout_min_per_language, math.ceil(seeds.heldout_fraction * per_lang_seed))
    return Estimate(recipe, rates, per_lang_seed, held, per_lang_web, processes, tokens=dict(tokens or {}))


def _priced(name: str, work: Work, speed: Throughput, engines: int, gpus: int, probe: ProbeRates | None,
            role: str | None) -> dict[str, Any]:
    """A step's row of :func:`plan_costs`: its work, and the time and GPU-hours of its tokens at ``speed``, inference
    on ``engines`` devices, training on ``gpus`` processes; with ``probe``, also the seconds its measured rates
    predict (``probe_seconds``; ``role`` names the role it trains)."""
    # LoRA computes no weight gradients of the frozen base: 4 x params FLOP per token instead of 6
    train_speed = speed.train * (1.5 if work.role is not None and work.role.lora else 1.0)
    inference = work.generate / speed.decode + work.score / speed.prefill  # device-seconds
    seconds = inference / engines + work.train / (train_speed * gpus)
    used = inference + work.train / train_speed
    row = {"step": name, "rows_in": round(work.rows_in), "rows_out": round(work.rows_out),
           "generate_tokens": round(work.generate), "score_tokens": round(work.score),
           "train_tokens": round(work.train), "hours": seconds / 3600, "gpu_hours": used / 3600}
    if probe is not None:
        row["probe_seconds"] = probe.predict(work, role, engines, train_speed * gpus)
    return row


def measured_seconds(run_dir: str | Path) -> dict[str, float]:
    """Wall seconds of every finished step of a run, from its manifests (what ``plan --run`` sets beside the
    prediction)."""
    run = RunDir(run_dir)
    out = {}
    for folder in sorted(Path(run_dir).glob("**/manifest.json")):
        name = str(folder.parent.relative_to(run_dir))
        manifest = run.manifest(name) or {}
        if manifest.get("seconds") is not None:
            out[name] = float(manifest["seconds"])
    return out


def _memory_per_role(recipe: Recipe, shape: ModelShape, processes: int, sharded: bool) -> dict[str, float | None]:
    """:func:`training_memory_gb` of every trained role, on the longest row it trains on."""
    ref, text = recipe.refinement, recipe.candidates.text_tokens or 512
    instruction_max = recipe.candidates.decoding.max_new_tokens
    longest = {  # the longest row each role trains on
        "generator": (recipe.generator, FRAME_TOKENS + text + instruction_max),
        "follower": (ref.follower, FRAME_TOKENS + instruction_max + text),
        "evaluator": (ref.evaluator, FRAME_TOKENS + instruction_max + ref.response_tokens),
        "final": (recipe.final, FRAME_TOKENS + instruction_max + text),
    }
    if ref.evaluator_kind == "likelihood":
        del longest["evaluator"]
    return {name: training_memory_gb(KNOWN_MODELS.get(recipe.model_for(role), shape), role, row, processes, sharded)
            for name, (role, row) in longest.items()}


def plan_costs(recipe: Recipe, device: str = "h100-80gb", rates: dict[str, float] | None = None,
               seeds_per_language: int | None = None, params: float | None = None,
               speeds: Throughput | None = None, probe: ProbeRates | None = None,
               measured: dict[str, float] | None = None) -> dict[str, Any]:
    """Rows, tokens, time and GPU-hours of every declared step of ``recipe``, from each step's own estimate
    (``StepSpec.cost``), in run order (see the module doc); with ``probe`` (:func:`xinstruct.probe.probe`), the
    seconds its measured rates predict, and with ``measured`` (:func:`measured_seconds`) a finished run's seconds
    beside them."""
    rates = {**DEFAULT_RATES, **(rates or {})}
    n_params = model_params(recipe.base_model, params)
    shape = KNOWN_MODELS.get(recipe.base_model, ModelShape(n_params))
    speed = speeds or throughput(device, n_params)
    gpus = launch_processes(recipe.launcher)
    devices = getattr(recipe.engine, "devices", 1)
    engines = gpus if devices == "all" else devices  # local engine workers; "all" is taken as the training GPUs
    estimate = _estimate(recipe, rates, seeds_per_language, gpus, probe.tokens if probe else None)
    ref = recipe.refinement
    role_names = {id(role): name for name, role in (("generator", recipe.generator), ("follower", ref.follower),
                                                    ("evaluator", ref.evaluator), ("final", recipe.final))}
    rows = []
    for spec in declared_steps(recipe):
        if spec.cost is None:
            raise StageError(f"Step {spec.name} ({spec.stage}) declares no cost estimate: give its StepSpec a cost "
                             "(a function of xinstruct.steps.Estimate that returns its Work).")
        work = estimate.done[spec.name] = spec.cost(estimate)
        rows.append(_priced(spec.name, work, speed, engines, gpus, probe, role_names.get(id(work.role))))
        if measured and spec.name in measured:
            rows[-1]["measured_seconds"] = measured[spec.name]
    per_lang_web = estimate.webtexts
    sharded = _sharded(recipe)
    memory = _memory_per_role(recipe, shape, gpus, sharded)
    keep_factor = rates["keep_rate"] ** (ref.iterations if ref.rate == "kept" else 1)
    needed = math.ceil(recipe.diversification.target_per_language
                       / (rates["webtext_kept"] * rates["gate_kept"] * keep_factor))
    return {
        "recipe": recipe.name, "model": recipe.base_model, "params": n_params, "device": device, "processes": gpus,
        "engine_devices": engines,
        "throughput": {"train": speed.train, "prefill": speed.prefill, "decode": speed.decode},
        "rates": rates, "steps": rows, "sharded": sharded, "memory_gb": memory,
        "device_memory_gb": DEVICES[device]["memory_gb"],
        "total_hours": sum(r["hours"] for r in rows), "total_gpu_hours": sum(r["gpu_hours"] for r in rows),
        "webtexts_needed_per_language": needed, "webtexts_per_language": per_lang_web,
        "enough": per_lang_web is not None and per_lang_web >= needed,
        **({"probe": probe.as_dict(), "predicted_seconds": {r["step"]: r["probe_seconds"] for r in rows}}
           if probe else {}),
    }


def hardware_line(path: str | Path) -> tuple[int, str] | None:
    """The GPU count and device of a recipe's ``# Hardware: Nx DEVICE ...`` line (``None`` without one)."""
    line = re.search(r"^# Hardware: (\d+)x ([a-z0-9-]+)", Path(path).read_text(encoding="utf-8"), re.M)
    return (int(line.group(1)), line.group(2)) if line else None


def plans_markdown(paths: list[str], plans: list[dict[str, Any]]) -> str:
    """A table of several recipes' plans (hardware, hours, GPU-hours, peak memory, web texts), then each plan in a
    folded block (``xinstruct plan ... --readme``)."""
    lines = ["| recipe | hardware | hours | GPU-hours | peak training memory per GPU | web texts needed per language "
             "(reads) |", "|---|---|---:|---:|---:|---:|"]
    for path, plan in zip(paths, plans):
        known = [gb for gb in plan["memory_gb"].values() if gb is not None]
        peak = f"{max(known):.1f} GB" if known else "unknown"
        reads = plan["webtexts_per_language"]
        lines.append(f"| `{path}` | {plan['processes']}x {plan['device']} | {plan['total_hours']:.1f} | "
                     f"{plan['total_gpu_hours']:.1f} | {peak} | {plan['webtexts_needed_per_language']} "
                     f"({'all' if reads is None else reads}) |")
    for path, plan in zip(paths, plans):
        lines += ["", f"<details><summary><code>xinstruct plan {path} --device {plan['device']}</code></summary>", "",
                  "```", format_costs(plan), "```", "", "</details>"]
    return "\n".join(lines)


def _n(x: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def format_costs(plan: dict[str, Any]) -> str:
    """The plan as a Markdown table with its assumptions."""
    t = plan["throughput"]
    lines = [
        f"Recipe {plan['recipe']}: {plan['model']} ({_n(plan['params'])} parameters), "
        f"{plan['processes']} training process(es) "
        f"and {plan['engine_devices']} inference device(s) on {plan['device']}; tokens/s per device: "
        f"train {_n(t['train'])}, prefill {_n(t['prefill'])}, decode {_n(t['decode'])}.",
        "Rates: " + ", ".join(f"{k} {v:.2f}" for k, v in plan["rates"].items()) + ".",
        "",
        "| step | rows in | rows out | tokens to generate | tokens to score | tokens to train | hours | GPU-hours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in plan["steps"]:
        lines.append(f"| {r['step']} | {_n(r['rows_in'])} | {_n(r['rows_out'])} | {_n(r['generate_tokens'])} | "
                     f"{_n(r['score_tokens'])} | {_n(r['train_tokens'])} | {r['hours']:.2f} | {r['gpu_hours']:.2f} |")
    lines.append(f"| **total** | | | | | | **{plan['total_hours']:.1f}** | **{plan['total_gpu_hours']:.1f}** |")
    known = {role: gb for role, gb in plan["memory_gb"].items() if gb is not None}
    if known:
        peak = max(known.values())
        fits = "fits" if peak <= plan["device_memory_gb"] else "does NOT fit"
        lines += ["", f"Training memory per device ({'sharded' if plan['sharded'] else 'replicated'} over "
                      f"{plan['processes']} process(es)): " + ", ".join(f"{r} {gb:.1f} GB" for r, gb in known.items())
                  + f"; the peak {fits} in {plan['device']} ({plan['device_memory_gb']:.0f} GB)."]
    if "probe" in plan:
        lines += ["", *_probe_table(plan)]
    have = plan["webtexts_per_language"]
    verdict = "enough" if plan["enough"] else "NOT enough"
    lines += ["", f"Web texts needed per language for target_per_language after filtering: "
                  f"{plan['webtexts_needed_per_language']}; "
                  f"the recipe reads {have if have is not None else 'all (no limit)'}: {verdict}."]
    return "\n".join(lines)


def _probe_table(plan: dict[str, Any]) -> list[str]:
    """The probe's rates and, per step, the seconds the datasheet and the probe predict (and a finished run's
    measured seconds, with the probe's error, where ``plan --run`` gave one)."""
    p = plan["probe"]
    trained = ", ".join(f"{role} {_n(r['tokens_per_s'])} tokens/s + {r['setup_s']:.0f} s per training"
                        for role, r in p["train"].items())
    lines = [f"Probe on this machine ({p['cpu']}, {p['dtype']}; {p['seconds']:.0f} s): model load "
             f"{p['load_s']:.1f} s, decode {p['decode_tokens_per_s']:.0f} tokens/s ({p['decode_rows_per_s']:.2f} "
             f"rows/s), prefill "
             f"{_n(p['prefill_tokens_per_s'])} tokens/s, training: {trained or 'none probed'}"
             + (f"; not probed (datasheet): {', '.join(p['skipped'])}" if p["skipped"] else "") + ".",
             "", "| step | datasheet s | probe s | measured s | probe error |", "|---|---:|---:|---:|---:|"]
    totals = {"hours": 0.0, "probe": 0.0, "measured": 0.0}
    for r in plan["steps"]:
        got = r.get("measured_seconds")
        error = f"{(r['probe_seconds'] - got) / got:+.0%}" if got else ""
        lines.append(f"| {r['step']} | {3600 * r['hours']:.0f} | {r['probe_seconds']:.0f} | "
                     f"{'' if got is None else f'{got:.0f}'} | {error} |")
        totals["hours"] += 3600 * r["hours"]
        totals["probe"] += r["probe_seconds"]
        totals["measured"] += got or 0.0
    measured = totals["measured"]
    error = f"{(totals['probe'] - measured) / measured:+.0%}" if measured else ""
    lines.append(f"| **total** | **{totals['hours']:.0f}** | **{totals['probe']:.0f}** | "
                 f"**{measured:.0f}** | **{error}** |" if measured else
                 f"| **total** | **{totals['hours']:.0f}** | **{totals['probe']:.0f}** | | |")
    return lines
