"""Seed pairs (English instruction, target-language response): from files, Hub datasets or the sample."""

from __future__ import annotations

from collections import Counter
from typing import Any

from datasets import Dataset

from ..config import SeedConfig
from ..languages import get as get_language
from .filters import clean_text
from .readers import DataError, iter_rows

SEED_COLUMNS = ("id", "language", "instruction", "output", "source")


def load_seeds(cfg: SeedConfig, languages: list[str], seed: int = 0) -> tuple[Dataset, dict[str, Any]]:
    """Read seed pairs for ``languages``; rows with an empty instruction or output are counted and skipped.

    Returns:
        (seeds, report) with columns ``id, language, instruction, output, source``, and ``group`` when the rows
        carry one (translations of one source row share it; the held-out split keeps a group together).
    """
    rows: list[dict] = []
    skipped: Counter = Counter()
    per_lang: Counter = Counter()
    for code in languages:
        lang = get_language(code)
        for n, raw in enumerate(
            iter_rows(cfg.path, "seeds", lang, cfg.output_field, cfg.config, cfg.split, cfg.limit_per_language, True,
                      cfg.shuffle_buffer, seed)
        ):
            missing = [f for f in (cfg.instruction_field, cfg.output_field) if f not in raw]
            if missing:
                raise DataError(
                    f"{cfg.path} ({code}): seed row {n + 1} lacks {missing} (fields: {', '.join(raw)}); "
                    "set data.seeds.instruction_field / output_field."
                )
            instruction, output = clean_text(raw[cfg.instruction_field]), clean_text(raw[cfg.output_field])
            if not instruction or not output:
                skipped["empty_instruction" if not instruction else "empty_output"] += 1
                continue
            per_lang[code] += 1
            rows.append(
                {
                    "id": str(raw.get("id") or f"{code}-seed-{n:05d}"),
                    "language": code,
                    "instruction": instruction,
                    "output": output,
                    "source": str(raw.get("source") or cfg.path),
                    "group": str(raw.get("group") or ""),  # the source row of translated seeds (seed-build)
                }
            )
    report = {
        "rows_out": len(rows),
        "rows_out_per_language": dict(per_lang),
        "skipped": dict(skipped),
        "languages_without_seeds": [c for c in languages if per_lang[c] == 0],
    }
    columns = SEED_COLUMNS + (("group",) if any(r["group"] for r in rows) else ())
    return Dataset.from_dict({c: [r[c] for r in rows] for c in columns}), report
