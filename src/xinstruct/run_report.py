"""The quality report of a run, read from its manifests: every role's figure next to its reference.

Printed by ``xinstruct run``, shown in the dataset card (table and plot), one row per refinement iteration:

- rows in and kept (per language), the rating histogram;
- evaluator on the held-out pseudo-ratings: accuracy, AUC of P(3) for 3 vs 1 and 3 vs 2, and the same figures
  of the length-only classifier;
- planted negatives: drop rate of planted rows vs real rows;
- follower: language fidelity on the held-out English instructions, next to the base model's.

And once per run: the generator's held-out figures vs the base model's, the final model's fidelity vs the base
model's, and diversification's warnings (a language short of its target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rundir import RunDir, iteration_step


def _get(data: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def iteration_report(run_dir: str | Path, iterations: int) -> list[dict[str, Any]]:
    """One dict per finished refinement iteration (iterations not run yet are left out)."""
    run = RunDir(run_dir)
    report = []
    for k in range(1, iterations + 1):
        m = {name: run.manifest(iteration_step(k, name))
             for name in ("follower", "pseudo_ratings", "evaluator", "ratings", "kept")}
        if not all(m.values()):
            continue
        ev, planted = m["evaluator"], m["ratings"].get("planted") or {}
        report.append({
            "iteration": k,
            "rows_in": m["kept"]["rows_in"],
            "kept": m["kept"]["rows_out"],
            "rows_in_per_language": m["kept"]["rows_in_per_language"],
            "kept_per_language": m["kept"]["rows_out_per_language"],
            "rating_histogram": m["ratings"]["rating_histogram"],
            "evaluator_heldout_accuracy": ev.get("heldout_accuracy"),
            "evaluator_accuracy_per_language": _get(ev, "heldout", "accuracy_per_language"),
            "evaluator_confusion": _get(ev, "heldout", "confusion"),
            "evaluator_auc_3v1": _get(ev, "heldout", "auc_3v1"),
            "evaluator_auc_3v2": _get(ev, "heldout", "auc_3v2"),
            "length_baseline_accuracy": _get(ev, "length_baseline", "accuracy"),
            "length_baseline_auc_3v1": _get(ev, "length_baseline", "auc_3v1"),
            "length_baseline_auc_3v2": _get(ev, "length_baseline", "auc_3v2"),
            "planted_rows": planted.get("rows"),
            "planted_drop_rate": planted.get("drop_rate_planted"),
            "real_drop_rate": planted.get("drop_rate_real"),
            "follower_fidelity": _get(m["pseudo_ratings"], "level2_fidelity", "fidelity"),
            "follower_fidelity_per_language": _get(m["pseudo_ratings"], "level2_fidelity", "fidelity_per_language"),
            "base_fidelity": _get(m["pseudo_ratings"], "base_fidelity", "fidelity"),
            "follower_train_loss": _get(m["follower"], "metrics", "train_loss"),
        })
    return report


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The once-per-run figures: generator vs base, final model's fidelity vs base, diversification warnings."""
    run = RunDir(run_dir)
    gen, final, div = run.manifest("generator"), run.manifest("final"), run.manifest("diversified")
    return {
        "generator": gen.get("heldout"),
        "generator_base": gen.get("heldout_base"),
        "final_fidelity": _get(final, "fidelity", "fidelity"),
        "final_fidelity_per_language": _get(final, "fidelity", "fidelity_per_language"),
        "base_fidelity": _get(final, "base_fidelity", "fidelity"),
        "base_fidelity_per_language": _get(final, "base_fidelity", "fidelity_per_language"),
        "diversification_warnings": div.get("warnings", []),
    }


def _f(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_iteration_report(report: list[dict[str, Any]]) -> str:
    """The per-iteration report as a text table (figures with their reference: base model, length-only, real rows)."""
    lines = ["iter  kept/in  ratings 1/2/3  eval acc (len)  AUC 3v1 (len)  AUC 3v2 (len)  planted/real drop  "
             "follower fid (base)  follower loss"]
    for r in report:
        hist = r["rating_histogram"]
        ratings = "/".join(str(hist.get(str(k), 0)) for k in (1, 2, 3))
        lines.append(
            f"{r['iteration']:>4}  {r['kept']:>3}/{r['rows_in']:<3}  {ratings:<13}  "
            f"{_f(r['evaluator_heldout_accuracy'])} ({_f(r['length_baseline_accuracy'])})    "
            f"{_f(r['evaluator_auc_3v1'])} ({_f(r['length_baseline_auc_3v1'])})    "
            f"{_f(r['evaluator_auc_3v2'])} ({_f(r['length_baseline_auc_3v2'])})    "
            f"{_f(r['planted_drop_rate'])} / {_f(r['real_drop_rate'])}        "
            f"{_f(r['follower_fidelity'])} ({_f(r['base_fidelity'])})         {_f(r['follower_train_loss'], 4)}"
        )
    per_language = lambda values: " ".join(f"{c}:{_f(v)}" for c, v in sorted((values or {}).items()))  # noqa: E731
    for r in report:
        k = r["iteration"]
        per_lang = " ".join(f"{c}:{n}/{r['rows_in_per_language'][c]}"
                            for c, n in sorted(r["kept_per_language"].items()))
        lines.append(f"iteration {k} kept per language: {per_lang}")
        lines.append(f"iteration {k} evaluator accuracy per language: "
                     f"{per_language(r['evaluator_accuracy_per_language'])}")
        confusion = " ".join(f"{key}:{n}" for key, n in (r["evaluator_confusion"] or {}).items())
        lines.append(f"iteration {k} evaluator confusion (true->predicted): {confusion}")
        lines.append(f"iteration {k} follower fidelity per language: "
                     f"{per_language(r['follower_fidelity_per_language'])}")
    return "\n".join(lines)


def format_run_summary(summary: dict[str, Any]) -> str:
    """The once-per-run figures as text lines."""
    lines = []
    gen, base = summary.get("generator") or {}, summary.get("generator_base") or {}
    if gen:
        lines.append(
            "generator (held-out, vs base): English {} ({}), similarity {} ({}), retrieval@1 {} ({}), "
            "retrieval@5 {} ({}) "
            "among {} gold instructions per language".format(
                _f(gen.get("english_share")), _f(base.get("english_share")),
                _f(gen.get("similarity")), _f(base.get("similarity")),
                _f(gen.get("retrieval@1")), _f(base.get("retrieval@1")),
                _f(gen.get("retrieval@5")), _f(base.get("retrieval@5")),
                gen.get("retrieval_pool")))
    if summary.get("final_fidelity") is not None:
        lines.append(f"final model language fidelity (held-out English instructions): {_f(summary['final_fidelity'])} "
                     f"(base model {_f(summary['base_fidelity'])})")
        per = summary.get("final_fidelity_per_language") or {}
        base_per = summary.get("base_fidelity_per_language") or {}
        lines.append("  per language: " + " ".join(f"{c}:{_f(v)}({_f(base_per.get(c))})" for c, v in per.items()))
    for warning in summary.get("diversification_warnings") or []:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
