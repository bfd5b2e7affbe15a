"""Readers shared by web texts and seed pairs: bundled sample, local files, Hub datasets.

Local files: ``.jsonl`` (one JSON object per line; a malformed line is an error naming file and line),
``.parquet``, ``.txt`` (paragraphs separated by blank lines). A folder holds one file per language
(``<code>.jsonl``, ``<code>.parquet``, ``<code>.txt``) or a ``<code>/`` sub-folder of such files; a single
file may hold every language in a ``language`` column.

Hub datasets, and local folders laid out as a dataset repo (a ``README.md`` whose YAML lists ``configs:``),
are read with ``datasets.load_dataset(path, name=config, streaming=True)``: the config selects the language
(FineWeb-2 ``swh_Latn``, CulturaX ``sw``). A ``language`` column, where there is one, may hold the ISO 639-1
code (``sw``), the ISO 639-3 code (``swh``, FineWeb-2) or the FLORES code (``swh_Latn``); ``language_script``,
where present, must match the language's script. ``limit_per_language`` counts kept rows and stops reading
once it has them.
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


def language_codes(lang: Language) -> set[str]:
    """The codes a data set may use for ``lang``: ISO 639-1, ISO 639-3 (the FLORES prefix) and FLORES."""
    return {lang.code, lang.flores, lang.flores.split("_")[0]}


def row_in_language(row: dict[str, Any], lang: Language) -> bool:
    """Whether a row's own ``language`` (and ``language_script``) columns, where present, name ``lang``."""
    value = row.get("language")
    if value is not None and value not in language_codes(lang):
        return False
    script = row.get("language_script")
    return script is None or script == lang.script


def is_dataset_repo(path: Path) -> bool:
    """A local folder laid out as a Hub dataset repo: a ``README.md`` whose YAML header lists ``configs:``."""
    card = path / "README.md"
    if not (path.is_dir() and card.exists()):
        return False
    text = card.read_text(encoding="utf-8")
    return text.startswith("---") and "\nconfigs:" in text.split("\n---", 2)[0]


def _local_rows(root: Path, lang: Language, field: str) -> Iterator[dict[str, Any]]:
    if root.is_file():
        for row in read_file(root, field):
            if row_in_language(row, lang):
                yield row
        return
    files = [root / f"{lang.code}{suffix}" for suffix in SUFFIXES if (root / f"{lang.code}{suffix}").exists()]
    sub = root / lang.code
    if sub.is_dir():
        files += sorted(p for p in sub.rglob("*") if p.suffix in SUFFIXES)
    if not files:
        logger.warning("%s: no file for language %s (looked for %s.{jsonl,parquet,txt} and %s/)", root, lang.code,
                       lang.code, lang.code)
    for path in files:
        yield from read_file(path, field)


def _hub_rows(repo_id: str, config: str | None, split: str, lang: Language, streaming: bool,
              shuffle_buffer: int | None = None, seed: int = 0) -> Iterator[dict[str, Any]]:
    from datasets import load_dataset

    name = config.format(**lang.format_fields()) if config else None
    ds = load_dataset(repo_id, name=name, split=split, streaming=streaming)
    if shuffle_buffer:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer) if streaming else ds.shuffle(seed=seed)
    for row in ds:
        if row_in_language(row, lang):
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
    shuffle_buffer: int | None = None,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Rows for one language from ``sample`` (bundled ``kind`` = webtext|seeds), a local path, a local dataset
    repo folder or a Hub id. ``limit`` counts rows of the language (after the language check) and stops reading
    once reached; ``shuffle_buffer`` (Hub datasets) samples at random through ``IterableDataset.shuffle``."""
    if path == "sample":
        source = sample_file(kind, lang.code)
        rows = read_jsonl(source) if source.exists() else iter(())
    elif Path(path).exists() and not is_dataset_repo(Path(path)):
        rows = _local_rows(Path(path), lang, field)
    elif not Path(path).exists() and (path.startswith((".", "/")) or path.endswith(SUFFIXES)):
        raise DataError(f"{path}: no such file or folder.")
    else:
        rows = _hub_rows(path, config, split, lang, streaming, shuffle_buffer, seed)
    return itertools.islice(rows, limit) if limit is not None else rows
