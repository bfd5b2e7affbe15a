"""``xinstruct plan RECIPE``: what a run will cost, before it starts. Nothing is loaded or downloaded.

For every step: rows in and out, tokens to generate, to score (prefill) and to train, and the time and
GPU-hours at stated throughputs. Rows out of the filters follow stated rates: by default the rates of a
finished run (``--run RUN_DIR``), otherwise the defaults below. It also says how many web texts per language
the run needs to end with ``target_per_language`` rows after the gate and K rounds of filtering.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Recipe
from .training import accelerate_config, launch_processes

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
FRAME_TOKENS = 45  # a template's header and cue
INSTRUCTION_TOKENS = 24


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
    from .rundir import RunDir, iteration_step

    run = RunDir(run_dir)
    rates = dict(DEFAULT_RATES)
    web, cand = run.manifest("webtext"), run.manifest("candidates")
    if web and cand:
        rates["webtext_kept"] = web["rows_out"] / max(1, web.get("rows_in", web["rows_out"]))
        rates["gate_kept"] = cand["rows_out"] / max(1, cand["rows_in"])
        kept, k = [], 1
        while run.finished(iteration_step(k, "kept")):
            kept.append(run.manifest(iteration_step(k, "kept")))
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
    training precision (2 bytes per parameter with ``bf16``/``fp16``, else 4) on every process. Plus the float32
    logits of one micro-batch (batch x tokens x vocabulary x 4 bytes, tokens being the longest row the role can see:
    ``max_length`` or the row's content budget, whichever is smaller), the activations (with activation
    checkpointing, TRL's default: one 2-byte hidden state per layer; without: about 34 bytes per hidden unit and
    layer), and 20% for the CUDA context, one layer's live activations and fragmentation.
    """
    if shape.vocab is None or shape.hidden is None or shape.layers is None:
        return None
    training = role.training
    batch = training.get("per_device_train_batch_size", 8)
    tokens = min(training.get("max_length") or row_tokens, row_tokens)
    half = training.get("bf16") or training.get("fp16")
    state = (2 if half else 4) * shape.params if role.lora else 16 * shape.params / (processes if sharded else 1)
    logits = batch * tokens * shape.vocab * 4
    checkpointing = training.get("activation_checkpointing", training.get("gradient_checkpointing", True))
    activations = batch * tokens * shape.hidden * shape.layers * (2 if checkpointing else 34)
    return 1.2 * (state + logits + activations) / 1e9


def _trained_rows(training: dict[str, Any], rows: float, processes: int) -> float:
    """Rows a training block goes through: ``max_steps`` x global batch, or ``num_train_epochs`` x rows (TRL
    default 3)."""
    if training.get("max_steps", -1) and training.get("max_steps", -1) > 0:
        batch = (training.get("per_device_train_batch_size", 8) * training.get("gradient_accumulation_steps", 1)
                 * processes)
        return training["max_steps"] * batch
    return rows * training.get("num_train_epochs", 3)


@dataclass
class _StepCosts:
    """The steps' rows of :func:`plan_costs`: time and GPU-hours of each step's tokens at ``speed``, inference on
    ``engines`` devices, training on ``gpus`` processes."""

    speed: Throughput
    engines: int
    gpus: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str, rows_in: float, rows_out: float, generate: float = 0, score: float = 0,
             train: float = 0, role=None) -> None:
        speed, engines, gpus = self.speed, self.engines, self.gpus
        # LoRA computes no weight gradients of the frozen base: 4 x params FLOP per token instead of 6
        train_speed = speed.train * (1.5 if role is not None and role.lora else 1.0)
        seconds = (generate / speed.decode + score / speed.prefill) / engines + train / (train_speed * gpus)
        used = (generate / speed.decode + score / speed.prefill) + train / train_speed  # device-seconds
        self.rows.append({"step": name, "rows_in": round(rows_in), "rows_out": round(rows_out),
                          "generate_tokens": round(generate), "score_tokens": round(score),
                          "train_tokens": round(train), "hours": seconds / 3600, "gpu_hours": used / 3600})

    def train_tokens(self, role, n_rows: float, max_row: int) -> float:
        return (_trained_rows(role.training, n_rows, self.gpus)
                * min(role.training.get("max_length") or max_row, max_row))


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


def _refinement_costs(recipe: Recipe, costs: _StepCosts, candidates: float, train_seeds: float, held: float,
                      keep_rate: float) -> float:
    """The refinement steps of :func:`plan_costs`: the swapped pairs, then every iteration. Returns the rows the last
    iteration keeps.

    Likelihood features take two passes: one per (instruction, response) pair, one with the generic instruction per
    distinct response (a candidate and its swapped copies share it). Cross-fitted (``refinement.folds`` 2), each
    iteration trains one follower per fold on its half of the rows."""
    ref, step, train_tokens = recipe.refinement, costs.step, costs.train_tokens
    langs, held_rows = len(recipe.languages), held * len(recipe.languages)
    text = recipe.candidates.text_tokens or 512
    follower_row = FRAME_TOKENS + INSTRUCTION_TOKENS + 2 * text
    rating_row = FRAME_TOKENS + INSTRUCTION_TOKENS + ref.response_tokens
    likelihood = ref.evaluator_kind == "likelihood"
    passes = 2 if likelihood else 1
    swapped = ref.planted_share * (2 if ref.hard_swaps else 1)  # swapped copies per candidate (easy, hard)
    pairs = candidates * (1 + swapped)  # the base model scores every pair, plus each response once generically
    step("swaps", candidates, pairs, score=(pairs + candidates) * rating_row)
    pool = kept = candidates
    for k in range(1, ref.iterations + 1):
        step(f"iter-{k}/follower", kept, kept, role=ref.follower,
             train=ref.folds * train_tokens(ref.follower, kept / ref.folds, follower_row))
        pseudo_seeds = (min(train_seeds, ref.pseudo_ratings.seeds_per_language or train_seeds) + held) * langs
        step(f"iter-{k}/pseudo_ratings", pseudo_seeds, 3 * pseudo_seeds, generate=pseudo_seeds * ref.response_tokens,
             score=pseudo_seeds * (FRAME_TOKENS + INSTRUCTION_TOKENS))
        ev_train = 3 * (pseudo_seeds - held_rows)
        ev_tokens = 0 if likelihood else train_tokens(ref.evaluator, ev_train, rating_row)
        base_test = 2 * (3 * held_rows / 2)  # the base model's two passes on the test half of the held-out ratings
        step(f"iter-{k}/evaluator", ev_train, ev_train, train=ev_tokens,
             score=(passes * 3 * pseudo_seeds + base_test) * rating_row, role=ref.evaluator)
        rated = pool * (1 + swapped)
        step(f"iter-{k}/ratings", pool, pool, score=(rated + (pool if likelihood else 0)) * rating_row)
        kept = pool * keep_rate
        step(f"iter-{k}/kept", pool, kept)
        pool = kept if ref.rate == "kept" else candidates
    return kept


def plan_costs(recipe: Recipe, device: str = "h100-80gb", rates: dict[str, float] | None = None,
               seeds_per_language: int | None = None, params: float | None = None,
               speeds: Throughput | None = None) -> dict[str, Any]:
    """Rows, tokens, time and GPU-hours of every step of ``recipe`` (see the module doc)."""
    rates = {**DEFAULT_RATES, **(rates or {})}
    n_params = model_params(recipe.base_model, params)
    shape = KNOWN_MODELS.get(recipe.base_model, ModelShape(n_params))
    speed = speeds or throughput(device, n_params)
    gpus = launch_processes(recipe.launcher)
    devices = getattr(recipe.engine, "devices", 1)
    engines = gpus if devices == "all" else devices  # local engine workers; "all" is taken as the training GPUs
    langs = len(recipe.languages)
    web = recipe.data.webtext
    seeds_cfg = recipe.data.seeds
    per_lang_web = web.limit_per_language or (28 if web.path == "sample" else None)
    per_lang_seed = seeds_per_language or seeds_cfg.limit_per_language or (20 if seeds_cfg.path == "sample" else 1000)
    held = max(seeds_cfg.heldout_min_per_language, math.ceil(seeds_cfg.heldout_fraction * per_lang_seed))
    train_seeds = per_lang_seed - held
    text = recipe.candidates.text_tokens or 512
    ref = recipe.refinement
    resp = ref.response_tokens
    costs = _StepCosts(speed, engines, gpus)
    step, train_tokens, rows = costs.step, costs.train_tokens, costs.rows
    webtext_in = (per_lang_web or 0) * langs
    webtext_out = webtext_in * rates["webtext_kept"]
    step("seed", per_lang_seed * langs, per_lang_seed * langs)
    step("webtext", webtext_in, webtext_out)
    held_rows = held * langs
    step("baseline", held_rows, held_rows, generate=held_rows * (recipe.candidates.decoding.max_new_tokens + resp),
         score=held_rows * (2 * FRAME_TOKENS + text + INSTRUCTION_TOKENS))
    gen_row = FRAME_TOKENS + text + INSTRUCTION_TOKENS
    step("generator", train_seeds * langs, train_seeds * langs,
         train=train_tokens(recipe.generator, train_seeds * langs, gen_row), role=recipe.generator,
         generate=held_rows * recipe.candidates.decoding.max_new_tokens, score=held_rows * gen_row)
    candidates = webtext_out * rates["gate_kept"]
    step("candidates", webtext_out, candidates, generate=webtext_out * recipe.candidates.decoding.max_new_tokens,
         score=webtext_out * (FRAME_TOKENS + text))
    kept = _refinement_costs(recipe, costs, candidates, train_seeds, held, rates["keep_rate"])
    follower_row = FRAME_TOKENS + INSTRUCTION_TOKENS + 2 * text
    target = recipe.diversification.target_per_language * langs
    diversified = min(target, kept)
    step("diversified", kept, diversified)
    step("final", diversified, diversified, train=train_tokens(recipe.final, diversified, follower_row),
         generate=held_rows * resp, role=recipe.final)
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
    }


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
    have = plan["webtexts_per_language"]
    verdict = "enough" if plan["enough"] else "NOT enough"
    lines += ["", f"Web texts needed per language for target_per_language after filtering: "
                  f"{plan['webtexts_needed_per_language']}; "
                  f"the recipe reads {have if have is not None else 'all (no limit)'}: {verdict}."]
    return "\n".join(lines)
