"""Inference engines: the :class:`Engine` interface, its kinds, and the one place that builds them.

A kind of engine is an :class:`Engine` subclass, an :class:`EngineConfig` subclass (the settings of an ``engine:``
block of its ``type``) and a function that builds the engine from its config, registered by one line in
:data:`ENGINES`. Recipes (``engine:`` blocks), chat and evaluation all build engines through :func:`make_engine`.

The layers, each importing only the ones before it: :mod:`~xinstruct.inference.base` (the interface, the settings
every kind has and the registry), the configs (:mod:`~xinstruct.inference.local_config`,
:mod:`~xinstruct.inference.endpoint_config`: light, so reading a recipe imports no engine), the engines
(:mod:`~xinstruct.inference.local` and :mod:`~xinstruct.inference.pool`, :mod:`~xinstruct.inference.endpoint`),
then this module.
"""

from __future__ import annotations

from pathlib import Path

from ..schema import build_block
from .base import ENGINES, Decoding, Engine, EngineConfig, EngineKind, GenerationParams, config_class, engine_builder


def engine_config(type: str = "local", **settings) -> EngineConfig:
    """The config of engine kind ``type`` from keyword settings, checked like a recipe's ``engine`` block."""
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
    return engine_builder(config.type)(config, model, requests_dir=requests_dir, progress=progress)


__all__ = ["ENGINES", "Decoding", "Engine", "EngineConfig", "EngineKind", "GenerationParams", "config_class",
           "engine_config", "make_engine"]
