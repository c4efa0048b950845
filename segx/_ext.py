"""Loads the compiled ``segx._C`` extension, which registers the ``torch.ops.segx.*`` kernels.

A missing or broken extension is not fatal: ``HAS_EXTENSION`` is False, one warning says why, and the ops in
``segx.layers`` use their pure-PyTorch references instead.
"""
import logging
import warnings

__all__ = ["HAS_EXTENSION", "EXTENSION_ERROR", "has_op"]

logger = logging.getLogger(__name__)

try:
    from segx import _C  # noqa: F401  (import registers the ops)

    HAS_EXTENSION = True
    EXTENSION_ERROR = None
except (ImportError, OSError) as e:  # not built, or built against another torch (undefined symbol)
    HAS_EXTENSION = False
    EXTENSION_ERROR = e
    warnings.warn(
        f"segx._C could not be loaded ({e}); segx ops fall back to their pure-PyTorch references. "
        "Build it with `make setup` or `pip install -e . --no-build-isolation`.",
        RuntimeWarning,
        stacklevel=2,
    )


def has_op(name: str) -> bool:
    """True when ``torch.ops.segx.<name>`` is registered by the compiled extension."""
    if not HAS_EXTENSION:
        return False
    import torch

    try:
        getattr(torch.ops.segx, name)
        return True
    except (AttributeError, RuntimeError):
        return False
