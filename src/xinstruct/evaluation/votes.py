"""Win rates from arena votes (``xinstruct evaluate --votes REPO_OR_FOLDER``), and the votes repo's card.

Each vote row (:data:`xinstruct.arena.VOTE_FIELDS`) names the candidate (the model under test), the baseline, which
of them was answer A, and the verdict: ``A``, ``B``, ``tie`` or ``both_bad``. From the candidate's side a vote is a
**win**, **loss**, **tie** or **both bad**. Per matchup (candidate vs baseline), mode and language, and over all
languages of a mode:

- win, tie, both-bad and loss shares and the number of votes;
- the **win rate as the paper counts it**: (wins + half of the ties) / votes, where a *both bad* vote counts as a
  tie (neither answer was preferred);
- a bootstrap 95% interval of that win rate (percentiles of 2000 resamples, seed 0) that resamples **sessions**, not
  votes: one voter's votes share that voter's taste, so they are not independent, and resampling votes one by one
  would give too narrow an interval. From :data:`MIN_SESSIONS` sessions on (below, the bootstrap is degenerate: one
  session gives one value);
- the voters' language check: the share of answers they said are in the requested language, for the candidate and
  for the baseline, over the votes that answered the check;
- with a model judge on the same pairs (:func:`judge_votes`: the authors' judge prompt in both answer orders),
  the judge's win rate on those pairs and Cohen's kappa between the voters' and the judge's win/tie/loss.

Per matchup, two simple references any human or model judge can fall for, over the decisive votes (A or B): how
often the voters chose answer A (position; A is drawn at random, so about half), and how often they chose the
longer answer (length; far above half means length may be deciding). A win rate is read against 50%, a coin flip.

Rows that cannot be counted (a verdict outside the four, models other than the matchup's) are skipped and
counted, never guessed.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..models import is_hub_id

logger = logging.getLogger(__name__)

OUTCOMES = ("win", "tie", "both_bad", "loss")
POINTS = {"win": 1.0, "tie": 0.5, "both_bad": 0.5, "loss": 0.0}
ROUNDS = 2000
MIN_SESSIONS = 5  # fewest sessions (voters' visits) a group needs for an interval


def vote_features():
    """The ``datasets.Features`` of a vote row (given to ``load_dataset`` so files with empty fields still agree)."""
    from datasets import Features, Value

    from ..arena import VOTE_FIELDS

    kinds = {"a_in_language": "bool", "b_in_language": "bool", "max_new_tokens": "int64"}
    return Features({name: Value(kinds.get(name, "string")) for name in VOTE_FIELDS})


def load_votes(source: str | Path, revision: str | None = None) -> list[dict[str, Any]]:
    """Every vote of a votes dataset repo (Hub id) or folder (the repo's files, or the arena's local vote files),
    read with ``load_dataset``."""
    from datasets import load_dataset

    folder = Path(source)
    if folder.is_dir():
        pattern = "votes/*.jsonl" if (folder / "votes").is_dir() else "*.jsonl"
        if not list(folder.glob(pattern)):
            raise DataError(f"No vote files in {folder} (looked for {pattern}).")
        source = str(folder)
    else:
        if folder.exists() or not is_hub_id(str(source)) or "/" not in str(source):
            raise DataError(f"--votes {source}: not a folder of vote files nor a Hub dataset id (USER/NAME).")
        pattern = "votes/*.jsonl"
    try:
        data = load_dataset(str(source), data_files=pattern, features=vote_features(), split="train",
                            revision=revision)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - one line that names the source
        raise DataError(f"Cannot read votes from {source}: {' '.join(str(error).split())[:400]}") from None
    return data.to_list()


def outcome(row: dict[str, Any]) -> str | None:
    """The vote from the candidate's side (``win``/``tie``/``both_bad``/``loss``), ``None`` when it cannot count."""
    verdict, pair = row.get("verdict"), {row.get("model_a"), row.get("model_b")}
    if pair != {row.get("candidate"), row.get("baseline")} or row.get("candidate") == row.get("baseline"):
        return None
    if verdict in ("tie", "both_bad"):
        return verdict
    if verdict not in ("A", "B"):
        return None
    winner = row["model_a"] if verdict == "A" else row["model_b"]
    return "win" if winner == row["candidate"] else "loss"


def win_rate_interval(outcomes: Sequence[str], sessions: Sequence[str] | None = None, rounds: int = ROUNDS,
                      seed: int = 0) -> dict[str, Any]:
    """Win rate with ties (and both-bad) counted half, and its bootstrap 95% interval resampling ``sessions`` (each
    vote's session; ``None``: every vote its own), ``None`` bounds under :data:`MIN_SESSIONS` sessions."""
    points = np.array([POINTS[o] for o in outcomes], float)
    keys = [str(k) for k in sessions] if sessions is not None else [str(n) for n in range(len(points))]
    _, session_of = np.unique(np.array(keys, dtype=object), return_inverse=True)
    sums, sizes = np.bincount(session_of, weights=points), np.bincount(session_of).astype(float)
    if len(sums) < MIN_SESSIONS:
        return {"win_rate": round(float(points.mean()), 4) if len(points) else None, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), (rounds, len(sums)))
    means = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"win_rate": round(float(points.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4)}


def kappa(human: Sequence[str], judge: Sequence[str]) -> float | None:
    """Cohen's kappa between two win/tie/loss labelings of the same pairs (both bad counts as tie); ``None`` when
    it is undefined (fewer than two pairs, or one label everywhere on both sides)."""
    from sklearn.metrics import cohen_kappa_score

    human = ["tie" if h == "both_bad" else h for h in human]
    if len(human) < 2 or len(set(human) | set(judge)) < 2:
        return None
    value = cohen_kappa_score(human, judge, labels=["win", "tie", "loss"])
    return None if math.isnan(value) else round(float(value), 4)


def _group(rows: list[dict[str, Any]], judged: dict[str, str]) -> dict[str, Any]:
    """The figures of one group of counted votes (each row carries its ``outcome``)."""
    counts = Counter(r["outcome"] for r in rows)
    n = len(rows)
    figures: dict[str, Any] = {"votes": n, **{o: counts[o] for o in OUTCOMES},
                               **{f"{o}_share": round(counts[o] / n, 4) for o in OUTCOMES},
                               "sessions": len({r["session_id"] for r in rows}),
                               **win_rate_interval([r["outcome"] for r in rows], [r["session_id"] for r in rows])}
    for role in ("candidate", "baseline"):
        checks = [r[f"{'a' if r['model_a'] == r[role] else 'b'}_in_language"] for r in rows]
        checks = [c for c in checks if c is not None]
        figures[f"{role}_in_language"] = {"share": round(sum(checks) / len(checks), 4) if checks else None,
                                          "checked": len(checks)}
    if judged:
        both = [r for r in rows if r["pair_id"] in judged and judged[r["pair_id"]] != "failed"]
        figures["judge"] = {"pairs": len(both),
                            "win_rate": win_rate_interval([judged[r["pair_id"]] for r in both])["win_rate"]
                            if both else None,
                            "kappa": kappa([r["outcome"] for r in both], [judged[r["pair_id"]] for r in both])}
    return figures


def _references(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the decisive votes: the share that chose answer A, and the share that chose the longer answer (votes
    between answers of equal length left out of the latter)."""
    decisive = [r for r in rows if r["verdict"] in ("A", "B")]
    unequal = [r for r in decisive if len(r["answer_a"]) != len(r["answer_b"])]
    longer = sum((r["verdict"] == "A") == (len(r["answer_a"]) > len(r["answer_b"])) for r in unequal)
    return {"decisive": len(decisive),
            "chose_a": round(sum(r["verdict"] == "A" for r in decisive) / len(decisive), 4) if decisive else None,
            "chose_longer": round(longer / len(unequal), 4) if unequal else None, "unequal_length": len(unequal)}


def votes_table(rows: list[dict[str, Any]], judged: dict[str, str] | None = None) -> dict[str, Any]:
    """Figures per matchup, mode and language (plus ``all`` languages of each mode).

    Args:
        rows: vote rows (:func:`load_votes`).
        judged: pair id -> the model judge's verdict for the candidate (``win``/``tie``/``loss``/``failed``), from
            :func:`judge_votes`.

    Returns:
        ``{"matchups": [{"candidate", "baseline", "groups": [{"mode", "language", ...figures}], "references"}],
        "votes": n, "skipped": {reason: count}}``, plus ``judge_verdicts`` (pair id -> verdict) with ``judged``.
    """
    judged = judged or {}
    skipped: Counter = Counter()
    counted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        result = outcome(row)
        if result is None:
            skipped["verdict or models outside the matchup"] += 1
            continue
        counted.setdefault((row["candidate"], row["baseline"]), []).append({**row, "outcome": result})
    matchups = []
    for (candidate, baseline), votes in sorted(counted.items()):
        groups = []
        for mode in sorted({v["mode"] for v in votes}):
            in_mode = [v for v in votes if v["mode"] == mode]
            langs = sorted({v["language"] for v in in_mode})
            for lang in langs + (["all"] if len(langs) > 1 else []):
                chosen = in_mode if lang == "all" else [v for v in in_mode if v["language"] == lang]
                groups.append({"mode": mode, "language": lang, **_group(chosen, judged)})
        matchups.append({"candidate": candidate, "baseline": baseline, "groups": groups,
                         "references": _references(votes)})
    if skipped:
        logger.warning("%d vote rows skipped: %s", sum(skipped.values()), dict(skipped))
    table = {"matchups": matchups, "votes": sum(len(v) for v in counted.values()), "skipped": dict(skipped)}
    return {**table, "judge_verdicts": judged} if judged else table


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _interval(figures: dict[str, Any]) -> str:
    if figures["low"] is None:
        return f"n/a (under {MIN_SESSIONS} sessions)"
    return f"[{_pct(figures['low'])}, {_pct(figures['high'])}]"


def table_markdown(table: dict[str, Any]) -> str:
    """The win-rate table as Markdown (the same text in the terminal, ``votes.md`` and the votes repo's card)."""
    if not table["matchups"]:
        return "No votes yet."
    judged = any("judge" in g for m in table["matchups"] for g in m["groups"])
    lines = []
    for m in table["matchups"]:
        lines += [f"**{m['candidate']}** (candidate) vs **{m['baseline']}** (baseline):", "",
                  "| mode | language | votes (sessions) | win | tie | both bad | loss | win rate (ties half) | "
                  "95% interval | "
                  "in the language: candidate / baseline (checked) |"
                  + (" judge win rate | kappa (pairs) |" if judged else ""),
                  "|---|---|---:|---:|---:|---:|---:|---:|---|---|" + ("---:|---|" if judged else "")]
        for g in m["groups"]:
            line = (f"| {g['mode']} | {g['language']} | {g['votes']} ({g['sessions']}) | {_pct(g['win_share'])} | "
                    f"{_pct(g['tie_share'])} | {_pct(g['both_bad_share'])} | {_pct(g['loss_share'])} | "
                    f"{_pct(g['win_rate'])} | {_interval(g)} | {_pct(g['candidate_in_language']['share'])} / "
                    f"{_pct(g['baseline_in_language']['share'])} ({g['candidate_in_language']['checked']} / "
                    f"{g['baseline_in_language']['checked']}) |")
            if judged:
                j = g.get("judge") or {}
                k = "n/a" if j.get("kappa") is None else f"{j['kappa']:.2f}"
                line += f" {_pct(j.get('win_rate'))} | {k} ({j.get('pairs', 0)}) |"
            lines.append(line)
        refs = m["references"]
        lines += ["", f"References over the {refs['decisive']} decisive votes: answer A chosen "
                  f"{_pct(refs['chose_a'])} (position; A is drawn at random), the longer answer chosen "
                  f"{_pct(refs['chose_longer'])} (length; {refs['unequal_length']} pairs of unequal length). "
                  "A win rate is read against 50%, a coin flip.", ""]
    lines.append(f"{table['votes']} votes counted"
                 + (f"; skipped: {', '.join(f'{n} ({why})' for why, n in table['skipped'].items())}"
                    if table["skipped"] else "") + ". Win rate = (wins + half of ties and both-bad votes) / votes; "
                 f"intervals: bootstrap over sessions, a voter's votes together ({ROUNDS} resamples).")
    return "\n".join(lines)


def judge_votes(rows: list[dict[str, Any]], generate: Callable[[list[str], int, float], list[str]],
                retries: int = 2) -> dict[str, str]:
    """The model judge's verdict for the candidate on each voted pair (the same instruction and answers the voter
    saw), judged in both orders with the authors' prompt: pair id -> ``win``/``tie``/``loss``/``failed``."""
    from .. import languages
    from .judge import judge_pairs

    pairs = []
    for row in rows:
        if outcome(row) is None:
            continue
        first = row["model_a"] == row["candidate"]
        pairs.append({"question_id": row["pair_id"], "language": row["language"],
                      "language_name": languages.get(row["language"]).name, "mode": row["mode"],
                      "question": row["instruction"], "candidate": row["answer_a" if first else "answer_b"],
                      "baseline": row["answer_b" if first else "answer_a"]})
    return {r.question_id: r.verdict for r in judge_pairs(generate, pairs, retries=retries)}


def votes_card(rows: list[dict[str, Any]], repo_id: str) -> str:
    """``README.md`` of the votes dataset repo: the Hub metadata (one config over ``votes/*.jsonl``), how votes are
    collected, the row fields and the win-rate table of ``rows``."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from ..publish.templates import template_path

    languages = sorted({r["language"] for r in rows})
    data = DatasetCardData(language=languages or None, license="cc-by-4.0", pretty_name=f"{repo_id} votes",
                           task_categories=["text-generation"], tags=["x-instruction", "human-evaluation", "arena"],
                           configs=[{"config_name": "default", "data_files": [{"split": "train",
                                                                               "path": "votes/*.jsonl"}]}])
    card = DatasetCard.from_template(data, template_path=str(template_path("votes_card.md")), repo_id=repo_id,
                                     table=table_markdown(votes_table(rows)), votes=len(rows))
    return str(card)


def write_votes_report(table: dict[str, Any], out_dir: str | Path) -> Path:
    """``votes.json`` and ``votes.md`` in ``out_dir``; returns the Markdown file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "votes.json").write_text(json.dumps(table, indent=2, ensure_ascii=False), encoding="utf-8")
    path = out / "votes.md"
    path.write_text("# Arena votes\n\n" + table_markdown(table) + "\n", encoding="utf-8")
    return path
