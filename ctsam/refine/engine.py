"""The refinement engine: click prompts + CT -> per-structure probabilities on the CT grid.

Pipeline for one case (:meth:`RefineEngine.run`):

1. **Model frame.** The CT is resampled once to the RAI 1.5 mm grid covering it (linear, pad -1024
   HU); a :class:`~ctsam.refine.predictor.VolumeSession` windows it with the checkpoint's HU window.
2. **Jobs.** Every prompt set becomes a *job*: (structure, 64^3 patch box centred on the prompt set's
   centre, snapped to a ``patch_snap_voxels`` lattice). Jobs of a structure with the same box are
   merged. Reviewer (correction) clicks join the structure's click pool; a positive correction
   outside every existing box of the structure starts its own job.
3. **Rounds.** All active jobs of all structures are decoded together, sorted by box (each distinct
   box is encoded once; prompt sets sharing a box are batched against one feature set). Each job's
   clicks are its anchor clicks plus the structure's pooled clicks inside its box (at most
   ``max_clicks``). The first round's mask prompt is the structure's coarse mask inside the box when
   ``coarse_mask_prompt`` is on (``auto``: when the checkpoint was trained to take one, see
   ``train.coarse_prompt_probability``) and the coarse labels are given, else zeros (CT-SAM3D's start).
   From round 2 on, the job's previous probabilities are fed back as the mask prompt. A job that
   started from the coarse mask runs ``coarse_prompt_rounds`` rounds (default 1: no new clicks arrive
   between rounds, and feeding the network its own output back made the demo model's masks worse:
   mean Dice of the refined structures of held-out demo phantom 1: 0.850 after 1 round, 0.803 after
   3), others up to ``rounds``.
   A job stops when its binary mask changes by less than ``settle_threshold`` (1 - Dice) between
   rounds, after ``rounds`` rounds, or when settled patches of the same structure already cover its mask.
4. **Propagation.** When a job's mask touches a patch face, the neighbouring box (``propagation_stride``
   voxels along that axis) becomes a new job, with a positive click at the most interior point of the
   mask in the two boxes' overlap (``propagation_clicks: mask``) or at the peak of the cross-patch
   heatmap (``cpp``). Only towards the structure's coarse bounding box plus ``propagation_margin_mm``,
   ``max_patches_per_structure`` and ``max_propagation_steps``; boxes already covered by the
   structure's patches (``coverage_skip_fraction``) are skipped.
5. **Quality.** Each structure's quality is the quality head's score averaged over its patches
   (weighted by mask size), or NaN when the checkpoint's measured validation correlation between
   score and true IoU (``quality_r``) is below ``min_quality_r``: such a head says nothing.
6. **Output.** Per structure, its patches are blended (linear border ramp) into a float32 crop of
   the model frame (one structure at a time), resampled linearly onto the CT grid within the
   structure's bounding box, and stored as uint8 (:mod:`ctsam.refine.refined_file`).

Memory: the model-frame image (float16), the coarse labels on the model frame (one integer volume,
only with coarse mask prompts), the jobs' 64^3 uint8 probabilities and the feature cache; never one
full-size volume per structure. Deterministic: fixed orders everywhere, no randomness.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ctsam.errors import ConfigError
from ctsam.masks import dice
from ctsam.progress import Progress
from ctsam.refine.patching import (
    PatchBox,
    blend_weights,
    box_around,
    crop_padded,
    face_slab,
    index_bbox_of_world_box,
    model_frame_for,
    paste_add,
    resample,
    subgrid,
    world_to_frame_zyx,
)
from ctsam.refine.predictor import DecodeRequest, VolumeSession
from ctsam.refine.refined_file import RefinedCase, StructureProbability, probs_to_u8
from ctsam.seed.prompts import CORRECTION_COMPONENT, CasePrompts
from ctsam.volume import CTVolume, Geometry, LabelMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineSettings:
    """Engine parameters (config section ``refine``; see config.yaml for the meaning of each)."""

    rounds: int = 3
    coarse_mask_prompt: str = "auto"
    coarse_prompt_rounds: int = 1
    min_quality_r: float = 0.3
    settle_threshold: float = 0.02
    batch_size: int = 8
    patch_snap_voxels: int = 8
    max_clicks: int = 24
    anchor_margin_voxels: int = 8
    propagation: bool = True
    propagation_clicks: str = "mask"
    propagation_stride_voxels: int = 48
    propagation_border_voxels: int = 2
    propagation_min_border_voxels: int = 16
    propagation_margin_mm: float = 15.0
    max_patches_per_structure: int = 32
    max_propagation_steps: int = 6
    coverage_skip_fraction: float = 0.9
    cpp_min_heatmap: float = 0.5
    blend_ramp_voxels: int = 8
    amp_bf16: bool = True
    device: str = "auto"
    feature_cache_patches: int = 256

    @classmethod
    def from_config(cls, section: dict) -> RefineSettings:
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in section.items() if k in keys})

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Job:
    """One structure on one patch box."""

    structure: str
    box: PatchBox
    anchors: list[tuple[float, float, float]]  # positive anchor clicks, frame (z, y, x)
    source: str  # "seed", "correction" or "propagation"
    generation: int = 0
    rounds_done: int = 0
    settled: bool = False
    stop_reason: str = ""
    probs_u8: np.ndarray | None = None
    quality: float = float("nan")
    n_decodes: int = 0


@dataclass
class StructureState:
    name: str
    pool_pos: list[tuple[float, float, float]] = field(default_factory=list)  # frame (z, y, x)
    pool_neg: list[tuple[float, float, float]] = field(default_factory=list)
    region_lo: np.ndarray | None = None  # frame (z, y, x) allowed box for patch centres
    region_hi: np.ndarray | None = None
    jobs: list[Job] = field(default_factory=list)

    def boxes(self) -> set[PatchBox]:
        return {j.box for j in self.jobs}


class RefineEngine:
    """Runs the pipeline of the module docstring for one case at a time (see :meth:`run`)."""

    def __init__(self, predictor, settings: RefineSettings | None = None) -> None:
        self.predictor = predictor
        self.s = settings or RefineSettings()
        if self.s.propagation_clicks not in ("mask", "cpp", "auto"):
            raise ValueError(f"propagation_clicks must be mask, cpp or auto, got {self.s.propagation_clicks!r}")
        if self.s.coarse_mask_prompt not in ("auto", "on", "off"):
            raise ValueError(f"coarse_mask_prompt must be auto, on or off, got {self.s.coarse_mask_prompt!r}")
        self._frame_coarse: np.ndarray | None = None
        self._coarse_label: dict[str, int] = {}
        self.quality_r = self.model_metadata.get("quality_r")
        # a head measured as uninformative gives no score (fusion's quality gate then does not apply)
        self.quality_trusted = self.quality_r is None or self.quality_r >= self.s.min_quality_r

    @property
    def model_metadata(self) -> dict:
        """The model's metadata (``{}`` for a predictor without a model)."""
        model = getattr(self.predictor, "model", None)
        return model.metadata if model is not None else {}

    def uses_coarse_prompt(self, coarse_given: bool, *, case: str | None = None) -> bool:
        """Whether the first round's mask prompt is the coarse mask (see ``coarse_mask_prompt``)."""
        mode = self.s.coarse_mask_prompt
        if mode == "on" and not coarse_given:
            raise ConfigError(
                "refine.coarse_mask_prompt is 'on' but no coarse labels were given",
                case=case,
                expected="the coarse label map (ctsam refine --coarse COARSE.nii.gz)",
                fix="pass --coarse, or set refine.coarse_mask_prompt to auto or off",
            )
        trained = bool(self.model_metadata.get("coarse_prompt_trained", False))
        return coarse_given and (mode == "on" or (mode == "auto" and trained))

    # ================================================================ public
    def run(
        self, ct: CTVolume, prompts: CasePrompts, *, case: str | None = None, coarse: LabelMap | None = None
    ) -> tuple[RefinedCase, dict]:
        """Refine every structure with prompt sets. Returns the result and a timing dict (not deterministic).

        ``coarse``: the coarse label map the prompts were seeded from (on the CT grid), used as the
        first round's mask prompt when :meth:`uses_coarse_prompt` says so.
        """
        timing: dict[str, float] = {}
        t_all = time.perf_counter()
        t0 = time.perf_counter()
        size = self.predictor.patch_size
        frame = model_frame_for(ct.geometry, self.predictor.spacing_mm)
        frame_hu = resample(ct.array, ct.geometry, frame, linear=True, default=-1024.0, dtype=np.float32)
        session = self.predictor.session(frame_hu)
        del frame_hu
        use_coarse = self.uses_coarse_prompt(coarse is not None, case=case)
        self._frame_coarse, self._coarse_label = None, {}
        if use_coarse:
            dtype = coarse.array.dtype if np.issubdtype(coarse.array.dtype, np.integer) else np.int32
            self._frame_coarse = resample(coarse.array, coarse.geometry, frame, linear=False, default=0, dtype=dtype)
            self._coarse_label = {name: info.label for name, info in prompts.structures.items()}
        timing["resample_s"] = time.perf_counter() - t0
        log.info(
            "model frame %s (%.1f M voxels) in %.2f s",
            frame.describe(),
            np.prod(frame.shape_zyx) / 1e6,
            timing["resample_s"],
        )

        t0 = time.perf_counter()
        states = self._plan(prompts, frame, size)
        timing["plan_s"] = time.perf_counter() - t0
        self._weights = blend_weights(size, self.s.blend_ramp_voxels)

        use_cpp = self.s.propagation_clicks == "cpp" or (
            self.s.propagation_clicks == "auto" and bool(self.model_metadata.get("cpp_trained", False))
        )
        timing["propagation_s"] = 0.0
        iteration = 0
        max_iterations = self.s.rounds + self.s.max_propagation_steps * self.s.rounds + 1
        while iteration < max_iterations:
            active = [
                j for st in states.values() for j in st.jobs if not j.settled and j.rounds_done < self._max_rounds(j)
            ]
            self._skip_covered(states, active)
            active = [j for j in active if not j.settled]
            if not active:
                break
            iteration += 1
            active.sort(key=lambda j: (j.box, j.structure, j.anchors[0] if j.anchors else ()))
            requests = [self._request(states[j.structure], j, size) for j in active]
            n_boxes = len({j.box for j in active})
            progress = Progress(len(requests), f"refine round {iteration}: prompt sets on {n_boxes} patches")
            results = session.decode(requests, progress=progress)
            for job, (probs, quality) in zip(active, results):
                self._update(job, probs, quality)
            if self.s.propagation:
                t0 = time.perf_counter()
                n_new = self._propagate(states, active, session, frame, size, use_cpp)
                timing["propagation_s"] += time.perf_counter() - t0
            else:
                n_new = 0
            log.info(
                "round %d: %d decodes (%d patches encoded so far), %d settled, %d new propagated patches",
                iteration,
                len(active),
                session.stats.n_encodes,
                sum(j.settled for j in active),
                n_new,
            )

        t0 = time.perf_counter()
        structures, skipped = self._assemble(states, frame, ct.geometry, case)
        self._frame_coarse, self._coarse_label = None, {}
        timing["assemble_s"] = time.perf_counter() - t0
        skipped = {**prompts.skipped, **skipped}
        st = session.stats
        timing.update(
            encode_s=st.encode_s, decode_s=st.decode_s, heatmap_s=st.heatmap_s, total_s=time.perf_counter() - t_all
        )
        timing["decodes_per_s"] = st.n_decodes / st.decode_s if st.decode_s > 0 else float("nan")
        meta = {
            "engine": "ctsam.refine",
            "model": {
                "variant": self.predictor.model.variant,
                "sha256": self.predictor.model.sha256,
                "hu_window": list(self.predictor.hu_window),
                "spacing_mm": self.predictor.spacing_mm,
            },
            "settings": {k: v for k, v in self.s.to_dict().items() if k not in ("device",)},
            "propagation_clicks_used": "cpp" if use_cpp else "mask",
            "coarse_mask_prompt_used": use_coarse,
            "quality_head": {"validation_r": self.quality_r, "scores_used": self.quality_trusted},
            "model_frame": frame.to_dict(),
            "counts": {
                "patches_encoded": st.n_encodes,
                "distinct_patches": len(session.encoded),
                "decodes": st.n_decodes,
                "decode_batches": st.n_decode_batches,
                "rounds": iteration,
                "jobs": sum(len(s.jobs) for s in states.values()),
                "propagated_jobs": sum(j.source == "propagation" for s in states.values() for j in s.jobs),
                "heatmaps": st.n_heatmaps,
            },
            "structures": {
                name: {
                    "decodes": sum(j.n_decodes for j in s.jobs),
                    "patches": len(s.jobs),
                    "stop_reasons": sorted({j.stop_reason for j in s.jobs}),
                }
                for name, s in states.items()
            },
        }
        return RefinedCase(geometry=ct.geometry, structures=structures, skipped=skipped, meta=meta), timing

    # ================================================================ planning
    def _plan(self, prompts: CasePrompts, frame: Geometry, size: int) -> dict[str, StructureState]:
        s = self.s
        margin = s.propagation_margin_mm / frame.spacing_xyz_mm[0]
        states: dict[str, StructureState] = {}
        for ps in prompts.prompt_sets:
            st = states.setdefault(ps.structure, StructureState(ps.structure))
            for c in ps.clicks:
                p = tuple(float(v) for v in world_to_frame_zyx(frame, c.world_xyz_mm))
                pool = st.pool_pos if c.positive else st.pool_neg
                if p not in pool:
                    pool.append(p)
        for name, st in states.items():
            sets = prompts.for_structure(name)
            pts = [world_to_frame_zyx(frame, c.world_xyz_mm) for ps in sets for c in ps.clicks if c.positive]
            info = prompts.structures.get(name)
            if info is not None:
                corners = np.array(
                    [
                        [x, y, z]
                        for x in (info.bbox_min_xyz_mm[0], info.bbox_max_xyz_mm[0])
                        for y in (info.bbox_min_xyz_mm[1], info.bbox_max_xyz_mm[1])
                        for z in (info.bbox_min_xyz_mm[2], info.bbox_max_xyz_mm[2])
                    ]
                )
                pts += list(world_to_frame_zyx(frame, corners))
            if pts:
                arr = np.asarray(pts, dtype=float)
                st.region_lo, st.region_hi = arr.min(axis=0) - margin, arr.max(axis=0) + margin
            # seed prompt sets first, then corrections
            for ps in sorted(sets, key=lambda p: p.component == CORRECTION_COMPONENT):
                if ps.component == CORRECTION_COMPONENT:
                    for c in ps.positives:
                        self._add_anchor_job(
                            st, world_to_frame_zyx(frame, c.world_xyz_mm), size, "correction", only_if_uncovered=True
                        )
                elif ps.center_xyz_mm is not None:
                    anchors = [world_to_frame_zyx(frame, c.world_xyz_mm) for c in ps.positives]
                    center = world_to_frame_zyx(frame, ps.center_xyz_mm)
                    box = box_around(center, size, s.patch_snap_voxels)
                    self._add_job(st, box, [tuple(float(v) for v in a) for a in anchors], "seed", 0)
        n_jobs = sum(len(st.jobs) for st in states.values())
        log.info(
            "%d structures, %d prompt sets -> %d patch jobs (%d distinct boxes)",
            len(states),
            len(prompts.prompt_sets),
            n_jobs,
            len({j.box for st in states.values() for j in st.jobs}),
        )
        return states

    def _add_job(self, st: StructureState, box: PatchBox, anchors, source: str, generation: int) -> Job | None:
        for j in st.jobs:
            if j.box == box:
                for a in anchors:
                    if a not in j.anchors:
                        j.anchors.append(a)
                return None
        job = Job(structure=st.name, box=box, anchors=list(anchors), source=source, generation=generation)
        st.jobs.append(job)
        return job

    def _add_anchor_job(self, st: StructureState, anchor_zyx, size: int, source: str, *, only_if_uncovered: bool):
        a = tuple(float(v) for v in anchor_zyx)
        if only_if_uncovered and any(j.box.contains_zyx(a, self.s.anchor_margin_voxels) for j in st.jobs):
            return None
        return self._add_job(st, box_around(a, size, self.s.patch_snap_voxels), [a], source, 0)

    # ================================================================ rounds
    def _request(self, st: StructureState, job: Job, size: int) -> DecodeRequest:
        start = np.asarray(job.box.start_zyx, dtype=float)
        pts: list[tuple[int, int, int]] = []
        labels: list[int] = []

        def add(p, label):
            rel = np.floor(np.asarray(p) - start + 0.5).astype(int)  # (z, y, x) patch voxel
            if np.any(rel < 0) or np.any(rel >= size):
                return
            xyz = (int(rel[2]), int(rel[1]), int(rel[0]))
            if xyz in pts or len(pts) >= self.s.max_clicks:
                return
            pts.append(xyz)
            labels.append(label)

        for a in job.anchors:
            add(a, 1)
        centre = np.asarray(job.box.center_zyx, dtype=float)
        for pool, label in ((st.pool_pos, 1), (st.pool_neg, 0)):
            inside = [p for p in pool if job.box.contains_zyx(p)]
            inside.sort(key=lambda p: (float(np.sum((np.asarray(p) - centre) ** 2)), p))
            for p in inside:
                add(p, label)
        if job.probs_u8 is not None:
            prev = job.probs_u8.astype(np.float32) / 255.0
        elif self._starts_from_coarse(job):
            crop = crop_padded(self._frame_coarse, job.box.start_zyx, (size, size, size), pad_value=0)
            prev = (crop == self._coarse_label[st.name]).astype(np.float32)
        else:
            prev = None
        return DecodeRequest(
            box=job.box,
            points_xyz=np.asarray(pts, dtype=np.int64).reshape(-1, 3),
            labels=np.asarray(labels, dtype=np.int64),
            prev_probs=prev,
        )

    def _max_rounds(self, job: Job) -> int:
        return self.s.coarse_prompt_rounds if self._starts_from_coarse(job) else self.s.rounds

    def _starts_from_coarse(self, job: Job) -> bool:
        """Whether the job's first mask prompt is its structure's coarse mask (set up by :meth:`run`)."""
        return self._frame_coarse is not None and job.structure in self._coarse_label

    def _update(self, job: Job, probs: np.ndarray, quality: float) -> None:
        new_u8 = probs_to_u8(probs)
        if job.probs_u8 is not None:
            change = 1.0 - dice(job.probs_u8 >= 128, new_u8 >= 128)
            if change <= self.s.settle_threshold:
                job.settled, job.stop_reason = True, "settled"
        job.probs_u8 = new_u8
        job.quality = quality if self.quality_trusted else float("nan")
        job.rounds_done += 1
        job.n_decodes += 1
        if not job.settled and job.rounds_done >= self._max_rounds(job):
            job.settled, job.stop_reason = True, "max_rounds"

    def _interior_slices(self, box: PatchBox) -> tuple[int, int]:
        r = self.s.blend_ramp_voxels
        return r, box.size - r

    def _coverage(self, box: PatchBox, others: list[PatchBox]) -> np.ndarray:
        """(size^3) bool: voxels of ``box`` inside the interior (away from the blend ramp) of ``others``."""
        size = box.size
        cov = np.zeros((size, size, size), dtype=bool)
        lo_i, hi_i = self._interior_slices(box)
        for o in others:
            sl = []
            for a in range(3):
                lo = max(o.start_zyx[a] + lo_i, box.start_zyx[a]) - box.start_zyx[a]
                hi = min(o.start_zyx[a] + hi_i, box.stop_zyx[a]) - box.start_zyx[a]
                if hi <= lo:
                    break
                sl.append(slice(lo, hi))
            else:
                cov[tuple(sl)] = True
        return cov

    def _skip_covered(self, states: dict[str, StructureState], active: list[Job]) -> None:
        """Stop jobs (round >= 2) whose current mask already lies in settled patches of the same structure."""
        for job in active:
            if job.rounds_done == 0 or job.probs_u8 is None:
                continue
            st = states[job.structure]
            others = [
                j.box
                for j in st.jobs
                if j is not job and j.settled and j.probs_u8 is not None and j.box.overlap_zyx(job.box) is not None
            ]
            if not others:
                continue
            mask = job.probs_u8 >= 128
            n = int(mask.sum())
            if n == 0:
                continue
            covered = int(np.logical_and(mask, self._coverage(job.box, others)).sum())
            if covered >= self.s.coverage_skip_fraction * n:
                job.settled, job.stop_reason = True, "covered"

    # ================================================================ propagation
    def _propagate(
        self, states, decoded: list[Job], session: VolumeSession, frame: Geometry, size: int, use_cpp: bool
    ) -> int:
        s = self.s
        n_new = 0
        frame_hi = np.asarray(frame.shape_zyx, dtype=float) - 1
        for job in decoded:
            st = states[job.structure]
            if job.generation >= s.max_propagation_steps or job.probs_u8 is None:
                continue
            mask = job.probs_u8 >= 128
            faces = []
            for axis in range(3):
                for sign in (-1, 1):
                    excess = self._region_excess(st, job.box, axis, sign)
                    if excess > 0:
                        faces.append((-excess, axis, sign))
            for _, axis, sign in sorted(faces):  # where the coarse box sticks out most, first
                if len(st.jobs) >= s.max_patches_per_structure:
                    break
                if (
                    int(mask[face_slab(size, axis, sign, s.propagation_border_voxels)].sum())
                    < s.propagation_min_border_voxels
                ):
                    continue
                cand = job.box.shifted(axis, sign * s.propagation_stride_voxels)
                if cand in st.boxes():
                    continue
                # the current box must not already reach the frame's edge on that side
                if (sign > 0 and job.box.stop_zyx[axis] > frame_hi[axis]) or (
                    sign < 0 and job.box.start_zyx[axis] <= 0
                ):
                    continue
                others = [j.box for j in st.jobs if j.box.overlap_zyx(cand) is not None]
                if others and self._coverage(cand, others).mean() >= s.coverage_skip_fraction:
                    continue
                anchor = self._propagation_click(job, cand, mask, session, use_cpp)
                if anchor is None:
                    continue
                new = self._add_job(st, cand, [anchor], "propagation", job.generation + 1)
                if new is not None:
                    n_new += 1
        return n_new

    @staticmethod
    def _region_excess(st: StructureState, box: PatchBox, axis: int, sign: int) -> float:
        """How far (voxels) the structure's allowed region reaches beyond ``box``'s face (axis, sign); <= 0: not."""
        if st.region_lo is None:
            return 1.0
        if sign > 0:
            return float(st.region_hi[axis] - (box.stop_zyx[axis] - 1))
        return float(box.start_zyx[axis] - st.region_lo[axis])

    def _propagation_click(
        self, job: Job, cand: PatchBox, mask: np.ndarray, session: VolumeSession, use_cpp: bool
    ) -> tuple[float, float, float] | None:
        """Frame (z, y, x) of the positive click for neighbour ``cand`` (or None: nothing to propagate)."""
        s = self.s
        if use_cpp:
            h = session.heatmap(job.box, job.probs_u8.astype(np.float32) / 255.0, cand)
            k = int(np.argmax(h))
            if float(h.flat[k]) < s.cpp_min_heatmap:
                return None
            rel = np.unravel_index(k, h.shape)
            return tuple(float(cand.start_zyx[a] + rel[a]) for a in range(3))
        ov = job.box.overlap_zyx(cand)
        if ov is None:
            return None
        local = tuple(slice(o.start - job.box.start_zyx[a], o.stop - job.box.start_zyx[a]) for a, o in enumerate(ov))
        sub = mask[local]
        if int(sub.sum()) < s.propagation_min_border_voxels:
            return None
        dist = ndimage.distance_transform_edt(np.pad(sub, 1))
        rel = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return tuple(float(ov[a].start + rel[a] - 1) for a in range(3))

    # ================================================================ output
    def _assemble(
        self, states: dict[str, StructureState], frame: Geometry, ct_geometry: Geometry, case: str | None
    ) -> tuple[list[StructureProbability], dict[str, str]]:
        structures: list[StructureProbability] = []
        skipped: dict[str, str] = {}
        progress = Progress(len(states), "refine: structures")
        for name, st in states.items():
            jobs = [j for j in st.jobs if j.probs_u8 is not None]
            n_decodes = sum(j.n_decodes for j in st.jobs)
            if not jobs:
                skipped[name] = "no patch was decoded"
                progress.update(item=name)
                continue
            lo = np.min([j.box.start_zyx for j in jobs], axis=0)
            hi = np.max([j.box.stop_zyx for j in jobs], axis=0)
            lo = np.maximum(lo, 0)
            hi = np.minimum(hi, frame.shape_zyx)
            shape = tuple(int(v) for v in hi - lo)
            num = np.zeros(shape, dtype=np.float32)
            den = np.zeros(shape, dtype=np.float32)
            for j in jobs:
                paste_add(num, lo, self._weights * (j.probs_u8.astype(np.float32) / 255.0), j.box.start_zyx)
                paste_add(den, lo, self._weights, j.box.start_zyx)
            probs = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            del num, den
            peak = float(probs.max(initial=0.0))
            if peak < 0.5:
                skipped[name] = f"refined mask empty (max probability {peak:.2f} < 0.5 in {len(jobs)} patch(es))"
                progress.update(item=name)
                continue
            ct_box = index_bbox_of_world_box(ct_geometry, frame, tuple(int(v) for v in lo), shape)
            if ct_box is None:
                skipped[name] = "refined patches lie outside the CT"
                progress.update(item=name)
                continue
            start, stop = ct_box
            target = subgrid(ct_geometry, start, tuple(b - a for a, b in zip(start, stop)))
            on_ct = probs_to_u8(
                resample(probs, subgrid(frame, tuple(int(v) for v in lo), shape), target, linear=True, default=0.0)
            )
            nz = [np.nonzero(on_ct.any(axis=tuple(b for b in range(3) if b != a)))[0] for a in range(3)]
            if any(len(v) == 0 for v in nz):
                skipped[name] = "refined mask vanished on the CT grid"
                progress.update(item=name)
                continue
            tight = tuple(slice(int(v[0]), int(v[-1]) + 1) for v in nz)
            weights = [float((j.probs_u8 >= 128).sum()) for j in jobs]
            quality = (
                float(np.average([j.quality for j in jobs], weights=weights)) if sum(weights) > 0 else float("nan")
            )
            structures.append(
                StructureProbability(
                    name=name,
                    bbox_start_zyx=tuple(int(start[a] + tight[a].start) for a in range(3)),
                    probs_u8=np.ascontiguousarray(on_ct[tight]),
                    quality=quality,
                    n_decodes=n_decodes,
                    n_patches=len(jobs),
                )
            )
            progress.update(item=name)
        return structures, skipped
