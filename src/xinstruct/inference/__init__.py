"""Inference engines: the :class:`Engine` interface, its kinds, and the one place that builds them.

A kind of engine is an :class:`Engine` subclass and an :class:`EngineConfig` subclass whose ``make`` builds it,
registered by one line in :data:`ENGINES`. Recipes (``engine:`` blocks), chat and evaluation all build engines
through :func:`make_engine`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import Decoding, Engine, EngineConfig, GenerationParams

# engine type -> "module:config class" (imported when a recipe asks for that type)
ENGINES: dict[str, str] = {
    "local": "xinstruct.inference.local:LocalConfig",
    "endpoint": "xinstruct.inference.endpoint_config:EndpointConfig",
}


def config_class(kind: str, where: str = "engine.type") -> type[EngineConfig]:
    """The config class registered for engine kind ``kind``."""
    if kind not in ENGINES:
        from ..errors import RecipeError

        raise RecipeError(f"{where} is {kind!r}; use one of: {', '.join(ENGINES)}.")
    module, name = ENGINES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def engine_config(type: str = "local", **settings) -> EngineConfig:
    """The config of engine kind ``type`` from keyword settings, checked like a recipe's ``engine`` block."""
    from ..config import build_block

    config = build_block(config_class(type), {"type": type, **settings}, "engine")
    config.check("engine")
    return config


def make_engine(config: EngineConfig, model: str, requests_dir: str | Path | None = None,
                progress: bool = True) -> Engine:
    """Build the engine ``config`` describes (``recipe.engine_for(role)``), serving ``model``.

    Args:
        config (`EngineConfig`): the engine block, an instance of its kind's config class.
        model (`str`): the role's model: loaded by a local engine; the default ``model=`` of an endpoint engine.
        requests_dir (`str` or `Path`, *optional*): endpoint engines store answers here as they arrive and
            replay them after a crash (normally ``<step>/requests``).
        progress (`bool`, *optional*, defaults to `True`): show progress bars.
    """
    return config.make(model, requests_dir=requests_dir, progress=progress)


__all__ = ["ENGINES", "Decoding", "Engine", "EngineConfig", "GenerationParams", "config_class", "engine_config",
           "make_engine"]
