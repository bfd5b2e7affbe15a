"""PNG plots referenced from the dataset card (matplotlib, headless)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_META = {"Software": None}  # no version string: identical inputs give identical bytes (no-op re-push)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata=_META)
    plt.close(fig)
    return path


def output_lengths(lengths: dict[str, list[int]], path: Path) -> Path:
    """Box plot of the output length (characters) per language."""
    langs = sorted(lengths)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.boxplot([lengths[c] for c in langs], tick_labels=langs, showfliers=False)
    ax.set_ylabel("output length (characters)")
    ax.set_title("Output length per language")
    return _save(fig, path)


def rating_distribution(histograms: dict[int, dict[str, int]], path: Path) -> Path:
    """Grouped bars: how many candidates got rating 1, 2, 3 in each iteration."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(1, len(histograms))
    for n, (k, hist) in enumerate(sorted(histograms.items())):
        ax.bar([r + n * width for r in (1, 2, 3)], [hist.get(str(r), 0) for r in (1, 2, 3)], width,
               label=f"iteration {k}")
    ax.set_xticks([r + width * (len(histograms) - 1) / 2 for r in (1, 2, 3)], ["1", "2", "3"])
    ax.set_xlabel("rating (argmax)")
    ax.set_ylabel("candidates")
    ax.legend()
    return _save(fig, path)


def cluster_sizes(sizes: dict[str, dict[str, int]], path: Path) -> Path:
    """Sorted cluster sizes per language (pool before equal sampling)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    by_lang = defaultdict(list)
    for code, clusters in sizes.items():
        by_lang[code] = sorted(clusters.values(), reverse=True)
    for code in sorted(by_lang):
        ax.plot(range(1, len(by_lang[code]) + 1), by_lang[code], marker="o", label=code)
    ax.set_xlabel("cluster (largest first)")
    ax.set_ylabel("instructions")
    ax.legend(ncol=5, fontsize="small")
    return _save(fig, path)


def grouped_bars(series: dict[str, dict[str, float | None]], path: Path, ylabel: str, title: str) -> Path:
    """Bars per language (x) for each series (legend); missing values are left out. Values in [0, 1]."""
    langs = sorted({code for values in series.values() for code in values})
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(langs) + 2), 3.5))
    width = 0.8 / max(1, len(series))
    for n, (name, values) in enumerate(series.items()):
        xs = [i + n * width for i, code in enumerate(langs) if values.get(code) is not None]
        ax.bar(xs, [values[code] for code in langs if values.get(code) is not None], width, label=name)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(langs))], langs)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _figure(row: dict, path: tuple[str, ...]) -> float | None:
    """A figure of an iteration report row: a number, or the centre of an ``{auc|rate, low, high}`` dict."""
    value = row
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, dict):
        value = value.get("auc", value.get("rate"))
    return value


# (label, the figure, its reference): each role's figure across iterations, its reference dashed in the same colour
QUALITY_LINES = (
    ("evaluator AUC 3 vs 1 (strongest reference)", ("evaluator_auc_3v1",), ("strongest_reference_3v1",), "tab:blue"),
    ("swap AUC (base model PMI)", ("swap_auc",), ("swap_auc_base_pmi",), "tab:purple"),
    ("drop rate planted (real rows)", ("planted_drop_rate",), ("real_drop_rate",), "tab:red"),
    ("follower fidelity (base model)", ("follower_fidelity",), ("base_fidelity",), "tab:green"),
    ("follower relevance@1 (base model)", ("follower_relevance", "retrieval@1"), ("base_relevance", "retrieval@1"),
     "tab:orange"),
)


def quality_per_iteration(report: list[dict], path: Path) -> Path:
    """Each role's figure across refinement iterations, with its reference dashed (see ``QUALITY_LINES``): evaluator
    AUC 3 vs 1 (the strongest simple reference), swap AUC (the base model's PMI), drop rate of planted negatives (real
    rows), follower language fidelity and relevance@1 (base model)."""
    its = [r["iteration"] for r in report]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for label, key, ref_key, color in QUALITY_LINES:
        values = [_figure(r, key) for r in report]
        refs = [_figure(r, ref_key) for r in report]
        if any(v is not None for v in values):
            ax.plot(its, [v if v is not None else float("nan") for v in values], marker="o", color=color, label=label)
        if any(v is not None for v in refs):
            ax.plot(its, [v if v is not None else float("nan") for v in refs], marker="x", linestyle="--", color=color)
    ax.set_xticks(its)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("refinement iteration")
    ax.set_title("Quality per iteration (dashed: reference)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot: lines stay visible
    return _save(fig, path)


def kept_per_language(report: list[dict], path: Path) -> Path:
    """Rows each refinement iteration kept, per language (one line per language across iterations)."""
    its = [r["iteration"] for r in report]
    langs = sorted({code for r in report for code in r["kept_per_language"]})
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for code in langs:
        ax.plot(its, [r["kept_per_language"].get(code, 0) for r in report], marker="o", label=code)
    ax.set_xticks(its)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("refinement iteration")
    ax.set_ylabel("rows kept")
    ax.set_title("Rows kept per language and iteration")
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)
