"""The machinery both trainers share (:class:`~ctsam.training.loop.Trainer` for CT-SAM3D,
:class:`~ctsam.training.lesion_loop.LesionTrainer` for 3DSAM-adapter).

:class:`StepRunner` owns the device and process-group set-up, optimiser, scheduler, DDP wrapper,
mixed precision, checkpoints (``checkpoints/step_NNNNNN/`` = ``model.safetensors`` + ``state.pt``,
written atomically, the last ``keep_checkpoints`` kept), exact resume, ``metrics.jsonl``,
``settings.json`` and the step loop (logging, validation and checkpoint cadence, ``max_minutes``).

A trainer supplies its differences as hooks: :meth:`StepRunner.train_step_at` (one optimisation
step), :meth:`~StepRunner.validate`, :meth:`~StepRunner._save_weights` and
:meth:`~StepRunner._restore_weights` (the model file of a checkpoint), ``RESUME_KEYS`` (settings that
must match to resume), and optional :meth:`~StepRunner._on_fresh_start`, :meth:`~StepRunner._settings_doc`,
:meth:`~StepRunner._log_validation`, :meth:`~StepRunner._summary_extra` and ``PROGRESS_LABEL``.
:class:`SettingsSection` gives both settings dataclasses ``from_config`` and ``to_dict``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

import numpy as np

from ctsam.errors import CheckpointError
from ctsam.training import distributed

if TYPE_CHECKING:
    import torch


class SettingsSection:
    """``from_config`` / ``to_dict`` of a frozen settings dataclass (a config section plus CLI overrides)."""

    @classmethod
    def from_config(cls, section: dict | None, **overrides) -> Self:
        keys = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # subclasses are dataclasses
        values = {k: v for k, v in (section or {}).items() if k in keys}
        values.update({k: v for k, v in overrides.items() if v is not None and k in keys})
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses


class RunSettings(Protocol):
    """The settings fields :class:`StepRunner` reads (both settings dataclasses have them)."""

    @property
    def steps(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def checkpoint_every(self) -> int: ...
    @property
    def keep_checkpoints(self) -> int: ...
    @property
    def val_every(self) -> int: ...
    @property
    def log_every(self) -> int: ...
    @property
    def amp(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def max_minutes(self) -> float: ...

    def to_dict(self) -> dict: ...


S = TypeVar("S", bound=RunSettings)


class StepRunner(Generic[S]):
    """Base of the trainers: set-up helpers, checkpoints, resume, metrics and the run loop."""

    #: settings keys that must be equal in a checkpoint to resume from it
    RESUME_KEYS: tuple[str, ...] = ()
    #: progress-bar label of :meth:`run` (None: no progress bar)
    PROGRESS_LABEL: str | None = None

    s: S
    sampler: Any
    out: Path
    dist: distributed.DistInfo
    provenance: dict
    device: torch.device
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    forward: Any
    amp_dtype: torch.dtype | None
    scaler: Any
    step: int
    last_metrics: dict

    @property
    def _log(self) -> logging.Logger:
        """The trainer module's logger (log records keep the names they had before this base class)."""
        return logging.getLogger(type(self).__module__)

    # ---------------------------------------------------------------- set-up
    def _init_run(
        self,
        settings: S,
        sampler: Any,
        out_dir: str | os.PathLike[str],
        dist_info: distributed.DistInfo | None,
        provenance: dict | None,
    ) -> None:
        """Settings, run folder, rank, thread count, device and process group."""
        import torch

        from ctsam.model import resolve_device

        self.s = settings
        self.sampler = sampler
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

    def _init_optimisation(self, params: Sequence, lr_factor: Callable[[int], float]) -> None:
        """Optimiser (AdamW or SGD with momentum 0.9) on ``params`` and the ``lr_factor`` schedule."""
        import torch

        s = self.s
        if s.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)

    def _init_forward(self, fwd, *, find_unused_parameters: bool) -> None:
        """``fwd`` wrapped in DDP when distributed; mixed precision (bf16/fp16 autocast on CUDA)."""
        import torch

        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward = DDP(
                fwd,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
            )
        else:
            self.forward = fwd
        self.amp_dtype = None
        if self.device.type == "cuda" and self.s.amp in ("auto", "bf16"):
            self.amp_dtype = torch.bfloat16
        elif self.device.type == "cuda" and self.s.amp == "fp16":
            self.amp_dtype = torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.last_metrics = {}

    def _autocast(self):
        import torch

        if self.amp_dtype is not None:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- hooks
    def train_step_at(self, batch: list, step: int) -> dict:
        """One optimisation step on ``batch`` (step ``step``); metrics with ``loss``, ``train_dice``, ``lr``."""
        raise NotImplementedError

    def validate(self) -> dict:
        """Validation metrics (empty: none)."""
        return {}

    def _save_weights(self, path: Path) -> None:
        """Write the model file of a checkpoint."""
        raise NotImplementedError

    def _restore_weights(self, path: Path) -> None:
        """Copy the weights of checkpoint folder ``path`` into the model."""
        raise NotImplementedError

    def _on_fresh_start(self) -> None:
        """Called on rank 0 when a run starts without a checkpoint (after clearing ``metrics.jsonl``)."""

    def _settings_doc(self) -> dict:
        """The content of ``settings.json``."""
        return self.s.to_dict()

    def _log_validation(self, val: dict) -> None:
        self._log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.3f}" for k, v in val.items()))

    def _summary_extra(self) -> dict:
        """Extra entries of the summary :meth:`run` returns."""
        return {}

    # ---------------------------------------------------------------- checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNN/`` atomically (rank 0 only); keep the last ``keep_checkpoints``."""
        import torch

        final = self.ckpt_dir / f"step_{self.step:06d}"
        if not self.dist.is_main:
            return final
        tmp = self.ckpt_dir / f".tmp-step_{self.step:06d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self._save_weights(tmp / "model.safetensors")
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "settings_json": json.dumps(self.s.to_dict(), sort_keys=True),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted(p for p in self.ckpt_dir.glob("step_*") if (p / "state.pt").is_file())
        for old in done[: max(0, len(done) - max(1, self.s.keep_checkpoints))]:
            shutil.rmtree(old)
        self._log.info("checkpoint %s", final)
        return final

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.ckpt_dir.glob("step_*") if (p / "state.pt").is_file())
        return done[-1] if done else None

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore weights, optimiser, scheduler and RNG state from a checkpoint folder."""
        import torch

        path = Path(path)
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(
                "training checkpoint is unreadable",
                path=path / "state.pt",
                found=f"{type(err).__name__}: {str(err)[:200]}",
                fix="delete this checkpoint folder to resume from the previous one",
            ) from err
        saved = json.loads(state["settings_json"])
        mine = self.s.to_dict()
        for key in self.RESUME_KEYS:
            if saved.get(key) != mine.get(key):
                raise CheckpointError(
                    "training checkpoint was written with other settings",
                    path=path,
                    expected=f"{key} = {mine.get(key)!r}",
                    found=repr(saved.get(key)),
                    fix="resume with the same settings, or start a new --out folder",
                )
        self._restore_weights(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._log.info("resumed from %s at step %d", path, self.step)

    # ---------------------------------------------------------------- the run
    def _log_metrics(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        from ctsam.io.atomic import _nan_to_none  # noqa: PLC2701 - same JSON convention as atomic_write_json

        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_nan_to_none(record), sort_keys=True) + "\n")

    def run(self, *, resume: bool = True, until_step: int | None = None) -> dict:
        """Train from the latest checkpoint (when ``resume``) to ``steps`` (or ``until_step``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and (ck := self.latest_checkpoint()) is not None:
            self.load_checkpoint(ck)
        elif self.dist.is_main:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            self._on_fresh_start()
        if self.dist.is_main:
            (self.out / "settings.json").write_text(json.dumps(self._settings_doc(), indent=2, sort_keys=True) + "\n")
        stop = min(self.s.steps, until_step if until_step is not None else self.s.steps)
        t_start = time.perf_counter()
        t_log = time.perf_counter()
        recent: list[float] = []
        stopped_early = False
        progress = None
        if self.PROGRESS_LABEL is not None and self.dist.is_main:
            from ctsam.progress import Progress

            progress = Progress(max(stop - self.step, 0), self.PROGRESS_LABEL)
        while self.step < stop:
            batch = self.sampler.batch(self.step, self.s.batch_size, self.dist.rank, self.dist.world_size)
            metrics = self.train_step_at(batch, self.step)
            self.step += 1
            if progress is not None:
                progress.update()
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
                self._log.info(
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
                    self._log_validation(val)
            out_of_time = self.s.max_minutes > 0 and (time.perf_counter() - t_start) / 60 >= self.s.max_minutes
            if self.step % max(1, self.s.checkpoint_every) == 0 or self.step == stop or out_of_time:
                self.save_checkpoint()
                distributed.barrier(self.dist)
            if out_of_time and self.step < stop:
                self._log.warning("stopping at step %d: max_minutes %.1f reached", self.step, self.s.max_minutes)
                stopped_early = True
                break
        return {
            "steps_done": self.step,
            "wall_s": round(time.perf_counter() - t_start, 1),
            "stopped_early": stopped_early,
            "final_metrics": self.last_metrics,
            **self._summary_extra(),
        }

    def close(self) -> None:
        distributed.shutdown(self.dist)
