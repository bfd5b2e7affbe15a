"""Reading recipes: YAML files (``extends:`` merges one over another), ``--set a.b=value`` overrides, building the
dataclasses of :mod:`xinstruct.config` with every key and scalar type checked, and the recipe-wide checks. Unknown
keys are errors that name the key and the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from . import languages as lang_registry
from .config import EngineConfig, Recipe
from .errors import RecipeError


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``a.b=value`` overrides, validate every key and register languages."""
    raw: dict[str, Any] = read_recipe_file(path) if path is not None else {}
    for item in overrides or []:
        _apply_override(raw, item)
    recipe = build_block(Recipe, raw, "")
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
        problem = getattr(e, "problem", None) or e
        raise RecipeError(f"Override {item!r}: the value is not valid YAML ({problem}).") from None


def _unknown_key(key: str, valid: list[str], where: str) -> RecipeError:
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    place = f" in {where}" if where else ""
    return RecipeError(f"Unknown recipe key {key!r}{place}.{hint} Valid keys: {', '.join(sorted(valid))}.")


def engine_block(raw: Any, where: str) -> EngineConfig:
    from .inference import config_class

    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping, got {raw!r}.")
    return build_block(config_class(raw.get("type", "local"), f"{where}.type"), raw, where)


def build_block(cls: type, raw: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from a recipe block, checking every key and scalar type (errors name ``where``)."""
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
            kwargs[key] = engine_block(value, sub)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = build_block(hint, value, sub)
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
    ref = recipe.refinement
    if min(recipe.candidates.shard_size, ref.shard_size, ref.pseudo_ratings.shard_size) < 1:
        raise RecipeError("shard sizes must be >= 1.")
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
    if not 0.0 <= ref.planted_share <= 1.0 or ref.response_tokens < 1:
        raise RecipeError("refinement.planted_share must be in [0, 1] and refinement.response_tokens >= 1.")
    div = recipe.diversification
    if div.clusters < 1 or div.target_per_language < 1:
        raise RecipeError("diversification.clusters and diversification.target_per_language must be >= 1.")
    if not 0.0 <= recipe.final.assistant_share <= 1.0:
        raise RecipeError("final.assistant_share is a share: 0 <= value <= 1.")
    check_choice(recipe.launcher.type, ("python", "accelerate"), "launcher.type")
    config_file = recipe.launcher.config_file
    if recipe.launcher.type == "accelerate" and config_file and not Path(config_file).is_file():
        raise RecipeError(f"launcher.config_file {config_file} does not exist (a relative path is read relative to "
                          "the recipe file, then to the working directory).")
    recipe.engine.check("engine")
    for where, role in roles.items():
        recipe.engine_for(role, f"{where}.engine").check(f"{where}.engine")


def check_choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    """Raise a :class:`RecipeError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise RecipeError(f"{where} is {value!r}; use one of: {', '.join(allowed)}.")
