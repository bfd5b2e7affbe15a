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
from ..prompts import mode_prompt


def answer_prompt(mode: str, question: dict[str, Any], language: str) -> str:
    """The prompt a model gets for ``question`` (a :func:`paired_questions` row) in ``mode``."""
    if mode == "zero-shot":  # the question written in the target language itself
        return mode_prompt(mode, question["text"], "")
    return mode_prompt(mode, question["english"], languages.get(language).name)


def generate_answers(engine: Engine, questions: list[dict[str, Any]], language: str, mode: str, model: str,
                     params: GenerationParams, path: str | Path) -> list[dict[str, Any]]:
    """Answer every question and write the answers to ``path``; answers already there are reused when they were
    made by the same model from the same prompts and decoding settings."""
    path = Path(path)
    prompts = [answer_prompt(mode, q, language) for q in questions]
    decoding = {"max_new_tokens": params.max_new_tokens, "do_sample": params.do_sample, "seed": params.seed}
    if path.exists():  # reused only when asked the same way: same model, prompts and decoding
        done = list(read_jsonl(path))
        if ([(a.get("model"), a.get("prompt"), a.get("decoding")) for a in done]
                == [(model, p, decoding) for p in prompts]):
            return done
    outputs = engine.generate(prompts, params)
    rows = [{"question_id": q["question_id"], "category": q["category"], "language": language, "mode": mode,
             "model": model, "decoding": decoding, "prompt": prompt, "output": output}
            for q, prompt, output in zip(questions, prompts, outputs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.rename(path)
    return rows
