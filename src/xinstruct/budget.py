"""Token budgets: shorten the *content* of a prompt (a web text, a response), never its frame.

A prompt is a template (header, instruction, cue such as ``### Rating:``) around one long field. When the
prompt is over budget, only that field is cut, at a token boundary, so the model always sees the whole
frame. Training and inference build their prompts through the same :class:`PromptFitter` with the same
budgets, so an evaluator is trained on exactly the kind of prompt it later rates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from .errors import StageError
from .models import resolve_model

_REPLACEMENT = "\ufffd"


@functools.lru_cache(maxsize=8)
def load_tokenizer(model: str):
    """The tokenizer of ``model`` (a recipe model name or a trained step's model folder), loaded once."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(model))


@dataclass(frozen=True)
class Fitted:
    """A prompt whose long field was fitted: ``value`` is what the prompt holds, ``cut`` whether it was shortened."""

    prompt: str
    value: str
    cut: bool


class PromptFitter:
    """Cuts one field of a prompt to a token budget with ``tokenizer`` (the model's own).

    Args:
        tokenizer: a transformers tokenizer; prompts are measured as the engine and TRL tokenise them (with
            special tokens).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def length(self, text: str, special: bool = False) -> int:
        """Tokens of ``text`` (without special tokens unless ``special``)."""
        return len(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def head(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """The first ``max_tokens`` tokens of ``text`` as text, and whether anything was cut."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text, False
        cut = self.tokenizer.decode(ids[: max(0, max_tokens)], skip_special_tokens=True)
        return cut.rstrip(_REPLACEMENT).rstrip(), True  # a byte-level cut can end inside a character

    def fit(self, render: Callable[[str], str], value: str, max_prompt_tokens: int | None,
            max_value_tokens: int | None = None) -> Fitted:
        """``render(value)`` with ``value`` cut so that it has at most ``max_value_tokens`` tokens and the whole
        prompt at most ``max_prompt_tokens`` (special tokens included). Raises :class:`StageError` when the
        frame alone does not fit: then no cut of ``value`` can help."""
        limit = max_value_tokens
        if max_prompt_tokens is not None:
            room = max_prompt_tokens - self.length(render(""), special=True)
            if room < 1:
                raise StageError(
                    f"The prompt frame alone takes more than {max_prompt_tokens} tokens (the template and the "
                    "instruction); raise the step's max_length / max_input_tokens."
                )
            limit = room if limit is None else min(limit, room)
        if limit is None:
            return Fitted(render(value), value, False)
        kept, cut = self.head(value, limit)
        prompt = render(kept)
        # re-tokenising the joined prompt can merge or split a token at the seams: shrink until it fits
        while (max_prompt_tokens is not None and cut is not None
               and self.length(prompt, special=True) > max_prompt_tokens):
            over = self.length(prompt, special=True) - max_prompt_tokens
            limit -= max(1, over)
            kept, cut = self.head(value, limit)
            cut = True
            prompt = render(kept)
        return Fitted(prompt, kept, cut)

    def same_length(self, texts: list[str], max_tokens: int) -> list[str]:
        """Cut every text to the same token count: the shortest text's, at most ``max_tokens``. Decoding a cut and
        tokenising it again can shift a token at the end, so the cut is repeated until the lengths agree."""
        target = min([max_tokens, *(self.length(t) for t in texts)])
        for _ in range(4):
            cut = [self.head(t, target)[0] for t in texts]
            lengths = [self.length(t) for t in cut]
            if len(set(lengths)) <= 1:
                return cut
            target = min(lengths)
        return cut
