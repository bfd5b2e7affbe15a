"""The quality report of a run, read from its manifests: every role's figure next to the strongest simple reference
that could beat it, measured on rows the measured model never saw, with a 95% interval where rows are few.

``xinstruct run`` prints it, ``xinstruct report RUN --markdown`` writes it as the tables the README and the dataset
card show (nothing in them is typed by hand), and the cards read their figures from :func:`iteration_report`.

Per refinement iteration:
- evaluator on the held-out test half of the pseudo-ratings: accuracy, AUC of P(3) for 3 vs 1 and 3 vs 2, the
  strongest reference (length-only, truncation-only, base model PMI or likelihood, the scorer's raw PMI or
  likelihood), and the realised recall of the keep threshold chosen on the calibration half;
- swap test on the real pool: AUC of P(3) for each candidate vs itself with another candidate's instruction (easy)
  and with the nearest instruction (hard), next to the base model's PMI; the gap between rows inside and outside
  the iteration's training set; drop rates of swapped (planted) and real rows;
- follower: language fidelity and relevance (retrieval of its own gold response by chrF), vs base model and chance.

Once per run: the generator, the final model, and each step's wall time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .quality import SCORE_NAMES, strongest_reference
from .rundir import (
    DIVERSIFIED,
    EVALUATOR,
    FINAL,
    FOLLOWER,
    GENERATOR,
    ITERATION_STEPS,
    KEPT,
    PSEUDO_RATINGS,
    RATINGS,
    RunDir,
    iteration_step,
)


def _get(data: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _auc(data: dict[str, Any] | None, *keys: str) -> float | None:
    value = _get(data, *keys)
    return value.get("auc") if isinstance(value, dict) else value


def iteration_report(run_dir: str | Path, iterations: int) -> list[dict[str, Any]]:
    """One flat dict per finished refinement iteration (iterations not run yet are left out)."""
    run = RunDir(run_dir)
    report = []
    for k in range(1, iterations + 1):
        m = {name: run.manifest(iteration_step(k, name)) for name in ITERATION_STEPS}
        if not all(m.values()):
            continue
        ev, ps, rt, kept, follower = m[EVALUATOR], m[PSEUDO_RATINGS], m[RATINGS], m[KEPT], m[FOLLOWER]
        planted, swaps, refs = rt.get("planted") or {}, rt.get("swap_test") or {}, ev.get("references") or {}
        strongest = {key: strongest_reference(refs, key) for key in ("auc_3v1", "auc_3v2")}
        report.append({
            "iteration": k,
            "rows_in": kept["rows_in"], "kept": kept["rows_out"],
            "rows_in_per_language": kept["rows_in_per_language"], "kept_per_language": kept["rows_out_per_language"],
            "rating_histogram": rt["rating_histogram"],
            "evaluator_kind": ev.get("kind"), "folds": ev.get("folds"),
            "evaluator_test_rows": _get(ev, "heldout", "rows"),
            "evaluator_heldout_accuracy": ev.get("heldout_accuracy"),
            "evaluator_accuracy_per_language": _get(ev, "heldout", "accuracy_per_language"),
            "evaluator_confusion": _get(ev, "heldout", "confusion"),
            "evaluator_auc_3v1": _get(ev, "heldout", "auc_3v1"),
            "evaluator_auc_3v2": _get(ev, "heldout", "auc_3v2"),
            "evaluator_auc_3v1_interval": _get(ev, "heldout", "auc_3v1_interval"),
            "evaluator_auc_3v2_interval": _get(ev, "heldout", "auc_3v2_interval"),
            "strongest_reference_3v1": strongest.get("auc_3v1"),
            "strongest_reference_3v2": strongest.get("auc_3v2"),
            "length_baseline_accuracy": _get(refs, "length_only", "accuracy"),
            "length_baseline_auc_3v1": _get(refs, "length_only", "auc_3v1"),
            "length_baseline_auc_3v2": _get(refs, "length_only", "auc_3v2"),
            "truncation_baseline_accuracy": _get(refs, "truncation_only", "accuracy"),
            "base_pmi_auc_3v1": _auc(refs, "base_pmi", "auc_3v1"),
            "scorer_likelihood_auc_3v2": _auc(refs, "scorer_likelihood", "auc_3v2"),
            "base_likelihood_auc_3v2": _auc(refs, "base_likelihood", "auc_3v2"),
            "keep_threshold": rt.get("keep_threshold"),
            "realised_recall": ev.get("realised_recall"),
            "swap_pairs": _get(swaps, "easy", "p3", "positives"),
            "swap_auc": _get(swaps, "easy", "p3"),
            "swap_auc_rater_pmi": _auc(swaps, "easy", "pmi"),
            "swap_auc_base_pmi": _get(swaps, "easy", "base_pmi"),
            "hard_swap_auc": _get(swaps, "hard", "p3"),
            "hard_swap_auc_base_pmi": _auc(swaps, "hard", "base_pmi"),
            "training_gap": swaps.get("training_gap"),
            "planted_rows": planted.get("rows"),
            "planted_drop_rate": _get(planted, "drop_rate_easy", "rate"),
            "hard_drop_rate": _get(planted, "drop_rate_hard", "rate"),
            "real_drop_rate": _get(planted, "drop_rate_real", "rate"),
            "drop_rates": {kind: planted.get(f"drop_rate_{kind}") for kind in ("easy", "hard", "real")},
            "drop_ratio": planted.get("ratio_easy_vs_real"),
            "operating": planted.get("operating") or [],
            "keep_score": SCORE_NAMES[planted.get("score", "p3")],
            "follower_fidelity": _get(ps, "level2_fidelity", "fidelity"),
            "follower_fidelity_per_language": _get(ps, "level2_fidelity", "fidelity_per_language"),
            "base_fidelity": _get(ps, "base_fidelity", "fidelity"),
            "follower_relevance": ps.get("level2_relevance"),
            "base_relevance": ps.get("base_relevance"),
            "follower_train_loss": _get(follower, "metrics", "train_loss")
            or _get(follower, "fold_0_metrics", "train_loss"),
        })
    return report


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The once-per-run figures: generator vs base, the final model vs base, step times, warnings."""
    run = RunDir(run_dir)
    gen, final, div = run.manifest(GENERATOR), run.manifest(FINAL), run.manifest(DIVERSIFIED)
    manifests = {str(p.parent.relative_to(run.path)): run.manifest(str(p.parent.relative_to(run.path)))
                 for p in run.path.glob("**/manifest.json")}
    times = {step: m.get("seconds") for step, m in sorted(manifests.items(),  # in the order the steps finished
                                                            key=lambda item: item[1].get("finished_at", ""))}
    return {
        "generator": gen.get("heldout"),
        "generator_base": gen.get("heldout_base"),
        "final_fidelity": _get(final, "fidelity", "fidelity"),
        "final_fidelity_per_language": _get(final, "fidelity", "fidelity_per_language"),
        "base_fidelity": _get(final, "base_fidelity", "fidelity"),
        "base_fidelity_per_language": _get(final, "base_fidelity", "fidelity_per_language"),
        "final_relevance": final.get("relevance"),
        "base_relevance": final.get("base_relevance"),
        "diversification_warnings": div.get("warnings", []),
        "cpu": _get(final, "machine", "cpu"),
        "step_seconds": times,
    }


def _f(value: Any, digits: int = 2) -> str:
    """A figure: ``0.83``, ``0.83 [0.74, 0.90]`` for an interval dict, ``n/a`` when missing."""
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        centre = next(value[k] for k in ("auc", "rate", "ratio", "excess") if k in value)
        return f"{centre:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"
    return f"{value:.{digits}f}"


def _ref(ref: dict[str, Any] | None) -> str:
    return "n/a" if not ref else f"{ref['name']} {ref['auc']:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def format_iteration_report(report: list[dict[str, Any]]) -> str:
    """The per-iteration figures as three Markdown tables (evaluator, swap test, follower)."""
    evaluator = _table(
        ["iteration", "test rows", "accuracy (length-only / truncation-only)", "AUC 3 vs 1", "strongest reference",
         "AUC 3 vs 2", "strongest reference", "realised recall"],
        [[str(r["iteration"]), str(r["evaluator_test_rows"]),
          f"{_f(r['evaluator_heldout_accuracy'])} ({_f(r['length_baseline_accuracy'])} / "
          f"{_f(r['truncation_baseline_accuracy'])})",
          _f(r["evaluator_auc_3v1_interval"] or r["evaluator_auc_3v1"]), _ref(r["strongest_reference_3v1"]),
          _f(r["evaluator_auc_3v2_interval"] or r["evaluator_auc_3v2"]), _ref(r["strongest_reference_3v2"]),
          _f(r["realised_recall"])] for r in report])

    def gap(r: dict[str, Any]) -> str:
        g = r["training_gap"] or {}
        if "gap_p3" not in g:
            return f"n/a ({g.get('rows_inside', 0)} in / {g.get('rows_outside', 0)} out)"
        excess = g.get("excess_gap_p3_interval") or g.get("excess_gap_p3", g["gap_p3"] - g["gap_base_pmi"])
        return (f"{g['gap_p3']:+.2f} - base PMI {g['gap_base_pmi']:+.2f} = {_f(excess)} ({g['rows_inside']} in / "
                f"{g['rows_outside']} out)")

    swap = _table(
        ["iteration", "pairs", "swap AUC of P(3)", "rater PMI", "base PMI", "hard swap AUC", "hard: base PMI",
         "gap in - out of training: rater - base = excess", "drop rate swapped / hard / real",
         "drop ratio swapped / real"],
        [[str(r["iteration"]), str(r["swap_pairs"]), _f(r["swap_auc"]), _f(r["swap_auc_rater_pmi"]),
          _f(r["swap_auc_base_pmi"]), _f(r["hard_swap_auc"]), _f(r["hard_swap_auc_base_pmi"]), gap(r),
          " / ".join(_f(r["drop_rates"].get(kind)) for kind in ("easy", "hard", "real"))
          + f" (keep rule on {r['keep_score']})", _f(r["drop_ratio"])]
         for r in report])

    def relevance(r: dict[str, Any], key: str) -> str:
        own, base = r["follower_relevance"] or {}, r["base_relevance"] or {}
        return f"{_f(own.get(key))} ({_f(base.get(key))}; chance {_f(own.get(key.replace('retrieval', 'chance')))})"

    follower = _table(
        ["iteration", "kept / rated", "ratings 1/2/3", "fidelity (base)", "relevance@1 (base; chance)",
         "relevance@5 (base; chance)"],
        [[str(r["iteration"]), f"{r['kept']} / {r['rows_in']}",
          "/".join(str(r["rating_histogram"].get(str(k), 0)) for k in (1, 2, 3)),
          f"{_f(r['follower_fidelity'])} ({_f(r['base_fidelity'])})", relevance(r, "retrieval@1"),
          relevance(r, "retrieval@5")] for r in report])
    return "\n\n".join([
        "Evaluator, on the held-out test half (threshold from the calibration half; 95% bootstrap intervals):",
        evaluator,
        "Swap test on the real pool (each candidate vs itself with another candidate's instruction; every row rated "
        "by a model that did not train on it; paired bootstrap intervals; drop rates with Wilson intervals):",
        swap, *_operating_table(report), "Follower, greedy answers to the held-out test instructions:", follower])


def _operating_table(report: list[dict[str, Any]]) -> list[str]:
    """What another ``keep_recall`` would trade, on the same ratings: per score (P(3), and the rater's raw PMI
    alone) and recall level of the calibration half, the threshold, the share of real rows kept, the drop rates
    and their ratio (empty when not recorded)."""
    rows = [[str(r["iteration"]), SCORE_NAMES[op.get("score", "p3")], f"{op['recall']:.2f}",
             f"{op['threshold']:.3f}",
             _f(1 - op["drop_rate_real"]["rate"]) if op.get("drop_rate_real") else "n/a",
             " / ".join(_f(op.get(f"drop_rate_{kind}")) for kind in ("easy", "hard", "real")),
             _f(op.get("ratio_easy_vs_real"))] for r in report for op in r["operating"]]
    if not rows:
        return []
    return ["Keep rule at other recall levels of the calibration half, by P(3) and by the rater's raw PMI alone (same "
            "ratings; drop ratio with a paired bootstrap interval):",
            _table(["iteration", "score", "recall", "threshold", "real rows kept", "drop rate swapped / hard / real",
                    "drop ratio swapped / real"], rows)]


def format_run_summary(summary: dict[str, Any]) -> str:
    """The once-per-run figures as a Markdown table, then step times."""
    gen, gbase = summary.get("generator") or {}, summary.get("generator_base") or {}
    rel, rbase = summary.get("final_relevance") or {}, summary.get("base_relevance") or {}
    rows = []
    if gen:
        pool = gen.get("retrieval_pool")
        rows += [["generator", "English instructions", _f(gen.get("english_share")), _f(gbase.get("english_share"))],
                 ["generator", f"retrieval@1 among {pool} held-out instructions (chance {_f(gen.get('chance@1'), 3)})",
                  _f(gen.get("retrieval@1_interval") or gen.get("retrieval@1")), _f(gbase.get("retrieval@1"))],
                 ["generator", f"retrieval@5 (chance {_f(gen.get('chance@5'), 3)})", _f(gen.get("retrieval@5")),
                  _f(gbase.get("retrieval@5"))],
                 ["generator", "similarity to the gold instruction", _f(gen.get("similarity")),
                  _f(gbase.get("similarity"))]]
    if summary.get("final_fidelity") is not None:
        rows += [["final model", "language fidelity, greedy", _f(summary["final_fidelity"]),
                  _f(summary.get("base_fidelity"))],
                 ["final model", f"relevance@1 (chance {_f(rel.get('chance@1'))})",
                  _f(rel.get("retrieval@1_interval") or rel.get("retrieval@1")), _f(rbase.get("retrieval@1"))],
                 ["final model", f"relevance@5 (chance {_f(rel.get('chance@5'))})", _f(rel.get("retrieval@5")),
                  _f(rbase.get("retrieval@5"))],
                 ["final model", "chrF to its own gold response", _f(rel.get("chrf"), 1), _f(rbase.get("chrf"), 1)]]
    parts = [_table(["role", "figure", "ours", "base model"], rows)] if rows else []
    times = summary.get("step_seconds") or {}
    if times:
        total = sum(v for v in times.values() if v)
        parts.append(f"Step wall times (CPU: {summary.get('cpu') or 'n/a'}; total {total:.0f} s):\n\n"
                     + _table(["step", "seconds"], [[k, f"{v:.0f}"] for k, v in times.items() if v is not None]))
    parts += [f"warning: {w}" for w in summary.get("diversification_warnings") or []]
    return "\n\n".join(parts)


def report_markdown(run_dir: str | Path) -> str:
    """The whole report as Markdown: per-iteration tables, then the run summary."""
    run = RunDir(run_dir)
    return format_iteration_report(iteration_report(run.path, run.iterations)) + "\n\n" + format_run_summary(
        run_summary(run.path))


def update_readme(path: str | Path, run_dir: str | Path) -> None:
    """Replace the ``report`` block of ``path`` (``<!-- report:begin -->`` ... ``<!-- report:end -->``) with the run's
    report (so the README's figures come from a run, never typed)."""
    from .readme_blocks import fill_block

    fill_block(path, "report", report_markdown(run_dir), f"xinstruct report {run_dir} --readme {path}")
