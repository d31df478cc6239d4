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
* **Machinery shared with** :mod:`.loop`: step-indexed data (exact resume), DDP under torchrun/srun
  (:mod:`.distributed`), bf16 autocast on CUDA, checkpoints ``checkpoints/step_NNNNNN/`` (ctsam
  safetensors via :func:`ctsam.model.save_model` + ``state.pt`` with optimiser, scheduler and RNG
  states, read with ``weights_only=True``), ``metrics.jsonl``, ``settings.json``, ``max_minutes``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctsam.errors import CheckpointError, ConfigError
from ctsam.training import distributed
from ctsam.training.lesion_data import LesionPatch, LesionPatchSampler, SamplingSettings, stack_points

if TYPE_CHECKING:
    from ctsam.model import PromptableModel

log = logging.getLogger(__name__)

RECIPES = ("adapters", "decoder", "full")
LESION_FAMILIES = ("sam3d_adapter",)


@dataclass(frozen=True)
class LesionTrainSettings:
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

    @classmethod
    def from_config(cls, section: dict | None, **overrides) -> LesionTrainSettings:
        keys = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (section or {}).items() if k in keys}
        values.update({k: v for k, v in overrides.items() if v is not None and k in keys})
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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


class LesionTrainer:
    """Runs :class:`LesionTrainSettings` on a :class:`LesionPatchSampler`, writing into ``out_dir``.

    Args:
        settings: training parameters.
        sampler: training patches.
        out_dir: the run folder.
        val_cases: prepared held-out cases for one-click validation (or None).
        model / origin: the model (default: :func:`build_lesion_model`) and where it came from.
        provenance: extra facts stored with the final model.
    """

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
        import torch

        from ctsam.model import resolve_device

        self.s = settings
        self.sampler = sampler
        self.val_cases = list(val_cases or [])
        self.out = Path(out_dir)
        self.dist = dist_info or distributed.detect()
        self.provenance = dict(provenance or {})
        if settings.threads > 0:
            torch.set_num_threads(settings.threads)
        device = resolve_device(settings.device)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        distributed.init(self.dist, device_type=device.type)
        if model is None:
            model, origin = build_lesion_model(settings)
        self.model = model
        self.origin = dict(origin or {"source": "given", "trained_from": getattr(model, "sha256", None)})
        calibration = model.metadata.get("calibration")
        if calibration:  # a post-hoc logit offset fits the weights it was chosen for, not the ones trained here
            self.origin["dropped_calibration_delta"] = calibration.get("delta")
            model.update_metadata(calibration=None)
        self.model.to(device)
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
        self.optimizer: torch.optim.Optimizer
        if settings.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                self.params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, settings))
        fwd = _Forward.make(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward = DDP(
                fwd, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
            )
        else:
            self.forward = fwd
        self.amp_dtype = torch.bfloat16 if device.type == "cuda" and settings.amp in ("auto", "bf16") else None
        self.step = 0
        self.last_metrics: dict = {}

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
        import contextlib

        import torch

        s = self.s
        self.model.module.train()
        image = torch.from_numpy(np.stack([b.image for b in batch])[:, None]).to(self.device)
        target = torch.from_numpy(np.stack([b.target for b in batch])[:, None]).to(self.device)
        pts_np, lab_np = stack_points(batch)
        pts = torch.from_numpy(pts_np).to(self.device)
        lab = torch.from_numpy(lab_np).to(self.device)
        autocast = (
            torch.autocast(device_type="cuda", dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
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

    # ---------------------------------------------------------------- checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

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

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNN/`` atomically (rank 0); keep the last ``keep_checkpoints``."""
        import torch

        from ctsam.model import save_model

        final = self.ckpt_dir / f"step_{self.step:06d}"
        if not self.dist.is_main:
            return final
        tmp = self.ckpt_dir / f".tmp-step_{self.step:06d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_model(self.model, tmp / "model.safetensors", metadata=self._metadata(), sidecar=False)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "settings_json": json.dumps(self.s.to_dict(), sort_keys=True),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted(p for p in self.ckpt_dir.glob("step_*") if (p / "state.pt").is_file())
        for old in done[: max(0, len(done) - max(1, self.s.keep_checkpoints))]:
            shutil.rmtree(old)
        log.info("checkpoint %s", final)
        return final

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.ckpt_dir.glob("step_*") if (p / "state.pt").is_file())
        return done[-1] if done else None

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore weights, optimiser, scheduler and RNG state from a checkpoint folder."""
        import torch

        from ctsam.model import load_model

        path = Path(path)
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(
                "training checkpoint is unreadable",
                path=path / "state.pt",
                found=f"{type(err).__name__}: {str(err)[:200]}",
                fix="delete this checkpoint folder to resume from the previous one",
            ) from err
        saved = json.loads(state["settings_json"])
        for key in ("model", "variant", "init", "sam_checkpoint", "recipe", "batch_size", "steps", "seed", "optimizer"):
            if saved.get(key) != self.s.to_dict().get(key):
                raise CheckpointError(
                    "training checkpoint was written with other settings",
                    path=path,
                    expected=f"{key} = {self.s.to_dict().get(key)!r}",
                    found=repr(saved.get(key)),
                    fix="resume with the same settings, or start a new --out folder",
                )
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
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)

    # ---------------------------------------------------------------- the run
    def _log_metrics(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        from ctsam.io.atomic import _nan_to_none

        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_nan_to_none(record), sort_keys=True) + "\n")

    def run(self, *, resume: bool = True, until_step: int | None = None) -> dict:
        """Train from the latest checkpoint (when ``resume``) to ``steps`` (or ``until_step``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and (ck := self.latest_checkpoint()) is not None:
            self.load_checkpoint(ck)
        elif self.dist.is_main:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            self._log_metrics(
                {"kind": "parameters", "trainable": self.trainable, "total": self.total, "recipe": self.s.recipe}
            )
        if self.dist.is_main:
            doc = {**self.s.to_dict(), "parameters": {"trainable": self.trainable, "total": self.total}}
            (self.out / "settings.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        stop = min(self.s.steps, until_step if until_step is not None else self.s.steps)
        t_start = time.perf_counter()
        t_log = time.perf_counter()
        recent: list[float] = []
        stopped_early = False
        while self.step < stop:
            batch = self.sampler.batch(self.step, self.s.batch_size, self.dist.rank, self.dist.world_size)
            metrics = self.train_step(batch)
            self.step += 1
            recent.append(metrics["loss"])
            self.last_metrics = metrics
            if self.step % max(1, self.s.log_every) == 0 or self.step == stop:
                dt = time.perf_counter() - t_log
                t_log = time.perf_counter()
                rec = {
                    "kind": "train",
                    "step": self.step,
                    **metrics,
                    "loss_mean": float(np.mean(recent)),
                    "s_per_step": dt / max(1, len(recent)),
                }
                self._log_metrics(rec)
                log.info(
                    "step %d/%d loss %.4f (mean %.4f) dice %.3f lr %.2e %.2f s/step",
                    self.step,
                    self.s.steps,
                    metrics["loss"],
                    rec["loss_mean"],
                    metrics["train_dice"],
                    metrics["lr"],
                    rec["s_per_step"],
                )
                recent = []
            if self.s.val_every > 0 and self.step % self.s.val_every == 0 and self.dist.is_main:
                val = self.validate()
                if val:
                    self._log_metrics({"kind": "val", "step": self.step, **val})
                    log.info(
                        "step %d validation: one-click Dice %.3f (baseline %.3f) on %d lesions",
                        self.step,
                        val["val_dice_1click"],
                        val["val_baseline_dice"],
                        val["val_lesions"],
                    )
            out_of_time = self.s.max_minutes > 0 and (time.perf_counter() - t_start) / 60 >= self.s.max_minutes
            if self.step % max(1, self.s.checkpoint_every) == 0 or self.step == stop or out_of_time:
                self.save_checkpoint()
                distributed.barrier(self.dist)
            if out_of_time and self.step < stop:
                log.warning("stopping at step %d: max_minutes %.1f reached", self.step, self.s.max_minutes)
                stopped_early = True
                break
        return {
            "steps_done": self.step,
            "wall_s": round(time.perf_counter() - t_start, 1),
            "stopped_early": stopped_early,
            "final_metrics": self.last_metrics,
            "parameters": {"trainable": self.trainable, "total": self.total},
        }

    def export(self, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
        """Write the current weights as a ctsam safetensors model with training provenance (rank 0)."""
        from ctsam.model import save_model

        return save_model(self.model, path, metadata=self._metadata(extra))

    def close(self) -> None:
        distributed.shutdown(self.dist)
