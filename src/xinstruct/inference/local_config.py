"""The settings of the local engine (``engine: {type: local, ...}``): a model loaded with transformers on this
machine (:mod:`xinstruct.inference.local`, over several devices :mod:`xinstruct.inference.pool`). Light: reading a
recipe imports neither torch nor transformers."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RecipeError
from .base import EngineConfig


@dataclass
class LocalConfig(EngineConfig):
    """A model loaded with transformers on this machine (``engine: {type: local, ...}``); see :class:`EngineConfig`
    for ``dtype`` and ``max_input_tokens``.

    Args:
        batch_size (`int`, *optional*, defaults to `16`): prompts per forward pass.
        device (`str`, *optional*): ``cpu``, ``cuda``, ...; default: CUDA when available.
        devices (`int` or `str`, *optional*, defaults to `1`): worker processes, one per device (``cuda:0`` ..
            ``cuda:N-1``; ``all``: every visible GPU). Rows are split by whole batches and merged in input order;
            the rows are the same as with one device (:class:`~xinstruct.inference.pool.DevicePool`). On CPU, ``N``
            processes share the cores.
    """

    type: str = "local"
    batch_size: int = 16
    device: str | None = None
    devices: int | str = 1

    def check(self, where: str) -> None:
        super().check(where)
        if self.batch_size < 1:
            raise RecipeError(f"{where}.batch_size must be >= 1.")
        if self.devices != "all" and (not isinstance(self.devices, int) or self.devices < 1):
            raise RecipeError(f"{where}.devices is {self.devices!r}: use a number >= 1 or 'all'.")
