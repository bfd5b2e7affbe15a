"""Native web texts per language: read, cleaned, filtered (length, duplicates, language ID)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from ..config import DataConfig
from ..languages import get as get_language
from .filters import FilterRunner, clean_text, webtext_filters
from .readers import DataError, iter_rows

logger = logging.getLogger(__name__)

WEBTEXT_COLUMNS = ("id", "language", "text", "source")


def load_webtext(data: DataConfig, languages: list[str], seed: int = 0, seed_texts: Sequence[str] = ()
                 ) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Read and filter web texts for ``languages``. A text that equals or nearly duplicates one of ``seed_texts``
    (the seed responses) is dropped as ``seed_duplicate`` (:class:`~xinstruct.data.filters.SeedDuplicate`).

    Returns:
        (kept, dropped, report): ``kept`` has columns ``id, language, text, source``; ``dropped`` has the
        same plus ``reason`` and ``detected``; ``report`` holds counts per reason and language.
    """
    src = data.webtext
    runner = FilterRunner(webtext_filters(data.filters, seed_texts))
    kept: list[dict] = []
    dropped: list[dict] = []
    for code in tqdm(languages, desc="web texts", unit="lang"):
        lang = get_language(code)
        rows = []
        for n, raw in enumerate(
            iter_rows(src.path, "webtext", lang, src.text_field, src.config, src.split, src.limit_per_language,
                      src.streaming, src.shuffle_buffer, seed)
        ):
            if src.text_field not in raw:
                raise DataError(
                    f"{src.path} ({code}): row {n + 1} has no {src.text_field!r} field "
                    f"(fields: {', '.join(raw)}); set data.webtext.text_field."
                )
            source = src.path if src.path != "sample" else "sample"
            rows.append(
                {
                    "id": str(raw.get("id") or f"{code}-{n:07d}"),
                    "language": code,
                    "text": clean_text(raw[src.text_field]),
                    "source": str(raw.get("source") or source),
                }
            )
        if not rows:
            logger.warning("No web texts read for %s from %s", code, src.path)
        result = runner.run(rows, code)
        kept += result.kept
        dropped += result.dropped
    columns = {c: [r[c] for r in kept] for c in WEBTEXT_COLUMNS}
    drop_cols = WEBTEXT_COLUMNS + ("reason", "detected")
    dropped_ds = Dataset.from_dict({c: [r.get(c) for r in dropped] for c in drop_cols})
    return Dataset.from_dict(columns), dropped_ds, runner.report.as_dict()
