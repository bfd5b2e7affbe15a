"""Side-by-side benchmarks (``make bench`` / ``xinstruct bench``).

Each entry runs a baseline and ours in the same process on the same CPU and reports the ratio, so
machine noise cancels as far as it can. Results are printed as a table and written as JSON: a list of
objects with ``name``, ``ratio``, ``target`` and the raw figures.

Entries:
- ``candidates/<model>``: candidate generation with the local engine vs the authors' loop (one
  ``model.generate`` per sample, batch 1, as in their ``utils/inference.py``): same model, prompts
  (GENERATOR template over bundled sample texts of all languages), greedy decoding, ``max_new_tokens``.
- ``rating/<model>``: rating with ``Engine.score`` (one forward pass, batched) vs generating a rating
  text per row (batch 1, greedy) and parsing its first digit; same evaluator and prompts.
- ``diversification/320k``: 10 languages x 32k random unit vectors of 384 dims, k-means (k=64 per
  language) + equal sampling: faiss vs scikit-learn KMeans; target for ours: <= 30 s.
- ``sft-packing/tiny``: SFT tokens/s with TRL ``packing=True`` (BFD, padding-free) vs padded batches on
  the same follower data.
- ``sft-lm-head/<model>``: SFT tokens/s (LoRA) with the LM head only at loss positions vs TRL's default, on the
  generator's and the evaluator's prompt/completion shapes; target for the evaluator's shape: >= 2x.
- ``endpoint/<model>``: rows/s of the endpoint engine at concurrency 1, 4 and 16 against one
  ``transformers serve --continuous-batching`` on 127.0.0.1 (same prompts, greedy, one warm-up call);
  the ratio is concurrency 16 vs 1. No target: it measures how well the engine keeps a server busy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .data.readers import read_jsonl
from .data.sample import sample_file
from .inference import GenerationParams
from .inference.local import LocalEngine
from .languages import PAPER_LANGUAGES
from .prompts import generator_prompt


def sample_prompts(n: int) -> list[str]:
    """``n`` generator prompts over the bundled web texts, round-robin over the ten languages."""
    per_lang = [[r["text"] for r in read_jsonl(sample_file("webtext", lang.code))] for lang in PAPER_LANGUAGES]
    texts = [per_lang[i % len(per_lang)][i // len(per_lang)] for i in range(n)]
    return [generator_prompt(t) for t in texts]


def authors_loop(engine: LocalEngine, prompts: list[str], params: GenerationParams) -> list[str]:
    """The baseline: one ``model.generate`` per prompt, batch 1, no padding (the authors' loop)."""
    tok, model = engine.tokenizer, engine.model
    cfg = engine._generation_config(params)
    outs = []
    with torch.inference_mode():
        for prompt in prompts:
            inputs = tok(prompt, return_tensors="pt").to(engine.device)
            seq = model.generate(**inputs, generation_config=cfg, logits_processor=engine._processors(params))
            outs.append(tok.decode(seq[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return outs


def _timed(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def bench_candidates(
    model: str, rows: int, batch_size: int, max_new_tokens: int, baseline_dtype: str = "float32",
    dtypes: tuple[str, ...] = ("float32",)
) -> list[dict[str, Any]]:
    """Candidate generation: local engine vs the authors' loop on the same model and prompts.

    The authors' loop runs once (in ``baseline_dtype``); the engine runs once per entry of ``dtypes``.
    """
    prompts = sample_prompts(rows)
    params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    base_engine = LocalEngine(model, batch_size=1, dtype=baseline_dtype, progress=False)
    authors_loop(base_engine, prompts[:1], params)  # warm-up
    base_out, base_s = _timed(lambda: authors_loop(base_engine, prompts, params))
    results = []
    for dtype in dtypes:
        engine = base_engine if dtype == baseline_dtype else LocalEngine(model, dtype=dtype, progress=False)
        engine.batch_size = batch_size
        engine.generate(prompts[:1], params)  # warm-up
        ours_out, ours_s = _timed(lambda e=engine: e.generate(prompts, params))
        same = sum(a == b for a, b in zip(base_out, ours_out)) / len(prompts)
        results.append({
            "name": f"candidates/{model}"
            + ("" if dtype == baseline_dtype else f" ({dtype} engine vs {baseline_dtype} loop)"),
            "ratio": round(base_s / ours_s, 2),
            "target": 10.0,
            "baseline": f"authors' loop, batch 1, {baseline_dtype}",
            "ours": f"LocalEngine, batch {batch_size}, length-sorted, left padding, {dtype}",
            "rows": rows,
            "max_new_tokens": max_new_tokens,
            "baseline_seconds": round(base_s, 2),
            "ours_seconds": round(ours_s, 2),
            "baseline_rows_per_s": round(rows / base_s, 3),
            "ours_rows_per_s": round(rows / ours_s, 3),
            "identical_outputs_share": round(same, 3),
            "torch_threads": torch.get_num_threads(),
        })
    return results


def _rating_rows(n: int) -> list[str]:
    """``n`` rating prompts over the bundled seed pairs (instruction, native response), all languages."""
    from .prompts import rating_prompt

    per_lang = [(lang.name, list(read_jsonl(sample_file("seeds", lang.code)))) for lang in PAPER_LANGUAGES]
    rows = []
    for i in range(n):
        name, seeds = per_lang[i % len(per_lang)]
        seed = seeds[(i // len(per_lang)) % len(seeds)]
        rows.append(rating_prompt(seed["instruction"], seed["output"], name))
    return rows


def parse_rating(text: str) -> int | None:
    """The first digit 1-3 of a generated rating text (the generate-and-parse baseline), or ``None``."""
    import re

    match = re.search(r"[123]", text)
    return int(match.group()) if match else None


def bench_rating(model: str, rows: int, batch_size: int, max_new_tokens: int = 8,
                 dtype: str = "float32") -> dict[str, Any]:
    """Rating: ``Engine.score`` (batched, one forward pass) vs generate-and-parse (batch 1)."""
    from .prompts import RATING_OPTIONS

    prompts = _rating_rows(rows)
    engine = LocalEngine(model, batch_size=1, dtype=dtype, progress=False)
    params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    authors_loop(engine, prompts[:1], params)
    texts, base_s = _timed(lambda: authors_loop(engine, prompts, params))
    parsed = [parse_rating(t) for t in texts]
    engine.batch_size = batch_size
    engine.score(prompts[:1], list(RATING_OPTIONS))
    started = time.perf_counter()
    probs = engine.score(prompts, list(RATING_OPTIONS))
    ours_s = time.perf_counter() - started
    return {
        "name": f"rating/{Path(model).name if Path(model).exists() else model}",
        "ratio": round(base_s / ours_s, 2),
        "target": 20.0,
        "baseline": f"generate up to {max_new_tokens} tokens per row (batch 1, greedy) and parse the first digit",
        "ours": f"Engine.score: P(1), P(2), P(3) from one forward pass, batch {batch_size}",
        "rows": rows,
        "baseline_seconds": round(base_s, 2),
        "ours_seconds": round(ours_s, 3),
        "baseline_unparseable_share": round(sum(p is None for p in parsed) / rows, 3),
        "ours_unparseable_share": 0.0,
        "argmax_agreement_with_parsed": round(
            sum(1 + max(range(3), key=lambda j: pr[j]) == p for pr, p in zip(probs, parsed) if p)
            / max(1, sum(p is not None for p in parsed)),
            3,
        ),
    }


def bench_diversification(languages: int = 10, per_language: int = 32000, dim: int = 384, k: int = 64,
                          take: int = 3200) -> dict[str, Any]:
    """faiss k-means + equal sampling vs scikit-learn KMeans + the same sampling, on random unit vectors."""
    import numpy as np
    from sklearn.cluster import KMeans

    from .stages.diversification import equal_sample, kmeans_labels

    rng = np.random.default_rng(0)
    data = [rng.standard_normal((per_language, dim)).astype(np.float32) for _ in range(languages)]
    for x in data:
        x /= np.linalg.norm(x, axis=1, keepdims=True)

    def ours() -> list[int]:
        return [len(equal_sample(kmeans_labels(x, k, seed=0, niter=20)[0], take, 0)) for x in data]

    def sklearn() -> list[int]:
        return [len(equal_sample(KMeans(k, n_init=1, max_iter=20, random_state=0).fit_predict(x), take, 0))
                for x in data]

    taken, ours_s = _timed(ours)
    _, base_s = _timed(sklearn)
    return {
        "name": f"diversification/{languages * per_language // 1000}k",
        "ratio": round(base_s / ours_s, 2),
        "target": 1.0,
        "ours_seconds_target": 30.0,
        "met": ours_s <= 30.0,
        "baseline": f"scikit-learn KMeans(k={k}, n_init=1, max_iter=20) per language + equal sampling",
        "ours": f"faiss Kmeans(k={k}, niter=20) per language + equal sampling",
        "vectors": languages * per_language,
        "dim": dim,
        "taken": sum(taken),
        "baseline_seconds": round(base_s, 2),
        "ours_seconds": round(ours_s, 2),
    }


def bench_packing(rows: int = 192, steps: int = 6) -> dict[str, Any]:
    """SFT throughput (non-padding tokens per second) with TRL packing vs padded batches, tiny model."""
    from datasets import Dataset

    from .stages.refinement import follower_training_set
    from .training import train_sft

    examples = []
    for lang in PAPER_LANGUAGES:
        for seed in read_jsonl(sample_file("seeds", lang.code)):
            examples.append({"id": seed["id"], "language": lang.code, "instruction": seed["instruction"],
                             "output": seed["output"]})
    data = follower_training_set(Dataset.from_list(examples[:rows]))
    import tempfile

    results = {}
    for name, extra in (("padded", {"packing": False}), ("packed", {"packing": True, "packing_strategy": "bfd"})):
        with tempfile.TemporaryDirectory() as out:
            args = {"max_steps": steps, "per_device_train_batch_size": 16, "max_length": 1024, "logging_steps": 1,
                    **extra}
            metrics = train_sft("tiny", data, out, args)
            results[name] = (metrics["num_tokens"], metrics["train_runtime"])
    tps = {name: tokens / seconds for name, (tokens, seconds) in results.items()}
    return {
        "name": "sft-packing/tiny",
        "ratio": round(tps["packed"] / tps["padded"], 2),
        "target": 1.5,
        "baseline": "padded batches of 16 (TRL padding collator)",
        "ours": "TRL packing=True, packing_strategy=bfd (padding-free)",
        "steps": steps,
        "baseline_tokens_per_s": round(tps["padded"], 1),
        "ours_tokens_per_s": round(tps["packed"], 1),
        "baseline_seconds": round(results["padded"][1], 2),
        "ours_seconds": round(results["packed"][1], 2),
    }


def _sft_shape_rows(shape: str, rows: int, model: str) -> Any:
    """Prompt/completion rows of a role's shape over the bundled seed pairs: ``generator`` (GENERATOR prompt over a
    native text cut to 192 tokens -> English instruction) or ``evaluator`` (rating prompt with a 64-token response
    -> one digit)."""
    from datasets import Dataset

    from .budget import PromptFitter, load_tokenizer
    from .prompts import evaluator_example, generator_prompt

    fitter = PromptFitter(load_tokenizer(model))
    seeds = [(lang.name, s) for lang in PAPER_LANGUAGES for s in read_jsonl(sample_file("seeds", lang.code))][:rows]
    if shape == "generator":
        examples = [{"prompt": fitter.fit(generator_prompt, s["output"], None, 192).prompt,
                     "completion": s["instruction"]}
                    for _, s in seeds]
    else:
        examples = [evaluator_example(s["instruction"], fitter.head(s["output"], 64)[0], name, 3) for name, s in seeds]
    return Dataset.from_list(examples)


def bench_sft_lm_head(model: str = "gemma-3-270m", rows: int = 24, steps: int = 4, batch_size: int = 4,
                      shapes: tuple[str, ...] = ("generator", "evaluator")) -> list[dict[str, Any]]:
    """SFT tokens/s with the LM head only at loss positions vs TRL's default (every position on CPU), same LoRA
    training, rows and steps, for the generator's and the evaluator's prompt/completion shapes."""
    import tempfile

    from .hardware import auto_dtype, cpu_kind
    from .training import train_sft

    out = []
    for shape in shapes:
        data = _sft_shape_rows(shape, rows, model)
        rates = {}
        for restricted in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                args = {"max_steps": steps, "per_device_train_batch_size": batch_size, "max_length": 512,
                        "logging_steps": 1, "activation_checkpointing": False, "disable_tqdm": True}
                metrics = train_sft(model, data, folder, args,
                                    lora={"r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
                                    lm_head_on_loss_only=restricted)
                rates[restricted] = (metrics["num_tokens"], metrics["train_runtime"], metrics["train_loss"])
        tps = {k: tokens / seconds for k, (tokens, seconds, _) in rates.items()}
        out.append({
            "name": f"sft-lm-head/{model}, {shape} shape",
            "ratio": round(tps[True] / tps[False], 2),
            "target": 2.0 if shape == "evaluator" else None,
            "baseline": "TRL SFTTrainer default (LM head over every position on CPU), LoRA r=16",
            "ours": "LM head only at positions that carry loss (lm_head_on_loss_only)",
            "cpu": cpu_kind(),
            "dtype": auto_dtype(),
            "steps": steps,
            "baseline_tokens_per_s": round(tps[False], 1),
            "ours_tokens_per_s": round(tps[True], 1),
            "baseline_train_loss": round(rates[False][2], 4),
            "ours_train_loss": round(rates[True][2], 4),
            "baseline_seconds": round(rates[False][1], 2),
            "ours_seconds": round(rates[True][1], 2),
        })
    return out


def bench_endpoint(model: str = "tiny", rows: int = 64, max_new_tokens: int = 32,
                   levels: tuple[int, ...] = (1, 4, 16)) -> dict[str, Any]:
    """Endpoint engine throughput at several concurrency levels against one local continuous-batching server."""
    from .inference.endpoint import EndpointEngine
    from .inference.server import TransformersServer
    from .models import resolve_model

    path = resolve_model(model)
    prompts = sample_prompts(rows)
    params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    rates: dict[int, float] = {}
    seconds: dict[int, float] = {}
    with TransformersServer(continuous_batching=True) as server:
        # load + warm up
        EndpointEngine([server.url], path, concurrency=max(levels), progress=False).generate(prompts[:4], params)
        for level in levels:
            engine = EndpointEngine([server.url], path, concurrency=level, progress=False)
            _, seconds[level] = _timed(lambda e=engine: e.generate(prompts, params))
            rates[level] = round(rows / seconds[level], 2)
    low, high = min(levels), max(levels)
    return {
        "name": f"endpoint/{model}, transformers serve --continuous-batching, {rows} rows, "
                f"concurrency {high} vs {low}",
        "ratio": round(seconds[low] / seconds[high], 2),
        "target": None,
        "rows_per_second": rates,
        "baseline_seconds": round(seconds[low], 2),
        "ours_seconds": round(seconds[high], 2),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    """Print name, ratio, target and both raw times."""
    print(f"\n{'benchmark':<58} {'ratio':>7} {'target':>7} {'baseline s':>11} {'ours s':>8}")
    for r in results:
        if r["target"] is None:
            target, mark = "     -  ", ""
        else:
            target = f"{r['target']:>6.1f}x"
            mark = "ok" if r.get("met", r["ratio"] >= r["target"]) else "below"
        print(f"{r['name']:<58} {r['ratio']:>6.2f}x {target} {r['baseline_seconds']:>11.2f} "
              f"{r['ours_seconds']:>8.2f}  {mark}")
        if "rows_per_second" in r:
            print(f"    rows/s by concurrency: {r['rows_per_second']}")


def main(out: str = "bench.json", gemma_rows: int = 16, skip_gemma: bool = False) -> int:
    """Run every benchmark, print the table and write ``out`` (rewritten after each entry)."""
    jobs: list[Callable[[], list[dict[str, Any]]]] = [
        lambda: bench_candidates("tiny", rows=64, batch_size=16, max_new_tokens=32)
    ]
    if not skip_gemma:
        jobs.append(lambda: bench_candidates("gemma-3-270m", rows=gemma_rows, batch_size=16, max_new_tokens=32,
                                             dtypes=("float32", "bfloat16")))
    jobs.append(lambda: [bench_rating("tiny", rows=64, batch_size=16)])
    if not skip_gemma:
        jobs.append(lambda: [bench_rating("gemma-3-270m", rows=gemma_rows, batch_size=16)])
    if not skip_gemma:
        jobs.append(lambda: bench_sft_lm_head("gemma-3-270m"))
    jobs += [lambda: [bench_diversification()], lambda: [bench_packing()], lambda: [bench_endpoint("tiny")]]
    results: list[dict[str, Any]] = []
    for job in jobs:
        for entry in job():
            results.append(entry)
            print(json.dumps(entry), flush=True)
            Path(out).write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten: {out}")
    return 0
