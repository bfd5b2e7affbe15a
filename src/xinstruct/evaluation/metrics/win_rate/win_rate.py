"""Pairwise win rate of the X-Instruction protocol, as an `evaluate` module.

Load it offline with ``evaluate.load("<path>/win_rate")``. Each example is one pair judged in both orders:
``predictions`` holds the judge's output with the candidate as answer 1, ``references`` the output with the
baseline as answer 1 (both in the authors' ``<score1>``/``<score2>`` format).
"""

import evaluate

from xinstruct.evaluation.judge import extract_scores, pair_verdict
from xinstruct.evaluation.modules import text_pair_info

_DESCRIPTION = """Win rate of a candidate against a baseline from pairwise judge outputs in both orders. Each
order gives +1/0/-1 to the candidate; the pair is a win when the sum is positive, a loss when negative, a tie
otherwise. Outputs without both scores are counted as failed and left out of the rates."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): judge outputs with the candidate as answer 1.
    references (`list[str]`): judge outputs of the same pairs with the baseline as answer 1.
Returns:
    win_rate (`float` or `None`): wins / judged pairs; tie_rate, loss_rate likewise;
    wins, ties, losses, failed, judged (`int`).
Examples:
    >>> metric = evaluate.load("win_rate")
    >>> metric.compute(predictions=["<score1>8</score1><score2>5</score2>"],
    ...                references=["<score1>4</score1><score2>7</score2>"])
    {'win_rate': 1.0, 'tie_rate': 0.0, 'loss_rate': 0.0, 'wins': 1, 'ties': 0, 'losses': 0, 'failed': 0, 'judged': 1}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WinRate(evaluate.Metric):
    def _info(self):
        return text_pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        counts = {"win": 0, "tie": 0, "loss": 0, "failed": 0}
        for candidate_first, baseline_first in zip(predictions, references):
            s1, s2 = extract_scores(candidate_first), extract_scores(baseline_first)
            counts[pair_verdict(s1, s2) if s1 and s2 else "failed"] += 1
        judged = counts["win"] + counts["tie"] + counts["loss"]

        def rate(key):
            return counts[key] / judged if judged else None

        return {"win_rate": rate("win"), "tie_rate": rate("tie"), "loss_rate": rate("loss"), "wins": counts["win"],
                "ties": counts["tie"], "losses": counts["loss"], "failed": counts["failed"], "judged": judged}
