"""Recipe blocks as dataclasses: building one from a YAML mapping with every key and scalar type checked, and the
checks of single values. Errors are :class:`~xinstruct.errors.RecipeError` that name the block (``where``); an
unknown key also names the nearest valid one.

This module sits below everything that declares blocks (engine configs, the recipe) and imports nothing of the
package but :mod:`xinstruct.errors`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from .errors import RecipeError


def build_block(cls: type, raw: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from a recipe block, checking every key and scalar type (errors name ``where``).

    A field whose class has a ``from_block(raw, where)`` classmethod is built by it: a block whose class depends on
    its content, such as an ``engine`` block (the config class of its ``type``)."""
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
        if isinstance(hint, type) and hasattr(hint, "from_block"):
            kwargs[key] = hint.from_block(value, sub)
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


def _unknown_key(key: str, valid: list[str], where: str) -> RecipeError:
    """The error for ``key``, which is not one of ``valid``: it names the nearest valid key and lists them all."""
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    place = f" in {where}" if where else ""
    return RecipeError(f"Unknown recipe key {key!r}{place}.{hint} Valid keys: {', '.join(sorted(valid))}.")


def check_block_keys(block: dict[str, Any] | None, valid: Iterable[str], where: str) -> None:
    """Raise a :class:`RecipeError` for a key of ``block`` that is not one of ``valid`` (the fields of the class the
    block is passed to unchanged: ``SFTConfig``, ``LoraConfig``)."""
    if not block:
        return
    valid = list(valid)
    for key in block:
        if key not in valid:
            raise _unknown_key(key, valid, where)


def check_choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    """Raise a :class:`RecipeError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise RecipeError(f"{where} is {value!r}; use one of: {', '.join(allowed)}.")
