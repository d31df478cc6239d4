"""Training data: a TSV of (CT, label map) pairs, the model frame, and deterministic 64^3 patch sampling.

* **Table.** A tab-separated file with one row per case. Columns (first match wins): the CT in
  ``ct`` / ``path`` / ``image`` (a NIfTI file or a DICOM folder), the ground-truth labels in
  ``labels`` / ``truth_labels`` / ``label`` / ``truth``, optionally coarse labels in ``coarse`` /
  ``coarse_labels`` (evaluation only) and an id in ``case_id``. Relative paths are relative to the
  TSV's folder. The ``samples.tsv`` of ``ctsam demo-cohort`` is such a table.
* **Model frame.** Each case is resampled once to the RAI 1.5 mm grid of
  :func:`ctsam.refine.patching.model_frame_for` (CT: linear, pad -1024 HU; labels: nearest neighbour, pad 0)
  and cached as ``<cache>/<case>-<key>.npz`` (the key hashes the input files' paths, sizes, mtimes and
  the spacing), so later runs and other ranks skip the resampling.
* **Sampling.** Item ``i`` of optimisation step ``s`` is drawn from ``numpy.random.default_rng([seed,
  s, i])`` alone: a case, a structure of it (uniformly), a voxel of that structure as the patch centre,
  and the augmentation (CT-SAM3D recipe: with probability 0.6 a translation of up to +-20 mm, scale
  0.9-1.1 and rotation up to +-10 degrees about a random axis). The data therefore need no state to
  resume exactly, and a global batch splits across ranks without changing its content.
* **Coarse mask prompts.** With probability ``coarse_prompt_probability`` an item also carries a
  simulated coarse segmentation of its target (:func:`simulate_coarse`: the blocky edges of a
  3-4.5 mm segmenter, sometimes one voxel too wide or too narrow), drawn from its own stream
  ``default_rng([seed, s, i, 11])``. The model learns to take it as the dense mask prompt, which is
  how ``ctsam refine`` feeds it the coarse labels (``refine.coarse_mask_prompt``).

Arrays are (z, y, x); patch images are HU windowed to [0, 1] with the model's window.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.errors import InputDataError
from ctsam.volume import CTVolume, Geometry, LabelMap

log = logging.getLogger(__name__)

CT_COLUMNS = ("ct", "path", "image")
LABEL_COLUMNS = ("labels", "truth_labels", "label", "truth")
COARSE_COLUMNS = ("coarse", "coarse_labels")
CACHE_VERSION = 1
PAD_HU = -1024.0
#: coordinates kept per structure for choosing patch centres (deterministic subsample)
MAX_CENTRE_VOXELS = 4096


# ---------------------------------------------------------------- table
@dataclass(frozen=True)
class CaseRow:
    """One row of a training/evaluation table (absolute paths)."""

    case_id: str
    ct: Path
    labels: Path
    coarse: Path | None = None


def _pick(
    header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path, required: bool = True
) -> str | None:
    if wanted:
        if wanted not in header:
            raise InputDataError(
                f"column '{wanted}' not in the {what} table",
                path=path,
                expected=f"a column named {wanted}",
                found=", ".join(header),
                fix="fix the column name or the option",
            )
        return wanted
    for c in candidates:
        if c in header:
            return c
    if required:
        raise InputDataError(
            f"no {what} column in the table",
            path=path,
            expected=" or ".join(candidates),
            found=", ".join(header),
            fix=f"add a column named {candidates[0]}",
        )
    return None


def read_table(
    path: str | os.PathLike[str],
    *,
    ct_column: str | None = None,
    label_column: str | None = None,
    coarse_column: str | None = None,
    need_coarse: bool = False,
) -> list[CaseRow]:
    """Rows of a TSV of cases (see the module docstring); paths resolved against the TSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            "table of cases not found",
            path=path,
            expected="a tab-separated file",
            fix="pass --data TRAIN.tsv (columns ct, labels[, coarse, case_id])",
        )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
        header = list(rows[0].keys()) if rows else []
    if not rows:
        raise InputDataError("table of cases is empty", path=path, expected="at least one row", found="0 rows")
    ct_c = _pick(header, ct_column, CT_COLUMNS, "CT", path)
    lab_c = _pick(header, label_column, LABEL_COLUMNS, "label map", path)
    coarse_c = _pick(header, coarse_column, COARSE_COLUMNS, "coarse label", path, required=need_coarse)
    out = []
    for k, r in enumerate(rows):
        case = (r.get("case_id") or "").strip() or f"case-{k + 1:04d}"

        def res(p: str) -> Path:
            q = Path(p.strip())
            return q if q.is_absolute() else (path.parent / q)

        out.append(
            CaseRow(
                case_id=case,
                ct=res(r[ct_c]),
                labels=res(r[lab_c]),
                coarse=res(r[coarse_c]) if coarse_c and (r.get(coarse_c) or "").strip() else None,
            )
        )
    ids = [r.case_id for r in out]
    if len(set(ids)) != len(ids):
        raise InputDataError(
            "duplicate case ids in the table", path=path, found=str(sorted({i for i in ids if ids.count(i) > 1}))
        )
    return out


def read_ct_any(path: str | os.PathLike[str], *, case: str | None = None) -> CTVolume:
    """A CT from a NIfTI file, or from a DICOM folder through ``ctsam convert``'s reader."""
    path = Path(path)
    if path.is_dir():
        try:
            from ctsam.convert.study import convert_study
        except ImportError as err:  # pragma: no cover - convert stage absent from this build
            raise InputDataError(
                "CT is a DICOM folder but the convert stage is not installed",
                case=case,
                path=path,
                fix="convert it first (ctsam convert) and list the NIfTI",
            ) from err
        return convert_study(path, None).volume
    from ctsam.io.image import read_ct

    return read_ct(path, case=case)


# ---------------------------------------------------------------- model frame + cache
@dataclass(eq=False)
class PreparedCase:
    """One case in the model frame.

    Attributes:
        case_id: id from the table.
        frame: RAI isotropic grid (:func:`ctsam.refine.patching.model_frame_for`).
        hu: (z, y, x) int16 HU on ``frame`` (pad -1024).
        labels: (z, y, x) label indices on ``frame`` (nearest neighbour).
        names: {label index: structure name}.
        centres: {label index: (n, 3) int32 (z, y, x) voxels of that label (subsampled)}.
    """

    case_id: str
    frame: Geometry
    hu: np.ndarray
    labels: np.ndarray
    names: dict[int, str]
    centres: dict[int, np.ndarray]

    @property
    def structure_labels(self) -> list[int]:
        return sorted(self.centres)


def _file_key(p: Path) -> str:
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(row: CaseRow, spacing_mm: float, min_voxels: int) -> str:
    text = "\n".join(
        [
            str(CACHE_VERSION),
            str(row.ct.resolve()),
            _file_key(row.ct),
            _file_key(row.labels),
            f"{spacing_mm:.6f}",
            str(min_voxels),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def align_labels(
    labelmap: LabelMap, geometry: Geometry, *, case: str | None = None, what: str = "label map"
) -> LabelMap:
    """The label map on ``geometry``'s grid: unchanged when already there; resampled (nearest neighbour)
    when it covers the same world box on another grid (e.g. a DICOM conversion that flipped an axis);
    otherwise :class:`~ctsam.errors.SpaceMismatchError` printing both geometries."""
    from ctsam.refine.patching import resample
    from ctsam.volume import check_same_space

    if labelmap.geometry.same_space(geometry):
        return labelmap
    tol = max(max(geometry.spacing_xyz_mm), max(labelmap.geometry.spacing_xyz_mm))
    if np.abs(labelmap.geometry.world_bounds_mm() - geometry.world_bounds_mm()).max() > tol:
        check_same_space(geometry, labelmap.geometry, name_a="CT", name_b=what, case=case)
    log.info("%s: %s is on another grid covering the same region; resampling it (nearest neighbour)", case, what)
    arr = resample(labelmap.array, labelmap.geometry, geometry, linear=False, default=0, dtype=np.float32)
    return LabelMap(np.rint(arr).astype(labelmap.array.dtype), geometry, dict(labelmap.labels))


def to_model_frame(
    ct: CTVolume, labelmap: LabelMap, spacing_mm: float, *, case: str | None = None
) -> tuple[Geometry, np.ndarray, np.ndarray]:
    """Resample a CT (linear, pad -1024) and its label map (nearest, pad 0) onto the model frame."""
    from ctsam.refine.patching import model_frame_for, resample

    labelmap = align_labels(labelmap, ct.geometry, case=case)
    frame = model_frame_for(ct.geometry, spacing_mm)
    hu = resample(ct.array, ct.geometry, frame, linear=True, default=PAD_HU, dtype=np.float32)
    hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    lab = resample(labelmap.array, labelmap.geometry, frame, linear=False, default=0, dtype=np.float32)
    lab = np.rint(lab).astype(labelmap.array.dtype)
    return frame, hu, lab


def _centres(labels: np.ndarray, min_voxels: int, case_id: str) -> dict[int, np.ndarray]:
    from scipy import ndimage

    out: dict[int, np.ndarray] = {}
    max_label = int(labels.max(initial=0))
    if not max_label:
        return out
    objects = ndimage.find_objects(labels, max_label=max_label)
    for label, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        idx = np.argwhere(labels[sl] == label)
        if len(idx) < min_voxels:
            continue
        idx += np.array([s.start for s in sl])
        if len(idx) > MAX_CENTRE_VOXELS:
            rng = np.random.default_rng([label, len(idx)])
            idx = idx[np.sort(rng.choice(len(idx), MAX_CENTRE_VOXELS, replace=False))]
        out[label] = idx.astype(np.int32)
    return out


def prepare_case(
    row: CaseRow, *, spacing_mm: float = 1.5, cache_dir: str | os.PathLike[str] | None = None, min_voxels: int = 20
) -> PreparedCase:
    """Read, resample to the model frame and index one case, using/writing the cache when given.

    Structures with fewer than ``min_voxels`` model-frame voxels are not sampled.
    """
    import json

    from ctsam.io.atomic import atomic_path
    from ctsam.io.image import read_labelmap

    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{row.case_id}-{cache_key(row, spacing_mm, min_voxels)}.npz"
        if cache_path.is_file():
            with np.load(cache_path, allow_pickle=False) as z:
                names = {int(k): v for k, v in json.loads(str(z["names"])).items()}
                centres = {int(k[2:]): z[k] for k in z.files if k.startswith("c_")}
                return PreparedCase(
                    row.case_id, Geometry.from_dict(json.loads(str(z["frame"]))), z["hu"], z["labels"], names, centres
                )
    if not row.labels.exists():
        raise InputDataError(
            "label map not found", case=row.case_id, path=row.labels, fix="fix the labels column of the table"
        )
    ct = read_ct_any(row.ct, case=row.case_id)
    labelmap = read_labelmap(row.labels, case=row.case_id)
    frame, hu, lab = to_model_frame(ct, labelmap, spacing_mm, case=row.case_id)
    centres = _centres(lab, min_voxels, row.case_id)
    names = {int(k): v for k, v in labelmap.labels.items()}
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    hu=hu,
                    labels=lab,
                    frame=json.dumps(frame.to_dict()),
                    names=json.dumps({str(k): v for k, v in names.items()}),
                    **{f"c_{k}": v for k, v in centres.items()},
                )
    log.info("%s: model frame %s, %d structures", row.case_id, frame.describe(), len(centres))
    return PreparedCase(row.case_id, frame, hu, lab, names, centres)


# ---------------------------------------------------------------- sampling
@dataclass(frozen=True)
class AugmentSettings:
    """CT-SAM3D augmentation: with ``probability``, translate up to ``translate_mm``, scale in
    ``scale_range``, rotate up to ``rotate_deg`` about a random axis."""

    probability: float = 0.6
    translate_mm: float = 20.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0


@dataclass(eq=False)
class PatchSample:
    """One training patch.

    Attributes:
        image: (S, S, S) float32 in [0, 1] (windowed HU), (z, y, x).
        target: (S, S, S) bool, the structure.
        case_id, label, name: where it came from.
        centre_zyx: the frame index of the patch centre voxel (before augmentation).
        neighbour_image / neighbour_target: a neighbouring patch (cross-patch training) or None.
        coarse: (S, S, S) bool simulated coarse mask of the target (mask-prompt training) or None.
    """

    image: np.ndarray
    target: np.ndarray
    case_id: str
    label: int
    name: str
    centre_zyx: tuple[int, int, int]
    neighbour_image: np.ndarray | None = None
    neighbour_target: np.ndarray | None = None
    coarse: np.ndarray | None = None


def simulate_coarse(target: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A coarse segmenter's version of ``target`` (S, S, S) bool, or None when it would be empty.

    Nearest-neighbour sampling through a grid of 2 or 3 voxels per cell (3 or 4.5 mm at 1.5 mm) with a
    random phase, as a low-resolution segmenter resampled to the CT gives; then, with probability
    0.25 one voxel of dilation (a leak into neighbouring tissue) and with 0.15 one of erosion.
    """
    from scipy import ndimage

    factor = int(rng.integers(2, 4))
    phase = rng.integers(0, factor, size=3)
    maps = []
    for axis in range(3):
        n = target.shape[axis]
        centre = ((np.arange(n) + phase[axis]) // factor) * factor - phase[axis] + factor // 2
        maps.append(np.clip(centre, 0, n - 1))
    coarse = target[np.ix_(*maps)]
    r = rng.random()
    if r < 0.25:
        coarse = ndimage.binary_dilation(coarse)
    elif r < 0.40:
        eroded = ndimage.binary_erosion(coarse)
        coarse = eroded if eroded.any() else coarse
    return coarse if coarse.any() else None


def window(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """HU -> [0, 1] float32 with the model's window (clip, then linear)."""
    lo, hi = hu_window
    return ((np.clip(hu.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


class PatchSampler:
    """Deterministic patch sampler over prepared cases (see the module docstring).

    Args:
        cases: prepared cases with at least one structure.
        hu_window: the model's HU window.
        seed: data seed.
        patch_size: S (64).
        augment: augmentation settings, or None for none.
        neighbour_stride: voxels between a patch and its neighbour (cross-patch pairs); 0 disables pairs.
        coarse_prompt_probability: share of items that carry a simulated coarse mask prompt.
    """

    def __init__(
        self,
        cases: list[PreparedCase],
        *,
        hu_window: tuple[float, float],
        seed: int,
        patch_size: int = 64,
        augment: AugmentSettings | None = None,
        neighbour_stride: int = 0,
        coarse_prompt_probability: float = 0.0,
    ) -> None:
        self.cases = [c for c in cases if c.centres]
        if not self.cases:
            raise InputDataError(
                "no case has a structure to train on",
                expected="label maps with labelled voxels",
                found=f"{len(cases)} case(s) without usable labels",
            )
        self.hu_window = hu_window
        self.seed = int(seed)
        self.size = int(patch_size)
        self.augment = augment
        self.neighbour_stride = int(neighbour_stride)
        self.coarse_prompt_probability = float(coarse_prompt_probability)

    def _crop(self, case: PreparedCase, centre: np.ndarray, matrix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        from ctsam.refine.patching import crop_padded

        s = self.size
        if matrix is None:
            start = [int(round(c)) - s // 2 for c in centre]
            hu = crop_padded(case.hu, start, (s, s, s), pad_value=np.int16(PAD_HU))
            lab = crop_padded(case.labels, start, (s, s, s), pad_value=0)
            return hu, lab
        from scipy import ndimage

        q = np.indices((s, s, s), dtype=np.float32).reshape(3, -1) - np.float32(s // 2)
        pts = (matrix.astype(np.float32) @ q) + centre.astype(np.float32)[:, None]
        hu = ndimage.map_coordinates(case.hu.astype(np.float32), pts, order=1, cval=PAD_HU).reshape(s, s, s)
        lab = ndimage.map_coordinates(case.labels, pts, order=0, cval=0).reshape(s, s, s)
        return hu, lab

    def sample(self, step: int, index: int) -> PatchSample:
        """Item ``index`` of step ``step`` (a pure function of (seed, step, index))."""
        rng = np.random.default_rng([self.seed, int(step), int(index)])
        case = self.cases[int(rng.integers(len(self.cases)))]
        labels = case.structure_labels
        label = labels[int(rng.integers(len(labels)))]
        coords = case.centres[label]
        centre_zyx = coords[int(rng.integers(len(coords)))]
        centre = centre_zyx.astype(np.float64)
        matrix = None
        a = self.augment
        if a is not None and rng.random() < a.probability:
            spacing = case.frame.spacing_xyz_mm[0]
            centre = centre + rng.uniform(-a.translate_mm, a.translate_mm, size=3) / spacing
            scale = rng.uniform(*a.scale_range)
            rot = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(-a.rotate_deg, a.rotate_deg)))
            matrix = rot * scale
            # keep the chosen structure voxel inside the patch
            half = self.size // 2 - 2
            centre = np.clip(centre, centre_zyx - half, centre_zyx + half)
        hu, lab = self._crop(case, centre, matrix)
        target = lab == label
        nb_img = nb_tgt = None
        if self.neighbour_stride > 0:
            order = rng.permutation(6)
            for k in order:
                axis, sign = divmod(int(k), 2)
                shift = np.zeros(3)
                shift[axis] = (1 if sign else -1) * self.neighbour_stride
                n_hu, n_lab = self._crop(case, centre + (matrix @ shift if matrix is not None else shift), matrix)
                n_tgt = n_lab == label
                if n_tgt.sum() >= 8:
                    nb_img, nb_tgt = window(n_hu, self.hu_window), n_tgt
                    break
        coarse = None
        if self.coarse_prompt_probability > 0:
            crng = np.random.default_rng([self.seed, int(step), int(index), 11])
            if crng.random() < self.coarse_prompt_probability:
                coarse = simulate_coarse(target, crng)
        return PatchSample(
            image=window(hu, self.hu_window),
            target=target,
            case_id=case.case_id,
            label=int(label),
            name=case.names.get(int(label), f"label_{label}"),
            centre_zyx=tuple(int(v) for v in centre_zyx),
            neighbour_image=nb_img,
            neighbour_target=nb_tgt,
            coarse=coarse,
        )

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> list[PatchSample]:
        """This rank's share of the global batch of ``step`` (items ``rank * B/W ... (rank+1) * B/W - 1``)."""
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} ranks")
        per = global_batch // world_size
        return [self.sample(step, i) for i in range(rank * per, (rank + 1) * per)]
