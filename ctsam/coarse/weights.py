"""Preflight of TotalSegmentator weights: which files a run needs, and are they all there.

TotalSegmentator never checks its weights: a model folder that exists counts as downloaded, so a
half-copied tree fails minutes later inside nnU-Net, and a missing one makes an offline node try
GitHub (``requests.exceptions.ConnectionError``). This module lists every file a ``total`` run
needs and checks them in well under a second (sizes, JSON parse, the zip directory at the end of
each checkpoint), without importing torch or TotalSegmentator.

Layout (``totalsegmentator/map_tasks_config.py`` 2.18.0; totalsegmentator.md sections 7.2 and 8)::

    <weights root>/<DatasetNNN folder>/<trainer>__<plans>__3d_fullres/
        plans.json  dataset.json  fold_0/checkpoint_final.pth

The weights root is ``$TOTALSEG_WEIGHTS_PATH``, else ``$TOTALSEG_HOME_DIR/nnunet/results``, else
``~/.totalsegmentator/nnunet/results`` (``totalsegmentator.config.get_weights_dir``).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ctsam.errors import InputDataError

#: The modes ctsam runs TotalSegmentator's ``total`` task in.
MODES = ("fast", "full", "fastest")


@dataclass(frozen=True)
class TsModel:
    """One nnU-Net model of TotalSegmentator's ``total`` task.

    Attributes:
        task_id: TotalSegmentator task id (291-295 parts at 1.5 mm, 297 at 3 mm, 298 at 6 mm).
        folder: the DatasetNNN folder name (``TASK_ID_WEIGHTS_CONFIGS[id]["foldername"]``).
        trainer: trainer named in the folder (``TASK_CONFIGS``; crop locator trainer for 298).
        spacing_mm: isotropic resampling spacing of the model.
        part_global_ids: (first, last) global ``total`` ids a part model predicts; None = all 117.
        download_tasks: the ``totalseg_download_weights -t`` tasks that fetch this folder
            (``bin/totalseg_download_weights.py`` TASK_TO_ID), preferred first.
    """

    task_id: int
    folder: str
    trainer: str
    spacing_mm: float
    part_global_ids: tuple[int, int] | None
    download_tasks: tuple[str, ...]
    plans: str = "nnUNetPlans"
    configuration: str = "3d_fullres"
    folds: tuple[int, ...] = (0,)

    @property
    def trainer_folder(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    def required_files(self) -> list[str]:
        """Paths relative to the weights root, in a fixed order."""
        base = f"{self.folder}/{self.trainer_folder}"
        files = [f"{base}/plans.json", f"{base}/dataset.json"]
        files += [f"{base}/fold_{f}/checkpoint_final.pth" for f in self.folds]
        return files


_PART = "nnUNetTrainerNoMirroring"
_SINGLE = "nnUNetTrainer_4000epochs_NoMirroring"

#: Models of the ``total`` task (TotalSegmentator 2.18.0). Verified against the installed package
#: by tests/coarse/test_weights.py.
TS_MODELS: dict[int, TsModel] = {
    m.task_id: m
    for m in (
        TsModel(291, "Dataset291_TotalSegmentator_part1_organs_1559subj", _PART, 1.5, (1, 24), ("total",)),
        TsModel(292, "Dataset292_TotalSegmentator_part2_vertebrae_1532subj", _PART, 1.5, (25, 50), ("total",)),
        TsModel(293, "Dataset293_TotalSegmentator_part3_cardiac_1559subj", _PART, 1.5, (51, 68), ("total",)),
        TsModel(294, "Dataset294_TotalSegmentator_part4_muscles_1559subj", _PART, 1.5, (69, 91), ("total",)),
        TsModel(295, "Dataset295_TotalSegmentator_part5_ribs_1559subj", _PART, 1.5, (92, 117), ("total",)),
        TsModel(297, "Dataset297_TotalSegmentator_total_3mm_1559subj", _SINGLE, 3.0, None, ("total_fast",)),
        TsModel(298, "Dataset298_TotalSegmentator_total_6mm_1559subj", _SINGLE, 6.0, None, ("total", "total_fast")),
    )
}

_MODE_TASKS = {"fast": (297,), "full": (291, 292, 293, 294, 295), "fastest": (298,)}


def required_task_ids(mode: str, *, roi_subset: bool = False, robust_crop: bool = False) -> tuple[int, ...]:
    """Task ids a ``total`` run needs: the mode's models plus the crop locator for ``roi_subset``.

    TotalSegmentator downloads (so needs) every part model even when ``roi_subset`` selects a few;
    the locator is 298 (6 mm), or 297 with ``robust_crop`` / ``--roi_subset_robust``.
    """
    if mode not in _MODE_TASKS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ids = list(_MODE_TASKS[mode])
    if roi_subset:
        locator = 297 if robust_crop else 298
        if locator not in ids:
            ids.append(locator)
    return tuple(ids)


def default_weights_root(env: dict[str, str] | None = None) -> Path:
    """Where TotalSegmentator will look for weights, given ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    if env.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(env["TOTALSEG_WEIGHTS_PATH"]).expanduser()
    if env.get("TOTALSEG_HOME_DIR"):
        return Path(env["TOTALSEG_HOME_DIR"]).expanduser() / "nnunet" / "results"
    home = Path.home()
    return (Path("/tmp") if str(home) == "/" else home) / ".totalsegmentator" / "nnunet" / "results"


@dataclass(frozen=True)
class WeightProblem:
    """One required file that is missing or unusable."""

    relpath: str
    task_id: int
    problem: str


@dataclass(frozen=True)
class WeightsReport:
    """Result of :func:`check_weights`: what was required and what is wrong."""

    root: Path
    mode: str
    task_ids: tuple[int, ...]
    required: tuple[str, ...]
    problems: tuple[WeightProblem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    def download_commands(self) -> list[str]:
        """The ``totalseg_download_weights`` calls that fetch every model with a problem."""
        chosen: list[str] = []
        for task_id in sorted({p.task_id for p in self.problems}, key=lambda t: len(TS_MODELS[t].download_tasks)):
            options = TS_MODELS[task_id].download_tasks
            if not any(t in chosen for t in options):
                chosen.append(options[0])
        return [f"totalseg_download_weights -t {t}" for t in sorted(chosen)]

    def to_dict(self) -> dict:
        return {
            "weights_root": str(self.root),
            "mode": self.mode,
            "task_ids": list(self.task_ids),
            "required_files": list(self.required),
            "ok": self.ok,
            "problems": [{"file": p.relpath, "task_id": p.task_id, "problem": p.problem} for p in self.problems],
            "download_commands": self.download_commands(),
        }

    def error(self, *, case: str | None = None) -> InputDataError:
        """One error naming every problem file and the download command."""
        lines = [f"{p.relpath}: {p.problem}" for p in self.problems]
        if not self.root.is_dir():
            lines.insert(0, f"(the weights root {self.root} does not exist)")
        folders = sorted({TS_MODELS[p.task_id].folder for p in self.problems})
        cmds = self.download_commands()
        return InputDataError(
            f"TotalSegmentator weights for mode '{self.mode}' are incomplete: {len(self.problems)} of "
            f"{len(self.required)} required files missing or unusable in {len(folders)} model folder(s)",
            case=case,
            path=self.root,
            expected=(
                f"{len(self.required)} complete files for task ids {list(self.task_ids)}: plans.json, dataset.json "
                "and fold_0/checkpoint_final.pth in each model folder (list them: ctsam weights check)"
            ),
            found="\n    " + "\n    ".join(lines),
            fix=(
                "on a machine with internet run "
                + " and ".join(f"`{c}`" for c in cmds)
                + ", then copy the extracted folders ("
                + ", ".join(folders)
                + f") completely to {self.root} (delete half-copied folders first: TotalSegmentator "
                "skips any folder that exists), or point TOTALSEG_WEIGHTS_PATH at a complete tree"
            ),
        )


def _file_problem(path: Path) -> str | None:
    try:
        if not path.exists():
            return "missing"
        if not path.is_file():
            return "not a regular file"
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes): half-copied?"
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                return f"not valid JSON ({err.__class__.__name__}): truncated?"
        elif path.suffix == ".pth":
            # torch.save writes a zip archive; its central directory sits at the very end, so a
            # truncated copy is detected without reading the whole file
            if not zipfile.is_zipfile(path):
                return f"not a complete torch checkpoint ({size} bytes, no zip directory at the end): truncated?"
    except PermissionError:
        return "not readable (permission denied)"
    return None


def check_weights(
    mode: str,
    *,
    roi_subset: bool = False,
    robust_crop: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> WeightsReport:
    """Check every file a ``total`` run in ``mode`` needs under ``root`` (default: TotalSegmentator's)."""
    root_path = default_weights_root() if root is None else Path(root)
    ids = required_task_ids(mode, roi_subset=roi_subset, robust_crop=robust_crop)
    required: list[str] = []
    problems: list[WeightProblem] = []
    for task_id in ids:
        for rel in TS_MODELS[task_id].required_files():
            required.append(rel)
            problem = _file_problem(root_path / rel)
            if problem:
                problems.append(WeightProblem(rel, task_id, problem))
    return WeightsReport(root_path, mode, ids, tuple(required), tuple(problems))
