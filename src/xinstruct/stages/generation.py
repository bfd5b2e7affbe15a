"""Stage 1, X-Instruction generation.

1. ``seed``: read the seed pairs (English instruction, target-language response) and split off the held-out
   pairs of every language first (``split`` column). Held-out pairs never reach any role's training set.
2. ``baseline``: the untrained base model on the held-out pairs, the reference of every quality figure: the
   English instruction it writes with the GENERATOR prompt, and its answer to the English instruction with
   the FOLLOWER prompt (language fidelity).
3. ``webtext``: read and filter native web texts.
4. ``generator``: SFT the base model on the training seed pairs, text -> English instruction (GENERATOR
   template), then the same held-out measurement as the baseline.
5. ``candidates``: the generator writes an English instruction for every web text; a gate drops (and
   counts) empty, too short or non-English instructions. Written in shards, so a killed run resumes
   at the last finished shard with no row lost or repeated.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from typing import Any

from datasets import Dataset

from ..budget import PromptFitter, load_tokenizer
from ..config import Recipe
from ..data.filters import FilterReport, FilterRunner, candidate_filters
from ..data.seeds import load_seeds
from ..data.split import split_seeds, unit_hash  # noqa: F401 (unit_hash: re-exported for the later stages)
from ..data.webtext import load_webtext
from ..errors import StageError
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import follower_prompt, generator_prompt
from ..quality import fidelity_figures, generator_figures, relevance_figures
from ..rundir import BASELINE, CANDIDATES, GENERATOR, SEED, WEBTEXT, Step
from ..steps import (
    FRAME_TOKENS,
    INSTRUCTION_TOKENS,
    Estimate,
    InputHash,
    StepContext,
    StepSpec,
    Work,
    engine_settings,
    measured_settings,
)
from ..training import role_settings, train_role

logger = logging.getLogger(__name__)

_SECTION = re.compile(r"\n?\s*###")


def heldout_split(seeds: Dataset, fraction: float, minimum: int, seed: int) -> list[str]:
    """``train`` or ``heldout`` per seed pair, by group (:func:`xinstruct.data.split.split_seeds`): pairs sharing a
    normalised English instruction (in any language) or a seed-build ``group`` are on one side. In each language
    about ``max(minimum, ceil(fraction * n))`` pairs are held out (a few more when groups span languages); at least 2
    pairs per language stay for training (level 1 needs a partner)."""
    return split_seeds(seeds, fraction, minimum, seed).split


def build_seed(recipe: Recipe, step: Step) -> dict[str, Any]:
    """Load the seed pairs of every recipe language into ``step`` with their ``split`` (train / heldout) and
    ``group`` (the cross-language group key: a group is wholly on one side of the split)."""
    cfg = recipe.data.seeds
    seeds, report = load_seeds(cfg, recipe.languages, recipe.seed)
    if report["languages_without_seeds"]:
        raise StageError(
            f"No seed pairs for {', '.join(report['languages_without_seeds'])} in {cfg.path!r}. Every "
            "language needs seed pairs: they train the generator and anchor the evaluator's pseudo-ratings. Add "
            "them (or build them with `xinstruct seed-build`), or remove the language from `languages`."
        )
    if len(set(seeds["id"])) != len(seeds):
        seeds = seeds.map(lambda r: {"id": f"{r['language']}:{r['id']}"})  # ids reused across languages
    result = split_seeds(seeds, cfg.heldout_fraction, cfg.heldout_min_per_language, recipe.seed)
    if "group" in seeds.column_names:
        seeds = seeds.remove_columns("group")
    seeds = seeds.add_column("split", result.split).add_column("group", result.group)
    step.save(seeds)
    held = Counter(c for c, s in zip(seeds["language"], result.split) if s == "heldout")
    return {**report, "heldout_rows": sum(held.values()), "heldout_per_language": dict(sorted(held.items())),
            "heldout_groups": result.heldout_groups(), "shared_instruction_groups": result.shared_groups()}


def split_rows(seeds: Dataset, split: str) -> Dataset:
    """The seed pairs of one split (``train`` or ``heldout``)."""
    return seeds.filter(lambda s: s == split, input_columns="split")


def fitter_for(model: str) -> PromptFitter:
    """A :class:`PromptFitter` with ``model``'s tokenizer."""
    return PromptFitter(load_tokenizer(model))


def fit_generator_prompts(fitter: PromptFitter, texts: list[str], budget: int | None) -> tuple[list[str], int]:
    """GENERATOR prompts with each text cut to ``budget`` tokens (the frame is never cut); and how many were cut."""
    fitted = [fitter.fit(generator_prompt, t, None, budget) for t in texts]
    return [f.prompt for f in fitted], sum(f.cut for f in fitted)


def held_out_outputs(recipe: Recipe, heldout: Dataset, engine: Engine, fitter: PromptFitter,
                     generate_instructions: bool = True, answer: bool = True) -> dict[str, list[str]]:
    """What a model writes for the held-out seed pairs: an English instruction for each response (GENERATOR
    prompt, candidate decoding) and an answer to each English instruction (FOLLOWER prompt, level-2 decoding)."""
    out: dict[str, list[str]] = {}
    if generate_instructions:
        prompts, _ = fit_generator_prompts(fitter, heldout["output"], recipe.candidates.text_tokens)
        texts = engine.generate(prompts, recipe.candidates.decoding.with_seed(recipe.seed))
        out["instruction"] = [clean_instruction(t) for t in texts]
    if answer:
        out["answer"] = answer_seed_instructions(recipe, heldout, engine)
    return out


def answer_seed_instructions(recipe: Recipe, seeds: Dataset, engine: Engine, index: int = 0) -> list[str]:
    """Answers to the seed pairs' English instructions (FOLLOWER prompt): level 2, and every fidelity figure.
    Decoding: ``refinement.pseudo_ratings.decoding`` with ``refinement.response_tokens`` new tokens at most, so
    every model is measured the same way and level 2 is never longer than the budget of the other levels."""
    ref = recipe.refinement
    params = ref.pseudo_ratings.decoding.with_seed(recipe.seed + index)
    params = dataclasses.replace(params, max_new_tokens=ref.response_tokens,
                                 min_new_tokens=min(params.min_new_tokens, ref.response_tokens))
    names = [get_language(c).name for c in seeds["language"]]
    return engine.generate([follower_prompt(i, n) for i, n in zip(seeds["instruction"], names)], params)


def test_half(rows: Dataset, seed: int) -> list[bool]:
    """Which held-out rows grade (True) and which calibrate (False): halves by seed group, so twins stay together.
    Thresholds are chosen on the calibration half; every reported figure comes from the test half."""
    from ..data.split import calibration_half

    groups = rows["group"] if "group" in rows.column_names else rows["id"]
    return [not c for c in calibration_half(list(groups), seed)]


def answer_figures(recipe: Recipe, heldout: Dataset, answers: list[str]) -> dict[str, Any]:
    """Language fidelity and relevance of answers to the held-out English instructions, on the test half: relevance
    ranks each answer's own gold response among all the language's held-out gold responses by chrF."""
    test = [i for i, t in enumerate(test_half(heldout, recipe.seed)) if t]
    languages = heldout["language"]
    return {"fidelity": fidelity_figures([answers[i] for i in test], [languages[i] for i in test]),
            "relevance": relevance_figures([answers[i] for i in test], test, heldout["output"], languages)}


def measure_baseline(recipe: Recipe, seeds: Dataset, step: Step, engine: Engine) -> dict[str, Any]:
    """The untrained base model on the held-out seed pairs: generator figures and language fidelity."""
    heldout = split_rows(seeds, "heldout")
    outputs = held_out_outputs(recipe, heldout, engine, fitter_for(recipe.base_model))
    step.save(heldout.add_column("generated_instruction", outputs["instruction"])
              .add_column("answer", outputs["answer"]))
    embed = instruction_embedder(recipe)
    return {
        "rows_in": len(heldout),
        "generator": generator_figures(outputs["instruction"], heldout["instruction"], embed),
        **answer_figures(recipe, heldout, outputs["answer"]),
        **engine.report(),
    }


def instruction_embedder(recipe: Recipe):
    """``embed(texts) -> unit vectors`` with the diversification embedder (cached by content)."""
    from .diversification import EmbeddingCache

    cache = EmbeddingCache(recipe.diversification.embedder, recipe.diversification.batch_size)
    return lambda texts: cache.embed(texts)[0]


def build_webtext(recipe: Recipe, step: Step, seeds: Dataset | None = None) -> dict[str, Any]:
    """Load and filter the web texts into ``step`` (kept in ``data``, dropped with reasons in ``dropped``). A web
    text that equals or nearly duplicates a response of ``seeds`` (train or held out) is dropped as
    ``seed_duplicate``."""
    seed_texts = list(seeds["output"]) if seeds is not None else []
    kept, dropped, report = load_webtext(recipe.data, recipe.languages, recipe.seed, seed_texts)
    step.save(kept)
    step.save(dropped, "dropped")
    if len(kept) == 0:
        raise StageError(
            f"Every web text was filtered out ({report['skipped']}); loosen data.filters or check data.webtext."
        )
    return report


def generator_training_set(seeds: Dataset, fitter: PromptFitter, text_tokens: int | None) -> tuple[Dataset, int]:
    """Training seed pairs as generator examples: prompt = GENERATOR template over the response (cut to
    ``text_tokens``, as in candidate generation), completion = the English instruction. Also returns the number
    of responses cut."""
    prompts, cut = fit_generator_prompts(fitter, seeds["output"], text_tokens)
    return Dataset.from_dict({"prompt": prompts, "completion": seeds["instruction"]}), cut


def train_generator(recipe: Recipe, seeds: Dataset, step: Step, make_engine,
                    baseline: dict[str, Any]) -> dict[str, Any]:
    """SFT the generator on the training seed pairs (``step/model``), then measure it on the held-out pairs
    next to the base model's figures (``baseline``, the manifest of the baseline step)."""
    role = recipe.generator
    train = split_rows(seeds, "train")
    data, cut = generator_training_set(train, fitter_for(recipe.model_for(role)), recipe.candidates.text_tokens)
    metrics = train_role(recipe, role, data, step.path)
    heldout = split_rows(seeds, "heldout")
    model = str(step.model_path)
    engine = make_engine(model)
    outputs = held_out_outputs(recipe, heldout, engine, fitter_for(model), answer=False)
    step.save(heldout.add_column("generated_instruction", outputs["instruction"]), "heldout")
    embed = instruction_embedder(recipe)
    return {
        "rows_in": len(train),
        "texts_cut": cut,
        "metrics": metrics,
        "model": model,
        "heldout": generator_figures(outputs["instruction"], heldout["instruction"], embed),
        "heldout_base": baseline.get("generator"),
        **engine.report(),
    }


def clean_instruction(text: str) -> str:
    """Cut a generated instruction at the next ``###`` section and trim it."""
    return _SECTION.split(text, maxsplit=1)[0].strip()


def generate_candidates(recipe: Recipe, webtext: Dataset, generator: str, step: Step, engine: Engine
                        ) -> dict[str, Any]:
    """Write an English instruction for every web text, shard by shard, then gate the results.

    Args:
        webtext: filtered web texts (``id, language, text, source``).
        generator: path of the trained generator (in the manifest; rows carry its base model and step hash).
        engine: engine serving the generator.
    """
    cfg = recipe.candidates
    fitter = fitter_for(generator)

    def shard(rows: Dataset, index: int) -> Dataset:
        prompts, _ = fit_generator_prompts(fitter, rows["text"], cfg.text_tokens)
        texts = engine.generate(prompts, cfg.decoding.with_seed(recipe.seed + index))
        return Dataset.from_dict(
            {
                "id": rows["id"],
                "language": rows["language"],
                "instruction": [clean_instruction(t) for t in texts],
                "output": rows["text"],
                "source": rows["source"],
                "generator_base": [recipe.model_for(recipe.generator)] * len(rows),
                "generator_step": [step.settings.get("generator_hash", "")] * len(rows),
            }
        )

    raw = step.map_shards(webtext, cfg.shard_size, shard, desc="candidates")
    kept, dropped, report = gate_candidates(raw, cfg.min_instruction_chars, cfg.english_min_confidence, cfg.lid)
    step.save(dropped, "dropped")
    if len(kept) == 0:
        raise StageError(
            f"The gate dropped every candidate ({dict(report.reasons())}); see {step.path / 'dropped'}. Lower "
            "candidates.english_min_confidence or min_instruction_chars, or train the generator longer."
        )
    step.save(kept)
    return {
        **report.as_dict(sort_reasons=False, per_language_skips=False),
        "texts_cut_to_text_tokens": fit_generator_prompts(fitter, webtext["text"], cfg.text_tokens)[1],
        "generator": generator,
        **engine.report(),
    }


def gate_candidates(rows: Dataset, min_chars: int, english_min_confidence: float, lid_check: bool = True
                    ) -> tuple[Dataset, Dataset, FilterReport]:
    """Drop empty, too short and non-English instructions; return (kept, dropped with reason, counts).

    The filters are :func:`xinstruct.data.filters.candidate_filters`. Every row gets ``english_confidence`` (0.0
    when not checked); dropped rows also ``reason`` and ``detected``. Counts are per row language.

    An instruction is English when English is the detector's most likely language and its confidence is
    at least ``english_min_confidence`` (lingua's confidences are relative over 75 languages, so a short,
    clearly English sentence may score only 0.2: the top-language test is what separates).
    """
    runner = FilterRunner(candidate_filters(min_chars, english_min_confidence, lid_check))
    if len(rows) == 0:
        return rows, rows, runner.report
    columns = [c for c in ("instruction", "language") if c in rows.column_names]
    result = runner.run(rows.select_columns(columns).to_list())
    reasons = [r or "" for r in result.reasons]
    confidences = [f.get("english_confidence", 0.0) for f in result.fields]
    detected = [f.get("detected") for f in result.fields]
    rows = rows.add_column("english_confidence", confidences).add_column("reason", reasons)
    rows = rows.add_column("detected", detected)
    kept = rows.filter(lambda r: r == "", input_columns="reason").remove_columns(["reason", "detected"])
    dropped = rows.filter(lambda r: r != "", input_columns="reason")
    return kept, dropped, runner.report


# ------------------------------------------------------------------------------------------------
# the steps, and the estimate of their work (xinstruct plan)
# ------------------------------------------------------------------------------------------------


def _webtext_cost(est: Estimate) -> Work:
    """The web texts read; the filters keep ``webtext_kept`` of them."""
    texts = (est.webtexts or 0) * est.langs
    return Work(texts, texts * est.rates["webtext_kept"])


def _baseline_cost(est: Estimate) -> Work:
    """The base model writes an instruction and an answer for every held-out pair, and scores them."""
    held, answer = est.heldout_rows, est.recipe.refinement.response_tokens
    return Work(held, held, generate=held * (est.recipe.candidates.decoding.max_new_tokens + answer),
                score=held * (2 * FRAME_TOKENS + est.text + INSTRUCTION_TOKENS), loads=1)


def _generator_cost(est: Estimate) -> Work:
    """SFT on the training seed pairs, then an instruction for every held-out text."""
    rows, held, recipe = est.train_seeds * est.langs, est.heldout_rows, est.recipe
    return Work(rows, rows, train=est.train_tokens(recipe.generator, rows, est.generator_row), role=recipe.generator,
                generate=held * recipe.candidates.decoding.max_new_tokens, score=held * est.generator_row, loads=1,
                trainings=1)


def _candidates_cost(est: Estimate) -> Work:
    """An instruction for every kept web text; the gate keeps ``gate_kept`` of them."""
    texts = est.rows_out(WEBTEXT)
    return Work(texts, texts * est.rates["gate_kept"], generate=texts * est.recipe.candidates.decoding.max_new_tokens,
                score=texts * (FRAME_TOKENS + est.text), loads=1)


def steps(recipe: Recipe) -> list[StepSpec]:
    """The generation stage: seed, webtext, baseline, generator, candidates."""
    data, generator = recipe.data, recipe.generator
    measured = measured_settings(recipe)
    webtext = {k: v for k, v in dataclasses.asdict(data.webtext).items() if k != "streaming"}

    def candidates(ctx: StepContext) -> dict[str, Any]:
        model = ctx.model(GENERATOR)
        return generate_candidates(ctx.recipe, ctx.load(WEBTEXT), model, ctx.step, ctx.engine(generator, model))

    return [
        StepSpec(SEED, "generation", (),
                 {"seeds": dataclasses.asdict(data.seeds), "languages": recipe.languages, "seed": recipe.seed},
                 lambda ctx: build_seed(ctx.recipe, ctx.step),
                 cost=lambda est: Work(est.seeds * est.langs, est.seeds * est.langs)),
        StepSpec(WEBTEXT, "generation", (SEED,),
                 {"webtext": webtext, "filters": dataclasses.asdict(data.filters), "languages": recipe.languages,
                  "seed": recipe.seed if data.webtext.shuffle_buffer else None},
                 lambda ctx: build_webtext(ctx.recipe, ctx.step, ctx.load(SEED)), cost=_webtext_cost),
        StepSpec(BASELINE, "generation", (SEED,),
                 {**measured, "base_model": recipe.base_model, "engine": engine_settings(recipe, None)},
                 lambda ctx: measure_baseline(ctx.recipe, ctx.load(SEED), ctx.step,
                                              ctx.engine(None, ctx.recipe.base_model)), cost=_baseline_cost),
        StepSpec(GENERATOR, "generation", (SEED, BASELINE),
                 {**role_settings(recipe, generator), **measured, "engine": engine_settings(recipe, generator)},
                 lambda ctx: train_generator(ctx.recipe, ctx.load(SEED), ctx.step, ctx.engines(generator),
                                             ctx.manifest(BASELINE)), cost=_generator_cost),
        StepSpec(CANDIDATES, "generation", (WEBTEXT, GENERATOR),
                 {"candidates": dataclasses.asdict(recipe.candidates), "seed": recipe.seed,
                  "generator_hash": InputHash(GENERATOR), "engine": engine_settings(recipe, generator)},
                 candidates, cost=_candidates_cost),
    ]
