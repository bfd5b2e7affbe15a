"""Pairwise judging following the authors' ``utils/gpt4_eval.py`` (X-Instruction): their system prompt and
judge prompt (the variant without justification), scores 0-10 in ``<score1>``/``<score2>`` tags, greedy
decoding, 256 new tokens.

Protocol of this module:

- **Both orders.** Every pair is judged twice, the candidate as answer 1 then as answer 2, so the position
  bias of the judge cancels.
- **Verdict rule.** Each order gives +1 (the candidate's score is higher), 0 (equal) or -1; the pair is a
  **win** when the sum of the two is positive, a **loss** when negative, a **tie** otherwise. So win+tie is
  a win, win+loss (the judge follows the position) is a tie.
- **Failures.** A judge output without both scores is asked again (``retries`` times, sampling at
  temperature 0.7 with a new seed, since greedy would repeat itself); if it still has none, the pair is
  counted as **failed** and reported, never scored as -1 and never mixed into win rates.
- **Win rate** = wins / judged pairs (failed ones excluded), with ties reported beside it; **zero-shot
  retention** = zero-shot win rate / cross-lingual win rate against the same baseline, per language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

JUDGE_SYSTEM = (
    "We would like to request your feedback on the performance of AI assistant in response to the instruction "
    "and the given input displayed following."
)
JUDGE_PROMPT = (
    "Given the question and the answer in {lang} language. You are a helpful and precise assistant for checking the "
    "quality of the answer in {lang}.\n\n"
    "<question>\n"
    "{instruction}\n"
    "</question>\n"
    "<answer1>\n"
    "{output1}\n"
    "</answer1>\n"
    "<answer2>\n"
    "{output2}\n"
    "</answer2>\n\n"
    "Suppose the user only speaks the language of the question, please evaluate both answers with your justification, "
    "and only provide a score ranging from 0 to 10 after your justifications, the score must be an integer. "
    "When evaluating the answers, you should consider the helpfulness, relevance, accuracy, "
    "level of details of the answers. The score for answer 1 should be wrapped by <score1> and </score1>, "
    "and the score for answer 2 should be wrapped by <score2> and </score2>.\n\n"
    "Please only output the scores for the answers, and do not output the justification and any other information.\n\n"
)

_SCORE = {k: re.compile(rf"<{k}>\s*(-?\d+(?:\.\d+)?)\s*</{k}>") for k in ("score1", "score2")}


def judge_prompt(language_name: str, question: str, answer1: str, answer2: str) -> str:
    """The authors' judge prompt for one order of one pair."""
    return JUDGE_PROMPT.format(lang=language_name, instruction=question, output1=answer1, output2=answer2)


def extract_scores(review: str) -> tuple[float, float] | None:
    """``(score1, score2)`` from a judge output, or ``None`` when either tag is missing or out of 0-10."""
    found = [_SCORE[k].search(review or "") for k in ("score1", "score2")]
    if not all(found):
        return None
    s1, s2 = (float(m.group(1)) for m in found)  # type: ignore[union-attr]
    if not (0 <= s1 <= 10 and 0 <= s2 <= 10):
        return None
    return s1, s2


def order_verdict(candidate: float, baseline: float) -> int:
    """+1, 0 or -1 for the candidate in one order."""
    return (candidate > baseline) - (candidate < baseline)


def pair_verdict(candidate_first: tuple[float, float], baseline_first: tuple[float, float]) -> str:
    """``win``, ``tie`` or ``loss`` of the candidate from the scores of both orders.

    Args:
        candidate_first: (score1, score2) with the candidate as answer 1.
        baseline_first: (score1, score2) with the baseline as answer 1.
    """
    total = order_verdict(candidate_first[0], candidate_first[1]) + order_verdict(baseline_first[1], baseline_first[0])
    return "win" if total > 0 else "loss" if total < 0 else "tie"


@dataclass
class JudgeResult:
    """One judged pair: both orders' raw outputs and scores, the verdict (``failed`` when a score is missing)."""

    question_id: Any
    language: str
    mode: str
    category: str
    verdict: str
    candidate_first: list[float] | None
    baseline_first: list[float] | None
    review_candidate_first: str
    review_baseline_first: str
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_pairs(
    generate: Callable[[list[str], int, float], list[str]],
    pairs: list[dict[str, Any]],
    retries: int = 2,
) -> list[JudgeResult]:
    """Judge every pair in both orders.

    Args:
        generate: ``generate(prompts, seed, temperature) -> outputs`` of the judge (an engine call).
        pairs: dicts with ``question_id``, ``language``, ``language_name``, ``mode``, ``category``, ``question``,
            ``candidate``, ``baseline`` (the two answers).
        retries: extra attempts for an order whose output lacks a score.
    """
    prompts: list[str] = []
    for p in pairs:
        prompts.append(judge_prompt(p["language_name"], p["question"], p["candidate"], p["baseline"]))
        prompts.append(judge_prompt(p["language_name"], p["question"], p["baseline"], p["candidate"]))
    reviews = generate(prompts, 0, 0.0)
    attempts = [1] * len(prompts)
    for attempt in range(1, retries + 1):
        todo = [i for i, r in enumerate(reviews) if extract_scores(r) is None]
        if not todo:
            break
        again = generate([prompts[i] for i in todo], attempt, 0.7)
        for i, review in zip(todo, again):
            reviews[i] = review
            attempts[i] += 1
    results = []
    for n, p in enumerate(pairs):
        first, second = reviews[2 * n], reviews[2 * n + 1]
        s1, s2 = extract_scores(first), extract_scores(second)
        verdict = pair_verdict(s1, s2) if s1 and s2 else "failed"
        results.append(JudgeResult(p["question_id"], p["language"], p["mode"], p.get("category", ""), verdict,
                                   list(s1) if s1 else None, list(s2) if s2 else None, first, second,
                                   max(attempts[2 * n], attempts[2 * n + 1])))
    return results


def summarize(results: list[JudgeResult]) -> dict[str, Any]:
    """Counts and win rates per (mode, language) and per mode over all languages."""
    groups: dict[tuple[str, str], list[JudgeResult]] = {}
    for r in results:
        groups.setdefault((r.mode, r.language), []).append(r)
        groups.setdefault((r.mode, "all"), []).append(r)
    out: dict[str, Any] = {}
    for (mode, lang), rows in sorted(groups.items()):
        counts = {v: sum(r.verdict == v for r in rows) for v in ("win", "tie", "loss", "failed")}
        judged = counts["win"] + counts["tie"] + counts["loss"]
        out.setdefault(mode, {})[lang] = {
            **counts,
            "pairs": len(rows),
            "judged": judged,
            "win_rate": round(counts["win"] / judged, 4) if judged else None,
            "tie_rate": round(counts["tie"] / judged, 4) if judged else None,
        }
    return out


def zero_shot_retention(summary: dict[str, Any]) -> dict[str, float | None]:
    """Per language: zero-shot win rate / cross-lingual win rate (``None`` when either is missing or the
    cross-lingual win rate is 0)."""
    cross, zero = summary.get("cross-lingual", {}), summary.get("zero-shot", {})
    out: dict[str, float | None] = {}
    for lang in sorted(set(cross) & set(zero)):
        c, z = cross[lang]["win_rate"], zero[lang]["win_rate"]
        out[lang] = round(z / c, 4) if c and z is not None else None
    return out
