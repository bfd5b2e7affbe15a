"""Answers of a model to a question set, cross-lingual (the English question + "Answer in {Language}.", the
FOLLOWER template) and zero-shot (the question in the target language, the same frame without that
clause). Written in the authors' answer format (``question_id``, ``category``, ``output``) plus what was asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import languages
from ..data.readers import read_jsonl
from ..inference import Engine, GenerationParams
from ..prompts import follower_prompt, zero_shot_prompt

MODES = ("cross-lingual", "zero-shot")


def answer_prompt(mode: str, question: dict[str, Any], language: str) -> str:
    """The prompt a model gets for ``question`` (a :func:`paired_questions` row) in ``mode``."""
    if mode == "cross-lingual":
        return follower_prompt(question["english"], languages.get(language).name)
    if mode == "zero-shot":
        return zero_shot_prompt(question["text"])
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def generate_answers(engine: Engine, questions: list[dict[str, Any]], language: str, mode: str, model: str,
                     params: GenerationParams, path: str | Path) -> list[dict[str, Any]]:
    """Answer every question (or read the answers already in ``path``, when complete) and write them to ``path``."""
    path = Path(path)
    ids = [q["question_id"] for q in questions]
    if path.exists():
        done = list(read_jsonl(path))
        if [a["question_id"] for a in done] == ids and all(a.get("model") == model for a in done):
            return done
    prompts = [answer_prompt(mode, q, language) for q in questions]
    outputs = engine.generate(prompts, params)
    rows = [{"question_id": q["question_id"], "category": q["category"], "language": language, "mode": mode,
             "model": model, "prompt": prompt, "output": output}
            for q, prompt, output in zip(questions, prompts, outputs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.rename(path)
    return rows
