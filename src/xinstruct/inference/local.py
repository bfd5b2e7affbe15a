"""In-process transformers engine: batched, length-sorted, left-padded, under ``torch.inference_mode``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from ..errors import ModelError, StageError
from ..hardware import resolve_dtype
from ..models import resolve_model
from .base import Engine, GenerationParams

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _StopWhen(StoppingCriteria):
    """Stops generation once ``event`` is set (the streaming caller went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


SAMPLE_TOP_K = 64


def length_batches(lengths: list[int], batch_size: int, max_input_tokens: int) -> list[list[int]]:
    """Row indices sorted by token length (longest first, so memory peaks early, stable among equal lengths), cut
    into batches. A row over ``max_input_tokens`` is an error that names it: nothing is cut silently."""
    over = [i for i, n in enumerate(lengths) if n > max_input_tokens]
    if over:
        raise StageError(
            f"{len(over)} prompt(s) exceed engine.max_input_tokens={max_input_tokens} (the first, row {over[0]}, "
            f"has {lengths[over[0]]} tokens). Raise engine.max_input_tokens or lower the step's content budget "
            "(candidates.text_tokens, refinement.response_tokens)."
        )
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


SAMPLING = "top-64 sampler, a seed per length-sorted batch"  # enters step hashes: a change resamples every row


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch ``batch`` of a call made with ``seed``."""
    return seed * 100_003 + batch


class TopKSampler(LogitsProcessor):
    """Samples the next token (temperature, then top-p) among the ``top_k`` most likely ones and returns scores
    that let greedy decoding pick exactly that token.

    transformers' own sampler sorts the whole vocabulary at every step for top-p and draws from all of it: on
    Gemma's 262k-token vocabulary that took more than half of each decoding step on a 2-core CPU (sort 153 ms,
    multinomial 81 ms at batch 16, measured). Here only ``top_k`` candidates are sorted and drawn from; the
    mass outside them is left out (top-p 0.9 almost never reaches past 64 tokens). Seeded like the rest.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int = SAMPLE_TOP_K):
        self.temperature, self.top_p, self.top_k = max(temperature, 1e-5), top_p, top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top, index = torch.topk(scores.float() / self.temperature, min(self.top_k, scores.shape[-1]), dim=-1)
        probs = torch.softmax(top, dim=-1)
        probs = probs * ((probs.cumsum(-1) - probs) < self.top_p)  # the nucleus, within the top k (sorted)
        token = index.gather(-1, torch.multinomial(probs, 1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


class LocalEngine(Engine):
    """A causal LM loaded with transformers in this process.

    Args:
        model (`str`): model name for :func:`xinstruct.models.resolve_model` (Hub id, path, ``tiny``,
            ``gemma-3-270m``).
        batch_size (`int`, defaults to `16`): prompts per forward pass.
        dtype (`str`, defaults to `"auto"`): weights dtype; ``auto`` is bfloat16 where the device runs it natively
            (CUDA with bf16, a CPU with AVX512-BF16 or AMX) and float32 elsewhere.
        device (`str`, *optional*): defaults to CUDA when available, else CPU.
        max_input_tokens (`int`, defaults to `1024`): the longest prompt accepted. A longer prompt is an error,
            never cut here: a cut would remove the template header or the instruction, so callers fit the
            prompt's content first (:class:`xinstruct.budget.PromptFitter`).
        trust_remote_code (`bool`, defaults to `False`): passed to transformers; off unless asked for.
        progress (`bool`, defaults to `True`): show a progress bar.
    """

    name = "local"

    def __init__(
        self,
        model: str,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str | None = None,
        max_input_tokens: int = 1024,
        trust_remote_code: bool = False,
        progress: bool = True,
    ):
        path = resolve_model(model)
        self.model_name = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[self.dtype], trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval()
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self.progress = progress
        self.stats = {"prompts": 0, "new_tokens": 0, "seconds": 0.0}

    # ------------------------------------------------------------------------------------------
    def _batches(self, prompts: list[str]) -> list[list[int]]:
        """Index batches of ``prompts`` (see :func:`length_batches`)."""
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=True)["input_ids"]]
        return length_batches(lengths, self.batch_size, self.max_input_tokens)

    def _encode(self, texts: list[str]):
        return self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)

    def _generation_config(self, params: GenerationParams) -> GenerationConfig:
        """Greedy decoding settings; sampling is done by :class:`TopKSampler` (see :meth:`_processors`)."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.min_new_tokens or None,
            do_sample=False,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def _processors(self, params: GenerationParams) -> LogitsProcessorList:
        """The sampler, after transformers' own processors (repetition penalty, min_new_tokens)."""
        return LogitsProcessorList([TopKSampler(params.temperature, params.top_p)] if params.do_sample else [])

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: GenerationParams, first_batch: int = 0) -> list[str]:
        """Generate a continuation per prompt (see :meth:`Engine.generate`). Batch ``b`` is sampled with seed
        :func:`batch_seed` ``(params.seed, first_batch + b)``, so its rows do not depend on which process runs it
        (:class:`xinstruct.inference.pool.DevicePool` hands whole batches to its workers)."""
        if not prompts:
            return []
        gen_cfg = self._generation_config(params)
        out: list[str | None] = [None] * len(prompts)
        started = time.perf_counter()
        bar = tqdm(total=len(prompts), desc="generate", unit="row", disable=not self.progress, leave=False)
        for b, idx in enumerate(self._batches(prompts), start=first_batch):
            torch.manual_seed(batch_seed(params.seed, b))
            enc = self._encode([prompts[i] for i in idx])
            seqs = self.model.generate(**enc, generation_config=gen_cfg, logits_processor=self._processors(params))
            new = seqs[:, enc["input_ids"].shape[1] :]
            self.stats["new_tokens"] += int((new != self.tokenizer.pad_token_id).sum())
            for i, text in zip(idx, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = text.strip()
            bar.update(len(idx))
        bar.close()
        self.stats["prompts"] += len(prompts)
        self.stats["seconds"] += time.perf_counter() - started
        return out  # type: ignore[return-value]

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """Yield decoded text pieces as ``model.generate`` produces them (``TextIteratorStreamer``). Closing
        the generator early (a user pressing Stop) stops the generation at the next token."""
        torch.manual_seed(batch_seed(params.seed, 0))  # as generate([prompt], params) samples it
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        enc = self._encode([prompt])
        stop = threading.Event()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**enc, generation_config=self._generation_config(params), streamer=streamer,
                                        logits_processor=self._processors(params),
                                        stopping_criteria=StoppingCriteriaList([_StopWhen(stop)]))
            except BaseException as error:  # surfaced in the caller's thread below
                errors.append(error)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.set()
            thread.join()
        if errors:
            raise errors[0]

    @torch.inference_mode()
    def loglik(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """Summed log-probability of each continuation after its prompt, and its token count (one forward pass
        per row; the LM head runs only at the continuation's positions). See :meth:`Engine.loglik`."""
        if not prompts:
            return []
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        cont_ids = self.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
        rows = [p + c for p, c in zip(prompt_ids, cont_ids)]
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        out: list[tuple[float, int] | None] = [None] * len(rows)
        for idx in length_batches([len(r) for r in rows], self.batch_size, self.max_input_tokens):
            width = max(len(rows[i]) for i in idx)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(rows[i])) + rows[i] for i in idx], device=self.device)
            mask = torch.tensor([[0] * (width - len(rows[i])) + [1] * len(rows[i]) for i in idx], device=self.device)
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            for b, i in enumerate(idx):
                n = len(cont_ids[i])
                if n == 0:
                    out[i] = (0.0, 0)
                    continue
                logits = head(hidden[b, width - n - 1 : width - 1]).float()
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                targets = torch.tensor(cont_ids[i], device=self.device)
                out[i] = (float(torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum()), n)
        return out  # type: ignore[return-value]

    def option_token_ids(self, options: list[str], context: str | None = None) -> list[int]:
        """Token id of each option; every option must be exactly one distinct token, and, after
        ``context``, tokenise exactly as that one token (so the score matches what training taught)."""
        ids = []
        for option in options:
            toks = self.tokenizer(option, add_special_tokens=False)["input_ids"]
            if len(toks) != 1:
                raise ModelError(f"{self.model_name}: the rating option {option!r} is {len(toks)} tokens for its "
                                 "tokenizer; rating options must be single tokens: rate with another model.")
            if context is not None:
                base = self.tokenizer(context)["input_ids"]
                joined = self.tokenizer(context + option)["input_ids"]
                if joined != base + toks:
                    raise ModelError(f"{self.model_name}: after the prompt, {option!r} does not tokenise as one "
                                     "separate token; end the prompt with a separator such as a newline.")
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise ModelError(f"{self.model_name}: the rating options {options} map to the same token.")
        return ids

    @torch.inference_mode()
    def score(self, prompts: list[str], options: list[str]) -> list[list[float]]:
        """Probabilities of each option as the next token (see :meth:`Engine.score`)."""
        if not prompts:
            return []
        option_ids = torch.tensor(self.option_token_ids(options, prompts[0]), device=self.device)
        out: list[list[float] | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="score", unit="row", disable=not self.progress, leave=False)
        for idx in self._batches(prompts):
            enc = self._encode([prompts[i] for i in idx])
            logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :]
            probs = torch.softmax(logits[:, option_ids].float(), dim=-1)
            for i, row in zip(idx, probs.tolist()):
                out[i] = row
            bar.update(len(idx))
        bar.close()
        return out  # type: ignore[return-value]
