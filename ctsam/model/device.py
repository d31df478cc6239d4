"""Where and how a network runs: the torch device to use, and deterministic kernels."""

from __future__ import annotations

import os

import torch

from ctsam.errors import ResourceError


def resolve_device(requested: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; a CUDA request without a GPU raises :class:`ResourceError`."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ResourceError(
            "CUDA was requested but no GPU is available",
            expected="a CUDA device",
            found=f"torch {torch.__version__}, cuda available: False",
            fix="run on a GPU node or pass --device cpu",
        )
    return torch.device(requested)


def set_deterministic() -> None:
    """Deterministic kernels where torch offers them (warn, never fail, where it does not)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
