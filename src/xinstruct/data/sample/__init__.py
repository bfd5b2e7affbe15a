"""Bundled SAMPLE data, written for this project (not scraped): per language, web-style paragraphs
(``webtext/<code>.jsonl``) and seed pairs (``seeds/<code>.jsonl``). Enough to run the whole method
on a laptop; real runs read Hub datasets (CulturaX, FineWeb-2, ...) or local files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

SAMPLE_DIR = Path(__file__).parent


def sample_file(kind: str, code: str) -> Path:
    """Path of the bundled ``kind`` (``"webtext"`` or ``"seeds"``) file for language ``code``."""
    return SAMPLE_DIR / kind / f"{code}.jsonl"


def sample_texts() -> Iterator[str]:
    """Every text of the bundled sample (web texts, seed instructions and outputs); feeds the tiny tokenizer."""
    for kind in ("webtext", "seeds"):
        for path in sorted((SAMPLE_DIR / kind).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                for field in ("text", "instruction", "output"):
                    if row.get(field):
                        yield row[field]
