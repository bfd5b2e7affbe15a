"""The dataset repo folder: ``data/<lang>/train-*.parquet`` per language, optional ``iterations/iter-k/``
kept sets, plots, and a ``README.md`` whose YAML lists the ``configs`` (one per language plus ``all``,
the default). ``load_dataset("x-instruction", "sw")`` reads it from a local folder and from the Hub;
no loading script is involved (``datasets`` >= 4 refuses them).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData

from ..errors import PublishError
from ..languages import get as get_language
from ..quality import SCORE_NAMES
from ..run_report import iteration_report, report_markdown
from ..rundir import DIVERSIFIED, EVALUATOR, FINAL, GENERATOR, KEPT, RATINGS, RunDir, iteration_name, iteration_step
from . import plots
from .templates import template_path

CITATION = (
    "@inproceedings{li-etal-2024-x,\n"
    '    title = "X-Instruction: Aligning Language Model in Low-resource Languages with Self-curated Cross-lingual '
    'Instructions",\n'
    '    author = "Li, Chong and Yang, Wen and Zhang, Jiajun and Lu, Jinliang and Wang, Shaonan and '
    'Zong, Chengqing",\n'
    '    booktitle = "Findings of the Association for Computational Linguistics: ACL 2024",\n'
    '    year = "2024",\n'
    '    publisher = "Association for Computational Linguistics",\n'
    "}"
)

COLUMNS = ("id", "language", "instruction", "output", "messages", "source", "rating", "cluster", "iteration")


def to_rows(data: Dataset) -> Dataset:
    """The published row schema; ``messages`` is the cross-lingual chat (user: instruction + " Answer in
    {Language}.", assistant: output) that a stock ``trl.SFTTrainer`` trains on without mapping."""

    def convert(r: dict[str, Any]) -> dict[str, Any]:
        name = get_language(r["language"]).name
        return {
            "id": r["id"],
            "language": r["language"],
            "instruction": r["instruction"],
            "output": r["output"],
            "messages": [
                {"role": "user", "content": f"{r['instruction']} Answer in {name}."},
                {"role": "assistant", "content": r["output"]},
            ],
            "source": r.get("source") or "",
            "rating": float(r["p3"]) if r.get("p3") is not None else None,
            "cluster": int(r["cluster"]) if r.get("cluster") is not None else -1,
            "iteration": int(r["iteration"]) if r.get("iteration") is not None else 0,
        }

    return data.map(convert, remove_columns=data.column_names).select_columns(list(COLUMNS))


def _write_parquet(rows: Dataset, folder: Path, shard_rows: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(rows) // shard_rows))
    names = []
    for i in range(n):
        name = f"train-{i:05d}-of-{n:05d}.parquet"
        rows.select(range(i * shard_rows, min((i + 1) * shard_rows, len(rows)))).to_parquet(str(folder / name))
        names.append(name)
    return names


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _mean_std(values: list[int]) -> str:
    if not values:
        return "-"
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0f} ± {std:.0f}"


def build_dataset_repo(
    run_dir: str | Path,
    out: str | Path = "x-instruction",
    shard_rows: int = 100_000,
    license: str = "other",
    pretty_name: str = "X-Instruction",
    iterations: bool = True,
    source: str = DIVERSIFIED,
) -> Path:
    """Write the dataset repo folder for a finished run.

    Args:
        run_dir: the run directory (``runs/<name>``).
        out: output folder; its name is what ``load_dataset`` takes (``x-instruction``).
        shard_rows: rows per Parquet shard.
        license: the card's ``license`` (the web texts' licence decides; ``other`` by default).
        pretty_name: the card's ``pretty_name``.
        iterations: also write each iteration's kept set as an ``iter-k`` config.
        source: the run step whose data is the main set (``diversified``; ``iter-k/kept`` for an iteration).

    Returns:
        The folder.
    """
    run, out = RunDir(run_dir), Path(out)
    recipe = run.recipe() if run.is_run() else {}
    data = to_rows(run.load(source))
    languages = recipe.get("languages") or sorted(set(data["language"]))
    by_lang = {code: data.filter(lambda lang, c=code: lang == c, input_columns="language") for code in languages}
    empty = [code for code, rows in by_lang.items() if len(rows) == 0]
    if empty:
        raise PublishError(
            f"No rows for {', '.join(empty)} in {run.step_path(source)}: a config without data cannot be loaded. Give "
            "these languages more web texts or seed pairs and rerun, or remove them from the recipe's languages."
        )
    if out.exists():
        shutil.rmtree(out)
    (out / "plots").mkdir(parents=True)

    configs, table = _write_languages(by_lang, out, shard_rows)
    k_max = (recipe.get("refinement") or {}).get("iterations", 0)
    iteration_configs, histograms = _write_iterations(run, out, k_max, shard_rows, configs, iterations)
    # the figures are report_markdown's tables as they are (nothing typed in the template); the per-iteration rows
    # feed the plots and the kept-per-language table (row counts)
    quality = {"iterations": iteration_report(run.path, k_max),
               "markdown": report_markdown(run.path) if recipe else ""}
    card_data = DatasetCardData(
        language=list(languages), license=license, task_categories=["text-generation"],
        size_categories=[_size_category(len(data))], pretty_name=pretty_name,
        tags=["x-instruction", "cross-lingual", "instruction-tuning", "multilingual", "low-resource", "synthetic"],
        configs=configs,
    )
    card = DatasetCard.from_template(
        card_data, template_path=str(template_path("dataset_card.md")), pretty_name=pretty_name, total=len(data),
        table=table, lineage=_lineage(run, recipe), iteration_configs=iteration_configs, quality=quality,
        plots=_plots(run, out, by_lang, histograms, quality["iterations"]), citation=CITATION,
    )
    card.save(out / "README.md")
    return out


def _write_languages(by_lang: dict[str, Dataset], out: Path, shard_rows: int
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write ``data/<lang>/`` per language; return the configs (``all``, the default, then one per language) and the
    card's table of languages."""
    configs: list[dict[str, Any]] = [
        {"config_name": "all", "default": True, "data_files": [{"split": "train", "path": "data/*/train-*.parquet"}]}
    ]
    table = []
    for code, rows in by_lang.items():
        _write_parquet(rows, out / "data" / code, shard_rows)
        files = [{"split": "train", "path": f"data/{code}/train-*.parquet"}]
        configs.append({"config_name": code, "data_files": files})
        table.append({
            "code": code, "name": get_language(code).name, "samples": len(rows),
            "instruction": _mean_std([len(t) for t in rows["instruction"]]),
            "output": _mean_std([len(t) for t in rows["output"]]),
        })
    return configs, table


def _write_iterations(run: RunDir, out: Path, k_max: int, shard_rows: int, configs: list[dict[str, Any]],
                      write: bool) -> tuple[list[dict[str, Any]], dict[int, dict[str, int]]]:
    """With ``write``, each finished iteration's kept set as ``iterations/iter-k/`` and an ``iter-k`` config (added to
    ``configs``); returns those configs' names and rows, and the rating histogram of every rated iteration."""
    iteration_configs = []
    histograms: dict[int, dict[str, int]] = {}
    for k in range(1, k_max + 1):
        ratings = run.manifest(iteration_step(k, RATINGS))
        if ratings:
            histograms[k] = ratings.get("rating_histogram", {})
        if write and run.finished(iteration_step(k, KEPT)):
            kept, name = to_rows(run.kept(k)), iteration_name(k)
            _write_parquet(kept, out / "iterations" / name, shard_rows)
            files = [{"split": "train", "path": f"iterations/{name}/train-*.parquet"}]
            configs.append({"config_name": name, "data_files": files})
            iteration_configs.append({"name": name, "rows": len(kept)})
    return iteration_configs, histograms


def _plots(run: RunDir, out: Path, by_lang: dict[str, Dataset], histograms: dict[int, dict[str, int]],
           report: list[dict[str, Any]]) -> list[str]:
    """Draw the card's plots under ``plots/``: output lengths, ratings, quality and kept rows per iteration (from the
    iteration ``report``), cluster sizes; return their file names."""
    lengths = {c: [len(t) for t in r["output"]] for c, r in by_lang.items()}
    plot_files = [plots.output_lengths(lengths, out / "plots" / "output_length.png").name]
    if histograms:
        plot_files.append(plots.rating_distribution(histograms, out / "plots" / "rating_distribution.png").name)
    if report:
        for plot in (plots.quality_per_iteration, plots.kept_per_language):
            plot_files.append(plot(report, out / "plots" / f"{plot.__name__}.png").name)
    div = run.manifest(DIVERSIFIED)
    if div.get("per_language"):
        sizes = {c: v["cluster_sizes"] for c, v in div["per_language"].items()}
        plot_files.append(plots.cluster_sizes(sizes, out / "plots" / "cluster_sizes.png").name)
    return plot_files


def _lineage(run: RunDir, recipe: dict[str, Any]) -> dict[str, Any]:
    """What produced the data: recipe, models (with the run's step hashes as revisions), K, evaluator, keep rule,
    response window, clusters, seed."""
    ref = recipe.get("refinement") or {}
    k = ref.get("iterations", 0)
    div = recipe.get("diversification") or {}
    evaluator = iteration_step(k, EVALUATOR)
    hashes = {step: run.manifest(step).get("hash") for step in (GENERATOR, evaluator, FINAL)}
    return {
        "recipe_name": recipe.get("name"),
        "base_model": recipe.get("base_model"),
        "generator": f"{run.path.name}/{GENERATOR} (step {hashes[GENERATOR]})",
        "evaluator": f"{run.path.name}/{evaluator} (step {hashes[evaluator]})",
        "final": f"{run.path.name}/{FINAL} (step {hashes[FINAL]})" if hashes[FINAL] else "not trained",
        "refinement": refinement_facts(run, recipe),
        "level_sources": (ref.get("pseudo_ratings") or {}).get("level_sources"),
        "clusters": div.get("clusters"),
        "target_per_language": div.get("target_per_language"),
        "embedder": div.get("embedder"),
        "seed": recipe.get("seed"),
        "recipe_yaml": yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True) if recipe else "",
    }


def _num(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def refinement_facts(run: RunDir, recipe: dict[str, Any]) -> dict[str, Any]:
    """How the run rated and kept its rows, from the recipe and the manifests (the P(3) threshold each iteration
    applied is the one its ``iter-k/ratings`` manifest records): K, the evaluator kind and its folds, the keep rule
    with its threshold, the response window. The dataset card and every model card state these.

    Returns:
        ``iterations``, ``evaluator_kind``, ``folds``, ``keep_rule``, ``keep_recall``, ``thresholds`` (iteration ->
        threshold applied), ``response_tokens``, and the sentences ``evaluator_text``, ``folds_text``,
        ``keep_rule_text``, ``response_text``.
    """
    ref = recipe.get("refinement") or {}
    k_max = int(ref.get("iterations", 0))
    kind = ref.get("evaluator_kind", "sft")
    rule = ref.get("keep_rule", "argmax")
    recall, response_tokens = ref.get("keep_recall"), ref.get("response_tokens")
    measured = [run.manifest(iteration_step(k, EVALUATOR)).get("folds") for k in range(1, k_max + 1)]
    folds = next((int(f) for f in measured if f),
                 2 if kind == "likelihood" and ref.get("cross_fit", True) else 1)
    thresholds = {k: m.get("keep_threshold") for k in range(1, k_max + 1)
                  if (m := run.manifest(iteration_step(k, RATINGS)))}
    applied = {k: t for k, t in thresholds.items() if t is not None}
    per_iteration = ", ".join(f"iteration {k}: {_num(t)}" for k, t in applied.items())
    if rule == "argmax":
        rule_text = "`argmax`: a row is kept when its most likely rating is 3"
    elif rule == "threshold":
        values = set(applied.values()) or {ref.get("keep_threshold", 0.5)}
        rule_text = "`threshold`: a row is kept when P(3) >= " + (
            f"{_num(values.pop())} (`refinement.keep_threshold`)" if len(values) == 1 else f"({per_iteration})")
    else:
        score = ("P(3)" if ref.get("keep_score", "p3") == "p3" else
                 "the rater's PMI (log-likelihood of the response with the instruction minus without, per token; "
                 "`refinement.keep_score: pmi`)")
        rule_text = (f"`recall`: a row is kept when {score} reaches the threshold that keeps {_num(recall)} "
                     "(`refinement.keep_recall`) of the held-out gold pairs of the calibration half, set by each "
                     "iteration's evaluator" + (f" ({per_iteration})" if per_iteration else ""))
    if kind == "likelihood":
        evaluator_text = ("`likelihood`: a rating head (multinomial logistic regression) over the iteration "
                          "follower's per-token log-likelihood of the response with and without the instruction, "
                          "fitted on the pseudo-ratings")
    else:
        evaluator_text = ("`sft`: a model fine-tuned on the pseudo-ratings to write the rating; P(1), P(2), P(3) "
                          "are read from the next-token probabilities of `1`, `2`, `3`")
    folds_text = (f"cross-fitted, {folds} folds: each iteration trains one follower and rating head per fold of the "
                  "pool (a hash of the row id), and every candidate is rated by a fold that did not train on it"
                  if folds > 1 else "not cross-fitted (one evaluator per iteration)")
    response_text = (f"the response in every rating prompt is cut to its first {response_tokens} tokens, for the "
                     "evaluator's training rows and for every rated candidate alike (`refinement.response_tokens`)")
    return {
        "iterations": k_max, "evaluator_kind": kind, "folds": folds, "keep_rule": rule, "keep_recall": recall,
        "thresholds": thresholds, "response_tokens": response_tokens, "evaluator_text": evaluator_text,
        "folds_text": folds_text, "keep_rule_text": rule_text, "response_text": response_text,
        "keep_score": ref.get("keep_score", "p3"),
        "keep_score_name": SCORE_NAMES[ref.get("keep_score", "p3")],
    }
