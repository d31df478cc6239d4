"""The training loop (``ctsam train``): iterative click training, AdamW with warm-up, exact resume, DDP.

One optimisation step on a global batch of ``batch_size`` patches (each rank takes its equal share;
gradients are averaged by DDP, so the result does not depend on the number of ranks):

1. the patches are encoded once (with gradients, or without for ``finetune: decoder``);
2. every patch gets its first click (most interior point, :mod:`~ctsam.training.clicks`); a patch
   that carries a simulated coarse mask (``coarse_prompt_probability``) gets it as the starting mask
   prompt and its first click at the coarse mask's most interior point, as ``ctsam refine`` seeds it;
3. ``n`` correction rounds without gradients (``n`` drawn per step from ``[0, rounds)``): decode with the
   clicks so far and the previous probabilities as mask prompt, then add one click at the centre of the
   largest error region (at most ``max_points`` clicks);
4. a final decode with gradients; loss = 0.2 focal + 0.8 Dice (CT-SAM3D) + ``quality_weight`` x MSE of
   the quality head against the true IoU, + ``cpp_weight`` x heatmap MSE of the cross-patch network on
   (patch, its predicted mask, a neighbouring patch) when ``cpp`` is on;
5. gradient clipping (norm ``grad_clip``), AdamW step, learning-rate schedule (linear warm-up, then
   x ``lr_decay_factor`` after ``lr_decay_at`` of the steps, like the published step schedule).

Determinism and resume: the data of step ``s`` depend only on ``(seed, s)`` (:mod:`.data`); a checkpoint
holds the weights (ctsam safetensors), the optimiser and scheduler state and the torch RNG states, so a
resumed run reproduces the uninterrupted one exactly on the same hardware and thread count.

Batch norm: the encoder stem's BatchNorm layers run with frozen statistics by default
(``freeze_batchnorm``): with one or two 64^3 patches per GPU, batch statistics are noise, and frozen
statistics keep a data-parallel run identical to a single-process run on the same global batch.
With ``freeze_batchnorm: false`` under DDP on GPUs they become SyncBatchNorm.

Outputs in ``RUN_DIR``: ``metrics.jsonl`` (one JSON line per logged step: ``kind`` train or val),
``checkpoints/step_NNNNNN/`` (``model.safetensors`` + ``state.pt``), ``model.safetensors`` (final),
``settings.json``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.errors import CheckpointError, ConfigError
from ctsam.training import distributed
from ctsam.training.clicks import stack_patches as _stack
from ctsam.training.clicks import start_prompts
from ctsam.training.data import AugmentSettings, PatchSample, PatchSampler
from ctsam.training.runner import SettingsSection, StepRunner

log = logging.getLogger(__name__)

FINETUNE_MODES = ("all", "decoder")


@dataclass(frozen=True)
class TrainSettings(SettingsSection):
    """Training parameters (config section ``train``; CLI flags override). Defaults follow CT-SAM3D."""

    variant: str = "micro"
    init: str | None = None
    finetune: str = "all"
    steps: int = 1000
    batch_size: int = 6
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    lr_decay_at: float = 0.8
    lr_decay_factor: float = 0.1
    grad_clip: float = 5.0
    rounds: int = 5
    max_points: int = 24
    seed: int = 42
    augment_probability: float = 0.6
    translate_mm: float = 20.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    rotate_deg: float = 10.0
    quality_weight: float = 0.1
    coarse_prompt_probability: float = 0.0
    cpp: bool = False
    cpp_weight: float = 1.0
    cpp_stride_voxels: int = 48
    freeze_batchnorm: bool = True
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    val_every: int = 100
    val_samples: int = 16
    log_every: int = 10
    amp: str = "auto"
    device: str = "auto"
    threads: int = 0
    channels_last: bool = True
    max_minutes: float = 0.0
    spacing_mm: float = 1.5
    min_structure_voxels: int = 20

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE_MODES:
            raise ConfigError(
                "unknown fine-tuning mode",
                expected=" or ".join(FINETUNE_MODES),
                found=repr(self.finetune),
                fix="pass --finetune all|decoder",
            )
        if self.batch_size < 1 or self.steps < 1 or self.rounds < 1:
            raise ConfigError(
                "batch_size, steps and rounds must be >= 1",
                found=f"batch_size {self.batch_size}, steps {self.steps}, rounds {self.rounds}",
            )
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError("unknown optimiser", expected="adamw or sgd", found=repr(self.optimizer))
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError("unknown mixed-precision mode", expected="auto, off, bf16 or fp16", found=repr(self.amp))

    @property
    def augment(self) -> AugmentSettings | None:
        if self.augment_probability <= 0:
            return None
        return AugmentSettings(
            probability=self.augment_probability,
            translate_mm=self.translate_mm,
            scale_range=(self.scale_min, self.scale_max),
            rotate_deg=self.rotate_deg,
        )


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Learning-rate multiplier for optimisation step ``step`` (0-based)."""
    f = 1.0
    if settings.warmup_steps > 0 and step < settings.warmup_steps:
        f = (step + 1) / settings.warmup_steps
    if step >= int(settings.lr_decay_at * settings.steps):
        f *= settings.lr_decay_factor
    return f


def build_or_load_model(settings: TrainSettings):
    """A fresh model of ``settings.variant`` (seeded), or the ``settings.init`` checkpoint in train mode."""
    import torch

    from ctsam.model import build_model, load_model

    if settings.init:
        loaded = load_model(settings.init)
        if loaded.family != "ctsam3d":
            raise CheckpointError(
                "ctsam train starts from a CT-SAM3D model",
                path=settings.init,
                found=f"a {loaded.family} model",
                fix="pass a CT-SAM3D checkpoint as --init",
            )
        model = loaded.module
        if settings.variant and model.variant != settings.variant:
            log.warning(
                "--variant %s ignored: the initial checkpoint holds a %s model", settings.variant, model.variant
            )
    else:
        torch.manual_seed(settings.seed)
        model = build_model("ctsam3d", settings.variant).module
    return model


def _set_trainable(model, settings: TrainSettings) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
    if settings.finetune == "decoder":
        model.image_encoder.requires_grad_(False)
    if not settings.cpp:
        model.cross_patch.requires_grad_(False)
    if settings.quality_weight <= 0:
        model.quality_head.requires_grad_(False)


def set_train_mode(model, settings: TrainSettings) -> None:
    """train() with the frozen parts in eval (frozen encoder; BatchNorm when ``freeze_batchnorm``)."""
    import torch

    model.train()
    if settings.finetune == "decoder":
        model.image_encoder.eval()
    if settings.freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


class _TrainForward:
    """Builds the ``nn.Module`` whose forward runs click rounds and the graded decode (DDP wraps it)."""

    @staticmethod
    def make(model, settings: TrainSettings):
        import torch
        from torch import nn

        from ctsam.training.clicks import ClickSequence, add_correction_clicks

        class TrainForward(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, image, targets_np, n_rounds: int, neighbour=None, coarse_np=None):
                m = self.model
                if settings.finetune == "decoder":
                    with torch.no_grad():
                        feats = m.encode(image)
                else:
                    feats = m.encode(image)
                seqs, prev = start_prompts(targets_np, coarse_np, image.device, settings.channels_last)
                with torch.no_grad():
                    for _ in range(n_rounds):
                        pts, lab = ClickSequence.tensors(seqs)
                        out = m.decode(feats, pts, lab, prev)
                        prev = out["probs"].float()
                        if settings.channels_last:
                            prev = prev.contiguous(memory_format=torch.channels_last_3d)
                        preds = list((prev[:, 0] > 0.5).cpu().numpy())
                        add_correction_clicks(seqs, preds, targets_np, max_points=settings.max_points)
                pts, lab = ClickSequence.tensors(seqs)
                out = m.decode(feats, pts, lab, prev)
                result = {"logits": out["logits"], "iou": out["iou"], "n_clicks": [len(s) for s in seqs]}
                if neighbour is not None:
                    mask_u = (out["probs"].detach() > 0.5).to(image.dtype)
                    result["heatmap"] = m.cross_patch(image, mask_u, neighbour)
                return result

        return TrainForward()


class Trainer(StepRunner[TrainSettings]):
    """Runs :class:`TrainSettings` on a sampler, writing into ``out_dir`` (see the module docstring).

    Args:
        settings: training parameters.
        sampler: training patches; ``val_sampler``: validation patches (no augmentation) or None.
        out_dir: the run folder.
        dist_info: this process's rank (default: detected from the environment).
        provenance: extra facts stored with the final model (command, data...).
    """

    RESUME_KEYS = ("variant", "batch_size", "steps", "seed", "finetune", "cpp", "rounds")
    PROGRESS_LABEL = "train: steps"

    def __init__(
        self,
        settings: TrainSettings,
        sampler: PatchSampler,
        out_dir: str | os.PathLike[str],
        *,
        val_sampler: PatchSampler | None = None,
        dist_info: distributed.DistInfo | None = None,
        provenance: dict | None = None,
        model=None,
    ) -> None:
        import torch

        self._init_run(settings, sampler, out_dir, dist_info, provenance)
        self.val_sampler = val_sampler
        device = self.device
        self.model = model if model is not None else build_or_load_model(settings)
        self.model.to(device)
        if settings.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
        _set_trainable(self.model, settings)
        if self.dist.enabled and not settings.freeze_batchnorm and device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._init_optimisation(self.params, lambda step: lr_factor(step, settings))
        self._init_forward(_TrainForward.make(self.model, settings), find_unused_parameters=False)

    # ---------------------------------------------------------------- one step
    def _rounds_for(self, step: int) -> int:
        return int(np.random.default_rng([self.s.seed, int(step), 7]).integers(0, self.s.rounds))

    def train_step(self, batch: list[PatchSample], step: int) -> dict:
        """One optimisation step on this rank's share of the global batch; returns its metrics."""
        import torch

        from ctsam.training.clicks import first_click
        from ctsam.training.losses import gaussian_heatmap, heatmap_loss, segmentation_loss

        s = self.s
        set_train_mode(self.model, s)
        image = _stack([b.image for b in batch], self.device, s.channels_last)
        target = torch.from_numpy(np.stack([b.target for b in batch])[:, None]).to(self.device)
        targets_np = [b.target for b in batch]
        neighbour = None
        if s.cpp:
            zeros = np.zeros_like(batch[0].image)
            neighbour = _stack(
                [b.neighbour_image if b.neighbour_image is not None else zeros for b in batch],
                self.device,
                s.channels_last,
            )
        n_rounds = self._rounds_for(step)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.forward(image, targets_np, n_rounds, neighbour, [b.coarse for b in batch])
        logits = out["logits"][:, 0:1].float()
        seg = segmentation_loss(logits, target)
        loss = seg
        metrics = {"seg_loss": float(seg.detach())}
        with torch.no_grad():
            pred = logits.detach() > 0
            inter = (pred & target).flatten(1).sum(1).float()
            union = (pred | target).flatten(1).sum(1).float()
            iou_true = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            dice = torch.where(union + inter > 0, 2 * inter / (union + inter).clamp_min(1), torch.ones_like(union))
        if s.quality_weight > 0:
            q = ((out["iou"][:, 0].float() - iou_true) ** 2).mean()
            loss = loss + s.quality_weight * q
            metrics["quality_loss"] = float(q.detach())
        if s.cpp:
            pts = []
            for b in batch:
                pts.append(first_click(b.neighbour_target)[0] if b.neighbour_target is not None else None)
            valid = torch.tensor([p is not None for p in pts], device=self.device)
            tgt = gaussian_heatmap(pts, image.shape[-1], device=self.device)
            c = heatmap_loss(out["heatmap"], tgt, valid)
            loss = loss + s.cpp_weight * c
            metrics["cpp_loss"] = float(c.detach())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        metrics.update(
            loss=float(loss.detach()),
            grad_norm=float(grad_norm),
            train_dice=float(dice.mean()),
            rounds=n_rounds,
            clicks=float(np.mean(out["n_clicks"])),
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )
        return metrics

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict:
        """Mean patch Dice after 1 click and after ``rounds`` clicks on the fixed validation patches."""
        from ctsam.training.evaluate import click_curve

        if self.val_sampler is None or self.s.val_samples <= 0:
            return {}
        self.model.eval()
        curves = []
        for i in range(self.s.val_samples):
            smp = self.val_sampler.sample(0, i)
            curves.append(
                click_curve(self.model, smp.image, smp.target, n_clicks=self.s.rounds, max_points=self.s.max_points)
            )
        c = np.array(curves)
        out = {"val_dice_1click": float(c[:, 0].mean()), f"val_dice_{self.s.rounds}clicks": float(c[:, -1].mean())}
        if self.s.coarse_prompt_probability > 0:
            out.update(self.validate_coarse_prompt())
        return out

    def validate_coarse_prompt(self) -> dict:
        """Mean patch Dice of simulated coarse masks and of the model's refinement of them (one decode)."""
        from ctsam.training.evaluate import first_decodes

        recs = [
            r
            for r in first_decodes(
                self.model, self.val_sampler, self.s.val_samples, seed=self.s.seed, coarse_every=1, stream=13
            )
            if r["coarse_dice"] is not None
        ]
        if not recs:
            return {}
        return {
            "val_coarse_dice": float(np.mean([r["coarse_dice"] for r in recs])),
            "val_coarse_refined_dice": float(np.mean([r["dice"] for r in recs])),
        }

    # ---------------------------------------------------------------- checkpoints and run hooks
    def train_step_at(self, batch: list, step: int) -> dict:
        return self.train_step(batch, step)

    def _core_model(self):
        return self.model

    def _save_weights(self, path: Path) -> None:
        from ctsam.model import save_model, wrap_module

        save_model(wrap_module(self._export_model_view()), path, sidecar=False)

    def _restore_weights(self, path: Path) -> None:
        import torch

        from ctsam.model import load_model

        loaded = load_model(path / "model.safetensors").module
        with torch.no_grad():
            for (k, p), (k2, q) in zip(self.model.state_dict().items(), loaded.state_dict().items()):
                if k != k2:
                    raise CheckpointError("checkpoint keys do not match the model", path=path, found=f"{k} vs {k2}")
                p.copy_(q)
        self.model.meta = loaded.meta

    def _export_model_view(self):
        import dataclasses as dc

        m = self.model
        m.meta = dc.replace(
            m.meta,
            cpp_trained=bool(self.s.cpp or m.meta.cpp_trained),
            source="ctsam train",
            coarse_prompt_trained=bool(self.s.coarse_prompt_probability > 0 or m.meta.coarse_prompt_trained),
            sha256=None,
        )
        return m

    def export(self, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
        """Write the current weights as a ctsam safetensors model with training provenance (rank 0)."""
        from ctsam.model import save_model, wrap_module

        training = {**self.provenance, **(extra or {}), "settings": self.s.to_dict(), "steps_done": self.step}
        model = self._export_model_view()
        if self.val_sampler is not None and self.s.val_samples > 0:
            from ctsam.training.evaluate import quality_calibration

            cal = quality_calibration(model, self.val_sampler, seed=self.s.seed)
            wrap_module(model).update_metadata(quality_r=cal["r"])
            training["quality_calibration"] = cal
            log.info(
                "quality head on %d validation patches: r = %.3f (mean score %.3f, mean IoU %.3f)",
                cal["n"],
                cal["r"],
                cal["mean_score"],
                cal["mean_iou"],
            )
        return save_model(wrap_module(model), path, metadata={"training": training})
