"""What this machine runs natively: the ``dtype: auto`` rule shared by inference and training.

bfloat16 is picked only where the hardware computes it natively: a CUDA device with bf16 support, or a CPU
with AVX512-BF16 or AMX. Elsewhere (an AVX2-only CPU, say) bf16 is emulated and measured about 3x slower
than float32 on this project's machines, so ``auto`` gives float32 there.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where ``/proc/cpuinfo`` is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_kind() -> str:
    """A short name of the CPU's vector unit, as reported next to every timing: ``AMX``, ``AVX512-BF16``,
    ``AVX512`` or ``AVX2`` (torch's own capability name where the flags say nothing more)."""
    import torch  # here, not at the top: recipes read DTYPES without importing torch

    flags, capability = cpu_flags(), str(torch.backends.cpu.get_cpu_capability())
    if not capability.startswith(("AVX512", "AMX")):  # torch runs lower kernels (ATEN_CPU_CAPABILITY=avx2): bf16 is
        return capability                             # emulated whatever the flags say
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return capability


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX (bf16 matmuls in hardware)."""
    return cpu_kind() in ("AMX", "AVX512-BF16")


def auto_dtype(device: str | torch.device | None = None) -> str:
    """``bfloat16`` where ``device`` (default: CUDA if present, else the CPU) runs it natively, else ``float32``."""
    import torch

    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    if kind == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float32"


def resolve_dtype(dtype: str | None, device: str | torch.device | None = None) -> str:
    """A recipe's dtype with ``auto`` (or ``None``) resolved for ``device``."""
    if dtype in (None, "auto"):
        return auto_dtype(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    return dtype
