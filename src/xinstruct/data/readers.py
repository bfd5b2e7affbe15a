"""Readers shared by web texts and seed pairs: bundled sample, local files, Hub datasets.

Local files: ``.jsonl`` (one JSON object per line; a malformed line is an error naming file and line),
``.parquet`` (read batch by batch), ``.txt`` (paragraphs separated by blank lines). Which files hold a language
depends on the folder's layout (:mod:`xinstruct.data.layouts`): a copy of a Hub dataset repo (README
``configs:``, possibly listing configs the copy lacks), ``data/<config>/<split>/*`` without README, or one
``<code>.jsonl|.parquet|.txt`` file or ``<code>/`` sub-folder per language; a single file may hold every language
in a ``language`` column.

Hub datasets are read with ``datasets.load_dataset(path, name=config, streaming=True)``; local files become an
``IterableDataset`` as well, so both share the language check, ``limit_per_language`` (counts kept rows and stops
reading, inside a shard too) and ``shuffle_buffer`` (``IterableDataset.shuffle(seed, buffer_size)``). The config
template selects the language (``{fineweb2}`` -> ``swh_Latn``, ``{culturax}`` -> ``sw``). A ``language`` column,
where there is one, may hold the ISO 639-1 code (``sw``), the ISO 639-3 code (``swh``, FineWeb-2) or the FLORES
code (``swh_Latn``); ``language_script``, where present, must match the language's script.

A path is local when it exists, or when it looks like one (starts with ``.``, ``/`` or ``~``, ends with a data
suffix, or has a separator without being an ``owner/name`` Hub id); a missing local path is an error naming it.
A recipe file's relative data paths are read from the recipe's folder (:func:`resolve_recipe_paths`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..languages import Language
from .layouts import SUFFIXES, files_dataset, local_files
from .sample import sample_file

PARQUET_BATCH_ROWS = 1024  # rows materialised at a time from a Parquet file
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "owner/name"


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


def read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a Parquet file, :data:`PARQUET_BATCH_ROWS` at a time: a reader that stops early leaves the
    rest of the file unread."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()


def read_file(path: Path, field: str) -> Iterator[dict[str, Any]]:
    """Rows of one local file, by suffix."""
    if path.suffix == ".jsonl":
        yield from read_jsonl(path)
    elif path.suffix == ".parquet":
        yield from read_parquet(path)
    elif path.suffix == ".txt":
        yield from read_text_paragraphs(path, field)
    else:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}.")


def language_codes(lang: Language) -> set[str]:
    """The codes a data set may use for ``lang``: ISO 639-1, ISO 639-3 and FLORES, and FineWeb-2's and CulturaX's
    names."""
    return {lang.code, lang.flores, lang.flores.split("_")[0], lang.fineweb2, lang.fineweb2.split("_")[0],
            lang.culturax}


def row_in_language(row: dict[str, Any], lang: Language) -> bool:
    """Whether a row's own ``language`` (and ``language_script``) columns, where present, name ``lang``."""
    value = row.get("language")
    if value is not None and value not in language_codes(lang):
        return False
    script = row.get("language_script")
    return script is None or script in (lang.script, lang.fineweb2.split("_")[-1])


def looks_local(path: str) -> bool:
    """Whether ``path`` names a local file or folder rather than a Hub dataset id (``owner/name``)."""
    separator = os.sep in path or "/" in path
    return (path.startswith((".", "/", "~")) or path.endswith(SUFFIXES) or "\\" in path
            or (separator and not HUB_ID.match(path)))


def resolve_data_path(path: str, base: Path) -> str:
    """A recipe's data path, read from the recipe's folder ``base``: a relative local path becomes absolute (so the
    run directory's copy of the recipe still finds it); ``sample``, Hub ids and absolute paths stay as they are."""
    if path == "sample" or Path(path).expanduser().is_absolute():
        return path
    local = base / path
    if local.exists() or looks_local(path):
        return str(local.resolve())
    return path


def resolve_recipe_paths(raw: dict[str, Any], base: Path) -> None:
    """Resolve ``data.webtext.path`` and ``data.seeds.path`` of a recipe file's raw YAML against its folder."""
    data = raw.get("data")
    for block in ("webtext", "seeds"):
        source = data.get(block) if isinstance(data, dict) else None
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = resolve_data_path(source["path"], base)


def _hub_dataset(repo_id: str, config: str | None, split: str, lang: Language, streaming: bool):
    from datasets import load_dataset

    name = config.format(**lang.format_fields()) if config else None
    return load_dataset(repo_id, name=name, split=split, streaming=streaming)


def open_rows(path: str, kind: str, lang: Language, field: str, config: str | None = None, split: str = "train",
              streaming: bool = True):
    """The rows that may hold ``lang`` as a dataset: a streamed ``IterableDataset`` over the bundled sample
    (``kind`` = webtext|seeds) or local files, or the Hub dataset (a ``Dataset`` when not ``streaming``)."""
    if path == "sample":
        source = sample_file(kind, lang.code)
        return files_dataset([source], field) if source.exists() else None
    local = Path(path).expanduser()
    if local.exists():
        files = local_files(local, lang, config, split)
        return files_dataset(files, field) if files else None
    if looks_local(path):
        raise DataError(f"{path}: no such file or folder (a relative data path in a recipe file is read from the "
                        "recipe's folder). Fix the path, or give a Hub dataset id as owner/name.")
    return _hub_dataset(path, config, split, lang, streaming)


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
    """Rows for one language from ``sample`` (bundled ``kind`` = webtext|seeds), a local path or a Hub id (see
    :func:`open_rows`). ``limit`` counts rows of the language (after the language check) and stops reading once
    reached; ``shuffle_buffer`` samples at random through ``IterableDataset.shuffle(seed, buffer_size)``."""
    rows: Iterable[dict[str, Any]] | None = open_rows(path, kind, lang, field, config, split, streaming)
    if rows is None:
        return iter(())
    if shuffle_buffer:
        from datasets import IterableDataset

        streamed = isinstance(rows, IterableDataset)
        rows = rows.shuffle(seed=seed, buffer_size=shuffle_buffer) if streamed else rows.shuffle(seed=seed)
    kept = (row for row in rows if row_in_language(row, lang))
    return itertools.islice(kept, limit) if limit is not None else kept
