"""One synthetic whole-body CT phantom: CT in HU, ground-truth labels and imitation coarse labels.

Frames and axes: arrays are (z, y, x); world coordinates are LPS mm with an identity direction, so
index x runs to the patient's left, y to posterior, z to superior (slice 0 is the pelvis end).
Anatomy is placed in *body units*: ``u`` = x / body half-width, ``v`` = y / body half-depth
(negative = anterior), ``w`` = (z - z_first) / z extent in [0, 1] (pelvis -> neck).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctsam.demo.structures import ORGANS, RIBS, VERTEBRAE, label_table
from ctsam.volume import CTVolume, Geometry, LabelMap

AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 45.0


@dataclass(frozen=True)
class PhantomSpec:
    """Parameters of one phantom (all drawn from the case's seed by :func:`draw_spec`).

    Attributes:
        shape_zyx: voxels along (z, y, x).
        spacing_xyz_mm: voxel size (x, y, z) in mm.
        half_width_mm / half_depth_mm: body ellipse semi-axes (left-right, anterior-posterior).
        noise_hu: standard deviation of the image noise in HU.
        contrast: True for an arterial-phase scan (bright aorta and heart).
        jitter: per-structure centre offsets in body units, keyed by structure name.
        hu_offset: per-structure HU offsets.
        coarse_spacing_mm: grid of the imitated coarse segmenter (isotropic, mm).
    """

    shape_zyx: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    half_width_mm: float
    half_depth_mm: float
    noise_hu: float
    contrast: bool
    jitter: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    hu_offset: dict[str, float] = field(default_factory=dict)
    coarse_spacing_mm: float = 3.0


@dataclass(frozen=True, eq=False)
class Phantom:
    """A phantom's CT (int16 HU), ground truth, coarse labels and the coarse errors introduced."""

    ct: CTVolume
    truth: LabelMap
    coarse: LabelMap
    coarse_errors: list[str]
    spec: PhantomSpec
    lesion_truth: LabelMap | None = None
    lesions: list = field(default_factory=list)


def draw_spec(rng: np.random.Generator, *, shape_zyx=(100, 128, 128), spacing_xyz_mm=(0.9, 0.9, 2.5)) -> PhantomSpec:
    """Draw a phantom's variation (size, spacing jitter, organ positions, HU, noise) from ``rng``."""
    nz = int(shape_zyx[0] + rng.integers(-8, 9))
    sx = float(np.round(spacing_xyz_mm[0] * rng.uniform(0.94, 1.06), 4))
    fov_half_mm = 0.5 * shape_zyx[2] * sx
    names = list(ORGANS) + [n for n, _ in VERTEBRAE] + [n for n, _ in RIBS]
    jitter = {n: tuple(float(v) for v in rng.normal(0.0, 0.02, size=3)) for n in ORGANS}
    hu_offset = {n: float(rng.normal(0.0, 6.0)) for n in names}
    return PhantomSpec(
        shape_zyx=(nz, int(shape_zyx[1]), int(shape_zyx[2])),
        spacing_xyz_mm=(sx, sx, float(spacing_xyz_mm[2])),
        half_width_mm=float(fov_half_mm * rng.uniform(0.80, 0.90)),
        half_depth_mm=float(fov_half_mm * rng.uniform(0.62, 0.72)),
        noise_hu=float(rng.uniform(10.0, 22.0)),
        contrast=bool(rng.random() < 0.5),
        jitter=jitter,
        hu_offset=hu_offset,
    )


class _Canvas:
    """Label and HU arrays with body-unit coordinates; structures are painted in order (later wins)."""

    def __init__(self, spec: PhantomSpec) -> None:
        nz, ny, nx = spec.shape_zyx
        sx, sy, sz = spec.spacing_xyz_mm
        self.spec = spec
        self.geometry = Geometry(
            shape_zyx=spec.shape_zyx,
            spacing_xyz_mm=spec.spacing_xyz_mm,
            origin_xyz_mm=(-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -400.0),
        )
        self.x_mm = (np.arange(nx) - (nx - 1) / 2) * sx
        self.y_mm = (np.arange(ny) - (ny - 1) / 2) * sy
        self.z_mm = np.arange(nz) * sz  # relative to the first slice
        self.z_extent_mm = max(float(self.z_mm[-1]), 1.0)
        self.u = (self.x_mm / spec.half_width_mm)[None, None, :]
        self.v = (self.y_mm / spec.half_depth_mm)[None, :, None]
        self.w = (self.z_mm / self.z_extent_mm)[:, None, None]
        self.labels = np.zeros(spec.shape_zyx, dtype=np.uint8)
        self.hu = np.full(spec.shape_zyx, AIR_HU, dtype=np.float32)

    def to_mm(self, u: float, v: float, w: float) -> np.ndarray:
        return np.array([u * self.spec.half_width_mm, v * self.spec.half_depth_mm, w * self.z_extent_mm])

    def paint(self, mask: np.ndarray, label: int, hu: float) -> None:
        self.labels[mask] = label
        self.hu[mask] = hu

    def ellipsoid(self, c: tuple[float, float, float], r: tuple[float, float, float]) -> np.ndarray:
        return ((self.u - c[0]) / r[0]) ** 2 + ((self.v - c[1]) / r[1]) ** 2 + ((self.w - c[2]) / r[2]) ** 2 <= 1.0

    def capsules(self, points_uvw: list[tuple[float, float, float]], radius_mm: float) -> np.ndarray:
        """Voxels within ``radius_mm`` of the polyline through ``points_uvw`` (body units)."""
        mask = np.zeros(self.spec.shape_zyx, dtype=bool)
        pts = [self.to_mm(*p) for p in points_uvw]
        for p0, p1 in zip(pts[:-1], pts[1:]):
            lo, hi = np.minimum(p0, p1) - radius_mm, np.maximum(p0, p1) + radius_mm
            ix = np.flatnonzero((self.x_mm >= lo[0]) & (self.x_mm <= hi[0]))
            iy = np.flatnonzero((self.y_mm >= lo[1]) & (self.y_mm <= hi[1]))
            iz = np.flatnonzero((self.z_mm >= lo[2]) & (self.z_mm <= hi[2]))
            if not (ix.size and iy.size and iz.size):
                continue
            gx = self.x_mm[ix][None, None, :]
            gy = self.y_mm[iy][:, None][None]
            gz = self.z_mm[iz][:, None, None]
            d = p1 - p0
            t = ((gx - p0[0]) * d[0] + (gy - p0[1]) * d[1] + (gz - p0[2]) * d[2]) / max(float(d @ d), 1e-9)
            t = np.clip(t, 0.0, 1.0)
            dist2 = (gx - p0[0] - t * d[0]) ** 2 + (gy - p0[1] - t * d[1]) ** 2 + (gz - p0[2] - t * d[2]) ** 2
            sub = mask[iz[0] : iz[-1] + 1, iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1]
            sub |= dist2 <= radius_mm**2
        return mask


def _organ(canvas: _Canvas, name: str, c, r, hu: float) -> None:
    spec = canvas.spec
    j = spec.jitter.get(name, (0.0, 0.0, 0.0))
    centre = (c[0] + j[0], c[1] + j[1], c[2] + j[2] / 3)
    canvas.paint(canvas.ellipsoid(centre, r), ORGANS[name], hu + spec.hu_offset.get(name, 0.0))


def _paint_anatomy(canvas: _Canvas) -> None:
    spec = canvas.spec
    off = spec.hu_offset
    body = canvas.ellipsoid((0, 0, 0.5), (1.0, 1.0, 10.0))
    canvas.hu[body] = FAT_HU
    muscle = canvas.ellipsoid((0, 0, 0.5), (0.86, 0.84, 10.0))
    canvas.hu[muscle] = MUSCLE_HU
    # lungs (lobes split by an oblique fissure: posterior-inferior part = lower lobe)
    for side, upper, lower, middle in (
        (1, "lung_upper_lobe_left", "lung_lower_lobe_left", None),
        (-1, "lung_upper_lobe_right", "lung_lower_lobe_right", "lung_middle_lobe_right"),
    ):
        lung = canvas.ellipsoid((side * 0.42, 0.05, 0.75), (0.36, 0.68, 0.19))
        is_lower = (canvas.w - 0.70) < 0.22 * (canvas.v - 0.1)
        canvas.paint(lung & ~is_lower, ORGANS[upper], -840.0 + off[upper])
        canvas.paint(lung & is_lower, ORGANS[lower], -860.0 + off[lower])
        if middle:
            mid = lung & ~is_lower & (canvas.v < -0.1) & (canvas.w < 0.74)
            canvas.paint(mid, ORGANS[middle], -850.0 + off[middle])
    heart_hu = 140.0 if spec.contrast else 42.0
    aorta_hu = 260.0 if spec.contrast else 45.0
    _organ(canvas, "heart", (0.12, -0.25, 0.62), (0.36, 0.36, 0.075), heart_hu)
    _organ(canvas, "liver", (-0.38, -0.05, 0.47), (0.50, 0.62, 0.085), 62.0)
    _organ(canvas, "spleen", (0.58, 0.35, 0.47), (0.18, 0.26, 0.05), 48.0)
    _organ(canvas, "stomach", (0.32, -0.38, 0.49), (0.26, 0.24, 0.05), 25.0)
    _organ(canvas, "gallbladder", (-0.28, -0.48, 0.42), (0.10, 0.11, 0.025), 10.0)
    _organ(canvas, "kidney_right", (-0.42, 0.42, 0.37), (0.14, 0.20, 0.05), 33.0)
    _organ(canvas, "kidney_left", (0.42, 0.42, 0.38), (0.14, 0.20, 0.05), 33.0)
    _organ(canvas, "urinary_bladder", (0.0, -0.40, 0.07), (0.28, 0.26, 0.055), 8.0)
    # tubes: trachea (air), esophagus, aorta (ascending + arch + descending)
    canvas.paint(
        canvas.capsules([(0, -0.12, 0.76), (0, -0.12, 1.02)], 0.07 * spec.half_width_mm), ORGANS["trachea"], -960.0
    )
    canvas.paint(
        canvas.capsules([(0.05, 0.22, 0.50), (0.02, 0.18, 1.02)], 0.045 * spec.half_width_mm),
        ORGANS["esophagus"],
        38.0 + off["esophagus"],
    )
    aorta = [
        (0.05, 0.28, 0.12),
        (0.08, 0.30, 0.50),
        (0.10, 0.30, 0.69),
        (0.05, 0.0, 0.72),
        (0.02, -0.22, 0.69),
        (0.05, -0.25, 0.62),
    ]
    canvas.paint(canvas.capsules(aorta, 0.075 * spec.half_width_mm), ORGANS["aorta"], aorta_hu + off["aorta"])
    # sternum
    canvas.paint(
        canvas.capsules([(0, -0.86, 0.62), (0, -0.86, 0.90)], 0.05 * spec.half_width_mm),
        ORGANS["sternum"],
        380.0 + off["sternum"],
    )
    # vertebrae: bodies stacked from w=0.10 to 0.98 with disc gaps, plus a spinous process
    n = len(VERTEBRAE)
    height = 0.88 / n
    for k, (name, idx) in enumerate(VERTEBRAE):
        w0 = 0.10 + k * height
        centre = (0.0, 0.55, w0 + 0.45 * height)
        body_mask = canvas.ellipsoid(centre, (0.17, 0.18, 0.40 * height))
        spine = canvas.capsules(
            [(0, 0.62, w0 + 0.45 * height), (0, 0.80, w0 + 0.35 * height)], 0.03 * spec.half_width_mm
        )
        canvas.paint(body_mask | spine, idx, 300.0 + off[name])
    # ribs: arcs along the inner body wall, from the spine (posterior) towards the front, descending
    for name, idx in RIBS:
        side = 1 if "_left_" in name else -1
        number = int(name.rsplit("_", 1)[1])
        w_top = 0.94 - (number - 1) * 0.032
        phi_end = 0.7 if number <= 10 else 1.7  # floating ribs 11, 12 stop laterally
        phis = np.linspace(2.75, phi_end, 7)
        pts = [(side * 0.80 * np.sin(p), -0.80 * np.cos(p), w_top - 0.05 * (2.75 - p) / 2.05) for p in phis]
        canvas.paint(canvas.capsules(pts, 0.028 * spec.half_width_mm), idx, 650.0 + off[name])


def _ct_from_hu(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.normal(0.0, 1.0, size=canvas.hu.shape).astype(np.float32), sigma=0.7)
    noise *= canvas.spec.noise_hu / max(float(noise.std()), 1e-6)
    hu = gaussian_filter(canvas.hu, sigma=(0.3, 0.6, 0.6)) + noise  # slight partial-volume blur
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def imitate_coarse(truth: np.ndarray, geometry: Geometry, coarse_spacing_mm: float) -> np.ndarray:
    """Nearest-neighbour down- and up-sampling of ``truth`` through an isotropic ``coarse_spacing_mm`` grid.

    Every fine voxel takes the label found at the centre of the coarse cell containing it, which
    gives the blocky edges and lost thin structures of a 3 mm segmenter. Shapes: (z, y, x).
    """
    maps = []
    for axis, spacing in zip((0, 1, 2), reversed(geometry.spacing_xyz_mm)):
        n = truth.shape[axis]
        cell = np.floor(np.arange(n) * spacing / coarse_spacing_mm)
        centre_voxel = np.rint((cell + 0.5) * coarse_spacing_mm / spacing).astype(int)
        maps.append(np.clip(centre_voxel, 0, n - 1))
    return truth[np.ix_(*maps)]


def _coarse_errors(coarse: np.ndarray, rng: np.random.Generator, geometry: Geometry) -> list[str]:
    """Introduce a few deterministic segmenter errors in place; return one line describing each."""
    from scipy.ndimage import binary_dilation

    errors = []
    present_ribs = [(n, i) for n, i in RIBS if (coarse == i).any()]
    if present_ribs:
        name, idx = present_ribs[int(rng.integers(len(present_ribs)))]
        coarse[coarse == idx] = 0
        errors.append(f"missed {name}")
    present_vert = [(k, n, i) for k, (n, i) in enumerate(VERTEBRAE[:-1]) if (coarse == i).any()]
    if present_vert:
        k, name, idx = present_vert[int(rng.integers(len(present_vert)))]
        upper_name, upper_idx = VERTEBRAE[k + 1]
        coarse[coarse == idx] = upper_idx
        errors.append(f"labelled {name} as {upper_name}")
    liver = coarse == ORGANS["liver"]
    if liver.any():
        grown = binary_dilation(liver, iterations=1) & (coarse == 0)
        coarse[grown] = ORGANS["liver"]
        errors.append(f"liver leaks {int(grown.sum())} voxels into unlabelled tissue")
    return errors


def make_phantom(
    spec: PhantomSpec, rng: np.random.Generator, *, lesion_rng: np.random.Generator | None = None
) -> Phantom:
    """Paint the phantom described by ``spec``; ``rng`` draws the noise and the coarse errors.

    With ``lesion_rng`` (:func:`ctsam.demo.lesions.lesion_rng`) liver and kidney tumours are planted
    (:mod:`ctsam.demo.lesions`) before blur and noise; ``rng``'s draws are the same either way.
    """
    canvas = _Canvas(spec)
    _paint_anatomy(canvas)
    lesion_truth = None
    lesions: list = []
    if lesion_rng is not None:
        from ctsam.demo.lesions import lesion_label_table, plant_lesions

        lesion_array, lesions = plant_lesions(lesion_rng, canvas.labels, canvas.hu, canvas.geometry)
        lesion_truth = LabelMap(array=lesion_array, geometry=canvas.geometry, labels=lesion_label_table(lesions))
    table = label_table()
    ct = CTVolume(array=_ct_from_hu(canvas, rng), geometry=canvas.geometry)
    truth = LabelMap(array=canvas.labels, geometry=canvas.geometry, labels=table)
    coarse_array = imitate_coarse(canvas.labels, canvas.geometry, spec.coarse_spacing_mm).copy()
    errors = _coarse_errors(coarse_array, rng, canvas.geometry)
    coarse = LabelMap(array=coarse_array, geometry=canvas.geometry, labels=table)
    return Phantom(
        ct=ct, truth=truth, coarse=coarse, coarse_errors=errors, spec=spec, lesion_truth=lesion_truth, lesions=lesions
    )
