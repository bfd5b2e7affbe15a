"""Seed builder: seed pairs made by machine-translating the responses of an English instruction set.

The English instruction stays as is; its English response is translated into each target language with
a transformers sequence-to-sequence model (default ``facebook/nllb-200-distilled-600M``). NLLB-style
models get the FLORES code of the target language (``swh_Latn``) as forced first token.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..languages import Language
from ..languages import get as get_language
from .filters import clean_text
from .readers import DataError, iter_rows

logger = logging.getLogger(__name__)


class Translator:
    """Batched translation with a seq2seq model.

    Args:
        model (`str`): Hub id or local path of a seq2seq translation model.
        src_lang (`str`, defaults to `"eng_Latn"`): source language code of the tokenizer.
        batch_size (`int`, defaults to `8`): texts per forward pass.
        max_new_tokens (`int`, defaults to `512`): tokens per translation at most.
    """

    def __init__(self, model: str, src_lang: str = "eng_Latn", batch_size: int = 8, max_new_tokens: int = 512):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = src_lang
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model).eval()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def target_token(self, flores: str) -> int | None:
        """Id of the target-language token (NLLB/M2M style), or ``None`` if the vocabulary has none."""
        tid = self.tokenizer.convert_tokens_to_ids(flores)
        return None if tid is None or tid == self.tokenizer.unk_token_id else tid

    @torch.inference_mode()
    def translate(self, texts: list[str], flores: str) -> list[str]:
        """Translate ``texts`` into the language with FLORES code ``flores``."""
        forced = self.target_token(flores)
        if forced is None:
            logger.warning("Tokenizer has no %s token: the model must translate into it unprompted", flores)
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True)
            kwargs = {"forced_bos_token_id": forced} if forced is not None else {}
            ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False,
                                      **kwargs)
            out += [clean_text(t) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out


def build_seed_pairs(
    instructions: str,
    languages: list[str],
    model: str,
    out: str | Path,
    batch_size: int = 8,
    limit: int | None = None,
    max_new_tokens: int = 512,
    instruction_field: str = "instruction",
    output_field: str = "output",
) -> Path:
    """Write ``<out>/<code>.jsonl`` seed files (``id, language, instruction, output, source, group``). ``group``
    (``mt-<n>``) is the same for every language's translation of source row ``n``: the held-out split keeps a group
    on one side (:mod:`xinstruct.data.split`).

    Args:
        instructions: English instruction set (JSONL/Parquet file or Hub dataset id, e.g. an Alpaca-style set).
        languages: target language codes.
        model: translation model.
        out: output folder; usable as ``data.seeds.path`` in a recipe.
    """
    en = Language("en", "English", "Latn", "high", "eng_Latn")
    rows = list(iter_rows(instructions, "seeds", en, output_field, limit=limit))
    pairs = [(r.get(instruction_field, ""), r.get(output_field, "")) for r in rows]
    pairs = [(clean_text(i), clean_text(o)) for i, o in pairs if clean_text(i) and clean_text(o)]
    if not pairs:
        raise DataError(f"{instructions}: no rows with both {instruction_field!r} and {output_field!r}.")
    skipped = len(rows) - len(pairs)
    if skipped:
        logger.warning("%d rows without instruction or output skipped", skipped)
    translator = Translator(model, batch_size=batch_size, max_new_tokens=max_new_tokens)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for code in tqdm(languages, desc="seed languages", unit="lang"):
        lang = get_language(code)
        translated = translator.translate([o for _, o in pairs], lang.flores)
        with (out / f"{code}.jsonl").open("w", encoding="utf-8") as fh:
            for n, ((instruction, _), output) in enumerate(zip(pairs, translated)):
                row = {"id": f"{code}-mt-{n:05d}", "language": code, "instruction": instruction, "output": output,
                       "source": f"mt:{model}", "group": f"mt-{n:05d}"}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
