"""The LM head only where the loss is: within :func:`lm_head_on_loss_positions`, TRL's fused LM head projects only
the positions whose label carries loss, on every device (TRL 1.16 does so on CUDA/XPU only). It patches a private TRL
name, checked at every use (:func:`lm_head_restriction_status`); where it cannot apply, training goes on with TRL's
default head and a loud WARNING."""

from __future__ import annotations

import logging
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# TRL versions the LM-head restriction has been verified with (the LM-head tests in tests/test_training.py). It
# patches a private TRL name, so any other TRL trains with TRL's default LM head, with a WARNING, until those tests
# pass on it and this range is widened.
TRL_LM_HEAD_VERIFIED = ">=1.16,<1.17"
_LM_HEAD_SWITCH = "_use_triton"  # trl.trainer.utils: read by add_fused_lm_head as "score only the valid positions"
_LM_HEAD_WARNED: set[str] = set()  # reasons already warned about in this process


def _reads_global(code, name: str) -> bool:
    """Whether ``code`` (or a function nested in it) loads the global ``name``."""
    import dis

    if any(i.opname == "LOAD_GLOBAL" and i.argval == name for i in dis.get_instructions(code)):
        return True
    return any(_reads_global(c, name) for c in code.co_consts if hasattr(c, "co_code"))


def lm_head_restriction_status() -> tuple[bool, str]:
    """Whether :func:`lm_head_on_loss_positions` can restrict TRL's LM head to the loss positions with the installed
    TRL, and why (not): the TRL version must be in :data:`TRL_LM_HEAD_VERIFIED`, ``trl.trainer.utils._use_triton``
    must exist, TRL's fused LM head must read it from that module, and :class:`trl.SFTTrainer` must use that head."""
    import trl
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        version = Version(str(trl.__version__))
    except InvalidVersion:
        return False, f"TRL's version {trl.__version__!r} cannot be parsed"
    if version not in SpecifierSet(TRL_LM_HEAD_VERIFIED):
        return False, (f"TRL {version} is outside the versions the restriction has been verified with "
                       f"(TRL_LM_HEAD_VERIFIED = '{TRL_LM_HEAD_VERIFIED}')")
    try:
        import trl.trainer.sft_trainer as sft_module
        import trl.trainer.utils as trl_utils
    except ImportError as e:
        return False, f"TRL's modules cannot be imported ({e})"
    if not callable(getattr(trl_utils, _LM_HEAD_SWITCH, None)):
        return False, f"trl.trainer.utils.{_LM_HEAD_SWITCH} no longer exists in TRL {version}"
    fused = getattr(trl_utils, "add_fused_lm_head", None)
    if fused is None or getattr(fused, "__globals__", None) is not vars(trl_utils):
        return False, f"trl.trainer.utils.add_fused_lm_head is missing or defined elsewhere in TRL {version}"
    if not _reads_global(fused.__code__, _LM_HEAD_SWITCH):
        return False, f"TRL {version}'s add_fused_lm_head no longer reads trl.trainer.utils.{_LM_HEAD_SWITCH}"
    if getattr(sft_module, "add_fused_lm_head", None) is not fused:
        return False, f"TRL {version}'s SFTTrainer no longer uses trl.trainer.utils.add_fused_lm_head"
    return True, f"TRL {version}: add_fused_lm_head reads trl.trainer.utils.{_LM_HEAD_SWITCH}; the restriction applies"


def _warn_lm_head_off(reason: str) -> None:
    if reason in _LM_HEAD_WARNED:
        return
    _LM_HEAD_WARNED.add(reason)
    logger.warning(
        "LM-HEAD RESTRICTION IS OFF (lm_head_on_loss_only is set but cannot be applied): %s. Training computes the "
        "full LM head at every position, prompt and padding included (for Gemma a 262k-token vocabulary: the largest "
        "matmul of a small model's step), so SFT is slower and uses more memory; the loss and gradients are "
        "unchanged. To get it back, install a verified TRL (pip install 'trl%s'); or, for a newer TRL, run "
        "`pytest tests/test_training.py` and, if the LM-head tests pass, widen TRL_LM_HEAD_VERIFIED in "
        "xinstruct/lm_head.py. Set lm_head_on_loss_only: false on the role to train without it knowingly.",
        reason, TRL_LM_HEAD_VERIFIED)


@contextmanager
def lm_head_on_loss_positions(enabled: bool = True):
    """Within this block, TRL's fused LM head projects only the positions whose label carries loss, on every
    device. TRL 1.16 does so on CUDA/XPU only (elsewhere it projects every position and masks the result); the
    selected rows are the same, so the loss and its gradients do not change (``tests/test_training.py``).

    Yields whether the restriction is on: it is off when not ``enabled``, and when
    :func:`lm_head_restriction_status` says the installed TRL does not allow it (a WARNING, once per reason)."""
    if not enabled:
        yield False
        return
    ok, reason = lm_head_restriction_status()
    if not ok:
        _warn_lm_head_off(reason)
        yield False
        return
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, _LM_HEAD_SWITCH)
    setattr(trl_utils, _LM_HEAD_SWITCH, lambda device: True)
    try:
        yield True
    finally:
        setattr(trl_utils, _LM_HEAD_SWITCH, original)
