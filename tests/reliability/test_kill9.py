"""kill -9 at random points of each stage, then a rerun: outputs byte-identical to an uninterrupted
run, and no temp file left (the rerun sweeps what the killed process could not remove).

Kill points per stage: the moment a temp file first appears (a kill in the middle of a write, the
worst case) and two random times within the stage's duration (seeded per stage, so a failure
reproduces). The refine stage (about a minute on CPU) is covered by the workflow tests."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from ctsam.io.atomic import temp_target

from .conftest import STAGES, copy_inputs, ctsam, popen_ctsam, sha256, stage_args, temp_files


def _kill_at(args: list[str], *, delay_s: float | None, watch: Path) -> tuple[str, Path | None]:
    """Run the stage, SIGKILL it after ``delay_s`` (None: as soon as a temp file appears in ``watch``).

    Returns (what happened, the temp file seen at the kill or None)."""
    proc = popen_ctsam(*args)
    t0 = time.monotonic()
    seen = None
    while proc.poll() is None:
        if delay_s is None:
            names = [n for n in os.listdir(watch) if ".ctsam-tmp." in n] if watch.is_dir() else []
            if names:
                seen = watch / names[0]
                break
            if time.monotonic() - t0 > 120:
                break
            time.sleep(0.001)
        elif time.monotonic() - t0 >= delay_s:
            break
        else:
            time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return "killed", seen
    proc.communicate()
    return "finished", seen


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STAGES))
def test_kill9_then_rerun_gives_identical_outputs_and_no_debris(tmp_path, demo_case, name):
    stage = STAGES[name]
    src = copy_inputs(demo_case, stage, tmp_path / "in")
    out = tmp_path / "out"
    args = stage_args(stage, study=demo_case.study, labels=demo_case.labels, src=src, out=out)
    t0 = time.monotonic()
    ref_out = tmp_path / "timing"
    proc = ctsam(*stage_args(stage, study=demo_case.study, labels=demo_case.labels, src=src, out=ref_out))
    assert proc.returncode == 0, proc.stderr
    duration = time.monotonic() - t0
    rng = random.Random(f"kill9-{name}")
    outcomes = [_kill_at(args, delay_s=None, watch=out)]
    what, seen = outcomes[0]
    if what == "killed" and seen is not None:
        # the kill landed mid-write (its temp file stays: nothing can run) or just after the rename
        assert temp_files(out) or temp_target(seen).exists(), "a kill -9 mid-write must leave its temp file"
    outcomes += [_kill_at(args, delay_s=rng.uniform(0.3, duration), watch=out) for _ in range(2)]
    assert any(what == "killed" for what, _ in outcomes), outcomes
    for f in stage.outputs:  # a killed run may have finished some outputs; none is half-written
        p = out / f
        if p.exists():
            assert sha256(p) == sha256(demo_case.results / f), (name, f, "half-written output after kill -9")
    proc = ctsam(*args)
    assert proc.returncode == 0, proc.stderr
    for f in stage.outputs:
        assert sha256(out / f) == sha256(demo_case.results / f), (name, f)
    assert temp_files(tmp_path) == [], (name, outcomes)
