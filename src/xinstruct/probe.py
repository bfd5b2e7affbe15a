"""``xinstruct plan RECIPE --probe``: measure this machine's rates on the recipe's own model and shapes, for a bounded
time, so the plan predicts from measurements rather than from a datasheet.

What is measured (each on rows built to the shapes the cost estimates count, :class:`~xinstruct.steps.Estimate`):

- ``load``: seconds to build the recipe's engine for the base model (every engine a step builds loads a model);
- ``decode``: generated tokens/s of the decoding steps alone, on one batch of ``engine.batch_size`` generator prompts
  (the frame and a web text of ``candidates.text_tokens``) decoded with ``candidates.decoding`` to exactly its
  ``max_new_tokens``, less the time of a one-token generation of the same prompts (their prefill, priced as prefill);
- ``prefill``: scored tokens/s of the engine's likelihood pass over two batches of rating rows (frame, instruction
  and a response of ``refinement.response_tokens``), the LM head at the response only, as the rating steps run it;
- ``tokens``: the token counts of the recipe's own rows (:func:`measure_tokens`), which replace the estimate's
  stated ones (a web text, a rated pair, a training batch's padded length and prompt per role);
- ``train``, per trained role (generator, follower, final, and the evaluator with ``evaluator_kind: sft``): a short
  real :func:`~xinstruct.training.train_sft` of the role's own training settings and LoRA on rows of that padded
  length and prompt share, ``max_steps`` cut to :data:`TRAIN_STEPS`: trained tokens/s of the loop, and the seconds
  around it (loading, LoRA wrapping, tokenising, merging and saving), which every training of that role pays once.

A role that shares its training settings with one already probed reuses its rates. When the budget runs out, the
roles left are not probed and :func:`xinstruct.costs.plan_costs` prices them from the datasheet (listed in
``skipped``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .config import Recipe, RoleConfig
from .steps import FRAME_TOKENS, INSTRUCTION_TOKENS, Estimate, Work

TRAIN_STEPS = 4  # optimizer steps of each role's probe training
# a text the probe cuts to any token count (the languages of the embedded default, so the tokenizer splits it as it
# splits their web texts)
_FILLER = ("Kila mtu ana haki ya kuishi, uhuru na usalama wa nafsi yake. Jokaisella on oikeus elämään, vapauteen ja "
           "henkilökohtaiseen turvallisuuteen. Setiap orang berhak atas kehidupan, kebebasan dan keselamatan. "
           "Herkes yaşamak, özgürlük ve kişi güvenliği hakkına sahiptir. Mọi người đều có quyền sống, tự do và an "
           "toàn cá nhân. ")


@dataclass
class TrainRate:
    """A role's measured training: trained tokens/s of the loop, and the seconds every training pays around it."""

    tokens_per_s: float
    setup_s: float


@dataclass
class ProbeRates:
    """What :func:`probe` measured on this machine (``cpu``: the CPU kind, or the CUDA device name)."""

    cpu: str
    dtype: str
    load_s: float
    decode_tokens_per_s: float
    decode_rows_per_s: float
    prefill_tokens_per_s: float
    train: dict[str, TrainRate] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tokens: dict[str, float] = field(default_factory=dict)  # measured on the recipe's data (:func:`measure_tokens`)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def predict(self, work: Work, role: str | None, engines: int, fallback_train_tps: float) -> float:
        """Seconds of a step's ``work`` at these rates: its model loads, its tokens, and each training's fixed cost;
        a role that was not probed trains at ``fallback_train_tps`` (the datasheet) with no fixed cost."""
        inference = work.loads * self.load_s + work.generate / self.decode_tokens_per_s \
            + work.score / self.prefill_tokens_per_s
        rate = self.train.get(role) if role else None
        training = work.trainings * rate.setup_s + work.train / rate.tokens_per_s if rate \
            else work.train / fallback_train_tps
        return inference / max(1, engines) + training


def _text(tokenizer, tokens: int) -> str:
    """A text of exactly ``tokens`` tokens (without special tokens) of :data:`_FILLER`."""
    ids = tokenizer(_FILLER, add_special_tokens=False)["input_ids"]
    ids = (ids * (tokens // len(ids) + 1))[:tokens]
    return tokenizer.decode(ids)


def _role_rows(recipe: Recipe, tokens: dict[str, float]) -> dict[str, tuple[RoleConfig, int, int]]:
    """The trained roles, the length of a row each trains on and of its prompt: measured on the recipe's data
    (``tokens``, :func:`measure_tokens`) where it could be, else as :class:`~xinstruct.steps.Estimate` states it. The
    prompt's share matters: only the completion carries loss, and the LM head runs there only."""
    est = Estimate(recipe, {}, 0, 0, None, 1, tokens=tokens)
    ref = recipe.refinement
    generator_prompt = tokens.get("generator_prompt", FRAME_TOKENS + est.text)
    follower_prompt = tokens.get("follower_prompt", FRAME_TOKENS + INSTRUCTION_TOKENS)
    roles = {"generator": (recipe.generator, est.generator_row, generator_prompt),
             "follower": (ref.follower, est.follower_row, follower_prompt),
             "final": (recipe.final, est.follower_row, follower_prompt)}
    if ref.evaluator_kind == "sft":
        roles["evaluator"] = (ref.evaluator, est.rating_row, follower_prompt)
    return roles


def _probe_training(recipe: Recipe, role: RoleConfig, row_tokens: float, prompt_tokens: float,
                    tokenizer) -> TrainRate:
    """A :data:`TRAIN_STEPS`-step training of ``role`` (its own settings) on rows of ``row_tokens`` tokens (cut at
    ``max_length``), of which ``prompt_tokens`` are prompt."""
    from datasets import Dataset

    from .training import train_sft

    training = {**role.training, "max_steps": TRAIN_STEPS, "logging_steps": TRAIN_STEPS}
    batch = training.get("per_device_train_batch_size", 8) * training.get("gradient_accumulation_steps", 1)
    tokens = int(min(training.get("max_length") or row_tokens, row_tokens))
    prompt_len = int(min(prompt_tokens, tokens - 1))
    prompt, completion = _text(tokenizer, max(1, prompt_len)), " " + _text(tokenizer, max(1, tokens - prompt_len))
    n = batch * TRAIN_STEPS
    rows = Dataset.from_dict({"prompt": [prompt] * n, "completion": [completion] * n})
    with tempfile.TemporaryDirectory(prefix="xinstruct-probe-") as out:
        start = time.perf_counter()
        metrics = train_sft(recipe.model_for(role), rows, out, training=training, lora=role.lora, seed=recipe.seed,
                            lm_head_on_loss_only=role.lm_head_on_loss_only)
        wall = time.perf_counter() - start
    loop = float(metrics["train_runtime"])
    trained = float(metrics.get("num_tokens") or TRAIN_STEPS * batch * tokens)  # TRL's count, padding included
    return TrainRate(tokens_per_s=trained / loop, setup_s=max(0.0, wall - loop))


def probe(recipe: Recipe, budget_s: float = 120.0) -> ProbeRates:
    """Measure load, decode, prefill and per-role training rates of ``recipe`` on this machine (see the module doc);
    stops probing roles once ``budget_s`` seconds are spent."""
    from transformers import AutoTokenizer

    from .hardware import cpu_kind, resolve_dtype
    from .inference import make_engine
    from .models import resolve_model
    from .prompts import generator_prompt

    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(recipe.base_model))
    cfg = recipe.engine_for(None)
    device = getattr(cfg, "device", None)
    batch = getattr(cfg, "batch_size", 16)
    start = time.perf_counter()
    engine = make_engine(cfg, recipe.base_model, progress=False)
    load_s = time.perf_counter() - start
    try:
        decoding = recipe.candidates.decoding
        prompts = [generator_prompt(_text(tokenizer, recipe.candidates.text_tokens or 512))] * batch
        params = replace(decoding, min_new_tokens=decoding.max_new_tokens).with_seed(0)  # every row decodes to the end
        start = time.perf_counter()
        engine.generate(prompts, replace(params, max_new_tokens=1, min_new_tokens=1))  # the prompts' prefill
        prefill_only = time.perf_counter() - start
        start = time.perf_counter()
        engine.generate(prompts, params)
        decode_s = max(1e-6, time.perf_counter() - start - prefill_only)  # the decoding steps alone
        ref = recipe.refinement
        rating_prompt = _text(tokenizer, FRAME_TOKENS + INSTRUCTION_TOKENS)
        response = " " + _text(tokenizer, ref.response_tokens)
        start = time.perf_counter()
        engine.loglik([rating_prompt] * 2 * batch, [response] * 2 * batch)
        prefill_s = time.perf_counter() - start
    finally:
        engine.close()
    import torch

    rates = ProbeRates(
        cpu=torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_kind(),
        dtype=resolve_dtype(cfg.dtype, device), load_s=load_s,
        decode_tokens_per_s=batch * max(1, decoding.max_new_tokens - 1) / decode_s,
        decode_rows_per_s=batch / (decode_s + prefill_only),
        prefill_tokens_per_s=2 * batch * (FRAME_TOKENS + INSTRUCTION_TOKENS + ref.response_tokens) / prefill_s)
    rates.tokens = measure_tokens(recipe, tokenizer)
    seen: dict[str, TrainRate] = {}
    for name, (role, row_tokens, prompt_tokens) in _role_rows(recipe, rates.tokens).items():
        key = repr((recipe.model_for(role), role.lora, sorted(role.training.items()), row_tokens, prompt_tokens))
        if key in seen:
            rates.train[name] = seen[key]
        elif time.perf_counter() - began > budget_s:
            rates.skipped.append(name)
        else:
            rates.train[name] = seen[key] = _probe_training(recipe, role, row_tokens, prompt_tokens, tokenizer)
    rates.seconds = time.perf_counter() - began
    return rates


def measure_tokens(recipe: Recipe, tokenizer, per_language: int = 16, draws: int = 200) -> dict[str, float]:
    """Token counts of the recipe's own rows, from up to ``per_language`` seed pairs and web texts per language
    (read as the seed and web-text steps read them, unfiltered): the web text in a generator prompt (cut to
    ``candidates.text_tokens``); a rated pair (the follower frame, an instruction and a response cut to
    ``refinement.response_tokens``); and the padded length of a training batch of the generator (frame, seed response,
    instruction) and of the follower (frame, instruction, web text): the longest of ``per_device_train_batch_size``
    rows drawn at random, averaged over ``draws`` batches (TRL pads each batch to its longest row; the cap at
    ``max_length`` is applied by the estimate), and the mean prompt of each (what carries no loss). Instructions are
    counted from the seed pairs (the candidates' are written later)."""
    import random

    from .data.readers import iter_rows
    from .languages import get as get_language
    from .prompts import follower_prompt, generator_prompt

    data, text_max = recipe.data, recipe.candidates.text_tokens or 512
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    generator, follower, web, rated, generator_prompts, follower_prompts = [], [], [], [], [], []
    generator_frame = count(generator_prompt(""))
    for code in recipe.languages:
        lang = get_language(code)
        seeds = list(iter_rows(data.seeds.path, "seeds", lang, data.seeds.output_field, data.seeds.config,
                               data.seeds.split, per_language))
        texts = list(iter_rows(data.webtext.path, "webtext", lang, data.webtext.text_field, data.webtext.config,
                               data.webtext.split, per_language))
        instructions = [count(str(r.get(data.seeds.instruction_field, ""))) for r in seeds] or [INSTRUCTION_TOKENS]
        for r, instruction in zip(seeds, instructions):
            response = min(count(str(r.get(data.seeds.output_field, ""))), text_max)
            generator.append(generator_frame + response + instruction + 2)
            generator_prompts.append(generator_frame + response)
        frame = count(follower_prompt("", lang.name))
        for n, r in enumerate(texts):
            length, instruction = count(str(r.get(data.webtext.text_field, ""))), instructions[n % len(instructions)]
            web.append(min(length, text_max))
            follower.append(frame + instruction + length + 2)
            follower_prompts.append(frame + instruction)
            rated.append(frame + instruction + min(length, recipe.refinement.response_tokens))
    rng = random.Random(recipe.seed)

    def padded(lengths: list[int], role: RoleConfig) -> float:
        batch = role.training.get("per_device_train_batch_size", 8)
        return sum(max(rng.choices(lengths, k=batch)) for _ in range(draws)) / draws

    out: dict[str, float] = {}
    if web:
        out.update(text=sum(web) / len(web), rating_row=sum(rated) / len(rated),
                   follower_row=padded(follower, recipe.refinement.follower),
                   follower_prompt=sum(follower_prompts) / len(follower_prompts))
    if generator:
        out.update(generator_row=padded(generator, recipe.generator),
                   generator_prompt=sum(generator_prompts) / len(generator_prompts))
    return out
