"""Evaluation as in the paper: answers to a question set (cross-lingual and zero-shot), pairwise judging
in both answer orders with the authors' judge prompt, zero-shot retention, language fidelity, lm-eval
benchmarks (XCOPA, XNLI, XStoryCloze), and a Markdown report that also feeds the model card."""

from .judge import JudgeResult, extract_scores, judge_pairs, pair_verdict, summarize, zero_shot_retention
from .questions import load_questions

__all__ = ["JudgeResult", "extract_scores", "judge_pairs", "load_questions", "pair_verdict", "summarize",
           "zero_shot_retention"]
