"""Published-format checkpoints with deterministic weights (the parity fixture's weight rule).

The CT-SAM3D parity fixture (``shared/fixtures/ctsam3d/``) lists every entry of the published state
dict (key, shape, dtype) and defines each entry's values from a per-key seeded RNG. This module
rebuilds that state dict so tests can write a ``params.pth`` exactly like the published one, and so the
training stage can start from a published-format checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from ctsam.io.atomic import atomic_path
from ctsam.model.checkpoint import PUBLISHED_STATE_KEY

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bfloat16": torch.bfloat16,
}


def deterministic_entry(key: str, shape: Iterable[int], dtype: str = "float32") -> torch.Tensor:
    """One state-dict entry under the fixture's rule (see the fixture README)."""
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    torch_dtype = _DTYPES[dtype]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch_dtype)
    v = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(shape)
    if leaf == "running_var":
        out = 0.5 + 0.5 * np.abs(v)
    elif leaf == "running_mean":
        out = 0.1 * v
    elif leaf == "bias":
        out = 0.05 * v
    elif len(shape) == 1 and leaf == "weight":
        out = 1.0 + 0.1 * v
    elif len(shape) >= 2:
        out = v / math.sqrt(math.prod(shape[1:]))
    else:
        out = 0.1 * v
    return torch.from_numpy(np.asarray(out)).to(torch_dtype)


def deterministic_state_dict(entries: Iterable[Mapping]) -> dict[str, torch.Tensor]:
    """State dict from manifest entries ``{"key", "shape", "dtype"}``, in their order."""
    return {e["key"]: deterministic_entry(e["key"], e["shape"], e.get("dtype", "float32")) for e in entries}


def read_manifest(path: str | os.PathLike[str]) -> list[dict]:
    """The ``state_dict`` entries of ``ctsam3d_state_dict_manifest.json``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["state_dict"]


def write_published_params(path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``{'model_state_dict': state_dict}`` with torch.save, atomically (the published layout)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({PUBLISHED_STATE_KEY: dict(state_dict)}, tmp)
    return path


def write_fixture_params(manifest_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """``params.pth`` holding the fixture's deterministic weights for every manifest entry."""
    return write_published_params(out_path, deterministic_state_dict(read_manifest(manifest_path)))


def write_sam3d_adapter_checkpoint(manifest_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """A published-layout 3DSAM-adapter checkpoint (``encoder_dict``, ``feature_dict`` (4),
    ``decoder_dict``) holding the 3dsam_adapter fixture's deterministic weights: the ctsam3d rule with
    the seed key ``<dict>.<key>`` (``feature_dict.<i>.<key>`` for the prompt encoders)."""
    parts = json.loads(Path(manifest_path).read_text(encoding="utf-8"))["state_dicts"]

    def build(part: str) -> dict[str, torch.Tensor]:
        return {
            e["key"]: deterministic_entry(f"{part}.{e['key']}", e["shape"], e.get("dtype", "float32"))
            for e in parts[part]
        }

    n_features = sum(1 for name in parts if name.startswith("feature_dict."))
    obj = {
        "encoder_dict": build("encoder_dict"),
        "feature_dict": [build(f"feature_dict.{i}") for i in range(n_features)],
        "decoder_dict": build("decoder_dict"),
    }
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        torch.save(obj, tmp)
    return out_path
