"""Family ``sam3d_adapter``: the 3DSAM-adapter network behind the :class:`OneClickSegmenter` seam.

Loading a published checkpoint (``torch.load`` dict with ``encoder_dict``, ``feature_dict`` (4),
``decoder_dict``): every key and shape is checked against the variant's layout before anything is
loaded (the first missing, unexpected or mis-shaped entries are named with their published names),
tensors with NaN/inf are refused naming the tensor, and the module is only then materialised.

Clicks: ctsam passes (z, y, x) patch voxels; the published network takes (d, w, h) = (z, x, y). The
published network has no label embedding: every click that is not padding (label -1) is grid-sampled
the same way (the published training feeds 10 clicks in the lesion and 20 anywhere in the patch; the
published test feeds positive clicks only). Batches are run one patch at a time (the published
prompt encoder works on batch 1).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ctsam.errors import CheckpointError
from ctsam.model.api import InputSpec, OneClickSegmenter
from ctsam.model.checkpoint import check_finite
from ctsam.model.presets import get_preset
from ctsam.model.sam3d_adapter import (
    VARIANTS,
    Sam3dAdapterNet,
    build_net,
    published_name,
    published_to_state_dict,
    state_dict_to_published,
)

log = logging.getLogger(__name__)

FAMILY = "sam3d_adapter"
FORMAT_VERSION = 1
LICENCE_NOTE = (
    "Architecture: 3DSAM-adapter (med-air/3DSAM-adapter; no licence file in the repository, so "
    "unspecified) on SAM ViT-B (Apache-2.0). Check the weights' terms before redistribution."
)


def default_input_spec(variant: str) -> InputSpec:
    """Input spec of a model without preset: the variant's patch at 1 mm, no intensity convention."""
    p = VARIANTS[variant].patch_size
    return InputSpec(patch_size_zyx=(p, p, p), spacing_zyx_mm=(1.0, 1.0, 1.0))


class Sam3dAdapterModel(OneClickSegmenter):
    """A 3DSAM-adapter network with its input convention and provenance."""

    family = FAMILY

    def __init__(
        self,
        net: Sam3dAdapterNet,
        *,
        variant: str,
        input_spec: InputSpec | None = None,
        output_classes: tuple[str, ...] | None = None,
        metadata: Mapping[str, Any] | None = None,
        sha256: str | None = None,
    ) -> None:
        self._net = net
        self.variant = variant
        self._spec = input_spec or default_input_spec(variant)
        if self._spec.preset and output_classes is None:
            output_classes = ("background", get_preset(self._spec.preset).target)
        self._classes = tuple(output_classes or ("background", "lesion"))
        self._extra = dict(metadata or {})
        self._sha256 = sha256
        #: bf16 autocast on CUDA (float32 on CPU).
        self.amp_bf16 = True

    # ---------------------------------------------------------------- seam properties
    @property
    def module(self) -> Sam3dAdapterNet:
        return self._net

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    @property
    def output_classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def sha256(self) -> str | None:
        return self._sha256

    @property
    def metadata(self) -> dict:
        return {
            **self._extra,
            "family": FAMILY,
            "variant": self.variant,
            "format_version": FORMAT_VERSION,
            "input_spec": self._spec.to_dict(),
            "preset": self._spec.preset,
            "output_classes": list(self._classes),
            "sha256": self._sha256,
            "licence": self._extra.get("licence", LICENCE_NOTE),
        }

    def update_metadata(self, **fields: Any) -> Sam3dAdapterModel:
        """Set extra metadata keys (provenance, training record); the input spec, family and variant are
        changed only through :meth:`with_input_spec`."""
        reserved = {"family", "variant", "format_version", "input_spec", "preset", "output_classes"}
        bad = sorted(reserved & set(fields))
        if bad:
            raise ValueError(f"metadata keys {bad} are set by the model itself")
        if "sha256" in fields:
            self._sha256 = fields.pop("sha256")
        self._extra.update(fields)
        return self

    def with_input_spec(self, spec: InputSpec, output_classes: tuple[str, ...] | None = None) -> Sam3dAdapterModel:
        """Set the input convention (e.g. a preset's); returns self."""
        p = self._net.config.patch_size
        if tuple(spec.patch_size_zyx) != (p, p, p):
            raise ValueError(f"the {self.variant} network takes {p}^3 patches, not {spec.patch_size_zyx}")
        self._spec = spec
        if output_classes is not None:
            self._classes = tuple(output_classes)
        elif spec.preset:
            self._classes = ("background", get_preset(spec.preset).target)
        return self

    def with_preset(self, preset: str) -> Sam3dAdapterModel:
        return self.with_input_spec(get_preset(preset).input_spec(self._net.config.patch_size))

    # ---------------------------------------------------------------- forward
    @property
    def logit_offset(self) -> float:
        """Post-hoc calibration added to the foreground (class 1) logit, as a bias of the decoder's last
        (bias-free) conv would be; ``metadata["calibration"]["delta"]``, 0 when uncalibrated."""
        cal = self._extra.get("calibration") or {}
        delta = float(cal.get("delta", 0.0)) if isinstance(cal, Mapping) else 0.0
        if not math.isfinite(delta):
            raise ValueError(f"calibration delta must be finite, got {delta}")
        return delta

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def logits(self, patch: torch.Tensor, points_zyx: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """Published test-time forward per patch; see :meth:`OneClickSegmenter.logits`.

        Raises:
            ValueError: wrong shapes, or a patch without any click.
        """
        p = self._net.config.patch_size
        if patch.ndim != 5 or patch.shape[1] != 1 or tuple(patch.shape[2:]) != (p, p, p):
            raise ValueError(f"patch must be (B, 1, {p}, {p}, {p}) indexed (z, y, x), got {tuple(patch.shape)}")
        b = patch.shape[0]
        if points_zyx.ndim != 3 or points_zyx.shape[0] != b or points_zyx.shape[2] != 3:
            raise ValueError(f"points_zyx must be ({b}, N, 3), got {tuple(points_zyx.shape)}")
        if tuple(point_labels.shape) != tuple(points_zyx.shape[:2]):
            raise ValueError(f"point_labels must be {tuple(points_zyx.shape[:2])}, got {tuple(point_labels.shape)}")
        dev = self.device
        out = []
        for i in range(b):
            keep = point_labels[i] >= 0
            if not bool(keep.any()):
                raise ValueError(f"patch {i} has no click (all labels are -1 padding)")
            pts = points_zyx[i][keep.to(points_zyx.device)].to(device=dev, dtype=torch.float32)
            pts_dwh = pts[:, [0, 2, 1]].unsqueeze(0)
            with self._autocast():
                out.append(self._net(patch[i : i + 1].to(device=dev, dtype=torch.float32), pts_dwh).float())
        logits = torch.cat(out)
        delta = self.logit_offset
        if delta:
            logits[:, 1] += delta
        return logits


# ---------------------------------------------------------------- building and loading
def build(variant: str) -> Sam3dAdapterModel:
    """Randomly initialised model (seed torch yourself for reproducibility)."""
    return Sam3dAdapterModel(build_net(variant), variant=variant)


@functools.cache
def expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = build_net(variant)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _best_variant(state: Mapping[str, torch.Tensor]) -> str:
    scores = {v: sum(1 for k, t in state.items() if expected_shapes(v).get(k) == tuple(t.shape)) for v in VARIANTS}
    return max(scores, key=lambda v: scores[v])


def check_layout(
    state: Mapping[str, torch.Tensor], variant: str, *, path: str | os.PathLike[str], name=published_name
) -> None:
    """CheckpointError naming the first missing, unexpected and mis-shaped entries (``name`` shows keys)."""
    expected = expected_shapes(variant)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [k for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {name(missing[0])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {name(unexpected[0])})")
    if misshaped:
        k = misshaped[0]
        parts.append(f"{len(misshaped)} mis-shaped (first: {name(k)} {tuple(state[k].shape)}, expected {expected[k]})")
    raise CheckpointError(
        f"checkpoint does not fit the 3DSAM-adapter {variant} layout; nothing was loaded",
        path=path,
        expected=f"{len(expected)} entries of the {variant} state dicts",
        found="; ".join(parts),
        fix="use a published 3DSAM-adapter checkpoint (encoder_dict / feature_dict / decoder_dict) or a file "
        "written by 'ctsam model convert'; a partial or edited checkpoint would give wrong masks",
    )


def materialise(
    variant: str, state: Mapping[str, torch.Tensor], *, path: str | os.PathLike[str], name=published_name
) -> Sam3dAdapterNet:
    """Checked state dict -> network (built on the meta device, tensors assigned, nothing copied twice)."""
    check_layout(state, variant, path=path, name=name)
    check_finite(state, path=path, name=name)
    with torch.device("meta"):
        net = build_net(variant)
    ref = net.state_dict()
    net.load_state_dict({k: v.to(dtype=ref[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError("checkpoint left tensors uninitialised", path=path, found=", ".join(left[:5]))
    return net.eval()


def is_published(obj: object) -> bool:
    return isinstance(obj, Mapping) and "encoder_dict" in obj


def from_published(
    obj: Mapping, *, path: str | os.PathLike[str], preset: str | None, sha256: str | None
) -> Sam3dAdapterModel:
    """Model from a loaded published checkpoint dict (see the module docstring)."""
    try:
        state = published_to_state_dict(obj)
    except ValueError as err:
        raise CheckpointError(
            "not a 3DSAM-adapter checkpoint",
            path=path,
            expected="a dict with encoder_dict, feature_dict (list of 4) and decoder_dict",
            found=str(err),
            fix="pass the published checkpoint file unchanged",
        ) from err
    variant = _best_variant(state)
    net = materialise(variant, state, path=path)
    others = sorted(k for k in obj if k not in ("encoder_dict", "feature_dict", "decoder_dict"))
    if others:
        log.info("ignored entries of the published checkpoint: %s", ", ".join(others))
    model = Sam3dAdapterModel(net, variant=variant, sha256=sha256, metadata={"source": Path(path).name})
    if preset:
        model.with_preset(preset)
    return model


def to_published(model: Sam3dAdapterModel) -> dict:
    """The published checkpoint dict of a model (for ``torch.save``)."""
    return state_dict_to_published({k: v.detach().cpu() for k, v in model.module.state_dict().items()})


def from_safetensors(
    state: Mapping[str, torch.Tensor], meta: Mapping[str, Any], *, path: str | os.PathLike[str], sha256: str | None
) -> Sam3dAdapterModel:
    variant = meta.get("variant")
    if variant not in VARIANTS:
        raise CheckpointError(
            "unknown sam3d_adapter variant in checkpoint",
            path=path,
            expected=", ".join(sorted(VARIANTS)),
            found=str(variant),
        )
    if int(meta.get("format_version", 1)) > FORMAT_VERSION:
        raise CheckpointError(
            "checkpoint written by a newer ctsam",
            path=path,
            expected=f"format version <= {FORMAT_VERSION}",
            found=str(meta.get("format_version")),
            fix="upgrade ctsam",
        )
    net = materialise(variant, state, path=path, name=str)
    spec = InputSpec.from_dict(meta["input_spec"]) if meta.get("input_spec") else None
    classes = tuple(meta["output_classes"]) if meta.get("output_classes") else None
    extra = {
        k: v
        for k, v in meta.items()
        if k not in ("family", "variant", "format_version", "input_spec", "preset", "output_classes", "sha256")
    }
    model = Sam3dAdapterModel(net, variant=variant, metadata=extra, sha256=meta.get("sha256") or sha256)
    try:
        model.logit_offset  # noqa: B018  # a calibration entry must hold a finite number
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            "checkpoint calibration is not a finite number",
            path=path,
            expected="metadata calibration.delta: a finite float",
            found=str(err),
            fix="write the file again with ctsam train-demo --calibrate-only",
        ) from err
    if spec is not None:
        try:
            model.with_input_spec(spec, classes)
        except ValueError as err:
            raise CheckpointError(
                "checkpoint metadata contradicts its weights",
                path=path,
                found=str(err),
                fix="write the file again with ctsam.model.save_model",
            ) from err
    elif classes:
        model._classes = classes
    return model


def header_json(model: Sam3dAdapterModel, extra: Mapping[str, Any] | None) -> str:
    return json.dumps({**model.metadata, **dict(extra or {})}, sort_keys=True)
