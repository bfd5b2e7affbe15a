"""Inference engines: the :class:`Engine` interface and its implementations."""

from __future__ import annotations

from pathlib import Path

from .base import Engine, GenerationParams


def make_engine(config, model: str, requests_dir: str | Path | None = None, progress: bool = True) -> Engine:
    """Build the engine a recipe's ``engine`` block asks for, serving ``model``.

    Args:
        config (`EngineConfig`): the engine block (``recipe.engine_for(role)``).
        model (`str`): the role's model: loaded by a local engine; the default ``model=`` of an endpoint engine
            (built-in names are resolved and local paths made absolute, so a ``transformers serve`` on this machine can load it).
        requests_dir (`str` or `Path`, *optional*): endpoint engines store answers here as they arrive and
            replay them after a crash (normally ``<step>/requests``).
    """
    if config.type == "local":
        from .local import LocalEngine
        from .pool import DevicePool, pool_devices

        devices = pool_devices(config.devices, config.device)
        if len(devices) > 1:
            return DevicePool(model, devices, batch_size=config.batch_size, dtype=config.dtype,
                              max_input_tokens=config.max_input_tokens, progress=progress)
        return LocalEngine(
            model,
            batch_size=config.batch_size,
            dtype=config.dtype,
            device=config.device,
            max_input_tokens=config.max_input_tokens,
            progress=progress,
        )
    if config.type == "endpoint":
        from ..models import resolve_model
        from .endpoint import make_endpoint_engine
        from .replay import ReplayStore

        if config.model is None:
            model = resolve_model(model)  # the built-in names become local folders
            if Path(model).exists():
                model = str(Path(model).resolve())
        store = ReplayStore(requests_dir) if requests_dir is not None else None
        return make_endpoint_engine(config, model, store=store, progress=progress)
    raise ValueError(f"Unknown engine type {config.type!r}; use 'local' or 'endpoint'.")


__all__ = ["Engine", "GenerationParams", "make_engine"]
