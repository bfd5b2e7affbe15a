"""Stage 2, refinement: K iterations, each made of five steps (folders ``iter-k/...``).

1. ``follower``: SFT of the base model on the current kept samples (the candidates in iteration 1),
   FOLLOWER template: English instruction + "Answer in {Language}." -> native text.
2. ``pseudo_ratings``: from the seed pairs, level 3 = the seed's own response, level 2 = the follower's
   response to the seed instruction, level 1 = another seed's response in the same language (sources
   are recipe settings). A share of the seed pairs (all their levels) is held out.
3. ``evaluator``: SFT on the pseudo-ratings with the rating prompt (completion exactly "1", "2" or "3");
   its accuracy on the held-out pseudo-ratings is measured with ``Engine.score``.
4. ``ratings``: every candidate is scored with ``Engine.score``: P(1), P(2), P(3) and the expected rating.
   Nothing is parsed, so no row can be "unparseable". Written in shards (resumable).
5. ``kept``: rows rated 3 (argmax, or P(3) >= threshold) survive; they train the next iteration's
   follower, and the last iteration's kept set goes to diversification.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from typing import Any

from datasets import Dataset

from ..config import Recipe
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import RATING_OPTIONS, evaluator_example, follower_example, follower_prompt, rating_prompt
from ..rundir import Step
from ..training import run_training
from .generation import StageError, decoding_params

logger = logging.getLogger(__name__)

RATING_COLUMNS = ("p1", "p2", "p3", "expected_rating", "rating")


def _unit(key: str, seed: int) -> float:
    """A deterministic number in [0, 1) for ``key`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def follower_training_set(rows: Dataset, assistant_share: float = 0.0, seed: int = 0) -> Dataset:
    """(instruction, output, language) rows as FOLLOWER-template prompt/completion pairs.

    A share ``assistant_share`` of rows (chosen by a hash of the row id, so deterministically) uses the
    assistant-style variant of the template.
    """

    def convert(row: dict[str, Any]) -> dict[str, str]:
        assistant = assistant_share > 0 and _unit(row["id"], seed) < assistant_share
        return follower_example(row["instruction"], row["output"], get_language(row["language"]).name, assistant)

    return rows.map(convert, remove_columns=rows.column_names)


def train_follower(recipe: Recipe, kept: Dataset, step: Step) -> dict[str, Any]:
    """Follower SFT on the current kept samples; the model goes to ``step/model``."""
    role = recipe.refinement.follower
    metrics = run_training(
        recipe.launcher, recipe.model_for(role), follower_training_set(kept), step.path, role.training, role.lora, recipe.seed
    )
    return {"rows_in": len(kept), "metrics": metrics, "model": str(step.path / "model")}


# ------------------------------------------------------------------------------------------------
# pseudo-ratings
# ------------------------------------------------------------------------------------------------


def _limit_per_language(seeds: Dataset, limit: int, seed: int) -> Dataset:
    """At most ``limit`` seed pairs per language, chosen by a hash of their id (stable), in input order."""
    ranked = sorted(range(len(seeds)), key=lambda i: _unit("pick:" + seeds[i]["id"], seed))
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
    """
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(seeds["language"]):
        by_lang[lang].append(i)
    ids = seeds["id"]
    partner: dict[str, int] = {}
    if source == "mismatched":
        for lang, idx in by_lang.items():
            if len(idx) < 2:
                raise StageError(
                    f"Language {lang} has {len(idx)} seed pair(s): level-1 pseudo-ratings (a mismatched response of "
                    "the same language) need at least 2. Add seed pairs or set "
                    "refinement.pseudo_ratings.level_sources[1]: other_language."
                )
            order = sorted(idx, key=lambda i: _unit(ids[i], seed))
            for pos, i in enumerate(order):  # rotate by one: a derangement
                partner[ids[i]] = order[(pos + 1) % len(order)]
    else:
        langs = sorted(by_lang)
        if len(langs) < 2:
            raise StageError("level_sources[1]: other_language needs seed pairs in at least two languages.")
        for lang_pos, lang in enumerate(langs):
            other = by_lang[langs[(lang_pos + 1) % len(langs)]]
            for i in by_lang[lang]:
                partner[ids[i]] = other[int(_unit(ids[i], seed) * len(other))]
    return partner


def build_pseudo_ratings(recipe: Recipe, seeds: Dataset, step: Step, engine: Engine) -> dict[str, Any]:
    """Three rated responses per seed pair (levels 3, 2, 1) with a held-out split; see the module doc.

    ``engine`` serves the level-2 model (the follower, or the base model when ``level_sources[2]: base``).
    """
    cfg = recipe.refinement.pseudo_ratings
    sources = cfg.level_sources
    if cfg.seeds_per_language is not None:
        seeds = _limit_per_language(seeds, cfg.seeds_per_language, recipe.seed)
    langs = [get_language(code).name for code in seeds["language"]]

    def answer(rows: Dataset, index: int) -> Dataset:
        names = [get_language(code).name for code in rows["language"]]
        prompts = [follower_prompt(i, n) for i, n in zip(rows["instruction"], names)]
        return Dataset.from_dict({"id": rows["id"], "response": engine.generate(prompts, decoding_params(cfg.decoding, recipe.seed + index))})

    level2 = step.map_shards(seeds, cfg.shard_size, answer, desc=f"level-2 answers ({sources[2]})")
    level2_by_id = dict(zip(level2["id"], level2["response"]))
    partner = _level1_partner(seeds, sources[1], recipe.seed)
    rows: list[dict[str, Any]] = []
    for n, seed_row in enumerate(seeds):
        sid = seed_row["id"]
        split = "heldout" if _unit("heldout:" + sid, recipe.seed) < cfg.heldout_fraction else "train"
        other = seeds[partner[sid]]
        for level, response, source in (
            (3, seed_row["output"], "seed"),
            (2, level2_by_id[sid], sources[2]),
            (1, other["output"], f"{sources[1]}:{other['id']}"),
        ):
            rows.append({"id": f"{sid}#{level}", "seed_id": sid, "language": seed_row["language"], "language_name": langs[n],
                         "instruction": seed_row["instruction"], "response": response, "level": level,
                         "source": source, "split": split})
    pseudo = Dataset.from_list(rows)
    step.save(pseudo)
    splits = Counter(pseudo["split"])
    return {
        "rows_in": len(seeds),
        "rows_out": len(pseudo),
        "seed_pairs_per_language": dict(Counter(seeds["language"])),
        "level_sources": {str(k): v for k, v in sources.items()},
        "train_rows": splits["train"],
        "heldout_rows": splits["heldout"],
        "empty_level2_responses": sum(1 for r in level2["response"] if not r.strip()),
        **engine.report(),
    }


# ------------------------------------------------------------------------------------------------
# evaluator
# ------------------------------------------------------------------------------------------------


def evaluator_training_set(pseudo: Dataset) -> Dataset:
    """Pseudo-ratings as rating-prompt examples whose completion is exactly the level ("1", "2" or "3")."""
    return pseudo.map(
        lambda r: evaluator_example(r["instruction"], r["response"], r["language_name"], r["level"]),
        remove_columns=pseudo.column_names,
    )


def score_ratings(engine: Engine, rows: Dataset, instruction_col: str, response_col: str) -> dict[str, list]:
    """P(1), P(2), P(3), expected rating and argmax rating of each row, from one forward pass each."""
    names = [get_language(code).name for code in rows["language"]]
    prompts = [rating_prompt(i, r, n) for i, r, n in zip(rows[instruction_col], rows[response_col], names)]
    probs = engine.score(prompts, list(RATING_OPTIONS))
    return {
        "p1": [p[0] for p in probs],
        "p2": [p[1] for p in probs],
        "p3": [p[2] for p in probs],
        "expected_rating": [p[0] + 2 * p[1] + 3 * p[2] for p in probs],
        "rating": [1 + max(range(3), key=lambda j: p[j]) for p in probs],
    }


def train_evaluator(recipe: Recipe, pseudo: Dataset, step: Step, make_engine) -> dict[str, Any]:
    """Evaluator SFT on the training split; accuracy measured on the held-out split with ``Engine.score``."""
    role = recipe.refinement.evaluator
    train = pseudo.filter(lambda s: s == "train", input_columns="split")
    heldout = pseudo.filter(lambda s: s == "heldout", input_columns="split")
    metrics = run_training(
        recipe.launcher, recipe.model_for(role), evaluator_training_set(train), step.path, role.training, role.lora, recipe.seed
    )
    report: dict[str, Any] = {"rows_in": len(train), "heldout_rows": len(heldout), "metrics": metrics, "model": str(step.path / "model")}
    if len(heldout):
        engine = make_engine(str(step.path / "model"))
        scores = score_ratings(engine, heldout, "instruction", "response")
        report.update(engine.report())
        truth = heldout["level"]
        confusion = Counter(f"{t}->{p}" for t, p in zip(truth, scores["rating"]))
        report["heldout_accuracy"] = round(sum(t == p for t, p in zip(truth, scores["rating"])) / len(truth), 4)
        report["heldout_accuracy_per_level"] = {
            str(level): round(confusion[f"{level}->{level}"] / max(1, truth.count(level)), 4) for level in (1, 2, 3)
        }
        report["heldout_confusion"] = dict(sorted(confusion.items()))
    return report


# ------------------------------------------------------------------------------------------------
# rating and filtering
# ------------------------------------------------------------------------------------------------


def rate_candidates(recipe: Recipe, pool: Dataset, step: Step, engine: Engine, iteration: int) -> dict[str, Any]:
    """Score every row of ``pool`` with the evaluator, shard by shard (resumable)."""
    base = pool.remove_columns([c for c in RATING_COLUMNS + ("iteration",) if c in pool.column_names])

    def shard(rows: Dataset, index: int) -> Dataset:
        scores = score_ratings(engine, rows, "instruction", "output")
        out = rows
        for col in RATING_COLUMNS:
            out = out.add_column(col, scores[col])
        return out.add_column("iteration", [iteration] * len(rows))

    rated = step.map_shards(base, recipe.refinement.shard_size, shard, desc=f"rating (iteration {iteration})")
    step.save(rated)
    return {
        "rows_in": len(pool),
        "rows_out": len(rated),
        "rating_histogram": {str(k): v for k, v in sorted(Counter(rated["rating"]).items())},
        "mean_expected_rating": round(sum(rated["expected_rating"]) / max(1, len(rated)), 4),
        **engine.report(),
    }


def keep_mask(rated: Dataset, rule: str, threshold: float) -> list[bool]:
    """Which rows survive: ``argmax`` (most likely rating is 3) or ``threshold`` (P(3) >= threshold)."""
    if rule == "argmax":
        return [r == 3 for r in rated["rating"]]
    return [p >= threshold for p in rated["p3"]]


def keep_rated(recipe: Recipe, rated: Dataset, step: Step, iteration: int) -> dict[str, Any]:
    """Keep the rows that meet the keep rule; an empty result is an error that says what to change."""
    ref = recipe.refinement
    mask = keep_mask(rated, ref.keep_rule, ref.keep_threshold)
    kept = rated.select([i for i, keep in enumerate(mask) if keep])
    per_in = Counter(rated["language"])
    per_kept = Counter(kept["language"])
    report = {
        "rows_in": len(rated),
        "rows_out": len(kept),
        "keep_rule": ref.keep_rule if ref.keep_rule == "argmax" else f"P(3) >= {ref.keep_threshold}",
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
