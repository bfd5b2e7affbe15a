"""Inference engines: the :class:`Engine` interface and its implementations."""

from .base import Engine, GenerationParams


def make_engine(config, model: str, progress: bool = True) -> Engine:
    """Build the engine a recipe's ``engine`` block asks for, serving ``model``."""
    if config.type == "local":
        from .local import LocalEngine

        return LocalEngine(
            model,
            batch_size=config.batch_size,
            dtype=config.dtype,
            device=config.device,
            max_input_tokens=config.max_input_tokens,
            progress=progress,
        )
    raise ValueError(f"Unknown engine type {config.type!r}; use 'local'.")


__all__ = ["Engine", "GenerationParams", "make_engine"]
