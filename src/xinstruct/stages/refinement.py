"""Stage 2, refinement: K iterations, each made of five steps (folders ``iter-k/...``).

1. ``follower``: SFT of the base model on the current kept samples (the candidates in iteration 1),
   FOLLOWER template: English instruction + "Answer in {Language}." -> native text.
2. ``pseudo_ratings``: from the seed pairs, level 3 = the seed's own response, level 2 = the follower's
   response to the seed instruction, level 1 = another seed's response in the same language and the same
   split (sources are recipe settings). The held-out seed pairs (split off in the ``seed`` step) give the
   held-out rows; a training row never holds a held-out response. The three levels of a seed are cut to
   the same token length, so length tells nothing. The follower's language fidelity on the held-out
   instructions is measured here, next to the base model's.
3. ``evaluator``: trained on the training pseudo-ratings: ``evaluator_kind: sft`` fine-tunes a model on the
   rating prompt (completion exactly "1", "2" or "3"); ``likelihood`` fits a rating head on the follower's
   likelihoods (:mod:`.likelihood`). On the held-out rows: accuracy, confusion, AUC of P(3) for 3 vs 1 and
   3 vs 2, next to a length-only classifier; and the P(3) that keeps ``keep_recall`` of the held-out gold pairs.
4. ``ratings``: every candidate gets P(1), P(2), P(3) (``Engine.score`` of the rating prompt, or the head over
   ``Engine.loglik``) and the expected rating. Nothing is parsed, so no row can be "unparseable". Planted
   negatives (candidates with another row's instruction) are rated alongside and reported, then kept apart.
   Written in shards (resumable).
5. ``kept``: rows rated 3 (``argmax``; ``threshold``: P(3) >= keep_threshold; ``recall``: P(3) >= the calibrated
   threshold) survive; they train the next iteration's follower, and the last iteration's kept set goes to
   diversification.

Rating prompts, in training and in rating alike, hold the whole frame (template, instruction, cue) and a
response cut to ``refinement.response_tokens``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..budget import PromptFitter
from ..config import Recipe
from ..errors import StageError
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import RATING_OPTIONS, follower_example, rating_prompt
from ..quality import LengthBaseline, auc, fidelity_figures, rating_figures
from ..rundir import Step
from ..training import train_role
from .generation import answer_seed_instructions, fitter_for, split_rows, unit_hash
from .likelihood import LikelihoodHead, likelihood_features

HEAD_FILE = "rating_head.json"

logger = logging.getLogger(__name__)

RATING_COLUMNS = ("p1", "p2", "p3", "expected_rating", "rating")


def follower_training_set(rows: Dataset, assistant_share: float = 0.0, seed: int = 0) -> Dataset:
    """(instruction, output, language) rows as FOLLOWER-template prompt/completion pairs.

    A share ``assistant_share`` of rows (chosen by a hash of the row id, so deterministically) uses the
    assistant-style variant of the template.
    """

    def convert(row: dict[str, Any]) -> dict[str, str]:
        assistant = assistant_share > 0 and unit_hash(row["id"], seed) < assistant_share
        return follower_example(row["instruction"], row["output"], get_language(row["language"]).name, assistant)

    return rows.map(convert, remove_columns=rows.column_names)


def train_follower(recipe: Recipe, kept: Dataset, step: Step) -> dict[str, Any]:
    """Follower SFT on the current kept samples (``assistant_share`` of them in the assistant style, as for the
    final model); the model goes to ``step/model``."""
    role = recipe.refinement.follower
    data = follower_training_set(kept, recipe.final.assistant_share, recipe.seed)
    metrics = train_role(recipe, role, data, step.path)
    return {"rows_in": len(kept), "metrics": metrics, "model": str(step.path / "model")}


# ------------------------------------------------------------------------------------------------
# pseudo-ratings
# ------------------------------------------------------------------------------------------------


def _limit_per_language(seeds: Dataset, limit: int, seed: int) -> Dataset:
    """At most ``limit`` seed pairs per language, chosen by a hash of their id (stable), in input order."""
    ranked = sorted(range(len(seeds)), key=lambda i: unit_hash("pick:" + seeds[i]["id"], seed))
    taken: Counter = Counter()
    keep = []
    for i in ranked:
        lang = seeds[i]["language"]
        if taken[lang] < limit:
            taken[lang] += 1
            keep.append(i)
    return seeds.select(sorted(keep))


def _level1_partner(seeds: Dataset, source: str, seed: int) -> dict[str, int]:
    """Index of the seed whose response serves as level 1 for each seed id.

    ``mismatched``: a seeded derangement within each language (never the seed itself).
    ``other_language``: a seed of another language, chosen deterministically.
    With a ``split`` column, partners are chosen within the seed's own split (train or heldout), so a held-out
    response never appears in a training row.
    """
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(seeds["language"]):
        by_lang[lang].append(i)
    ids = seeds["id"]
    if "split" in seeds.column_names and len(set(seeds["split"])) > 1:  # pair within each split, never across
        partner: dict[str, int] = {}
        for name in sorted(set(seeds["split"])):
            where = [i for i, s in enumerate(seeds["split"]) if s == name]
            partner.update({k: where[v] for k, v in _level1_partner(split_rows(seeds, name), source, seed).items()})
        return partner
    partner: dict[str, int] = {}
    if source == "mismatched":
        for lang, idx in by_lang.items():
            if len(idx) < 2:
                raise StageError(
                    f"Language {lang} has {len(idx)} seed pair(s): level-1 pseudo-ratings (a mismatched response of "
                    "the same language) need at least 2. Add seed pairs or set "
                    "refinement.pseudo_ratings.level_sources[1]: other_language."
                )
            order = sorted(idx, key=lambda i: unit_hash(ids[i], seed))
            for pos, i in enumerate(order):  # rotate by one: a derangement
                partner[ids[i]] = order[(pos + 1) % len(order)]
    else:
        langs = sorted(by_lang)
        if len(langs) < 2:
            raise StageError("level_sources[1]: other_language needs seed pairs in at least two languages.")
        for lang_pos, lang in enumerate(langs):
            other = by_lang[langs[(lang_pos + 1) % len(langs)]]
            for i in by_lang[lang]:
                partner[ids[i]] = other[int(unit_hash(ids[i], seed) * len(other))]
    return partner


def build_pseudo_ratings(recipe: Recipe, seeds: Dataset, step: Step, engine: Engine, base_fidelity: dict | None = None
                         ) -> dict[str, Any]:
    """Three rated responses per seed pair (levels 3, 2, 1), training rows from the training split, held-out
    rows from the held-out split; see the module doc.

    ``engine`` serves the level-2 model (the follower, or the base model when ``level_sources[2]: base``).
    ``base_fidelity`` is the base model's fidelity figure, reported next to the follower's.
    """
    ref = recipe.refinement
    cfg = ref.pseudo_ratings
    sources = cfg.level_sources
    train = split_rows(seeds, "train")
    if cfg.seeds_per_language is not None:
        train = _limit_per_language(train, cfg.seeds_per_language, recipe.seed)
    heldout = split_rows(seeds, "heldout")
    seeds = concatenate_datasets([train, heldout]) if len(heldout) else train
    langs = [get_language(code).name for code in seeds["language"]]

    def answer(rows: Dataset, index: int) -> Dataset:
        return Dataset.from_dict({"id": rows["id"], "response": answer_seed_instructions(recipe, rows, engine, index)})

    level2 = step.map_shards(seeds, cfg.shard_size, answer, desc=f"level-2 answers ({sources[2]})")
    level2_by_id = dict(zip(level2["id"], level2["response"]))
    partner = _level1_partner(seeds, sources[1], recipe.seed)
    fitter = fitter_for(recipe.model_for(ref.evaluator))
    rows: list[dict[str, Any]] = []
    lengths_before: dict[int, list[int]] = defaultdict(list)
    skipped: Counter = Counter()
    for n, seed_row in enumerate(seeds):
        sid = seed_row["id"]
        other = seeds[partner[sid]]
        candidates = [(3, seed_row["output"], "seed"), (2, level2_by_id[sid].strip(), sources[2]),
                      (1, other["output"], f"{sources[1]}:{other['id']}")]
        if not candidates[1][1]:
            skipped["empty_level2_answer"] += 1
            candidates.pop(1)
        cut = fitter.same_length([text for _, text, _ in candidates], ref.response_tokens)  # every level alike
        for (level, text, source), response in zip(candidates, cut):
            lengths_before[level].append(fitter.length(text))
            rows.append({"id": f"{sid}#{level}", "seed_id": sid, "language": seed_row["language"], "language_name": langs[n],
                         "instruction": seed_row["instruction"], "response": response, "response_tokens": fitter.length(response),
                         "level": level, "source": source, "split": seed_row["split"]})
    pseudo = Dataset.from_list(rows)
    step.save(pseudo)
    splits = Counter(pseudo["split"])
    held_answers = [level2_by_id[i] for i in heldout["id"]]
    mean = lambda xs: round(sum(xs) / len(xs), 1) if xs else None  # noqa: E731
    return {
        "rows_in": len(seeds),
        "rows_out": len(pseudo),
        "seed_pairs_per_language": dict(Counter(seeds["language"])),
        "level_sources": {str(k): v for k, v in sources.items()},
        "train_rows": splits["train"],
        "heldout_rows": splits["heldout"],
        "skipped": dict(skipped),
        "response_tokens_before_cut": {str(k): mean(v) for k, v in sorted(lengths_before.items())},
        "response_tokens": {str(lv): mean([r["response_tokens"] for r in rows if r["level"] == lv]) for lv in (1, 2, 3)},
        "level2_fidelity": fidelity_figures(held_answers, heldout["language"]) if len(heldout) else None,
        "base_fidelity": base_fidelity,
        **engine.report(),
    }


# ------------------------------------------------------------------------------------------------
# evaluator
# ------------------------------------------------------------------------------------------------


def rating_prompt_limit(recipe: Recipe) -> int | None:
    """The longest rating prompt: the evaluator's ``max_length`` less its completion (the digit and EOS), so that
    TRL never cuts a training row; the same limit holds when rating."""
    max_length = recipe.refinement.evaluator.training.get("max_length", 1024)
    return None if max_length is None else max_length - 2


def fit_rating_prompts(recipe: Recipe, fitter: PromptFitter, instructions: list[str], responses: list[str],
                       languages: list[str]) -> tuple[list[str], int]:
    """Rating prompts with the response cut to ``refinement.response_tokens`` and to the prompt limit (the frame
    and the instruction are never cut); and how many responses were cut."""
    budget, limit = recipe.refinement.response_tokens, rating_prompt_limit(recipe)
    fitted = []
    for instruction, response, code in zip(instructions, responses, languages):
        name = get_language(code).name
        render = lambda r, i=instruction, n=name: rating_prompt(i, r, n)  # noqa: E731
        fitted.append(fitter.fit(render, response, limit, budget))
    return [f.prompt for f in fitted], sum(f.cut for f in fitted)


def evaluator_training_set(recipe: Recipe, pseudo: Dataset, fitter: PromptFitter) -> tuple[Dataset, int]:
    """Pseudo-ratings as rating-prompt examples whose completion is exactly the level ("1", "2" or "3"); and how
    many responses the prompt budget cut."""
    prompts, cut = fit_rating_prompts(recipe, fitter, pseudo["instruction"], pseudo["response"], pseudo["language"])
    return Dataset.from_dict({"prompt": prompts, "completion": [str(level) for level in pseudo["level"]]}), cut


def score_ratings(engine: Engine, prompts: list[str]) -> dict[str, list]:
    """P(1), P(2), P(3), expected rating and argmax rating of each rating prompt, from one forward pass each."""
    return scores_from_probs(engine.score(prompts, list(RATING_OPTIONS)))


def scores_from_probs(probs: list) -> dict[str, list]:
    """The stored rating columns from (P(1), P(2), P(3)) per row."""
    return {
        "p1": [p[0] for p in probs],
        "p2": [p[1] for p in probs],
        "p3": [p[2] for p in probs],
        "expected_rating": [p[0] + 2 * p[1] + 3 * p[2] for p in probs],
        "rating": [1 + max(range(3), key=lambda j: p[j]) for p in probs],
    }


def train_evaluator(recipe: Recipe, pseudo: Dataset, step: Step, make_engine, follower: str | None = None) -> dict[str, Any]:
    """Train the evaluator on the training split (``evaluator_kind``: ``sft`` fine-tunes a model to write the
    rating; ``likelihood`` fits a rating head on the ``follower``'s likelihoods, see :mod:`.likelihood`); on the
    held-out split: its figures next to a length-only classifier fitted on the same training rows."""
    role = recipe.refinement.evaluator
    train = split_rows(pseudo, "train")
    heldout = split_rows(pseudo, "heldout")
    report: dict[str, Any] = {"rows_in": len(train), "heldout_rows": len(heldout), "kind": recipe.refinement.evaluator_kind}
    if recipe.refinement.evaluator_kind == "likelihood":
        engine = make_engine(follower)
        features = likelihood_features(engine, train["instruction"], train["response"], train["language"])
        head = LikelihoodHead().fit(features, train["level"])
        head.save(step.path / HEAD_FILE, follower=follower)
        report.update({"model": follower, "head": str(step.path / HEAD_FILE)})
        predict = lambda rows: head.predict_proba(  # noqa: E731
            likelihood_features(engine, rows["instruction"], rows["response"], rows["language"]))
    else:
        fitter = fitter_for(recipe.model_for(role))
        data, cut = evaluator_training_set(recipe, train, fitter)
        report.update({"responses_cut": cut, "metrics": train_role(recipe, role, data, step.path), "model": str(step.path / "model")})
        engine = None

        def predict(rows: Dataset) -> list:
            nonlocal engine
            engine = make_engine(str(step.path / "model"))
            prompts, _ = fit_rating_prompts(recipe, fitter, rows["instruction"], rows["response"], rows["language"])
            scores = score_ratings(engine, prompts)
            return list(zip(scores["p1"], scores["p2"], scores["p3"]))
    if len(heldout):
        probs = predict(heldout)
        report.update(engine.report())
        figures = rating_figures(heldout["level"], probs, heldout["language"])
        gold = sorted(p[2] for p, level in zip(probs, heldout["level"]) if level == 3)
        if gold:  # keep_rule recall: the P(3) that keeps keep_recall of the held-out gold pairs
            report["keep_threshold_at_recall"] = round(float(np.quantile(gold, 1 - recipe.refinement.keep_recall)), 6)
        report["heldout"] = figures
        report["heldout_accuracy"] = figures["accuracy"]
        baseline = LengthBaseline().fit(train["response_tokens"], train["level"])
        report["length_baseline"] = rating_figures(heldout["level"], baseline.predict_proba(heldout["response_tokens"]),
                                                   heldout["language"])
    return report


# ------------------------------------------------------------------------------------------------
# rating and filtering
# ------------------------------------------------------------------------------------------------


def plant_negatives(pool: Dataset, share: float, seed: int) -> Dataset:
    """Planted negatives: copies of ``share`` of the pool (chosen by a hash of the id), each with the instruction
    of another row of the same language (a different instruction). ``planted`` marks them; their ids start with
    ``planted:``. Languages with fewer than two distinct instructions get none."""
    if share <= 0 or len(pool) == 0:
        return pool.select([]).add_column("planted", [])
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, code in enumerate(pool["language"]):
        by_lang[code].append(i)
    instructions, ids = pool["instruction"], pool["id"]
    picks: list[tuple[int, int]] = []
    for idx in by_lang.values():
        order = sorted(idx, key=lambda i: unit_hash("plant:" + ids[i], seed))
        for n, i in enumerate(order[: round(share * len(idx))]):
            donors = [j for j in order[n + 1 :] + order[:n] if instructions[j] != instructions[i]]
            if donors:
                picks.append((i, donors[0]))
    rows = pool.select([i for i, _ in picks])
    rows = rows.map(lambda r, k: {"id": f"planted:{r['id']}", "instruction": instructions[picks[k][1]]}, with_indices=True)
    return rows.add_column("planted", [True] * len(rows))


def effective_threshold(recipe: Recipe, evaluator_manifest: dict[str, Any] | None) -> float | None:
    """The P(3) threshold of the keep rule: ``keep_threshold`` (``threshold``), the evaluator's calibrated one
    (``recall``: keeps ``keep_recall`` of the held-out gold pairs), or ``None`` (``argmax``)."""
    ref = recipe.refinement
    if ref.keep_rule == "threshold":
        return ref.keep_threshold
    if ref.keep_rule == "recall":
        value = (evaluator_manifest or {}).get("keep_threshold_at_recall")
        if value is None:
            raise StageError("keep_rule: recall needs held-out level-3 pseudo-ratings to calibrate on; hold out seed pairs "
                             "(data.seeds.heldout_fraction) or use keep_rule: argmax / threshold.")
        return value
    return None


def rate_candidates(recipe: Recipe, pool: Dataset, step: Step, engine: Engine, iteration: int, evaluator: str,
                    head: str | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Score every row of ``pool`` and the planted negatives with the evaluator, shard by shard (resumable). The
    real rows go to ``data``; the planted ones to ``planted``, never further.

    ``engine`` serves the model ``evaluator`` (a folder: its tokenizer fits the responses to the budget): the SFT
    evaluator, or for ``evaluator_kind: likelihood`` the follower whose likelihoods feed the rating ``head``."""
    ref = recipe.refinement
    base = pool.remove_columns([c for c in RATING_COLUMNS + ("iteration", "planted") if c in pool.column_names])
    planted = plant_negatives(base, ref.planted_share, recipe.seed + iteration)
    rows = concatenate_datasets([base.add_column("planted", [False] * len(base)), planted])
    fitter = fitter_for(evaluator)

    rating_head = LikelihoodHead.load(Path(head)) if head else None

    def shard(part: Dataset, index: int) -> Dataset:
        if rating_head is not None:
            responses = [fitter.head(text, ref.response_tokens)[0] for text in part["output"]]
            probs = rating_head.predict_proba(likelihood_features(engine, part["instruction"], responses, part["language"]))
            scores = scores_from_probs(probs)
        else:
            prompts, _ = fit_rating_prompts(recipe, fitter, part["instruction"], part["output"], part["language"])
            scores = score_ratings(engine, prompts)
        out = part
        for col in RATING_COLUMNS:
            out = out.add_column(col, scores[col])
        return out.add_column("iteration", [iteration] * len(part))

    rated_all = step.map_shards(rows, ref.shard_size, shard, desc=f"rating (iteration {iteration})")
    _, cut_total = fit_rating_prompts(recipe, fitter, rated_all["instruction"], rated_all["output"], rated_all["language"])
    is_planted = rated_all["planted"]
    rated = rated_all.select([i for i, p in enumerate(is_planted) if not p]).remove_columns("planted")
    planted_rated = rated_all.select([i for i, p in enumerate(is_planted) if p])
    step.save(rated)
    step.save(planted_rated, "planted")
    threshold = ref.keep_threshold if threshold is None and ref.keep_rule == "threshold" else threshold
    real_kept = keep_mask(rated, ref.keep_rule, threshold)
    planted_kept = keep_mask(planted_rated, ref.keep_rule, threshold)
    drop = lambda mask: round(1 - sum(mask) / len(mask), 4) if mask else None  # noqa: E731
    return {
        "rows_in": len(pool),
        "rows_out": len(rated),
        "rating_histogram": {str(k): v for k, v in sorted(Counter(rated["rating"]).items())},
        "mean_expected_rating": round(sum(rated["expected_rating"]) / max(1, len(rated)), 4),
        "responses_cut": cut_total,
        "keep_threshold": threshold,
        "planted": {
            "rows": len(planted_rated),
            "share": ref.planted_share,
            "drop_rate_planted": drop(planted_kept),
            "drop_rate_real": drop(real_kept),
            "auc_real_vs_planted": auc(rated["p3"], planted_rated["p3"]),
            "rating_histogram": {str(k): v for k, v in sorted(Counter(planted_rated["rating"]).items())},
        },
        **engine.report(),
    }


def keep_mask(rated: Dataset, rule: str, threshold: float | None) -> list[bool]:
    """Which rows survive: ``argmax`` (most likely rating is 3), or ``threshold`` / ``recall`` (P(3) >= threshold)."""
    if rule == "argmax":
        return [r == 3 for r in rated["rating"]]
    return [p >= threshold for p in rated["p3"]]


def keep_rated(recipe: Recipe, rated: Dataset, step: Step, iteration: int, threshold: float | None = None) -> dict[str, Any]:
    """Keep the rows that meet the keep rule (``threshold``: see :func:`effective_threshold`); an empty result is an
    error that says what to change."""
    ref = recipe.refinement
    threshold = ref.keep_threshold if threshold is None and ref.keep_rule == "threshold" else threshold
    mask = keep_mask(rated, ref.keep_rule, threshold)
    kept = rated.select([i for i, keep in enumerate(mask) if keep])
    per_in = Counter(rated["language"])
    per_kept = Counter(kept["language"])
    report = {
        "rows_in": len(rated),
        "rows_out": len(kept),
        "keep_rule": ref.keep_rule if ref.keep_rule == "argmax" else f"P(3) >= {threshold:.4f} ({ref.keep_rule})",
        "rows_in_per_language": dict(per_in),
        "rows_out_per_language": {code: per_kept.get(code, 0) for code in per_in},
        "skipped": {"not_rated_3": len(rated) - len(kept)},
    }
    if len(kept) == 0:
        raise StageError(
            f"Iteration {iteration} kept no candidate: ratings {dict(Counter(rated['rating']))} under keep rule "
            f"{report['keep_rule']}. Lower refinement.keep_threshold with keep_rule: threshold, train the evaluator "
            "longer, or add data."
        )
    step.save(kept)
    return report
