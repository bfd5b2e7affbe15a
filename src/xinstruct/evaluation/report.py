"""The evaluation report: ``report.md`` (tables per language) and PNG bar charts, from ``results.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..publish.plots import grouped_bars


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``out_dir``; return the report's path."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    lines = [f"# Evaluation: {results['candidate']}", ""]
    counts = set(results["questions_per_language"].values())
    per_language = f"{counts.pop()} per language" if len(counts) == 1 else ", ".join(
        f"{code}: {n}" for code, n in results["questions_per_language"].items())
    lines.append(f"Baseline: `{results.get('baseline') or 'none'}`. Judge: `{results.get('judge') or 'none'}`. "
                 f"Questions: `{results['questions']}` ({per_language}).")
    judged = results.get("pairwise") or {}
    if judged:
        lines += ["", "## Pairwise (candidate vs baseline, both answer orders)", "",
                  "| language | mode | win | tie | loss | failed | win rate | tie rate |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for mode, per_lang in judged.items():
            for lang, s in per_lang.items():
                lines.append(f"| {lang} | {mode} | {s['win']} | {s['tie']} | {s['loss']} | {s['failed']} | "
                             f"{_pct(s['win_rate'])} | {_pct(s['tie_rate'])} |")
        retention = results.get("zero_shot_retention") or {}
        if retention:
            lines += ["", "Zero-shot retention (zero-shot win rate / cross-lingual win rate): "
                      + ", ".join(f"{lang} {_pct(v)}" for lang, v in retention.items()) + "."]
        grouped_bars({mode: {lang: s["win_rate"] for lang, s in per_lang.items()}
                      for mode, per_lang in judged.items()},
                     out_dir / "plots" / "win_rate.png", "win rate", "Win rate against the baseline")
        lines += ["", "![win rate](plots/win_rate.png)"]
    fidelity = results.get("language_fidelity") or {}
    if fidelity:
        langs = sorted({code for per_mode in fidelity.values() for per_lang in per_mode.values() for code in per_lang})
        lines += ["", "## Language fidelity (answers in the requested language)", "",
                  "| model | mode | " + " | ".join(langs) + " |"]
        lines.append("|---|---|" + "---:|" * len(langs))
        series = {}
        for label, per_mode in fidelity.items():
            for mode, per_lang in per_mode.items():
                lines.append(f"| {label} | {mode} | "
                             + " | ".join(_pct(per_lang[c]["fidelity"]) for c in langs) + " |")
                series[f"{label} {mode}"] = {c: per_lang[c]["fidelity"] for c in langs}
        grouped_bars(series, out_dir / "plots" / "language_fidelity.png", "share in the language", "Language fidelity")
        lines += ["", "![language fidelity](plots/language_fidelity.png)"]
    harness = (results.get("harness") or {}).get("results") or {}
    if harness:
        lines += ["", "## Benchmarks (lm-evaluation-harness, accuracy)", "", "| task | language | accuracy | stderr |",
                  "|---|---|---:|---:|"]
        for per_lang in harness.values():
            for lang, m in per_lang.items():
                lines.append(f"| {m['task']} | {lang} | {_pct(m['acc'])} | {_pct(m['acc_stderr'])} |")
        grouped_bars({task: {lang: m["acc"] for lang, m in per_lang.items()} for task, per_lang in harness.items()},
                     out_dir / "plots" / "benchmarks.png", "accuracy", "Benchmarks")
        lines += ["", "![benchmarks](plots/benchmarks.png)"]
        if results["harness"].get("limit"):
            lines.append(f"\nAt most {results['harness']['limit']} documents per task "
                         f"(a quick check, not a full run).")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def card_eval_results(results: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """``results.json`` as model-card ``eval_results`` (huggingface_hub ``EvalResult``) and as a flat table."""
    from huggingface_hub import EvalResult

    entries: list[EvalResult] = []
    table: dict[str, Any] = {}
    questions = str(results.get("questions", "builtin"))

    def on_questions(task_name: str, lang: str, metric_type: str, value: float, metric_name: str | None = None):
        entries.append(EvalResult(task_type="text-generation", task_name=task_name,
                                  dataset_type="x-instruction-questions",
                                  dataset_name=f"X-Instruction questions ({questions})", dataset_config=lang,
                                  metric_type=metric_type, metric_value=value, metric_name=metric_name))

    for mode, per_lang in (results.get("pairwise") or {}).items():
        for lang, s in per_lang.items():
            if s["win_rate"] is None:
                continue
            on_questions(f"pairwise vs baseline ({mode})", lang, "win_rate", s["win_rate"],
                         f"win rate vs {results.get('baseline')}")
            table[f"win rate vs baseline, {mode}, {lang}"] = (
                f"{_pct(s['win_rate'])} ({s['win']}/{s['tie']}/{s['loss']}, {s['failed']} failed)")
    for lang, value in (results.get("zero_shot_retention") or {}).items():
        table[f"zero-shot retention, {lang}"] = _pct(value)
    for mode, per_lang in (results.get("language_fidelity") or {}).get("candidate", {}).items():
        for lang, f in per_lang.items():
            if f["fidelity"] is None:
                continue
            on_questions(f"language fidelity ({mode})", lang, "language_fidelity", f["fidelity"])
            table[f"language fidelity, {mode}, {lang}"] = _pct(f["fidelity"])
    for task, per_lang in ((results.get("harness") or {}).get("results") or {}).items():
        for lang, m in per_lang.items():
            entries.append(EvalResult(task_type="multiple-choice", task_name=task, dataset_type=task,
                                      dataset_name=task, dataset_config=lang, metric_type="accuracy",
                                      metric_value=m["acc"]))
            table[f"{task} {lang} accuracy"] = _pct(m["acc"])
    return entries, table
