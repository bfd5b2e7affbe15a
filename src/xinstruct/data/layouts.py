"""Which local files hold one language: dataset-repo folders as users have them on disk.

- A folder whose ``README.md`` lists ``configs:`` (a copy of a Hub dataset repo, often partial: FineWeb-2 is
  terabytes, so users download a few languages): the language's config is read from its own ``data_files``
  globs, and configs the README lists but the copy lacks are never touched.
- A folder without README laid out as ``data/<config>/<split>/*`` (``--include "data/swh_Latn/*"``): the
  recipe's ``config`` template names the folder (``{fineweb2}`` -> ``swh_Latn``).
- A plain folder: ``<code>.jsonl|.parquet|.txt`` or a ``<code>/`` sub-folder per language.
- A single file, which may hold every language in a ``language`` column.

:func:`files_dataset` turns the files into a streamed ``datasets.IterableDataset`` (one shard per file), so local
data and Hub datasets share one code path for the language check, ``limit_per_language`` and ``shuffle_buffer``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import DataError
from ..languages import Language

if TYPE_CHECKING:
    from datasets import IterableDataset

logger = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".parquet", ".txt")


def card_configs(root: Path) -> tuple[dict[str, dict[str, list[str]]], str | None] | None:
    """The ``configs:`` of a folder's ``README.md`` front matter as ``{config: {split: [glob, ...]}}`` and the
    default config's name (None where none is marked), or None when the folder has no such README."""
    card = root / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("\n---", 1)[0].lstrip("-")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{card}: the YAML front matter does not parse ({e}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("configs"), list):
        return None
    configs = [c for c in meta["configs"] if isinstance(c, dict) and "config_name" in c]
    default = next((str(c["config_name"]) for c in configs if c.get("default")), None)
    return {str(c["config_name"]): _splits(c) for c in configs}, default


def _splits(config: dict[str, Any]) -> dict[str, list[str]]:
    """A config's ``data_files`` (a glob, a list of globs, or a list of ``{split, path}``) as ``{split: globs}``."""
    files = config.get("data_files")
    if files is None:
        return {"train": [f"{config.get('data_dir', '.')}/**/*"]}
    if isinstance(files, str):
        return {"train": [files]}
    if isinstance(files, dict):
        return {split: [p] if isinstance(p, str) else list(p) for split, p in files.items()}
    splits: dict[str, list[str]] = {}
    for item in files:
        if isinstance(item, str):
            splits.setdefault("train", []).append(item)
        else:
            path = item["path"]
            splits.setdefault(item.get("split", "train"), []).extend([path] if isinstance(path, str) else path)
    return splits


def _glob(root: Path, patterns: list[str]) -> list[Path]:
    found = {p for pattern in patterns for p in root.glob(pattern.lstrip("/"))}
    return sorted(p for p in found if p.is_file() and p.suffix in SUFFIXES)


def _present(root: Path, globs: dict[str, list[str]]) -> list[str]:
    """The configs (or folders) of ``globs`` that have files here."""
    return [name for name, patterns in globs.items() if _glob(root, patterns)]


def _absent(root: Path, what: str, looked: list[str], present: list[str]) -> DataError:
    shown = ", ".join(present[:20]) + (f" ... ({len(present)} in all)" if len(present) > 20 else "")
    return DataError(
        f"{root}: no files for {what} (looked for {', '.join(looked)}). Present here: {shown or 'none'}. "
        "Download that part of the dataset (e.g. huggingface-cli download <repo> --repo-type dataset --include "
        f"'{looked[0]}' --local-dir {root}), fix data.*.config, or drop the language from the recipe."
    )


def card_files(root: Path, card: tuple[dict[str, dict[str, list[str]]], str | None], name: str | None,
               split: str, lang: Language) -> list[Path]:
    """The files of config ``name`` (the README's default, or its only config, when ``name`` is None)."""
    configs, default = card
    if name is None:
        if len(configs) > 1 and default is None:
            raise DataError(f"{root}: the README lists {len(configs)} configs and none is the default; set "
                            "data.*.config, e.g. \"{fineweb2}\" (FineWeb-2) or \"{culturax}\" (CulturaX).")
        name = default or next(iter(configs))
    patterns = configs.get(name, {}).get(split, [])
    files = _glob(root, patterns)
    other = [p for pattern in patterns for p in root.glob(pattern) if p.is_file()]
    if not files and other:
        raise DataError(f"{other[0]}: unsupported file type; use one of {', '.join(SUFFIXES)}.")
    if not files:
        looked = patterns or [f"config {name!r}, split {split!r} (not in README.md)"]
        present = _present(root, {c: s.get(split, []) for c, s in configs.items()})
        raise _absent(root, f"{lang.code} (config {name}, split {split})", looked, present)
    return files


def folder_files(root: Path, lang: Language, name: str | None, split: str) -> list[Path]:
    """Files for ``lang`` in a folder without dataset card: ``data/<name>/<split>/`` or ``data/<name>/`` (``name``
    from the recipe's config template), ``<name>/``, then ``<code>.jsonl|.parquet|.txt`` and ``<code>/``."""
    keys = [k for k in dict.fromkeys([name, lang.code]) if k]
    candidates = {}
    for key in keys:
        candidates[f"data/{key}/{split}/*"] = [f"data/{key}/{split}/**/*"]
        candidates[f"data/{key}/*"] = [f"data/{key}/*"]  # files only: never another split's folder
        candidates[f"{key}.{{jsonl,parquet,txt}}"] = [f"{key}{suffix}" for suffix in SUFFIXES]
        candidates[f"{key}/"] = [f"{key}/**/*"]
    for patterns in candidates.values():
        files = _glob(root, patterns)
        if files:
            return files
    data = root / "data"
    if data.is_dir():  # a dataset-repo layout that lacks this language
        present = _present(root, {p.name: [f"data/{p.name}/**/*"] for p in sorted(data.iterdir()) if p.is_dir()})
        raise _absent(root, lang.code + (f" (config {name})" if name else ""), list(candidates), present)
    logger.warning("%s: no file for language %s (looked for %s)", root, lang.code, ", ".join(candidates))
    return []


def local_files(root: Path, lang: Language, config: str | None, split: str) -> list[Path]:
    """The local files that hold ``lang``: ``root`` itself when it is a file, else by the folder's layout."""
    if root.is_file():
        if root.suffix not in SUFFIXES:
            raise DataError(f"{root}: unsupported file type; use one of {', '.join(SUFFIXES)}.")
        return [root]
    name = config.format(**lang.format_fields()) if config else None
    card = card_configs(root)
    if card is not None and card[0]:
        return card_files(root, card, name, split, lang)
    return folder_files(root, lang, name, split)


def files_dataset(files: list[Path], field: str) -> IterableDataset:
    """A streamed ``IterableDataset`` over local files, one shard per file, read lazily (Parquet batch by batch)."""
    from datasets import IterableDataset

    return IterableDataset.from_generator(_file_rows, gen_kwargs={"paths": [str(p) for p in files], "field": field})


def _file_rows(paths: list[str], field: str) -> Iterator[dict[str, Any]]:
    from .readers import read_file

    for path in paths:
        yield from read_file(Path(path), field)
