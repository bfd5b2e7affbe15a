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


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class RecipeError(ValueError):
    """A recipe that cannot be used as written; the message says what to change."""


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
        limit_per_language (`int`, *optional*): read at most this many texts per language (before filters).
        streaming (`bool`, *optional*, defaults to `True`): stream Hub datasets instead of downloading them.
    """

    path: str = "sample"
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    limit_per_language: int | None = None
    streaming: bool = True


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
    """

    path: str = "sample"
    config: str | None = None
    split: str = "train"
    instruction_field: str = "instruction"
    output_field: str = "output"
    limit_per_language: int | None = None


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
        lid_min_confidence (`float`, *optional*, defaults to `0.5`): minimum confidence of the declared language.
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
    """

    model: str | None = None
    lora: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecodingConfig:
    """Decoding settings of a generation step.

    Args:
        max_new_tokens (`int`, *optional*, defaults to `64`): maximum tokens generated per row.
        do_sample (`bool`, *optional*, defaults to `True`): sample (``True``) or decode greedily.
        temperature (`float`, *optional*, defaults to `0.7`): sampling temperature.
        top_p (`float`, *optional*, defaults to `0.9`): nucleus sampling mass.
        repetition_penalty (`float`, *optional*, defaults to `1.0`): transformers' repetition penalty.
    """

    max_new_tokens: int = 64
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0


@dataclass
class CandidatesConfig:
    """Candidate generation: the generator writes an English instruction for every filtered web text.

    Args:
        decoding (`DecodingConfig`): decoding settings.
        shard_size (`int`, *optional*, defaults to `64`): rows per shard; a killed run resumes at the last
            finished shard. Each shard is sampled with seed ``seed + shard index``.
        english_min_confidence (`float`, *optional*, defaults to `0.5`): the gate drops instructions whose
            confidence of being English is below this (``0`` disables the language part of the gate).
        min_instruction_chars (`int`, *optional*, defaults to `8`): the gate drops shorter instructions.
    """

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    shard_size: int = 64
    english_min_confidence: float = 0.5
    min_instruction_chars: int = 8


@dataclass
class EngineConfig:
    """How inference runs. Batch size, device and dtype change speed, not the rows' meaning, so they are
    not part of any step hash.

    Args:
        type (`str`, *optional*, defaults to `"local"`): ``local`` (in-process transformers).
        batch_size (`int`, *optional*, defaults to `16`): prompts per forward pass.
        dtype (`str`, *optional*, defaults to `"float32"`): ``float32``, ``bfloat16`` or ``float16``.
        device (`str`, *optional*): ``cpu``, ``cuda``, ...; default: CUDA when available.
        max_input_tokens (`int`, *optional*, defaults to `1024`): prompts are truncated on the left to this.
    """

    type: str = "local"
    batch_size: int = 16
    dtype: str = "float32"
    device: str | None = None
    max_input_tokens: int = 1024


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
        engine (`EngineConfig`): inference engine.
    """

    name: str = "run"
    base_model: str = "gemma-3-270m"
    languages: list[str] = field(default_factory=lambda: [lang.code for lang in lang_registry.PAPER_LANGUAGES])
    extra_languages: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    generator: RoleConfig = field(default_factory=RoleConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def model_for(self, role: RoleConfig) -> str:
        """The model a role starts from (its own ``model`` or the recipe's ``base_model``)."""
        return role.model or self.base_model

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what ``xinstruct run`` writes as ``recipe.yaml`` in the run directory)."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``a.b=value`` overrides, validate every key and register languages."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"Recipe file {path} does not exist.")
        raw = _yaml(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe is a YAML mapping at the top level.")
    for item in overrides or []:
        _apply_override(raw, item)
    recipe = _build(Recipe, raw, "")
    _check_recipe(recipe)
    return recipe


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
    node[parts[-1]] = _yaml(value)


def _unknown_key(key: str, valid: list[str], where: str) -> RecipeError:
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    place = f" in {where}" if where else ""
    return RecipeError(f"Unknown recipe key {key!r}{place}.{hint} Valid keys: {', '.join(sorted(valid))}.")


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
        if dataclasses.is_dataclass(hint):
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
        hint = next(a for a in args if a is not type(None))
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
    for role_name in ("generator",):
        role: RoleConfig = getattr(recipe, role_name)
        check_block_keys(role.training, SFTConfig, f"{role_name}.training")
        check_block_keys(role.lora, LoraConfig, f"{role_name}.lora")
    if recipe.candidates.shard_size < 1:
        raise RecipeError("candidates.shard_size must be >= 1.")
    if recipe.engine.type != "local":
        raise RecipeError(f"engine.type {recipe.engine.type!r} is not available; use 'local'.")
