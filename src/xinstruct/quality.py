"""How well each role does its job, measured on held-out seed pairs, always next to a reference.

- generator: share of English instructions, embedding similarity to the gold instruction, retrieval@1/@5 of
  the gold instruction among the language's held-out gold instructions (vs the untrained base model);
- evaluator: accuracy (overall, per language), confusion matrix, AUC of P(3) for level 3 vs 1 and 3 vs 2
  (vs a length-only classifier trained on the same rows);
- follower and final model: language fidelity of answers to held-out English instructions (vs the base model).

Plain numpy; nothing here loads a model except the embedder that diversification already uses.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import lid
from .evaluation.fidelity import language_fidelity

LEVELS = (1, 2, 3)


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties count
    half). ``None`` when a side is empty."""
    if not positive or not negative:
        return None
    scores = np.concatenate([np.asarray(positive, float), np.asarray(negative, float)])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(positive), len(negative)
    return round(float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), 4)


def rating_figures(levels: Sequence[int], probs: Sequence[Sequence[float]],
                   languages: Sequence[str]) -> dict[str, Any]:
    """Accuracy (overall and per language), confusion ``"true->predicted"``, and AUC of P(3) for 3 vs 1 and 3 vs 2,
    for rows with true ``levels`` and predicted ``probs`` = (P(1), P(2), P(3))."""
    predicted = [1 + int(np.argmax(p)) for p in probs]
    confusion = Counter(f"{t}->{p}" for t, p in zip(levels, predicted))
    per_lang: dict[str, list[bool]] = defaultdict(list)
    for t, p, code in zip(levels, predicted, languages):
        per_lang[code].append(t == p)
    p3 = {level: [p[2] for p, t in zip(probs, levels) if t == level] for level in LEVELS}
    return {
        "accuracy": round(sum(t == p for t, p in zip(levels, predicted)) / max(1, len(levels)), 4),
        "accuracy_per_language": {c: round(sum(v) / len(v), 4) for c, v in sorted(per_lang.items())},
        "accuracy_per_level": {str(lv): round(confusion[f"{lv}->{lv}"] / max(1, list(levels).count(lv)), 4)
                               for lv in LEVELS},
        "confusion": dict(sorted(confusion.items())),
        "auc_3v1": auc(p3[3], p3[1]),
        "auc_3v2": auc(p3[3], p3[2]),
        "rows": len(levels),
    }


class LengthBaseline:
    """A classifier that sees only the response's token length: one Gaussian per level (mean, variance of the
    training rows' lengths) and the level priors. If the evaluator cannot beat it, it learnt length."""

    def fit(self, lengths: Sequence[int], levels: Sequence[int]) -> LengthBaseline:
        self.params = {}
        total = len(levels)
        for level in LEVELS:
            xs = np.asarray([n for n, t in zip(lengths, levels) if t == level], float)
            if len(xs):
                self.params[level] = (len(xs) / total, float(xs.mean()), max(float(xs.var()), 1.0))
        return self

    def predict_proba(self, lengths: Sequence[int]) -> list[list[float]]:
        out = []
        for n in lengths:
            scores = []
            for level in LEVELS:
                if level not in self.params:
                    scores.append(-math.inf)
                    continue
                prior, mean, var = self.params[level]
                scores.append(math.log(prior) - 0.5 * math.log(2 * math.pi * var) - (n - mean) ** 2 / (2 * var))
            top = max(scores)
            weights = [math.exp(s - top) if s > -math.inf else 0.0 for s in scores]
            out.append([w / sum(weights) for w in weights])
        return out


def retrieval(generated: np.ndarray, gold: np.ndarray, languages: Sequence[str],
              ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """For each row, rank the gold instructions of its language (unit vectors, cosine) by similarity to its
    generated instruction: the share of rows whose own gold instruction is in the top k. ``pool`` is the mean
    number of candidates per row (k >= pool is a sure hit, so read @k against it)."""
    hits = {k: [] for k in ks}
    pools = []
    for code in sorted(set(languages)):
        idx = np.array([i for i, c in enumerate(languages) if c == code])
        sims = generated[idx] @ gold[idx].T
        for row in range(len(idx)):
            rank = int((sims[row] > sims[row, row]).sum())  # 0 = the own gold instruction is the closest
            for k in ks:
                hits[k].append(rank < k)
            pools.append(len(idx))
    out = {f"retrieval@{k}": round(float(np.mean(v)), 4) if v else None for k, v in hits.items()}
    out["retrieval_pool"] = round(float(np.mean(pools)), 2) if pools else 0
    return out


def generator_figures(instructions: Sequence[str], gold: Sequence[str], languages: Sequence[str],
                      embed) -> dict[str, Any]:
    """English share, mean cosine similarity to the gold instruction and retrieval@1/@5 of generated
    ``instructions``. ``embed(texts) -> unit vectors`` is the diversification embedder."""
    detections = lid.detect([t if t.strip() else "" for t in instructions], "en")
    english = [bool(t.strip()) and d.detected == "en" for t, d in zip(instructions, detections)]
    gen_vecs, gold_vecs = embed(list(instructions)), embed(list(gold))
    similarity = (gen_vecs * gold_vecs).sum(axis=1)
    return {
        "english_share": round(sum(english) / max(1, len(english)), 4),
        "similarity": round(float(similarity.mean()), 4) if len(similarity) else None,
        **retrieval(gen_vecs, gold_vecs, languages),
        "rows": len(instructions),
    }


def fidelity_figures(answers: Sequence[str], languages: Sequence[str]) -> dict[str, Any]:
    """Language fidelity (answer in the requested language, by lingua): overall and per language."""
    per_lang = {}
    hits = 0
    for code in sorted(set(languages)):
        texts = [a for a, c in zip(answers, languages) if c == code]
        result = language_fidelity(texts, code)
        per_lang[code] = result["fidelity"]
        hits += result["in_language"]
    return {"fidelity": round(hits / max(1, len(answers)), 4), "fidelity_per_language": per_lang,
            "answers": len(answers)}
