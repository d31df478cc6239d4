"""Patch predictor: the network loaded once, a session per volume (SAM-style ``set_image`` / ``predict``).

:class:`PatchPredictor` holds the model, the device, AMP and batch settings. :meth:`PatchPredictor.session`
takes one CT already resampled to the model frame (RAI, 1.5 mm; see :mod:`ctsam.refine.patching`) in HU and
returns a :class:`VolumeSession`, which

* windows and scales the volume once (``model.meta.hu_window`` -> [0, 1], float16 to halve memory),
* encodes each distinct 64^3 patch box once (LRU cache of encoder features, ``cache_patches`` boxes),
* decodes any number of prompt sets in batches of ``batch_size``: prompt sets of the same box share one
  batch-1 feature set; mixed boxes are stacked,
* counts encodes and decodes and times them.

Shapes: patches (64, 64, 64) indexed (z, y, x); clicks (N, 3) as (x, y, z) patch voxels.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ctsam.refine.patching import PatchBox, crop_box

log = logging.getLogger(__name__)


@dataclass
class DecodeRequest:
    """One prompt set for one patch.

    Attributes:
        box: the patch box in the model frame.
        points_xyz: (N, 3) int clicks as (x, y, z) patch voxels, each in [0, 64).
        labels: (N,) 1 positive / 0 negative.
        prev_probs: (64, 64, 64) previous probabilities in [0, 1] (z, y, x), or None.
    """

    box: PatchBox
    points_xyz: np.ndarray
    labels: np.ndarray
    prev_probs: np.ndarray | None = None


@dataclass
class PredictorStats:
    n_encodes: int = 0
    n_decodes: int = 0
    n_decode_batches: int = 0
    n_heatmaps: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    heatmap_s: float = 0.0
    batch_sizes: dict = field(default_factory=dict)


class PatchPredictor:
    """The network, loaded once, with its run settings.

    Args:
        model: a :class:`ctsam.model.MaskRefiner` (from :func:`ctsam.model.load_model`; a bare network is
            wrapped with :func:`ctsam.model.wrap_module`); its ``input_spec`` gives window, spacing and patch size.
        device: torch device the model lives on.
        amp_bf16: run encoder/decoder under bfloat16 autocast (CUDA only; ignored on CPU).
        batch_size: prompt sets per decoder call.
        cache_patches: encoder feature sets kept (LRU).
    """

    def __init__(
        self, model, *, device=None, amp_bf16: bool = True, batch_size: int = 8, cache_patches: int = 256
    ) -> None:
        import torch

        from ctsam.model import MaskRefiner, wrap_module

        model = wrap_module(model)
        if not isinstance(model, MaskRefiner) or model.input_spec.hu_window is None:
            raise TypeError(f"refine needs a click-refinement model (family ctsam3d), not {model.family}")
        self.model: MaskRefiner = model
        self.model.eval()
        self.device = torch.device(device) if device is not None else model.device
        self.model.to(self.device)
        self.amp = bool(amp_bf16) and self.device.type == "cuda"
        self.batch_size = max(1, int(batch_size))
        self.cache_patches = max(1, int(cache_patches))
        spec = model.input_spec
        assert spec.hu_window is not None
        self.patch_size = int(spec.patch_size_zyx[0])
        self.hu_window = (float(spec.hu_window[0]), float(spec.hu_window[1]))
        self.spacing_mm = float(spec.spacing_zyx_mm[0])

    def normalise(self, hu: np.ndarray) -> np.ndarray:
        """HU -> [0, 1] with the checkpoint's window (float32)."""
        lo, hi = self.hu_window
        return ((np.clip(hu.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)

    def session(self, frame_hu: np.ndarray) -> VolumeSession:
        """Start a session on one CT resampled to the model frame, (z, y, x) HU."""
        return VolumeSession(self, frame_hu)


class VolumeSession:
    """One volume: cached encoder features per patch box, batched decodes. See the module docstring."""

    def __init__(self, predictor: PatchPredictor, frame_hu: np.ndarray) -> None:
        self.p = predictor
        self.image = predictor.normalise(frame_hu).astype(np.float16)
        self.pad_value = float(predictor.normalise(np.array([-1024.0]))[0])
        self._cache: OrderedDict[PatchBox, object] = OrderedDict()
        self.encoded: set[PatchBox] = set()
        self.stats = PredictorStats()

    # ---------------------------------------------------------------- helpers
    def _autocast(self):
        import contextlib

        import torch

        if self.p.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        import torch

        if self.p.device.type == "cuda":
            torch.cuda.synchronize(self.p.device)

    def patch_image(self, box: PatchBox) -> np.ndarray:
        """(64, 64, 64) float32 normalised patch, padded with the value of -1024 HU outside the volume."""
        return crop_box(self.image, box, pad_value=np.float16(self.pad_value)).astype(np.float32)

    def _tensor(self, arrays: list[np.ndarray]):
        import torch

        return torch.from_numpy(np.stack(arrays)[:, None]).to(self.p.device)

    # ---------------------------------------------------------------- encoder
    def features(self, boxes: list[PatchBox]) -> dict:
        """Encoder features for ``boxes`` (encoding those not cached, in batches, in the given order)."""
        import torch

        missing = [b for b in dict.fromkeys(boxes) if b not in self._cache]
        for i in range(0, len(missing), self.p.batch_size):
            chunk = missing[i : i + self.p.batch_size]
            t0 = time.perf_counter()
            with torch.inference_mode(), self._autocast():
                feats = self.p.model.encode(self._tensor([self.patch_image(b) for b in chunk]))
            self._sync()
            self.stats.encode_s += time.perf_counter() - t0
            self.stats.n_encodes += len(chunk)
            for j, b in enumerate(chunk):
                self._cache[b] = feats.select(j)
                self.encoded.add(b)
        out = {}
        for b in dict.fromkeys(boxes):
            self._cache.move_to_end(b)
            out[b] = self._cache[b]
        while len(self._cache) > max(self.p.cache_patches, len(out)):
            self._cache.popitem(last=False)
        return out

    # ---------------------------------------------------------------- decoder
    def decode(self, requests: list[DecodeRequest], *, progress=None) -> list[tuple[np.ndarray, float]]:
        """Run every request; returns ``(probs float32 (64,64,64), quality)`` per request, in order.

        ``progress``: a :class:`ctsam.progress.Progress` counting requests (updated once per batch).

        Requests are decoded in the order given, ``batch_size`` at a time; give requests of the same box
        next to each other to share features. A batch whose requests all use one box passes batch-1
        features (broadcast by the decoder).
        """
        import torch

        results: list[tuple[np.ndarray, float]] = []
        s = self.p.patch_size
        for i in range(0, len(requests), self.p.batch_size):
            chunk = requests[i : i + self.p.batch_size]
            feats = self.features([r.box for r in chunk])
            boxes = [r.box for r in chunk]
            if len(set(boxes)) == 1:
                f = feats[boxes[0]]
            else:
                f = type(feats[boxes[0]]).cat([feats[b] for b in boxes])
            n = max(1, max(len(r.labels) for r in chunk))
            pts = np.zeros((len(chunk), n, 3), dtype=np.int64)
            lab = np.full((len(chunk), n), -1, dtype=np.int64)
            for k, r in enumerate(chunk):
                pts[k, : len(r.labels)] = r.points_xyz
                lab[k, : len(r.labels)] = r.labels
            prev = None
            if any(r.prev_probs is not None for r in chunk):
                prev = self._tensor(
                    [
                        r.prev_probs.astype(np.float32) if r.prev_probs is not None else np.zeros((s, s, s), np.float32)
                        for r in chunk
                    ]
                )
            t0 = time.perf_counter()
            with torch.inference_mode(), self._autocast():
                out = self.p.model.decode(
                    f, torch.from_numpy(pts).to(self.p.device), torch.from_numpy(lab).to(self.p.device), prev
                )
            probs = out["probs"][:, 0].float().cpu().numpy()
            iou = out["iou"][:, 0].float().cpu().numpy()
            self.stats.decode_s += time.perf_counter() - t0
            self.stats.n_decodes += len(chunk)
            self.stats.n_decode_batches += 1
            self.stats.batch_sizes[len(chunk)] = self.stats.batch_sizes.get(len(chunk), 0) + 1
            results.extend((probs[k], float(iou[k])) for k in range(len(chunk)))
            if progress is not None:
                progress.update(len(chunk))
        return results

    # ---------------------------------------------------------------- cross-patch prompt
    def heatmap(self, box_u: PatchBox, probs_u: np.ndarray, box_v: PatchBox) -> np.ndarray:
        """The cross-patch heatmap (64, 64, 64) for neighbour ``box_v`` given U's probabilities."""
        import torch

        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            h = self.p.model.cross_patch_heatmap(
                self._tensor([self.patch_image(box_u)]),
                self._tensor([probs_u.astype(np.float32)]),
                self._tensor([self.patch_image(box_v)]),
            )
        out = h[0, 0].float().cpu().numpy()
        self.stats.heatmap_s += time.perf_counter() - t0
        self.stats.n_heatmaps += 1
        return out
