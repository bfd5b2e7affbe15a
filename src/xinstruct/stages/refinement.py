"""Stage 2, refinement: K iterations, each made of five steps (folders ``iter-k/...``).

1. ``follower``: SFT of the base model on the current kept samples (the candidates in iteration 1),
   FOLLOWER template: English instruction + "Answer in {Language}." -> native text.
2. ``pseudo_ratings``: from the seed pairs, level 3 = the seed's own response, level 2 = the follower's
   response to the seed instruction, level 1 = another seed's response in the same language and the same
   split (sources are recipe settings). The held-out seed pairs (split off in the ``seed`` step) give the
   held-out rows; a training row never holds a held-out response. The three levels of a seed are cut to
   the same token length, so length tells nothing. The follower's language fidelity on the held-out
   instructions is measured here, next to the base model's.
3. ``evaluator``, 4. ``ratings``, 5. ``kept``: the rating side, in :mod:`.rating`. The evaluator learns the
   pseudo-ratings, rates every candidate (plus planted negatives), and the rows that meet the keep rule train the
   next iteration's follower; the last iteration's kept set goes to diversification.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from datasets import Dataset, concatenate_datasets

from ..config import Recipe, RefinementConfig
from ..errors import StageError
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import follower_example
from ..quality import ends_naturally
from ..rundir import (
    BASELINE,
    CANDIDATES,
    EVALUATOR,
    FOLLOWER,
    KEPT,
    MODEL,
    PSEUDO_RATINGS,
    RATINGS,
    SEED,
    SWAPS,
    Step,
    fold_dir,
    iteration_step,
)
from ..steps import FRAME_TOKENS, INSTRUCTION_TOKENS, Estimate, StepContext, StepSpec, Work, engine_settings
from ..training import role_settings, train_role
from .crossfit import fold_of, other_fold
from .generation import answer_figures, answer_seed_instructions, fitter_for, split_rows, unit_hash
from .rating import rating_steps
from .swaps import build_swaps

logger = logging.getLogger(__name__)

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
    final model); the model goes to ``step/model``. Cross-fitted (``refinement.folds`` 2): one follower per fold of
    the rows (``step/fold-<f>/model``), each trained on its fold only."""
    role, folds = recipe.refinement.follower, recipe.refinement.folds
    fold = [fold_of(i, recipe.seed, folds) for i in kept["id"]]
    report: dict[str, Any] = {"rows_in": len(kept), "folds": folds}
    for f in range(folds):
        rows = kept.select([i for i, g in enumerate(fold) if g == f])
        if len(rows) == 0:
            raise StageError(f"Fold {f} of {step.name} has no row to train on ({len(kept)} rows in all); add web "
                             "texts or set refinement.cross_fit: false.")
        data = follower_training_set(rows, recipe.final.assistant_share, recipe.seed)
        out = fold_dir(step.path, f, folds)
        metrics = train_role(recipe, role, data, out)
        key = "" if folds == 1 else f"fold_{f}_"
        report.update({f"{key}rows": len(rows), f"{key}metrics": metrics, f"{key}model": str(out / MODEL)})
    return report


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


def build_pseudo_ratings(recipe: Recipe, seeds: Dataset, step: Step, engine: Engine | list[Engine],
                         base_fidelity: dict | None = None, base_relevance: dict | None = None) -> dict[str, Any]:
    """Three rated responses per seed pair (levels 3, 2, 1), training rows from the training split, held-out
    rows from the held-out split; see the module doc.

    ``engine`` serves the level-2 model (the follower, or the base model when ``level_sources[2]: base``); a list
    of engines, one per fold of a cross-fitted follower: a seed scored by fold ``f`` (its ``fold`` column, by its
    ``group``) gets its level 2 from the other fold's follower, so the model that scores a level-2 answer never wrote
    it. ``base_fidelity`` and ``base_relevance`` are the base model's figures, reported next to the follower's.

    Every level of a seed is cut to the same token count, one token shorter than the shortest of them (and at most
    ``response_tokens``), so no level ends where its text ended while the others are cut.
    """
    ref = recipe.refinement
    cfg = ref.pseudo_ratings
    sources = cfg.level_sources
    train = split_rows(seeds, "train")
    if cfg.seeds_per_language is not None:
        train = _limit_per_language(train, cfg.seeds_per_language, recipe.seed)
    heldout = split_rows(seeds, "heldout")
    seeds = concatenate_datasets([train, heldout]) if len(heldout) else train
    engines = engine if isinstance(engine, list) else [engine]
    folds = len(engines)
    groups = seeds["group"] if "group" in seeds.column_names else seeds["id"]
    seeds = seeds.add_column("fold", [fold_of(g, recipe.seed, folds) for g in groups])

    def answer(rows: Dataset, index: int) -> Dataset:
        responses = [""] * len(rows)
        for f in range(folds):  # rows scored by fold f are answered by the other fold's follower
            idx = [i for i, g in enumerate(rows["fold"]) if other_fold(g, folds) == f]
            if idx:
                out = answer_seed_instructions(recipe, rows.select(idx), engines[f], index)
                for i, text in zip(idx, out):
                    responses[i] = text
        return Dataset.from_dict({"id": rows["id"], "response": responses})

    level2 = step.map_shards(seeds, cfg.shard_size, answer, desc=f"level-2 answers ({sources[2]})")
    level2_by_id = dict(zip(level2["id"], level2["response"]))
    rows, lengths_before, skipped = _level_rows(recipe, seeds, groups, level2_by_id)
    pseudo = Dataset.from_list(rows)
    step.save(pseudo)
    splits = Counter(pseudo["split"])
    held_answers = [level2_by_id[i] for i in heldout["id"]]
    step.save(heldout.add_column("answer", held_answers), "heldout")
    return {"rows_in": len(seeds), "rows_out": len(pseudo),
            "seed_pairs_per_language": dict(Counter(seeds["language"])),
            "level_sources": {str(k): v for k, v in sources.items()}, "train_rows": splits["train"],
            "heldout_rows": splits["heldout"], "skipped": dict(skipped),
            **_length_figures(rows, lengths_before),
            **({f"level2_{k}": v for k, v in answer_figures(recipe, heldout, held_answers).items()}
               if len(heldout) else {}),
            "base_fidelity": base_fidelity, "base_relevance": base_relevance, **engines[0].report()}


def _level_rows(recipe: Recipe, seeds: Dataset, groups: list, level2_by_id: dict[str, str]
                ) -> tuple[list[dict[str, Any]], dict[int, list[int]], Counter]:
    """The three rated rows of every seed (level 3: its response, 2: the level-2 answer, 1: its partner's
    response), every level cut to the same token count; the token counts before the cut, and the seeds whose level-2
    answer was empty (their level 2 is skipped, counted)."""
    ref = recipe.refinement
    sources = ref.pseudo_ratings.level_sources
    partner = _level1_partner(seeds, sources[1], recipe.seed)
    fitter = fitter_for(recipe.model_for(ref.evaluator))
    langs = [get_language(code).name for code in seeds["language"]]
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
        shortest = min(fitter.length(text) for _, text, _ in candidates)
        cut = fitter.same_length([text for _, text, _ in candidates],  # every level alike, every level cut
                                 max(1, min(ref.response_tokens, shortest - 1)))
        for (level, text, source), response in zip(candidates, cut):
            lengths_before[level].append(fitter.length(text))
            rows.append({"id": f"{sid}#{level}", "seed_id": sid, "group": groups[n], "fold": seed_row["fold"],
                         "language": seed_row["language"],
                         "language_name": langs[n], "instruction": seed_row["instruction"], "response": response,
                         "response_tokens": fitter.length(response),
                         "level": level, "source": source, "split": seed_row["split"]})
    return rows, lengths_before, skipped


def _length_figures(rows: list[dict[str, Any]], lengths_before: dict[int, list[int]]) -> dict[str, Any]:
    """Mean response tokens per level before and after the cut, and the share of each level that ends naturally."""
    mean = lambda xs: round(sum(xs) / len(xs), 1) if xs else None  # noqa: E731
    return {
        "response_tokens_before_cut": {str(k): mean(v) for k, v in sorted(lengths_before.items())},
        "response_tokens": {str(lv): mean([r["response_tokens"] for r in rows if r["level"] == lv])
                            for lv in (1, 2, 3)},
        "ends_naturally": {str(lv): round(sum(ends_naturally(r["response"]) for r in rows if r["level"] == lv)
                                          / max(1, sum(r["level"] == lv for r in rows)), 4) for lv in (1, 2, 3)},
    }


# ------------------------------------------------------------------------------------------------
# the steps, and the estimate of their work (xinstruct plan)
# ------------------------------------------------------------------------------------------------


def _swaps_per_candidate(ref: RefinementConfig) -> float:
    """Swapped copies per candidate: an easy one for ``planted_share`` of them, a hard one too with ``hard_swaps``."""
    return ref.planted_share * (2 if ref.hard_swaps else 1)


def _swaps_cost(est: Estimate) -> Work:
    """The base model scores every real and swapped pair, and each response once more with the generic instruction
    (a candidate and its swapped copies share it)."""
    candidates = est.rows_out(CANDIDATES)
    pairs = candidates * (1 + _swaps_per_candidate(est.recipe.refinement))
    return Work(candidates, pairs, score=(pairs + candidates) * est.rating_row, loads=1)


def _pseudo_ratings_cost(est: Estimate) -> Work:
    """An answer to every seed instruction used (the training pairs up to ``seeds_per_language``, and the held-out
    ones); three levels per seed."""
    ref = est.recipe.refinement
    seeds = (min(est.train_seeds, ref.pseudo_ratings.seeds_per_language or est.train_seeds) + est.heldout) * est.langs
    from_follower = ref.pseudo_ratings.level_sources[2] == "follower"  # one engine per fold, or the base model's
    return Work(seeds, 3 * seeds, generate=seeds * ref.response_tokens,
                score=seeds * (FRAME_TOKENS + INSTRUCTION_TOKENS), loads=ref.folds if from_follower else 1)


def _rating_costs(recipe: Recipe, k: int) -> dict[str, Callable[[Estimate], Work]]:
    """The estimates of :func:`.rating.rating_steps` of iteration ``k``. The evaluator trains on the training
    pseudo-ratings (a likelihood head trains no weights) and scores all of them (twice with likelihood features: with
    the instruction and with the generic one), plus the base model's two passes on the test half of the held-out ones;
    the ratings score every pair of the pool (and each response once generically); ``keep_rate`` of the pool stays."""
    ref = recipe.refinement
    pseudo, ratings = iteration_step(k, PSEUDO_RATINGS), iteration_step(k, RATINGS)
    pool = iteration_step(k - 1, KEPT) if k > 1 and ref.rate == "kept" else CANDIDATES
    likelihood = ref.evaluator_kind == "likelihood"

    def evaluator(est: Estimate) -> Work:
        seeds, held = est.rows_in(pseudo), est.heldout_rows
        rows = 3 * (seeds - held)
        tokens = 0 if likelihood else est.train_tokens(ref.evaluator, rows, est.rating_row)
        base_test = 2 * (3 * held / 2)  # the base model's two passes on the test half of the held-out ratings
        passes = 2 if likelihood else 1
        return Work(rows, rows, train=tokens, score=(passes * 3 * seeds + base_test) * est.rating_row,
                    role=ref.evaluator, loads=ref.folds + 1 if likelihood else 2, trainings=0 if likelihood else 1)

    def rate(est: Estimate) -> Work:
        rows = est.rows_out(pool)
        rated = rows * (1 + _swaps_per_candidate(ref))
        return Work(rows, rows, score=(rated + (rows if likelihood else 0)) * est.rating_row,
                    loads=ref.folds if likelihood else 1)

    def keep(est: Estimate) -> Work:
        return Work(est.rows_out(ratings), est.rows_out(ratings) * est.rates["keep_rate"])

    return {iteration_step(k, EVALUATOR): evaluator, ratings: rate, iteration_step(k, KEPT): keep}


def iteration_steps(recipe: Recipe, k: int) -> list[StepSpec]:
    """The five steps of refinement iteration ``k``: follower and pseudo-ratings here, then
    :func:`.rating.rating_steps` (with their estimates, :func:`_rating_costs`)."""
    ref = recipe.refinement
    follower = iteration_step(k, FOLLOWER)
    trained_on = CANDIDATES if k == 1 else iteration_step(k - 1, KEPT)
    from_follower = ref.pseudo_ratings.level_sources[2] == "follower"  # level 2: the follower's answers, or the base's
    answerer = ref.follower if from_follower else None

    def pseudo_ratings(ctx: StepContext) -> dict[str, Any]:
        if from_follower:
            engines = [ctx.engine(answerer, str(fold_dir(ctx.steps[follower].path, f, ref.folds) / MODEL))
                       for f in range(ref.folds)]
        else:
            engines = [ctx.engine(None, ctx.recipe.base_model)] * ref.folds
        baseline = ctx.manifest(BASELINE)
        return build_pseudo_ratings(ctx.recipe, ctx.load(SEED), ctx.step, engines, baseline.get("fidelity"),
                                    baseline.get("relevance"))

    def follower_cost(est: Estimate) -> Work:  # cross-fitted: one follower per fold, each on its share of the rows
        rows = est.rows_out(trained_on)
        return Work(rows, rows, train=ref.folds * est.train_tokens(ref.follower, rows / ref.folds, est.follower_row),
                    role=ref.follower, trainings=ref.folds)

    rating_costs = _rating_costs(recipe, k)
    return [
        StepSpec(follower, "refinement", (trained_on,),
                 {**role_settings(recipe, ref.follower), "assistant_share": recipe.final.assistant_share,
                  "folds": ref.folds, "seed": recipe.seed},
                 lambda ctx: train_follower(ctx.recipe, ctx.load(trained_on), ctx.step), cost=follower_cost),
        StepSpec(iteration_step(k, PSEUDO_RATINGS), "refinement", (SEED, follower) if from_follower else (SEED,),
                 {"pseudo_ratings": dataclasses.asdict(ref.pseudo_ratings), "seed": recipe.seed,
                  "response_tokens": ref.response_tokens, "evaluator_model": recipe.model_for(ref.evaluator),
                  "base_model": None if from_follower else recipe.base_model,
                  "engine": engine_settings(recipe, answerer)},
                 pseudo_ratings, cost=_pseudo_ratings_cost),
        *(dataclasses.replace(spec, cost=spec.cost or rating_costs.get(spec.name))
          for spec in rating_steps(recipe, k)),
    ]


def steps(recipe: Recipe) -> list[StepSpec]:
    """The refinement stage: the swapped pairs of the candidates (once), then K iterations."""
    ref = recipe.refinement
    swaps = StepSpec(SWAPS, "refinement", (CANDIDATES,),
                     {"planted_share": ref.planted_share, "hard_swaps": ref.hard_swaps, "folds": ref.folds,
                      "seed": recipe.seed, "response_tokens": ref.response_tokens, "base_model": recipe.base_model,
                      "embedder": recipe.diversification.embedder, "engine": engine_settings(recipe, None)},
                     lambda ctx: build_swaps(ctx.recipe, ctx.load(CANDIDATES), ctx.step,
                                             ctx.engine(None, ctx.recipe.base_model)), cost=_swaps_cost)
    return [swaps, *(spec for k in range(1, ref.iterations + 1) for spec in iteration_steps(recipe, k))]
