"""Reading recipes: YAML files (``extends:`` merges one over another), ``--set a.b=value`` overrides, building the
dataclasses of :mod:`xinstruct.config` with every key and scalar type checked (:func:`xinstruct.schema.build_block`),
and the recipe-wide checks. Unknown keys are errors that name the key and the nearest valid one.

The top of the recipe layers (errors and :mod:`~xinstruct.schema`, engine configs, :mod:`~xinstruct.config`, this
module): nothing here imports torch or transformers, and neither does loading a recipe. The keys of ``training`` and
``lora`` blocks are read from the source of ``SFTConfig`` and ``LoraConfig`` (:func:`passed_keys`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from . import languages as lang_registry
from .config import Recipe
from .data.readers import resolve_recipe_paths
from .errors import RecipeError
from .inference import EngineConfig
from .launcher import check_final_save
from .schema import build_block, check_block_keys, check_choice


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
    resolve_recipe_paths(raw, path.parent)  # data.webtext.path, data.seeds.path: relative to the recipe file
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


def _check_languages(recipe: Recipe) -> None:
    """Extra languages are complete and registered, every language is known, and language ID covers every language
    beyond the paper's ten while ``data.filters.lid`` is on."""
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
    paper = {lang.code for lang in lang_registry.PAPER_LANGUAGES}  # all known to the detector
    extra = [code for code in recipe.languages if code not in paper]
    if extra and recipe.data.filters.lid:
        from .data.lid import is_supported  # lingua, only for added languages

        unsupported = [code for code in extra if not is_supported(code)]
        if unsupported:
            raise RecipeError(f"language ID (lingua) does not know {', '.join(unsupported)}: set data.filters.lid: "
                              "false, or drop the language(s).")


def _check_refinement(recipe: Recipe) -> None:
    """Refinement's choices, shares and pseudo-rating sources."""
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
    check_choice(ref.keep_score, ("p3", "pmi"), "refinement.keep_score")
    if ref.keep_score == "pmi" and (ref.evaluator_kind != "likelihood" or ref.keep_rule != "recall"):
        raise RecipeError("refinement.keep_score: pmi thresholds the rater's PMI, which only the likelihood evaluator "
                          "computes, at a calibrated recall: set evaluator_kind: likelihood and keep_rule: recall.")
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
    if not 0.0 <= ref.planted_share <= 1.0 or ref.response_tokens < 1:
        raise RecipeError("refinement.planted_share must be in [0, 1] and refinement.response_tokens >= 1.")


def _check_launcher(recipe: Recipe) -> None:
    """The launcher's type, its accelerate config file, and a final save that writes weights."""
    check_choice(recipe.launcher.type, ("python", "accelerate"), "launcher.type")
    config_file = recipe.launcher.config_file
    if recipe.launcher.type == "accelerate" and config_file and not Path(config_file).is_file():
        raise RecipeError(f"launcher.config_file {config_file} does not exist (a relative path is read relative to "
                          "the recipe file, then to the working directory).")
    if recipe.launcher.type == "accelerate" and config_file:
        check_final_save(recipe.launcher)  # a launch whose final save would write no weights


def _check_recipe(recipe: Recipe) -> None:
    """Every check of a loaded recipe: languages, roles' blocks and engines, refinement, seeds, diversification,
    final, launcher."""
    _check_languages(recipe)
    roles = {
        "generator": recipe.generator,
        "refinement.follower": recipe.refinement.follower,
        "refinement.evaluator": recipe.refinement.evaluator,
        "final": recipe.final,
    }
    for where, role in roles.items():
        check_block_keys(role.training, passed_keys("training"), f"{where}.training")
        check_block_keys(role.lora, passed_keys("lora"), f"{where}.lora")
    _check_refinement(recipe)
    seeds = recipe.data.seeds
    if not 0.0 < seeds.heldout_fraction < 1.0 or seeds.heldout_min_per_language < 1:
        raise RecipeError("data.seeds.heldout_fraction must be between 0 and 1 and heldout_min_per_language >= 1.")
    div = recipe.diversification
    if div.clusters < 1 or div.target_per_language < 1:
        raise RecipeError("diversification.clusters and diversification.target_per_language must be >= 1.")
    if not 0.0 <= recipe.final.assistant_share <= 1.0:
        raise RecipeError("final.assistant_share is a share: 0 <= value <= 1.")
    _check_launcher(recipe)
    recipe.engine.check("engine")
    for where, role in roles.items():
        recipe.engine_for(role, f"{where}.engine").check(f"{where}.engine")


class _Source(NamedTuple):
    """A dataclass as its source defines it: ``file`` of the installed ``package`` holds
    ``@dataclass class name(*bases)``."""

    package: str
    file: str
    name: str
    bases: tuple[str, ...]


# the classes a role's blocks are passed to unchanged: "module:class", then the class and each of its bases as their
# sources define them (the class first). A base outside the list must not be a dataclass (tests/test_imports.py
# compares the keys read with the classes' fields).
PASSED_TO: dict[str, tuple[str, tuple[_Source, ...]]] = {
    "training": ("trl:SFTConfig", (
        _Source("trl", "trainer/sft_config.py", "SFTConfig", ("_BaseConfig",)),
        _Source("trl", "trainer/base_config.py", "_BaseConfig", ("TrainingArguments",)),
        _Source("transformers", "training_args.py", "TrainingArguments", ()),
    )),
    "lora": ("peft:LoraConfig", (
        _Source("peft", "tuners/lora/config.py", "LoraConfig", ("PeftConfig",)),
        _Source("peft", "config.py", "PeftConfig", ("PeftConfigMixin",)),
        _Source("peft", "config.py", "PeftConfigMixin", ("PushToHubMixin",)),
    )),
}


@functools.cache
def passed_keys(block: str) -> tuple[str, ...]:
    """The keys a role's ``training`` (:class:`trl.SFTConfig`) or ``lora`` (:class:`peft.LoraConfig`) block accepts:
    the fields of that class, read from the installed source files (importing the class imports torch, which takes
    seconds). Where the source does not define the class as :data:`PASSED_TO` says (another version), the class is
    imported and its fields read."""
    target, sources = PASSED_TO[block]
    keys = _source_fields(sources)
    if keys is None:
        module, name = target.split(":")
        keys = tuple(f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name)))
    return keys


def _source_fields(sources: tuple[_Source, ...]) -> tuple[str, ...] | None:
    """The fields of the dataclass ``sources[0]``, bases first, as :func:`dataclasses.fields` lists them; ``None``
    when a source is missing or defines its class otherwise (no ``@dataclass``, other bases)."""
    keys: list[str] = []
    for source in reversed(sources):
        spec = importlib.util.find_spec(source.package)  # a top-level package is found, not imported
        if spec is None or not spec.submodule_search_locations:
            return None
        try:
            tree = ast.parse((Path(spec.submodule_search_locations[0]) / source.file).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            return None
        cls = next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == source.name), None)
        if cls is None or "dataclass" not in map(_name, cls.decorator_list) or \
                tuple(map(_name, cls.bases)) != source.bases or cls.keywords:
            return None
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                    _name(node.annotation) not in ("ClassVar", "InitVar", "KW_ONLY") and node.target.id not in keys:
                keys.append(node.target.id)
    return tuple(keys)


def _name(node: ast.expr) -> str:
    """The last name of a decorator, base or annotation: ``dataclass`` for ``@dataclasses.dataclass(frozen=True)``,
    ``ClassVar`` for ``typing.ClassVar[int]`` or ``"ClassVar[int]"``."""
    if isinstance(node, ast.Call | ast.Subscript):
        return _name(node.func if isinstance(node, ast.Call) else node.value)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split("[")[0].rsplit(".", 1)[-1].strip()
    return ""
