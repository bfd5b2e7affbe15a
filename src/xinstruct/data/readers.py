"""Readers shared by web texts and seed pairs: bundled sample, local files, Hub datasets.

Local files: ``.jsonl`` (one JSON object per line; a malformed line is an error naming file and line),
``.parquet``, ``.txt`` (paragraphs separated by blank lines). A folder holds one file per language
(``<code>.jsonl``, ``<code>.parquet``, ``<code>.txt``) or a ``<code>/`` sub-folder of such files; a single
file may hold every language in a ``language`` column.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..languages import Language
from .sample import sample_file

logger = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".parquet", ".txt")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSONL file; blank lines are skipped, a malformed line raises :class:`DataError`."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: malformed JSON line ({e.msg} at column {e.colno}).") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}.")
            yield row


def read_text_paragraphs(path: Path, field: str) -> Iterator[dict[str, Any]]:
    """Yield ``{field: paragraph}`` for each blank-line separated paragraph of a text file."""
    paragraph: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            yield {field: " ".join(paragraph)}
            paragraph = []


def read_file(path: Path, field: str) -> Iterator[dict[str, Any]]:
    """Rows of one local file, by suffix."""
    if path.suffix == ".jsonl":
        yield from read_jsonl(path)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif path.suffix == ".txt":
        yield from read_text_paragraphs(path, field)
    else:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}.")


def _local_rows(root: Path, lang: Language, field: str) -> Iterator[dict[str, Any]]:
    if root.is_file():
        for row in read_file(root, field):
            if row.get("language", lang.code) == lang.code:
                yield row
        return
    files = [root / f"{lang.code}{suffix}" for suffix in SUFFIXES if (root / f"{lang.code}{suffix}").exists()]
    sub = root / lang.code
    if sub.is_dir():
        files += sorted(p for p in sub.rglob("*") if p.suffix in SUFFIXES)
    if not files:
        logger.warning("%s: no file for language %s (looked for %s.{jsonl,parquet,txt} and %s/)", root, lang.code, lang.code, lang.code)
    for path in files:
        yield from read_file(path, field)


def _hub_rows(repo_id: str, config: str | None, split: str, lang: Language, streaming: bool) -> Iterator[dict[str, Any]]:
    from datasets import load_dataset

    name = config.format(**lang.format_fields()) if config else None
    ds = load_dataset(repo_id, name=name, split=split, streaming=streaming)
    for row in ds:
        if "language" in row and row["language"] not in (lang.code, None):
            continue
        yield row


def iter_rows(
    path: str,
    kind: str,
    lang: Language,
    field: str,
    config: str | None = None,
    split: str = "train",
    limit: int | None = None,
    streaming: bool = True,
) -> Iterator[dict[str, Any]]:
    """Rows for one language from ``sample`` (bundled ``kind`` = webtext|seeds), a local path or a Hub id."""
    if path == "sample":
        source = sample_file(kind, lang.code)
        rows = read_jsonl(source) if source.exists() else iter(())
    elif Path(path).exists():
        rows = _local_rows(Path(path), lang, field)
    elif path.startswith((".", "/")) or path.endswith(SUFFIXES):
        raise DataError(f"{path}: no such file or folder.")
    else:
        rows = _hub_rows(path, config, split, lang, streaming)
    return itertools.islice(rows, limit) if limit is not None else rows
