"""Side-by-side benchmarks (``make bench`` / ``xinstruct bench``).

Each entry runs a baseline and ours in the same process on the same CPU and reports the ratio, so
machine noise cancels as far as it can. Results are printed as a table and written as JSON: a list of
objects with ``name``, ``ratio``, ``target`` and the raw figures.

Entries:
- ``candidates/<model>``: candidate generation with the local engine vs the authors' loop (one
  ``model.generate`` per sample, batch 1, as in their ``utils/inference.py``): same model, prompts
  (GENERATOR template over bundled sample texts of all languages), greedy decoding, ``max_new_tokens``.
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
            seq = model.generate(**inputs, generation_config=cfg)
            outs.append(tok.decode(seq[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return outs


def _timed(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def bench_candidates(
    model: str, rows: int, batch_size: int, max_new_tokens: int, baseline_dtype: str = "float32", dtype: str = "float32"
) -> dict[str, Any]:
    """Candidate generation: local engine vs the authors' loop on the same model and prompts."""
    prompts = sample_prompts(rows)
    params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    base_engine = LocalEngine(model, batch_size=1, dtype=baseline_dtype, progress=False)
    authors_loop(base_engine, prompts[:1], params)  # warm-up
    base_out, base_s = _timed(lambda: authors_loop(base_engine, prompts, params))
    engine = base_engine if dtype == baseline_dtype else LocalEngine(model, dtype=dtype, progress=False)
    engine.batch_size = batch_size
    engine.generate(prompts[:1], params)  # warm-up
    ours_out, ours_s = _timed(lambda: engine.generate(prompts, params))
    same = sum(a == b for a, b in zip(base_out, ours_out)) / len(prompts)
    return {
        "name": f"candidates/{model}" + ("" if dtype == baseline_dtype else f" ({dtype} engine vs {baseline_dtype} loop)"),
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
    }


def print_table(results: list[dict[str, Any]]) -> None:
    """Print name, ratio, target and both raw times."""
    print(f"\n{'benchmark':<58} {'ratio':>7} {'target':>7} {'baseline s':>11} {'ours s':>8}")
    for r in results:
        mark = "ok" if r["ratio"] >= r["target"] else "below"
        print(f"{r['name']:<58} {r['ratio']:>6.2f}x {r['target']:>6.1f}x {r['baseline_seconds']:>11.2f} {r['ours_seconds']:>8.2f}  {mark}")


def main(out: str = "bench.json", gemma_rows: int = 16, skip_gemma: bool = False) -> int:
    """Run every benchmark, print the table and write ``out``."""
    results = [bench_candidates("tiny", rows=64, batch_size=16, max_new_tokens=32)]
    if not skip_gemma:
        results.append(bench_candidates("gemma-3-270m", rows=gemma_rows, batch_size=16, max_new_tokens=32))
        results.append(bench_candidates("gemma-3-270m", rows=gemma_rows, batch_size=16, max_new_tokens=32, dtype="bfloat16"))
    print_table(results)
    Path(out).write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out}")
    return 0
