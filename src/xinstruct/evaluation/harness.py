"""Benchmarks through lm-evaluation-harness (``lm_eval.simple_evaluate``): XCOPA, XNLI and XStoryCloze for
the languages of the run each task covers (log-likelihood multiple choice, accuracy).

``data_dirs`` swaps a task's Hub dataset for local files: ``{"xcopa": "../shared/data/xcopa"}`` reads
``<dir>/<lang>/{val,test}.<lang>.jsonl`` (XCOPA's own layout) through a task defined here with lm-eval's own
XCOPA prompt functions, so the local task scores exactly like ``xcopa_<lang>``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# languages of each task (lm-eval task names are <task>_<code>)
TASK_LANGUAGES = {
    "xcopa": ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"),
    "xnli": ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"),
    "xstorycloze": ("ar", "en", "es", "eu", "hi", "id", "my", "ru", "sw", "te", "zh"),
}


def covered(task: str, langs: list[str]) -> list[str]:
    """The languages of ``langs`` that ``task`` has."""
    if task not in TASK_LANGUAGES:
        raise ValueError(f"Unknown benchmark {task!r}; use one of {', '.join(TASK_LANGUAGES)}.")
    return [code for code in langs if code in TASK_LANGUAGES[task]]


def local_xcopa_task(data_dir: str | Path, lang: str) -> dict[str, Any]:
    """An lm-eval task config over local XCOPA files of ``lang`` (validation and test splits)."""
    from lm_eval.tasks.xcopa import utils as xcopa

    folder = Path(data_dir) / lang
    files = {"validation": str(folder / f"val.{lang}.jsonl"), "test": str(folder / f"test.{lang}.jsonl")}
    for split, path in files.items():
        if not Path(path).exists():
            from ..errors import DataError

            raise DataError(f"XCOPA {split} file for {lang} not found: {path} (--harness-data xcopa=DIR needs "
                            f"DIR/{lang}/val.{lang}.jsonl and test.{lang}.jsonl).")
    return {
        "task": f"xcopa_local_{lang}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": files},
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "test_split": "test",
        "doc_to_text": getattr(xcopa, f"doc_to_text_{lang}"),
        "doc_to_target": "label",
        "doc_to_choice": xcopa.doc_to_choice,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_harness(model: str, tasks: list[str], langs: list[str], data_dirs: dict[str, str] | None = None,
                limit: int | None = None, batch_size: int = 8, device: str | None = None) -> dict[str, Any]:
    """Accuracy per task and language: ``{task: {lang: {"acc", "acc_stderr", "task"}}}`` plus skipped languages.

    Args:
        model: a local path or Hub id (``lm_eval``'s ``hf`` model).
        tasks: any of ``xcopa``, ``xnli``, ``xstorycloze``.
        langs: the run's languages; each task runs for those it covers.
        data_dirs: task -> local data folder (only ``xcopa`` supports this).
        limit: at most this many documents per task (quick checks).
        device: ``cuda``, ``cpu``, ...; default: CUDA when available.
    """
    import lm_eval

    from ..models import resolve_model

    data_dirs = data_dirs or {}
    configs: list[Any] = []
    names: dict[str, tuple[str, str]] = {}
    skipped: dict[str, list[str]] = {}
    for task in tasks:
        langs_here = covered(task, langs)
        skipped[task] = [code for code in langs if code not in langs_here]
        for lang in langs_here:
            if task in data_dirs:
                if task != "xcopa":
                    raise ValueError(f"Local data is supported for xcopa only, not {task}.")
                config = local_xcopa_task(data_dirs[task], lang)
                configs.append(config)
                names[config["task"]] = (task, lang)
            else:
                configs.append(f"{task}_{lang}")
                names[f"{task}_{lang}"] = (task, lang)
    if not configs:
        return {"results": {}, "skipped_languages": skipped}
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": resolve_model(model), "trust_remote_code": False},
        tasks=configs,
        batch_size=batch_size,
        device=device or _default_device(),
        limit=limit,
        log_samples=False,
    )
    results: dict[str, dict[str, Any]] = {}
    for name, metrics in out["results"].items():
        if name not in names:
            continue
        task, lang = names[name]
        results.setdefault(task, {})[lang] = {
            "acc": metrics.get("acc,none"), "acc_stderr": metrics.get("acc_stderr,none"), "task": name,
        }
    return {"results": results, "skipped_languages": skipped, "limit": limit}
