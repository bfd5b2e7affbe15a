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
from typing import Any

from datasets import Dataset, concatenate_datasets

from ..config import Recipe
from ..errors import StageError
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import follower_example
from ..quality import fidelity_figures
from ..rundir import Step, iteration_step
from ..steps import StepContext, StepSpec, engine_settings
from ..training import role_settings, train_role
from .generation import answer_seed_instructions, fitter_for, split_rows, unit_hash
from .rating import rating_steps

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
    final model); the model goes to ``step/model``."""
    role = recipe.refinement.follower
    data = follower_training_set(kept, recipe.final.assistant_share, recipe.seed)
    metrics = train_role(recipe, role, data, step.path)
    return {"rows_in": len(kept), "metrics": metrics, "model": str(step.model_path)}


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
            rows.append({"id": f"{sid}#{level}", "seed_id": sid, "language": seed_row["language"],
                         "language_name": langs[n], "instruction": seed_row["instruction"], "response": response,
                         "response_tokens": fitter.length(response),
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
        "response_tokens": {str(lv): mean([r["response_tokens"] for r in rows if r["level"] == lv])
                            for lv in (1, 2, 3)},
        "level2_fidelity": fidelity_figures(held_answers, heldout["language"]) if len(heldout) else None,
        "base_fidelity": base_fidelity,
        **engine.report(),
    }


# ------------------------------------------------------------------------------------------------
# evaluator
# ------------------------------------------------------------------------------------------------


def iteration_steps(recipe: Recipe, k: int) -> list[StepSpec]:
    """The five steps of refinement iteration ``k``: follower and pseudo-ratings here, then
    :func:`.rating.rating_steps`."""
    ref = recipe.refinement
    follower = iteration_step(k, "follower")
    trained_on = "candidates" if k == 1 else iteration_step(k - 1, "kept")
    from_follower = ref.pseudo_ratings.level_sources[2] == "follower"  # level 2: the follower's answers, or the base's
    answerer = ref.follower if from_follower else None

    def pseudo_ratings(ctx: StepContext) -> dict[str, Any]:
        model = ctx.model(follower) if from_follower else ctx.recipe.base_model
        return build_pseudo_ratings(ctx.recipe, ctx.load("seed"), ctx.step, ctx.engine(answerer, model),
                                    ctx.manifest("baseline").get("fidelity"))

    return [
        StepSpec(follower, "refinement", (trained_on,),
                 {**role_settings(recipe, ref.follower), "assistant_share": recipe.final.assistant_share},
                 lambda ctx: train_follower(ctx.recipe, ctx.load(trained_on), ctx.step)),
        StepSpec(iteration_step(k, "pseudo_ratings"), "refinement", ("seed", follower) if from_follower else ("seed",),
                 {"pseudo_ratings": dataclasses.asdict(ref.pseudo_ratings), "seed": recipe.seed,
                  "response_tokens": ref.response_tokens, "evaluator_model": recipe.model_for(ref.evaluator),
                  "base_model": None if from_follower else recipe.base_model,
                  "engine": engine_settings(recipe, answerer)},
                 pseudo_ratings),
        *rating_steps(recipe, k),
    ]
