"""One-click lesion segmentation: for each click, patch -> normalise -> forward -> probabilities on the CT grid.

Per click (see :mod:`ctsam.lesions.patch` for the grids): the CT is sampled on the model's patch
grid centred on the click (``InputSpec`` spacing and patch size, padding outside the CT), normalised
with ``InputSpec.normalise`` (the published HU window and z-score), and the model's
``foreground_probability`` is computed with one positive click at the patch centre. The probability
is resampled back onto the CT voxels the patch covers; voxels at or above the threshold form the
lesion, reduced to the connected component that holds the click (``keep: click_component``; when the
click voxel itself is below the threshold, the component nearest to it within ``snap_mm``, else none).

Lesions that overlap are resolved voxel by voxel: the higher probability wins, ties go to the lower
lesion id, so the result never depends on the order of the table. Same CT, clicks and weights give
identical arrays (deterministic kernels; bf16 autocast only on CUDA).

The engine knows models only through :mod:`ctsam.model`'s seam (``input_spec``,
``foreground_probability``); it never imports a concrete network.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ctsam.errors import ConfigError, InputDataError
from ctsam.lesions.clicks import Click, click_index_zyx
from ctsam.lesions.patch import paste_back, patch_center_zyx, patch_grid, sample_patch, touches_faces
from ctsam.volume import CTVolume, smallest_label_dtype

if TYPE_CHECKING:
    from ctsam.model import OneClickSegmenter

log = logging.getLogger(__name__)

DEFAULT_MODEL = ""  # key of the model used for clicks without a label (or with a label no model is mapped to)


@dataclass(frozen=True)
class LesionSettings:
    """Settings of the lesion stage (config section ``lesions``)."""

    threshold: float = 0.5
    keep: str = "click_component"  # click_component | all
    device: str = "auto"
    amp_bf16: bool = True
    pad_hu: float = -1024.0
    snap_mm: float = 5.0  # a click voxel below the threshold keeps the nearest component within this distance

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("lesions.threshold must lie between 0 and 1", found=str(self.threshold))
        if self.keep not in ("click_component", "all"):
            raise ConfigError("unknown lesions.keep", expected="click_component | all", found=repr(self.keep))

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> LesionSettings:
        return cls(
            threshold=float(section.get("threshold", 0.5)),
            keep=str(section.get("keep", "click_component")),
            device=str(section.get("device", "auto")),
            amp_bf16=bool(section.get("amp_bf16", True)),
            pad_hu=float(section.get("pad_hu", -1024.0)),
            snap_mm=float(section.get("snap_mm", 5.0)),
        )


@dataclass
class LesionPrediction:
    """One lesion before overlaps are resolved: a crop of the CT grid with probabilities and the kept mask."""

    click: Click
    model_key: str
    start_zyx: tuple[int, int, int]
    probability: np.ndarray  # float32 crop of the CT grid
    mask: np.ndarray  # bool crop, the kept component(s) at or above the threshold
    touches_patch_border: bool
    click_in_mask: bool
    notes: list[str] = field(default_factory=list)

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(s, s + n) for s, n in zip(self.start_zyx, self.mask.shape))  # type: ignore[return-value]


@dataclass
class LesionResult:
    """Every lesion of a case: the resolved lesion map and the per-lesion predictions."""

    array: np.ndarray  # (z, y, x) uint8/uint16, voxel value = lesion id
    predictions: list[LesionPrediction]
    lost_voxels: dict[int, int]  # lesion id -> voxels of its mask that a neighbour with higher probability took


def model_for(click: Click, models: Mapping[str, Any], *, case: str | None = None) -> str:
    """The key of the model that segments ``click``: its label's model, else the default one."""
    if click.label and click.label in models:
        return click.label
    if DEFAULT_MODEL in models:
        return DEFAULT_MODEL
    raise InputDataError(
        "no lesion model for this click's label",
        case=case,
        path=click.source or None,
        expected=f"a model for label {click.label!r} or a default model; mapped labels: "
        f"{', '.join(sorted(k for k in models if k)) or 'none'}",
        found=f"lesion_id {click.lesion_id} label {click.label!r}",
        fix="pass --checkpoint MODEL (default) or --checkpoint LABEL=MODEL (config lesions.checkpoint / checkpoints)",
    )


class LesionEngine:
    """Runs the models of ``models`` (key ``""`` = default, else a click label) on clicks of one CT."""

    def __init__(self, models: Mapping[str, OneClickSegmenter], settings: LesionSettings, device) -> None:
        if not models:
            raise ConfigError("no lesion model given", fix="pass --checkpoint MODEL")
        for key, model in models.items():
            if not hasattr(model, "foreground_probability"):
                raise ConfigError(
                    "the checkpoint is not a one-click lesion model",
                    expected="a model with foreground_probability (family sam3d_adapter)",
                    found=f"family {getattr(model, 'family', '?')} variant {getattr(model, 'variant', '?')}"
                    + (f" for label {key!r}" if key else ""),
                    fix="pass a 3DSAM-adapter checkpoint (published .pth with --preset, or a converted .safetensors)",
                )
        self.models = dict(models)
        self.settings = settings
        self.device = device

    # ------------------------------------------------------------------ one click
    def forward(self, model: OneClickSegmenter, patch_hu: np.ndarray) -> np.ndarray:
        """Foreground probability (float32, patch shape) of ``model`` for a click at the patch centre."""
        import contextlib

        import torch

        spec = model.input_spec
        x = torch.from_numpy(np.ascontiguousarray(spec.normalise(patch_hu), dtype=np.float32))[None, None]
        points = torch.tensor([[list(patch_center_zyx(spec.patch_size_zyx))]], dtype=torch.float32)
        labels = torch.ones((1, 1), dtype=torch.int64)
        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda" and self.settings.amp_bf16
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), amp:
            prob = model.foreground_probability(x.to(self.device), points.to(self.device), labels.to(self.device))
        out = prob[0].float().cpu().numpy()
        if not np.all(np.isfinite(out)):
            raise InputDataError(
                "the lesion model returned non-finite probabilities",
                expected="finite probabilities",
                found="NaN or inf in the model output",
                fix="check the checkpoint (ctsam model info) and the CT's values",
            )
        return out.astype(np.float32, copy=False)

    def predict(self, ct: CTVolume, click: Click, *, case: str | None = None) -> LesionPrediction:
        from scipy import ndimage

        key = model_for(click, self.models, case=case)
        model = self.models[key]
        spec = model.input_spec
        grid = patch_grid(ct.geometry, click.world_xyz_mm, spec.patch_size_zyx, spec.spacing_zyx_mm)
        patch = sample_patch(ct.array, ct.geometry, grid, pad_hu=self.settings.pad_hu)
        prob_patch = self.forward(model, patch)
        thr = self.settings.threshold
        patch_mask = prob_patch >= thr
        notes: list[str] = []
        pasted = paste_back(prob_patch, grid, ct.geometry)
        if pasted is None:  # cannot happen for a click inside the CT; kept for safety
            start, prob = (0, 0, 0), np.zeros((1, 1, 1), np.float32)
        else:
            start, prob = pasted
        mask = prob >= thr
        idx = np.floor(click_index_zyx(ct.geometry, click) + 0.5).astype(int) - np.asarray(start)
        inside_crop = bool(np.all(idx >= 0) and np.all(idx < np.asarray(mask.shape)))
        click_in_mask = inside_crop and bool(mask[tuple(idx)])
        if self.settings.keep == "click_component" and mask.any():
            components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
            if click_in_mask:
                keep = int(components[tuple(idx)])
            else:
                keep = nearest_component(components, idx, ct.geometry.spacing_xyz_mm[::-1], self.settings.snap_mm)
                notes.append(
                    f"the click voxel is below the threshold: kept the component nearest to it (within "
                    f"{self.settings.snap_mm:g} mm)"
                    if keep
                    else f"the model found nothing within {self.settings.snap_mm:g} mm of the click: the lesion is empty"
                )
            if n > 1:
                notes.append(
                    f"{n - 1 if keep else n} component(s) above the threshold away from the click dropped "
                    "(keep: click_component)"
                )
            mask = components == keep if keep else np.zeros_like(mask)
        # does the kept lesion reach the patch faces? then it is larger than one patch (truncated)
        touches = False
        if mask.any():
            if self.settings.keep == "click_component":
                c = patch_center_zyx(spec.patch_size_zyx)
                comp, _ = ndimage.label(patch_mask, structure=np.ones((3, 3, 3), bool))
                sel = comp == comp[c] if comp[c] else patch_mask
                touches = touches_faces(sel)
            else:
                touches = touches_faces(patch_mask)
        if touches:
            size_mm = [round(n * s, 1) for n, s in zip(spec.patch_size_zyx, spec.spacing_zyx_mm)]
            notes.append(
                f"the lesion reaches the border of the model's patch ({' x '.join(map(str, size_mm))} mm, z y x): "
                "it is probably larger than one patch and cut off there; check it or segment it in parts"
            )
        if not mask.any():
            notes.append("no voxel reached the probability threshold: the lesion is empty")
        return LesionPrediction(
            click,
            key,
            tuple(int(v) for v in start),  # type: ignore[arg-type]
            prob,
            mask,
            touches,
            click_in_mask,
            notes,
        )

    # ------------------------------------------------------------------ a case
    def run(self, ct: CTVolume, clicks: list[Click], *, case: str | None = None) -> LesionResult:
        for click in clicks:  # every click has a model before any forward runs
            model_for(click, self.models, case=case)
        predictions = []
        for n, click in enumerate(clicks, start=1):
            pred = self.predict(ct, click, case=case)
            log.info(
                "lesion %d (%d of %d, %s): %d voxels%s",
                click.lesion_id,
                n,
                len(clicks),
                click.source,
                int(pred.mask.sum()),
                " [reaches the patch border]" if pred.touches_patch_border else "",
            )
            predictions.append(pred)
        array, lost = resolve_overlaps(ct.geometry.shape_zyx, predictions)
        return LesionResult(array, predictions, lost)


def nearest_component(components: np.ndarray, idx_zyx, spacing_zyx_mm, within_mm: float) -> int:
    """The component (label of ``components``) with a voxel nearest to ``idx_zyx`` (mm), if one lies
    within ``within_mm``; 0 otherwise. Ties go to the lower component label."""
    reach = [int(np.ceil(within_mm / s)) for s in spacing_zyx_mm]
    lo = [max(int(i) - r, 0) for i, r in zip(idx_zyx, reach)]
    hi = [min(int(i) + r + 1, n) for i, r, n in zip(idx_zyx, reach, components.shape)]
    window = components[tuple(slice(a, b) for a, b in zip(lo, hi))]
    pts = np.argwhere(window > 0)
    if len(pts) == 0:
        return 0
    d = np.sqrt(((((pts + lo) - np.asarray(idx_zyx)) * np.asarray(spacing_zyx_mm)) ** 2).sum(axis=1))
    labels = window[tuple(pts.T)]
    order = np.lexsort((labels, d))
    best = order[0]
    return int(labels[best]) if d[best] <= within_mm else 0


def resolve_overlaps(shape_zyx, predictions: list[LesionPrediction]) -> tuple[np.ndarray, dict[int, int]]:
    """The lesion map: each voxel goes to the lesion with the highest probability among those whose
    mask holds it; ties go to the lower lesion id. Returns the map and the voxels each lesion lost."""
    max_id = max((p.click.lesion_id for p in predictions), default=0)
    out = np.zeros(tuple(shape_zyx), dtype=smallest_label_dtype(max_id))
    ordered = sorted(predictions, key=lambda p: p.click.lesion_id)
    boxes = [p for p in ordered if p.mask.any()]
    lost = {p.click.lesion_id: 0 for p in ordered}
    if not boxes:
        return out, lost
    lo = np.min([p.start_zyx for p in boxes], axis=0)
    hi = np.max([np.asarray(p.start_zyx) + p.mask.shape for p in boxes], axis=0)
    best = np.full(tuple(hi - lo), -1.0, dtype=np.float32)
    region = np.zeros(tuple(hi - lo), dtype=out.dtype)
    for p in boxes:
        sl = tuple(slice(s - o, s - o + n) for s, o, n in zip(p.start_zyx, lo, p.mask.shape))
        take = p.mask & (p.probability > best[sl])
        best[sl][take] = p.probability[take]
        region[sl][take] = p.click.lesion_id
    for p in boxes:
        sl = tuple(slice(s - o, s - o + n) for s, o, n in zip(p.start_zyx, lo, p.mask.shape))
        lost[p.click.lesion_id] = int((p.mask & (region[sl] != p.click.lesion_id)).sum())
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = region
    return out, lost
