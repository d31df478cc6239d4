"""Lesion training data for one-click models (3DSAM-adapter recipe): cases, patches, clicks.

* **Table.** The ``ctsam train`` TSV conventions (:func:`ctsam.training.data.read_table`): a CT and a
  label map per case; here the label map marks lesions (any non-zero voxel) and **each connected
  component (26-connectivity) is one lesion**.
* **Model frame.** Each case is resampled once to the model's isotropic spacing
  (``input_spec.spacing_zyx_mm``, 1 mm for the published presets) on the RAI grid of ``ctsam train``
  (CT linear, pad -1024; labels nearest) and cached as ``<cache>/<case>-lesion-<key>.npz``.
* **Patches (published ``dataset/base_dataset.py``, training split).** Item ``i`` of step ``s`` comes
  from ``default_rng([seed, s, i])`` alone: a case; with probability 2/3 a lesion voxel as the centre,
  else a body voxel (MONAI ``RandCropByPosNegLabeld`` pos=2, neg=1); a random shift of up to 10 % of the
  patch (the 1.2x crop followed by ``RandSpatialCropd``); with probability 0.8 a zoom of 0.85-1.25;
  flips along each axis (p 0.5 each) and an in-plane quarter rotation (p 0.5); with probability 0.5 an
  intensity shift of up to +-20 HU inside the window. The target is every lesion voxel in the patch.
* **Clicks (published ``train.py``).** 10 points drawn with replacement from the patch's lesion voxels
  (label 1) and 20 from anywhere in the patch (label 0); a patch without lesion gets only the random
  points. Batches with different counts are padded with label -1 (ignored by the model).

Arrays are (z, y, x); patch images are normalised with the model's ``InputSpec.normalise``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.errors import InputDataError
from ctsam.training.data import PAD_HU, CaseRow, _file_key

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MAX_BACKGROUND_VOXELS = 20000


@dataclass(eq=False)
class LesionCase:
    """One case in the model frame: HU (int16), lesion components (int32, 0 = none), sampling indices."""

    case_id: str
    frame: object  # ctsam.volume.Geometry
    hu: np.ndarray
    components: np.ndarray
    lesion_voxels: np.ndarray  # (n, 3) int32
    body_voxels: np.ndarray  # (m, 3) int32, subsample

    @property
    def n_lesions(self) -> int:
        return int(self.components.max(initial=0))


@dataclass(frozen=True)
class SamplingSettings:
    """Patch sampling and augmentation (defaults: the published training transforms)."""

    positive_fraction: float = 2.0 / 3.0
    shift_fraction: float = 0.1
    zoom_probability: float = 0.8
    zoom_range: tuple[float, float] = (0.85, 1.25)
    flip_probability: float = 0.5
    rot90_probability: float = 0.5
    intensity_shift_probability: float = 0.5
    intensity_shift_hu: float = 20.0
    positive_points: int = 10
    random_points: int = 20
    augment: bool = True


@dataclass(eq=False)
class LesionPatch:
    """One training patch: normalised image (S, S, S) float32, target (S, S, S) bool, clicks."""

    image: np.ndarray
    target: np.ndarray
    points_zyx: np.ndarray  # (N, 3) float32
    point_labels: np.ndarray  # (N,) int64
    case_id: str


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (26-connectivity) of a lesion mask: (labels int32, count)."""
    from scipy import ndimage

    comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return comps.astype(np.int32), int(n)


def _cache_key(row: CaseRow, spacing_mm: float) -> str:
    text = "\n".join(
        [
            "lesion",
            str(CACHE_VERSION),
            str(row.ct.resolve()),
            _file_key(row.ct),
            _file_key(row.labels),
            f"{spacing_mm:.6f}",
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_lesion_case(
    row: CaseRow,
    *,
    spacing_mm: float,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LesionCase:
    """Read a case, resample it to the model frame and find its lesions (cached when ``cache_dir``)."""
    from ctsam.io.atomic import atomic_path
    from ctsam.io.image import read_labelmap
    from ctsam.training.data import read_ct_any, to_model_frame
    from ctsam.volume import Geometry

    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{row.case_id}-lesion-{_cache_key(row, spacing_mm)}.npz"
        if cache_path.is_file():
            with np.load(cache_path, allow_pickle=False) as z:
                return LesionCase(
                    row.case_id,
                    Geometry.from_dict(json.loads(str(z["frame"]))),
                    z["hu"],
                    z["components"],
                    z["lesion_voxels"],
                    z["body_voxels"],
                )
    if not row.labels.exists():
        raise InputDataError(
            "lesion label map not found", case=row.case_id, path=row.labels, fix="fix the labels column of the table"
        )
    ct = read_ct_any(row.ct, case=row.case_id)
    labelmap = read_labelmap(row.labels, case=row.case_id)
    frame, hu, lab = to_model_frame(ct, labelmap, spacing_mm, case=row.case_id)
    comps, n = lesion_components(lab > 0)
    lesion_voxels = np.argwhere(comps > 0).astype(np.int32)
    body = np.argwhere(hu > -500)
    if len(body) > MAX_BACKGROUND_VOXELS:
        rng = np.random.default_rng([len(body), n])
        body = body[np.sort(rng.choice(len(body), MAX_BACKGROUND_VOXELS, replace=False))]
    case = LesionCase(row.case_id, frame, hu, comps, lesion_voxels, body.astype(np.int32))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                hu=hu,
                components=comps,
                lesion_voxels=case.lesion_voxels,
                body_voxels=case.body_voxels,
                frame=json.dumps(frame.to_dict()),
            )
    log.info("%s: model frame %s, %d lesion(s)", row.case_id, frame.describe(), n)
    return case


def sample_points(
    target: np.ndarray,
    rng: np.random.Generator,
    n_positive: int,
    n_random: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Published training clicks: ``n_positive`` lesion voxels (label 1) then ``n_random`` patch voxels (label 0)."""
    pos = np.argwhere(target)
    pts = []
    labels = []
    if len(pos):
        pts.append(pos[rng.choice(len(pos), n_positive, replace=True)])
        labels.append(np.ones(n_positive, np.int64))
    anywhere = rng.integers(0, np.array(target.shape), size=(n_random, 3))
    pts.append(anywhere)
    labels.append(np.zeros(n_random, np.int64))
    return np.concatenate(pts).astype(np.float32), np.concatenate(labels)


class LesionPatchSampler:
    """Deterministic lesion patch sampler (see the module docstring).

    Args:
        cases: prepared cases (cases without lesions still give negative patches).
        normalise: HU -> model input (``InputSpec.normalise``).
        zscore_sd: the spec's z-score SD (to apply the intensity shift in HU), or None.
        patch_size_zyx: the model's patch size.
        seed: data seed.
        settings: sampling and augmentation.
    """

    def __init__(
        self,
        cases: list[LesionCase],
        *,
        normalise,
        zscore_sd: float | None,
        patch_size_zyx: tuple[int, int, int],
        seed: int,
        settings: SamplingSettings | None = None,
    ) -> None:
        if not any(c.n_lesions for c in cases):
            raise InputDataError(
                "no case has a lesion to train on",
                expected="label maps with lesion voxels",
                found=f"{len(cases)} case(s) without lesions",
            )
        self.cases = cases
        self.normalise = normalise
        self.zscore_sd = zscore_sd
        self.size = tuple(int(s) for s in patch_size_zyx)
        self.seed = int(seed)
        self.s = settings or SamplingSettings()

    def _crop(self, case: LesionCase, centre: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage

        size = np.array(self.size)
        if scale == 1.0:
            from ctsam.refine.patching import crop_padded

            start = [int(np.rint(c)) - s // 2 for c, s in zip(centre, size)]
            hu = crop_padded(case.hu, start, tuple(size), pad_value=np.int16(PAD_HU)).astype(np.float32)
            comp = crop_padded(case.components, start, tuple(size), pad_value=0)
            return hu, comp > 0
        # zoom > 1 magnifies: sample the frame at steps of 1/scale around the centre
        q = np.indices(tuple(size), dtype=np.float32).reshape(3, -1) - (size // 2).astype(np.float32)[:, None]
        pts = q / np.float32(scale) + centre.astype(np.float32)[:, None]
        hu = ndimage.map_coordinates(case.hu.astype(np.float32), pts, order=1, cval=PAD_HU).reshape(tuple(size))
        lab = ndimage.map_coordinates((case.components > 0).astype(np.float32), pts, order=1, cval=0.0)
        return hu, lab.reshape(tuple(size)) >= 0.5

    def sample(self, step: int, index: int) -> LesionPatch:
        """Item ``index`` of step ``step`` (a pure function of (seed, step, index))."""
        s = self.s
        rng = np.random.default_rng([self.seed, int(step), int(index)])
        case = self.cases[int(rng.integers(len(self.cases)))]
        positive = bool(case.n_lesions) and rng.random() < s.positive_fraction
        pool = case.lesion_voxels if positive else case.body_voxels
        if not len(pool):
            pool = case.lesion_voxels
        centre = pool[int(rng.integers(len(pool)))].astype(np.float64)
        scale = 1.0
        if s.augment:
            centre = centre + rng.uniform(-s.shift_fraction, s.shift_fraction, size=3) * np.array(self.size)
            if rng.random() < s.zoom_probability:
                scale = float(rng.uniform(*s.zoom_range))
        hu, target = self._crop(case, centre, scale)
        image = self.normalise(hu).astype(np.float32)
        if s.augment:
            for axis in range(3):
                if rng.random() < s.flip_probability:
                    image, target = np.flip(image, axis), np.flip(target, axis)
            if rng.random() < s.rot90_probability and self.size[1] == self.size[2]:
                k = int(rng.integers(1, 4))
                image, target = np.rot90(image, k, axes=(1, 2)), np.rot90(target, k, axes=(1, 2))
            if self.zscore_sd and rng.random() < s.intensity_shift_probability:
                image = image + np.float32(rng.uniform(-s.intensity_shift_hu, s.intensity_shift_hu) / self.zscore_sd)
        image = np.ascontiguousarray(image, dtype=np.float32)
        target = np.ascontiguousarray(target)
        pts, labels = sample_points(target, rng, s.positive_points, s.random_points)
        return LesionPatch(image=image, target=target, points_zyx=pts, point_labels=labels, case_id=case.case_id)

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> list[LesionPatch]:
        """This rank's share of the global batch of ``step``."""
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} ranks")
        per = global_batch // world_size
        return [self.sample(step, i) for i in range(rank * per, (rank + 1) * per)]


def stack_points(batch: list[LesionPatch]) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, 3) float32 points and (B, N) int64 labels; shorter lists padded with label -1 (padding)."""
    n = max(len(b.points_zyx) for b in batch)
    pts = np.zeros((len(batch), n, 3), np.float32)
    lab = np.full((len(batch), n), -1, np.int64)
    for i, b in enumerate(batch):
        k = len(b.points_zyx)
        pts[i, :k], lab[i, :k] = b.points_zyx, b.point_labels
    return pts, lab
