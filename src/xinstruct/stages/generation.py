"""Stage 1, X-Instruction generation.

1. ``seed``: read the seed pairs (English instruction, target-language response).
2. ``webtext``: read and filter native web texts.
3. ``generator``: SFT the base model on the seed, text -> English instruction (GENERATOR template).
4. ``candidates``: the generator writes an English instruction for every web text; a gate drops (and
   counts) empty, too short or non-English instructions. Written in shards, so a killed run resumes
   at the last finished shard with no row lost or repeated.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

from datasets import Dataset

from ..config import DecodingConfig, Recipe
from ..data import lid
from ..data.seeds import load_seeds
from ..data.webtext import load_webtext
from ..inference import Engine, GenerationParams
from ..prompts import generator_example, generator_prompt
from ..rundir import Step
from ..training import run_training

logger = logging.getLogger(__name__)

_SECTION = re.compile(r"\n?\s*###")


class StageError(RuntimeError):
    """A stage cannot go on with the data it has; the message says what to change."""


def build_seed(recipe: Recipe, step: Step) -> dict[str, Any]:
    """Load the seed pairs of every recipe language into ``step``."""
    seeds, report = load_seeds(recipe.data.seeds, recipe.languages)
    if report["languages_without_seeds"]:
        raise StageError(
            f"No seed pairs for {', '.join(report['languages_without_seeds'])} in {recipe.data.seeds.path!r}. Every "
            "language needs seed pairs: they train the generator and anchor the evaluator's pseudo-ratings. Add "
            "them (or build them with `xinstruct seed-build`), or remove the language from `languages`."
        )
    step.save(seeds)
    return report


def build_webtext(recipe: Recipe, step: Step) -> dict[str, Any]:
    """Load and filter the web texts into ``step`` (kept in ``data``, dropped with reasons in ``dropped``)."""
    kept, dropped, report = load_webtext(recipe.data, recipe.languages)
    step.save(kept)
    step.save(dropped, "dropped")
    if len(kept) == 0:
        raise StageError(
            f"Every web text was filtered out ({report['skipped']}); loosen data.filters or check data.webtext."
        )
    return report


def generator_training_set(seeds: Dataset) -> Dataset:
    """Seed pairs as generator examples: prompt = GENERATOR template over the response, completion = instruction."""
    return seeds.map(
        lambda r: generator_example(r["instruction"], r["output"]), remove_columns=seeds.column_names
    )


def train_generator(recipe: Recipe, seeds: Dataset, step: Step) -> dict[str, Any]:
    """SFT the generator on the seed pairs; the model is saved in ``step/model``."""
    role = recipe.generator
    metrics = run_training(
        recipe.launcher, recipe.model_for(role), generator_training_set(seeds), step.path, role.training, role.lora, recipe.seed
    )
    return {"rows_in": len(seeds), "metrics": metrics, "model": str(step.path / "model")}


def decoding_params(dec: DecodingConfig, seed: int) -> GenerationParams:
    """Engine parameters from a recipe's ``decoding`` block, with the seed of one shard."""
    return GenerationParams(
        max_new_tokens=dec.max_new_tokens,
        min_new_tokens=dec.min_new_tokens,
        do_sample=dec.do_sample,
        temperature=dec.temperature,
        top_p=dec.top_p,
        repetition_penalty=dec.repetition_penalty,
        seed=seed,
    )


def clean_instruction(text: str) -> str:
    """Cut a generated instruction at the next ``###`` section and trim it."""
    return _SECTION.split(text, maxsplit=1)[0].strip()


def generate_candidates(recipe: Recipe, webtext: Dataset, generator: str, step: Step, engine: Engine) -> dict[str, Any]:
    """Write an English instruction for every web text, shard by shard, then gate the results.

    Args:
        webtext: filtered web texts (``id, language, text, source``).
        generator: path of the trained generator (in the manifest; rows carry its base model and step hash).
        engine: engine serving the generator.
    """
    cfg = recipe.candidates

    def shard(rows: Dataset, index: int) -> Dataset:
        texts = engine.generate([generator_prompt(t) for t in rows["text"]], decoding_params(cfg.decoding, recipe.seed + index))
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
    kept, dropped, skipped = gate_candidates(raw, cfg.min_instruction_chars, cfg.english_min_confidence)
    step.save(dropped, "dropped")
    if len(kept) == 0:
        raise StageError(
            f"The gate dropped every candidate ({dict(skipped)}); see {step.path / 'dropped'}. Lower "
            "candidates.english_min_confidence or min_instruction_chars, or train the generator longer."
        )
    step.save(kept)
    per_lang_in = Counter(raw["language"]) if len(raw) else Counter()
    per_lang_out = Counter(kept["language"]) if len(kept) else Counter()
    return {
        "rows_in": len(raw),
        "rows_out": len(kept),
        "rows_in_per_language": dict(per_lang_in),
        "rows_out_per_language": dict(per_lang_out),
        "skipped": dict(skipped),
        "generator": generator,
        **engine.report(),
    }


def gate_candidates(rows: Dataset, min_chars: int, english_min_confidence: float) -> tuple[Dataset, Dataset, Counter]:
    """Drop empty, too short and non-English instructions; return (kept, dropped with reason, counts).

    An instruction is English when English is the detector's most likely language and its confidence is
    at least ``english_min_confidence`` (lingua's confidences are relative over 75 languages, so a short,
    clearly English sentence may score only 0.2: the top-language test is what separates).
    """
    if len(rows) == 0:
        return rows, rows, Counter()
    instructions = rows["instruction"]
    checkable = [i for i, t in enumerate(instructions) if len(t) >= min_chars]
    detections = dict(zip(checkable, lid.detect([instructions[i] for i in checkable], "en")))
    reasons, confidences, detected = [], [], []
    for i, text in enumerate(instructions):
        d = detections.get(i)
        confidences.append(d.confidence if d else 0.0)
        detected.append(d.detected if d else None)
        if not text:
            reasons.append("empty_instruction")
        elif len(text) < min_chars:
            reasons.append("too_short_instruction")
        elif d.detected != "en" or d.confidence < english_min_confidence:
            reasons.append("non_english_instruction")
        else:
            reasons.append("")
    rows = rows.add_column("english_confidence", confidences).add_column("reason", reasons).add_column("detected", detected)
    kept = rows.filter(lambda r: r == "", input_columns="reason").remove_columns(["reason", "detected"])
    dropped = rows.filter(lambda r: r != "", input_columns="reason")
    return kept, dropped, Counter(r for r in reasons if r)
