"""How well each role does its job, measured on held-out seed pairs, always next to a reference.

- generator: share of English instructions, embedding similarity to the gold instruction, retrieval@1/@5 of
  the gold instruction among every held-out gold instruction of every language (chance beside it; ties are misses);
- evaluator: accuracy (overall, per language), confusion matrix, AUC of P(3) for level 3 vs 1 and 3 vs 2 with a
  bootstrap interval, next to a length-only and a truncation-only classifier trained on the same rows;
- follower and final model: language fidelity, and relevance (chrF of the answer against its own gold response,
  ranked among the language's gold responses), vs the base model and chance;
- rates (drop rates, recall) with a Wilson 95% interval.

Plain numpy and sacrebleu; nothing here loads a model except the embedder that diversification already uses.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import sacrebleu
from scipy.stats import rankdata

from .data import lid
from .evaluation.fidelity import language_fidelity

LEVELS = (1, 2, 3)
OPERATING_RECALLS = (0.5, 0.8, 0.9, 0.95)  # keep-rule recall levels of the operating table (besides the recipe's)
SCORE_NAMES = {"p3": "P(3)", "pmi": "rater PMI"}  # the scores a keep rule can threshold, as reports name them


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    ranks = rankdata(np.concatenate([positive, negative]))  # average ranks over ties
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties count
    half). ``None`` when a side is empty."""
    if len(positive) == 0 or len(negative) == 0:
        return None
    return round(_auc(np.asarray(positive, float), np.asarray(negative, float)), 4)


def auc_interval(positive: Sequence[float], negative: Sequence[float], paired: bool = False, rounds: int = 1000,
                 seed: int = 0) -> dict[str, Any] | None:
    """AUC with a bootstrap 95% interval (percentiles of ``rounds`` resamples). ``paired``: ``positive[i]`` and
    ``negative[i]`` belong to one unit (a candidate and its swapped copy) and are resampled together; otherwise each
    side is resampled on its own. ``None`` when a side is empty."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if len(pos) == 0 or len(neg) == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        if paired:
            pick = rng.integers(0, len(pos), len(pos))
            values.append(_auc(pos[pick], neg[pick]))
        else:
            values.append(_auc(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]))
    low, high = np.quantile(values, [0.025, 0.975])
    return {"auc": round(_auc(pos, neg), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "positives": len(pos), "negatives": len(neg)}


def ratio_interval(planted: Sequence[bool], real: Sequence[bool], rounds: int = 1000,
                   seed: int = 0) -> dict[str, Any] | None:
    """Drop-rate ratio planted / real with a bootstrap 95% interval. ``planted[i]`` and ``real[i]`` are the drop
    flags of one candidate and of its swapped copy, resampled together; ``None`` when no real row was dropped."""
    pl, re = np.asarray(planted, float), np.asarray(real, float)
    if len(pl) == 0 or re.sum() == 0:
        return None

    rng = np.random.default_rng(seed)
    picks = (rng.integers(0, len(pl), len(pl)) for _ in range(rounds))
    values = [pl[p].mean() / re[p].mean() for p in picks if re[p].sum()]  # a resample without real drops: left out
    low, high = np.quantile(values, [0.025, 0.975])
    return {"ratio": round(float(pl.mean() / re.mean()), 3), "low": round(float(low), 3),
            "high": round(float(high), 3), "n": len(pl)}


def gap_interval(inside: tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]],
                 outside: tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]],
                 rounds: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """Excess training gap with a bootstrap 95% interval: (paired AUC of a rater inside its training set - outside)
    minus (the same gap of a reference on the same pairs). Each group is ``(rater matched, rater swapped, reference
    matched, reference swapped)``, one entry per pair; pairs are resampled within their group."""
    groups = [tuple(np.asarray(x, float) for x in g) for g in (inside, outside)]
    if any(len(g[0]) == 0 for g in groups):
        return None

    def excess(picks) -> float:
        (a, b, c, d), (e, f, g, h) = [tuple(x[p] for x in grp) for grp, p in zip(groups, picks)]
        return (_auc(a, b) - _auc(e, f)) - (_auc(c, d) - _auc(g, h))

    rng = np.random.default_rng(seed)
    values = [excess([rng.integers(0, len(g[0]), len(g[0])) for g in groups]) for _ in range(rounds)]
    low, high = np.quantile(values, [0.025, 0.975])
    whole = excess([np.arange(len(g[0])) for g in groups])
    return {"excess": round(float(whole), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "inside": len(groups[0][0]), "outside": len(groups[1][0])}


def strongest_reference(refs: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The reference with the highest AUC for ``key`` (``auc_3v1`` or ``auc_3v2``) among ``refs`` (name -> figures).
    A one-score reference may rank either way up: an AUC under 0.5 counts as ``1 - AUC``, named ``(reversed)`` (plain
    likelihood ranks the model's own answers, level 2, far above the gold ones)."""
    best = None
    for name, figures in refs.items():
        value = figures.get(key)
        value = value.get("auc") if isinstance(value, dict) else value
        if value is None:
            continue
        if value < 0.5:
            name, value = f"{name} (reversed)", round(1 - value, 4)
        if best is None or value > best["auc"]:
            best = {"name": name, "auc": value}
    return best


def rate_interval(hits: int, n: int) -> dict[str, Any] | None:
    """A rate ``hits / n`` with its Wilson score 95% interval; ``None`` when ``n`` is 0."""
    if n == 0:
        return None
    z, p = 1.959964, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"rate": round(p, 4), "low": round(max(0.0, centre - half), 4), "high": round(min(1.0, centre + half), 4),
            "n": n}


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
        "auc_3v1_interval": auc_interval(p3[3], p3[1]),
        "auc_3v2_interval": auc_interval(p3[3], p3[2]),
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


_SENTENCE_END = tuple(".!?。！？।॥۔؟…\"'”’)»」")


def ends_naturally(text: str) -> bool:
    """Whether ``text`` ends like a finished sentence (terminal punctuation of any of the paper's scripts)."""
    return text.rstrip().endswith(_SENTENCE_END)


class TruncationBaseline:
    """A classifier that sees only whether the response ends like a finished sentence: one Bernoulli per level
    (Laplace-smoothed) and the level priors. If one level ends naturally while the others are cut mid-sentence,
    this classifier finds it; the pseudo-ratings cut every level so that it cannot."""

    def fit(self, texts: Sequence[str], levels: Sequence[int]) -> TruncationBaseline:
        self.params = {}
        for level in LEVELS:
            ends = [ends_naturally(t) for t, lv in zip(texts, levels) if lv == level]
            if ends:
                self.params[level] = (len(ends) / len(levels), (sum(ends) + 1) / (len(ends) + 2))
        return self

    def predict_proba(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            end = ends_naturally(text)
            weights = [self.params[lv][0] * (self.params[lv][1] if end else 1 - self.params[lv][1])
                       if lv in self.params else 0.0 for lv in LEVELS]
            out.append([w / sum(weights) for w in weights])
        return out


def _ranked_hits(scores: np.ndarray, own: int, ks: Sequence[int]) -> dict[int, bool]:
    """Whether the own item ranks within the top k of ``scores`` (every other item scoring as high or higher counts
    before it: ties are misses)."""
    ahead = int((np.delete(scores, own) >= scores[own]).sum())
    return {k: ahead < k for k in ks}


def retrieval(generated: np.ndarray, gold: Sequence[str], gold_vectors: np.ndarray,
              ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """For each row, rank every distinct held-out gold instruction (all languages together; unit vectors, cosine)
    by similarity to its generated instruction: the share of rows whose own gold instruction is in the top k, ties
    counted as misses, next to chance (k / number of distinct gold instructions)."""
    distinct = sorted(set(gold))
    index = {text: i for i, text in enumerate(distinct)}
    first = [list(gold).index(text) for text in distinct]
    pool = gold_vectors[first]
    hits = {k: [] for k in ks}
    for row, text in enumerate(gold):
        for k, hit in _ranked_hits(pool @ generated[row], index[text], ks).items():
            hits[k].append(hit)
    out: dict[str, Any] = {}
    for k in ks:
        out[f"retrieval@{k}"] = round(float(np.mean(hits[k])), 4) if hits[k] else None
        out[f"chance@{k}"] = round(min(k, len(distinct)) / len(distinct), 4) if distinct else None
    out["retrieval@1_interval"] = rate_interval(sum(hits[ks[0]]), len(hits[ks[0]]))
    out["retrieval_pool"] = len(distinct)
    return out


def relevance_figures(answers: Sequence[str], own: Sequence[int], gold: Sequence[str], languages: Sequence[str],
                      ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Whether answers are about their question: chrF (sacrebleu) of each answer against every gold response of
    its language (``gold``, with ``languages``), and the share of answers whose own gold response (index ``own``)
    ranks within the top k, ties counted as misses; chance beside it (k / the language's gold responses)."""
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, code in enumerate(languages):
        by_lang[code].append(i)
    hits = {k: [] for k in ks}
    chance = {k: [] for k in ks}
    own_chrf = []
    for answer, j in zip(answers, own):
        pool = by_lang[languages[j]]
        scores = np.asarray([sacrebleu.sentence_chrf(answer, [gold[g]]).score for g in pool])
        own_chrf.append(float(scores[pool.index(j)]))
        for k, hit in _ranked_hits(scores, pool.index(j), ks).items():
            hits[k].append(hit)
            chance[k].append(min(k, len(pool)) / len(pool))
    out: dict[str, Any] = {"rows": len(own_chrf), "chrf": round(float(np.mean(own_chrf)), 2) if own_chrf else None}
    for k in ks:
        out[f"retrieval@{k}"] = round(float(np.mean(hits[k])), 4) if hits[k] else None
        out[f"chance@{k}"] = round(float(np.mean(chance[k])), 4) if chance[k] else None
    out["retrieval@1_interval"] = rate_interval(sum(hits[ks[0]]), len(hits[ks[0]]))
    return out


def generator_figures(instructions: Sequence[str], gold: Sequence[str], embed) -> dict[str, Any]:
    """English share, mean cosine similarity to the gold instruction and retrieval@1/@5 of generated
    ``instructions``. ``embed(texts) -> unit vectors`` is the diversification embedder."""
    detections = lid.detect([t if t.strip() else "" for t in instructions], "en")
    english = [bool(t.strip()) and d.detected == "en" for t, d in zip(instructions, detections)]
    gen_vecs, gold_vecs = embed(list(instructions)), embed(list(gold))
    similarity = (gen_vecs * gold_vecs).sum(axis=1)
    return {
        "english_share": round(sum(english) / max(1, len(english)), 4),
        "similarity": round(float(similarity.mean()), 4) if len(similarity) else None,
        **retrieval(gen_vecs, list(gold), gold_vecs),
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
