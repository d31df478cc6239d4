"""Parameter-efficient fine-tuning of a one-click lesion model (``ctsam train --model sam3d_adapter``).

The published 3DSAM-adapter recipe (med-air/3DSAM-adapter ``train.py``), on ctsam's training machinery:

* **Start.** A published 3DSAM-adapter checkpoint or a ctsam ``.safetensors`` (``init``, read by
  :func:`ctsam.model.load_model` with ``preset``), or SAM ViT-B image-encoder weights in Meta's
  ``sam_vit_b_01ec64.pth`` layout (``sam_checkpoint``, mapped into the 3D encoder by
  :func:`ctsam.model.load_sam_image_encoder`) on a freshly built ``variant``; else random weights.
* **What trains.** :func:`ctsam.model.apply_finetune_recipe` (``recipe: adapters``) sets
  ``requires_grad`` exactly as the published code; everything else stays bit-identical. ``recipe:
  decoder`` trains only the prompt encoders and the decoder, ``recipe: full`` every tensor. Trainable and total parameter counts are logged, written to
  ``settings.json``/``metrics.jsonl`` and recorded in the exported model.
* **Step.** A global batch of patches (published: 1) with 10 lesion clicks + 20 random points
  (:mod:`.lesion_data`); loss = 0.5 Dice (foreground channel, MONAI ``DiceLoss`` with
  ``include_background=False``, smoothing 1e-5) + 0.5 cross-entropy over both channels (MONAI
  ``DiceCELoss``); gradient norm clipped to 1.0 per top-level sub-module (published: encoder,
  prompt encoders and decoder separately); AdamW lr 4e-4, weight decay 0, learning rate falling
  linearly to 0.01x over the run (published ``LinearLR(1.0 -> 0.01)`` over its 500 epochs).
* **Validation.** One-click Dice per lesion on held-out cases (:mod:`.lesion_eval`, published test
  protocol) with the region-growing baseline alongside.
* **Machinery shared with** :mod:`.loop` (in :mod:`.runner`): step-indexed data (exact resume), DDP under torchrun/srun
  (:mod:`.distributed`), bf16 autocast on CUDA, checkpoints ``checkpoints/step_NNNNNN/`` (ctsam
  safetensors via :func:`ctsam.model.save_model` + ``state.pt`` with optimiser, scheduler and RNG
  states, read with ``weights_only=True``), ``metrics.jsonl``, ``settings.json``, ``max_minutes``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctsam.errors import CheckpointError, ConfigError
from ctsam.training import distributed
from ctsam.training.lesion_data import LesionPatch, LesionPatchSampler, SamplingSettings, stack_points
from ctsam.training.runner import SettingsSection, StepRunner

if TYPE_CHECKING:
    from ctsam.model import PromptableModel

log = logging.getLogger(__name__)

RECIPES = ("adapters", "decoder", "full")
LESION_FAMILIES = ("sam3d_adapter",)


@dataclass(frozen=True)
class LesionTrainSettings(SettingsSection):
    """Lesion fine-tuning parameters (config section ``train_lesion``; CLI flags override).

    Defaults are the published 3DSAM-adapter settings (batch 1, AdamW 4e-4 without weight decay,
    linear decay to 0.01x, clip 1.0, Dice-CE 0.5/0.5, 10 + 20 points, the published augmentation).
    """

    model: str = "sam3d_adapter"
    variant: str = "vit_b"
    init: str | None = None
    preset: str | None = None
    sam_checkpoint: str | None = None
    recipe: str = "adapters"
    steps: int = 1000
    batch_size: int = 1
    optimizer: str = "adamw"
    lr: float = 4e-4
    weight_decay: float = 0.0
    lr_end_factor: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    lambda_dice: float = 0.5
    lambda_ce: float = 0.5
    positive_points: int = 10
    random_points: int = 20
    positive_fraction: float = 2.0 / 3.0
    augment: bool = True
    seed: int = 42
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    val_every: int = 100
    log_every: int = 10
    amp: str = "auto"
    device: str = "auto"
    threads: int = 0
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in LESION_FAMILIES:
            raise ConfigError(
                "unknown lesion model family",
                expected=" or ".join(LESION_FAMILIES),
                found=repr(self.model),
                fix="pass --model sam3d_adapter",
            )
        if self.recipe not in RECIPES:
            raise ConfigError(
                "unknown fine-tuning recipe",
                expected=" or ".join(RECIPES),
                found=repr(self.recipe),
                fix="pass --recipe adapters (published), decoder or full",
            )
        if self.batch_size < 1 or self.steps < 1:
            raise ConfigError(
                "batch_size and steps must be >= 1", found=f"batch_size {self.batch_size}, steps {self.steps}"
            )
        if self.init and self.sam_checkpoint:
            raise ConfigError(
                "--init and --sam-checkpoint are exclusive",
                found=f"{self.init} and {self.sam_checkpoint}",
                fix="fine-tune a 3DSAM-adapter checkpoint (--init) or start from SAM (--sam-checkpoint)",
            )
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError("unknown optimiser", expected="adamw (published) or sgd", found=repr(self.optimizer))
        if self.amp not in ("auto", "off", "bf16"):
            raise ConfigError("unknown mixed-precision mode", expected="auto, off or bf16", found=repr(self.amp))

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(
            positive_fraction=self.positive_fraction,
            positive_points=self.positive_points,
            random_points=self.random_points,
            augment=self.augment,
        )


def lr_factor(step: int, s: LesionTrainSettings) -> float:
    """Learning-rate multiplier of step ``step``: optional warm-up, then linear 1 -> ``lr_end_factor``."""
    if s.warmup_steps > 0 and step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    span = max(1, s.steps - 1 - s.warmup_steps)
    t = min(1.0, max(0, step - s.warmup_steps) / span)
    return 1.0 + (s.lr_end_factor - 1.0) * t


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve_builtin(ref: str) -> Path | None:
    if ref.startswith("builtin:"):
        return Path(__file__).resolve().parents[1] / "resources" / "models" / f"{ref.split(':', 1)[1]}.safetensors"
    return Path(ref)


def read_sam_state_dict(path: str | os.PathLike[str]):
    """Meta's ``sam_vit_b_01ec64.pth`` (a plain state dict) read with ``weights_only=True``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            "SAM checkpoint not found",
            path=path,
            expected="sam_vit_b_01ec64.pth (Meta's SAM ViT-B)",
            fix="download it from the segment-anything release and pass its path",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            "SAM checkpoint is unreadable",
            path=path,
            found=f"{type(err).__name__}: {str(err)[:200]}",
            fix="pass Meta's sam_vit_b_01ec64.pth (a torch state dict)",
        ) from err
    if not isinstance(state, dict) or not any(str(k).startswith("image_encoder.") for k in state):
        raise CheckpointError(
            "not a SAM state dict",
            path=path,
            expected="keys image_encoder.*",
            found=f"{type(state).__name__} with {len(state) if hasattr(state, '__len__') else '?'} entries",
        )
    return state


def build_lesion_model(s: LesionTrainSettings) -> tuple[PromptableModel, dict]:
    """The model to fine-tune and where it came from (``{"source", "trained_from"[, "sam_report"]}``)."""
    import torch

    from ctsam.model import build_model, load_model, load_sam_image_encoder

    if s.init:
        path = _resolve_builtin(s.init)
        model = load_model(s.init, preset=s.preset)
        sha = model.sha256 or (file_sha256(path) if path is not None and path.is_file() else None)
        return model, {"source": "init", "init": s.init, "trained_from": sha}
    torch.manual_seed(s.seed)
    model = build_model(s.model, s.variant)
    if s.preset:
        model.with_preset(s.preset)  # type: ignore[attr-defined]  # one-click (sam3d_adapter) models
    if s.sam_checkpoint:
        report = load_sam_image_encoder(model, read_sam_state_dict(s.sam_checkpoint))
        return model, {
            "source": "sam_checkpoint",
            "sam_checkpoint": Path(s.sam_checkpoint).name,
            "trained_from": file_sha256(s.sam_checkpoint),
            "sam_report": _jsonable(report),
        }
    return model, {"source": "random", "trained_from": None}


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        if isinstance(obj, dict):
            return {str(k): _jsonable(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple, set)):
            return [_jsonable(v) for v in obj]
        return str(obj)


def set_trainable(model, recipe: str) -> tuple[int, int]:
    """Apply the fine-tuning recipe (:func:`ctsam.model.apply_finetune_recipe`); returns (trainable, total)."""
    from ctsam.model import apply_finetune_recipe

    return apply_finetune_recipe(model, recipe)


def dice_ce_loss(logits, target, *, lambda_dice: float = 0.5, lambda_ce: float = 0.5, smooth: float = 1e-5):
    """MONAI ``DiceCELoss(include_background=False, softmax=True, to_onehot_y=True)``, scalar.

    ``logits`` (B, 2, ...) float, ``target`` (B, 1, ...) bool/int. Dice: per item on the softmax
    foreground channel ``1 - (2 I + s) / (P + T + s)``, mean over the batch; CE: mean over voxels.
    """
    import torch
    from torch.nn import functional as F

    logits = logits.float()
    t = target[:, 0].long()
    p = torch.softmax(logits, dim=1)[:, 1].flatten(1)
    tf = t.flatten(1).to(p.dtype)
    d = 1 - (2 * (p * tf).sum(1) + smooth) / (p.sum(1) + tf.sum(1) + smooth)
    ce = F.cross_entropy(logits, t)
    return lambda_dice * d.mean() + lambda_ce * ce


class _Forward:
    @staticmethod
    def make(model):
        from torch import nn

        class LesionForward(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = model.module

            def forward(self, image, points, labels):
                return model.logits(image, points, labels)

        return LesionForward()


class LesionTrainer(StepRunner[LesionTrainSettings]):
    """Runs :class:`LesionTrainSettings` on a :class:`LesionPatchSampler`, writing into ``out_dir``.

    Args:
        settings: training parameters.
        sampler: training patches.
        out_dir: the run folder.
        val_cases: prepared held-out cases for one-click validation (or None).
        model / origin: the model (default: :func:`build_lesion_model`) and where it came from.
        provenance: extra facts stored with the final model.
    """

    RESUME_KEYS = ("model", "variant", "init", "sam_checkpoint", "recipe", "batch_size", "steps", "seed", "optimizer")

    def __init__(
        self,
        settings: LesionTrainSettings,
        sampler: LesionPatchSampler,
        out_dir: str | os.PathLike[str],
        *,
        val_cases: list | None = None,
        dist_info: distributed.DistInfo | None = None,
        provenance: dict | None = None,
        model=None,
        origin: dict | None = None,
    ) -> None:
        self._init_run(settings, sampler, out_dir, dist_info, provenance)
        self.val_cases = list(val_cases or [])
        if model is None:
            model, origin = build_lesion_model(settings)
        self.model = model
        self.origin = dict(origin or {"source": "given", "trained_from": getattr(model, "sha256", None)})
        calibration = model.metadata.get("calibration")
        if calibration:  # a post-hoc logit offset fits the weights it was chosen for, not the ones trained here
            self.origin["dropped_calibration_delta"] = calibration.get("delta")
            model.update_metadata(calibration=None)
        self.model.to(self.device)
        self.trainable, self.total = set_trainable(self.model, settings.recipe)
        log.info(
            "trainable parameters: %d of %d (%.2f %%), recipe %s",
            self.trainable,
            self.total,
            100.0 * self.trainable / max(1, self.total),
            settings.recipe,
        )
        self.params = [p for p in self.model.module.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the fine-tuning recipe leaves nothing to train", found=settings.recipe)
        self.clip_groups = self._clip_groups()
        self._init_optimisation(self.params, lambda step: lr_factor(step, settings))
        self._init_forward(_Forward.make(self.model), find_unused_parameters=True)

    def _clip_groups(self) -> list[list]:
        """Trainable parameters per top-level sub-module (published: each module clipped on its own)."""
        groups = []
        seen: set[int] = set()
        for _, child in self.model.module.named_children():
            g = [p for p in child.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in g)
            if g:
                groups.append(g)
        rest = [p for p in self.params if id(p) not in seen]
        if rest:
            groups.append(rest)
        return groups

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: list[LesionPatch]) -> dict:
        import torch

        s = self.s
        self.model.module.train()
        image = torch.from_numpy(np.stack([b.image for b in batch])[:, None]).to(self.device)
        target = torch.from_numpy(np.stack([b.target for b in batch])[:, None]).to(self.device)
        pts_np, lab_np = stack_points(batch)
        pts = torch.from_numpy(pts_np).to(self.device)
        lab = torch.from_numpy(lab_np).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.forward(image, pts, lab)
        loss = dice_ce_loss(logits.float(), target, lambda_dice=s.lambda_dice, lambda_ce=s.lambda_ce)
        loss.backward()
        norms = [float(torch.nn.utils.clip_grad_norm_(g, s.grad_clip)) for g in self.clip_groups]
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            pred = logits.detach().argmax(1, keepdim=True).bool()
            inter = (pred & target).flatten(1).sum(1).float()
            size = pred.flatten(1).sum(1).float() + target.flatten(1).sum(1).float()
            dice = torch.where(size > 0, 2 * inter / size.clamp_min(1), torch.ones_like(size))
        return {
            "loss": float(loss.detach()),
            "train_dice": float(dice.mean()),
            "grad_norm": float(max(norms)),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "positive_patches": int(sum(bool(b.target.any()) for b in batch)),
        }

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict:
        """One-click Dice on the held-out cases (random click per lesion, fixed seed) and the baseline."""
        from ctsam.training.lesion_eval import one_click_case, random_clicks, summarise

        if not self.val_cases:
            return {}
        self.model.module.eval()
        rows = []
        for case in self.val_cases:
            rows += one_click_case(self.model, case, random_clicks(case, self.s.seed), device=self.device)
        summ = summarise(rows)
        return {
            "val_dice_1click": summ.get("dice_mean"),
            "val_baseline_dice": summ.get("baseline_dice_mean"),
            "val_lesions": summ.get("lesions"),
        }

    # ---------------------------------------------------------------- checkpoints and run hooks
    def _metadata(self, extra: dict | None = None) -> dict:
        return {
            "source": "ctsam train --model sam3d_adapter",
            "trained_from": self.origin.get("trained_from"),
            "training": {
                **self.provenance,
                **(extra or {}),
                "origin": self.origin,
                "settings": self.s.to_dict(),
                "steps_done": self.step,
                "parameters": {"trainable": self.trainable, "total": self.total, "recipe": self.s.recipe},
            },
        }

    def train_step_at(self, batch: list, step: int) -> dict:
        return self.train_step(batch)

    def _save_weights(self, path: Path) -> None:
        from ctsam.model import save_model

        save_model(self.model, path, metadata=self._metadata(), sidecar=False)

    def _restore_weights(self, path: Path) -> None:
        import torch

        from ctsam.model import load_model

        loaded = load_model(path / "model.safetensors")
        mine = self.model.module.state_dict()
        theirs = loaded.module.state_dict()
        if list(mine) != list(theirs):
            raise CheckpointError(
                "checkpoint keys do not match the model", path=path, found=f"{len(theirs)} keys vs {len(mine)}"
            )
        with torch.no_grad():
            for k, p in mine.items():
                p.copy_(theirs[k])

    def _on_fresh_start(self) -> None:
        self._log_metrics(
            {"kind": "parameters", "trainable": self.trainable, "total": self.total, "recipe": self.s.recipe}
        )

    def _settings_doc(self) -> dict:
        return {**self.s.to_dict(), "parameters": {"trainable": self.trainable, "total": self.total}}

    def _log_validation(self, val: dict) -> None:
        log.info(
            "step %d validation: one-click Dice %.3f (baseline %.3f) on %d lesions",
            self.step,
            val["val_dice_1click"],
            val["val_baseline_dice"],
            val["val_lesions"],
        )

    def _summary_extra(self) -> dict:
        return {"parameters": {"trainable": self.trainable, "total": self.total}}

    def export(self, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
        """Write the current weights as a ctsam safetensors model with training provenance (rank 0)."""
        from ctsam.model import save_model

        return save_model(self.model, path, metadata=self._metadata(extra))
