"""Question sets in the authors' format: JSON Lines with ``question_id``, ``text``, ``category``, one file per
language (``en.jsonl``, ``sw.jsonl``, ...). The built-in set (``questions/``, written for this project) has 42
questions in five categories, in English and the ten paper languages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.readers import DataError, read_jsonl

BUILTIN = Path(__file__).parent / "questions"


def question_file(source: str | Path, language: str) -> Path:
    """The file of ``language`` in a question set folder (``builtin`` is the bundled set)."""
    folder = BUILTIN if str(source) == "builtin" else Path(source)
    path = folder / f"{language}.jsonl"
    if not path.exists():
        raise DataError(f"No questions for {language!r}: {path} does not exist "
                        f"(a question set is a folder of <code>.jsonl files).")
    return path


def load_questions(source: str | Path, language: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Questions of ``language`` (``question_id``, ``text``, ``category``), in file order; bad lines are errors
    that name the file and the question."""
    path = question_file(source, language)
    rows = []
    for n, row in enumerate(read_jsonl(path), 1):
        missing = {"question_id", "text"} - set(row)
        if missing or not str(row.get("text", "")).strip():
            raise DataError(f"{path}: question {n} needs question_id and a non-empty text "
                            f"(missing {sorted(missing)}).")
        rows.append({"question_id": row["question_id"], "text": row["text"],
                     "category": row.get("category", "generic")})
    return rows[:limit] if limit else rows


def paired_questions(source: str | Path, language: str, limit: int | None = None) -> list[dict[str, Any]]:
    """English and ``language`` versions of each question, matched by ``question_id``."""
    english = {q["question_id"]: q for q in load_questions(source, "en")}
    out = []
    for q in load_questions(source, language, limit):
        if q["question_id"] not in english:
            raise DataError(f"Question {q['question_id']} of {language} has no English version in {source}.")
        out.append({**q, "english": english[q["question_id"]]["text"]})
    return out
