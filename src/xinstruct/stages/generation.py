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
from tqdm.auto import tqdm

from ..config import Recipe
from ..data import lid
from ..data.seeds import load_seeds
from ..data.webtext import load_webtext
from ..inference import Engine, GenerationParams
from ..prompts import generator_example, generator_prompt
from ..rundir import Step
from ..training import train_sft

logger = logging.getLogger(__name__)

_SECTION = re.compile(r"\n?\s*###")


class StageError(RuntimeError):
    """A stage cannot go on with the data it has; the message says what to change."""


def build_seed(recipe: Recipe, step: Step) -> dict[str, Any]:
    """Load the seed pairs of every recipe language into ``step``."""
    seeds, report = load_seeds(recipe.data.seeds, recipe.languages)
    if len(seeds) == 0:
        raise StageError(f"No seed pairs found in {recipe.data.seeds.path!r} for {recipe.languages}.")
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
    metrics = train_sft(
        recipe.model_for(role), generator_training_set(seeds), step.path, role.training, role.lora, recipe.seed
    )
    return {"rows_in": len(seeds), "metrics": metrics, "model": str(step.path / "model")}


def clean_instruction(text: str) -> str:
    """Cut a generated instruction at the next ``###`` section and trim it."""
    return _SECTION.split(text, maxsplit=1)[0].strip()


def generate_candidates(recipe: Recipe, webtext: Dataset, generator: str, step: Step, engine: Engine) -> dict[str, Any]:
    """Write an English instruction for every web text, shard by shard, then gate the results.

    Args:
        webtext: filtered web texts (``id, language, text, source``).
        generator: path of the trained generator (recorded as provenance).
        engine: engine serving the generator.
    """
    cfg = recipe.candidates
    dec = cfg.decoding
    n_shards = (len(webtext) + cfg.shard_size - 1) // cfg.shard_size
    todo = [i for i in range(n_shards) if not step.has_shard(i)]
    if len(todo) < n_shards:
        logger.info("candidates: resuming, %d of %d shards already written", n_shards - len(todo), n_shards)
    bar = tqdm(total=len(webtext), initial=(n_shards - len(todo)) * cfg.shard_size, desc="candidates", unit="row")
    for i in todo:
        rows = webtext.select(range(i * cfg.shard_size, min((i + 1) * cfg.shard_size, len(webtext))))
        params = GenerationParams(
            max_new_tokens=dec.max_new_tokens,
            do_sample=dec.do_sample,
            temperature=dec.temperature,
            top_p=dec.top_p,
            repetition_penalty=dec.repetition_penalty,
            seed=recipe.seed + i,
        )
        texts = engine.generate([generator_prompt(t) for t in rows["text"]], params)
        shard = Dataset.from_dict(
            {
                "id": rows["id"],
                "language": rows["language"],
                "instruction": [clean_instruction(t) for t in texts],
                "output": rows["text"],
                "source": rows["source"],
                "generator": [generator] * len(rows),
                "generator_step": [step.settings.get("generator_hash", "")] * len(rows),
            }
        )
        step.write_shard(i, shard)
        bar.update(len(rows))
    bar.close()
    raw = step.read_shards(n_shards)
    kept, dropped, skipped = gate_candidates(raw, cfg.min_instruction_chars, cfg.english_min_confidence)
    step.save(kept)
    step.save(dropped, "dropped")
    per_lang_in = Counter(raw["language"]) if len(raw) else Counter()
    per_lang_out = Counter(kept["language"]) if len(kept) else Counter()
    return {
        "rows_in": len(raw),
        "rows_out": len(kept),
        "rows_in_per_language": dict(per_lang_in),
        "rows_out_per_language": dict(per_lang_out),
        "skipped": dict(skipped),
        "shards": n_shards,
        "generator": generator,
        "engine": engine.name,
        "engine_stats": getattr(engine, "stats", {}),
    }


def gate_candidates(rows: Dataset, min_chars: int, english_min_confidence: float) -> tuple[Dataset, Dataset, Counter]:
    """Drop empty, too short and non-English instructions; return (kept, dropped with reason, counts)."""
    if len(rows) == 0:
        return rows, rows, Counter()
    instructions = rows["instruction"]
    confidences = [1.0] * len(rows)
    if english_min_confidence > 0:
        checkable = [i for i, t in enumerate(instructions) if len(t) >= min_chars]
        for i, d in zip(checkable, lid.detect([instructions[i] for i in checkable], "en")):
            confidences[i] = d.confidence
    reasons = []
    for text, conf in zip(instructions, confidences):
        if not text:
            reasons.append("empty_instruction")
        elif len(text) < min_chars:
            reasons.append("too_short_instruction")
        elif conf < english_min_confidence:
            reasons.append("non_english_instruction")
        else:
            reasons.append("")
    rows = rows.add_column("english_confidence", confidences).add_column("reason", reasons)
    kept = rows.filter(lambda r: r == "", input_columns="reason").remove_columns("reason")
    dropped = rows.filter(lambda r: r != "", input_columns="reason")
    return kept, dropped, Counter(r for r in reasons if r)
