"""Benchmark: QC flags against planted defects (precision / recall), on the demo cohort with defects.

Runs the workflow (``snakemake --profile workflow/profiles/local``) on the demo cohort with
``workflow.demo.defects: true`` -- the clean demo cases plus one case per planted defect
(ctsam/demo/defects.py: missing organ, swapped side, truncated field of view, leaking mask) -- then
scores every case's ``qc.json`` against the truth in its ``phantom.json``:

* per structure: a structure is *predicted* when it carries any QC flag, *true* when it is one of
  the planted defect's structures; precision = flagged-and-planted / flagged, recall =
  flagged-and-planted / planted;
* per defect: found when one of its structures carries one of the flags that name that kind of
  defect (``EXPECTED_FLAGS``);
* clean cases: the number of flags they carry (the target is 0);
* flags on structures that were not planted are listed with the Dice of the final mask against the
  phantom's ground truth: a low Dice means the flag found a real error nobody planted (e.g. the demo
  model refining a thin esophagus badly), a high one a false alarm.

Run:  PYTHONPATH=$PWD python benchmarks/qc_flags.py [--cases 3] [--workdir DIR] [--score-only]
(``--score-only`` scores an existing run in --workdir without running the workflow.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_ERROR_DICE = 0.7  # a final mask this far from the ground truth is an error, planted or not


def run_workflow(workdir: Path, cases: int, cores: int) -> float:
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "qc-flags-config.yaml"
    cfg.write_text(yaml.safe_dump({"workflow": {"demo": {"cases": cases, "defects": True}}}))
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "workflow/profiles/local",
        "--cores",
        str(cores),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"workflow failed (exit {proc.returncode}); see {workdir}")
    return time.perf_counter() - t0


def _dice_vs_truth(truth_path: Path, labels_path: Path, names: list[str]) -> dict[str, float]:
    """Dice of the final mask against the phantom's ground truth, for flagged structures that were not
    planted: a low value says the flag found a real error (of refinement, say) that nobody planted."""
    import numpy as np

    from ctsam.io.image import read_labelmap

    truth, final = read_labelmap(truth_path), read_labelmap(labels_path)
    if truth.array.shape != final.array.shape:
        return {}
    t_idx = {v: k for k, v in truth.labels.items()}
    f_idx = {v: k for k, v in final.labels.items()}
    out = {}
    for n in names:
        if n in t_idx and n in f_idx:
            a, b = truth.array == t_idx[n], final.array == f_idx[n]
            denom = int(a.sum() + b.sum())
            out[n] = 2.0 * int(np.logical_and(a, b).sum()) / denom if denom else 1.0
    return out


def score(workdir: Path) -> dict:
    """Precision / recall of the flags against the planted truth (see the module doc)."""
    results, demo = workdir / "results", workdir / "demo"
    tp = fp = fn = real = 0
    per_case, false_positives = [], []
    for meta_path in sorted(demo.glob("*/phantom.json")):
        case = meta_path.parent.name
        meta = json.loads(meta_path.read_text())
        defect = meta.get("defect")
        qc_path = results / case / "qc.json"
        if not qc_path.exists():
            per_case.append({"case": case, "defect": defect and defect["kind"], "status": "no qc.json"})
            fn += len(defect["structures"]) if defect else 0
            continue
        doc = json.loads(qc_path.read_text())
        flagged = {s["name"]: sorted({f["flag"] for f in s["flags"]}) for s in doc["structures"] if s["flags"]}
        planted = set(defect["structures"]) if defect else set()
        tp += len(planted & set(flagged))
        fn += len(planted - set(flagged))
        fp += len(set(flagged) - planted)
        extra = [n for n in sorted(flagged) if n not in planted]
        dice = _dice_vs_truth(demo / case / "truth.nii.gz", results / case / "labels.nii.gz", extra) if extra else {}
        real += sum(1 for n in extra if dice.get(n, 1.0) < REAL_ERROR_DICE)
        false_positives += [
            f"{case}: {n} ({', '.join(flagged[n])}; final vs ground truth Dice {dice[n]:.2f})"
            if n in dice
            else f"{case}: {n} ({', '.join(flagged[n])})"
            for n in extra
        ]
        found = bool(defect) and any(set(flagged.get(n, [])) & set(defect["expected_flags"]) for n in planted)
        per_case.append(
            {
                "case": case,
                "defect": defect["kind"] if defect else None,
                "planted": sorted(planted),
                "flagged": flagged,
                "found": found if defect else None,
                "n_flags": doc["summary"]["n_flags"],
            }
        )
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    defects = [c for c in per_case if c.get("defect")]
    return {
        "precision": precision,
        "precision_real": (tp + real) / (tp + fp) if tp + fp else None,
        "real_errors": real,
        "recall": recall,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "defects_found": sum(bool(c.get("found")) for c in defects),
        "defects": len(defects),
        "clean_cases": sum(1 for c in per_case if not c.get("defect")),
        "clean_flags": sum(c.get("n_flags", 0) for c in per_case if not c.get("defect")),
        "false_positives": false_positives,
        "cases": per_case,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=3, help="clean demo cases (default 3, the workflow's default)")
    ap.add_argument("--workdir", type=Path, default=None, help="workflow directory (default: a temporary folder)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--score-only", action="store_true", help="score an existing run in --workdir")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ctsam-qc-flags-"))
    seconds = None if args.score_only else run_workflow(workdir, args.cases, args.cores)
    s = score(workdir)
    print(f"QC flags vs planted defects ({workdir}{'' if seconds is None else f', workflow {seconds:.0f} s'})")
    for c in s["cases"]:
        what = c.get("defect") or "clean"
        flagged = "; ".join(f"{n}: {','.join(f)}" for n, f in (c.get("flagged") or {}).items()) or "no flag"
        verdict = "" if c.get("found") is None else ("  FOUND" if c["found"] else "  MISSED")
        print(
            f"  {c['case']:<22} {what:<14} planted {','.join(c.get('planted') or []) or '-':<38} flagged {flagged}{verdict}"
        )

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(
        f"structures: precision {fmt(s['precision'])} ({s['tp']} of {s['tp'] + s['fp']} flagged are planted), "
        f"recall {fmt(s['recall'])} ({s['tp']} of {s['tp'] + s['fn']} planted are flagged)"
    )
    print(
        f"counting flags on unplanted structures whose final mask is off the ground truth (Dice < {REAL_ERROR_DICE}) "
        f"as correct: precision {fmt(s['precision_real'])} ({s['tp'] + s['real_errors']} of {s['tp'] + s['fp']})"
    )
    print(
        f"defects found: {s['defects_found']} of {s['defects']}; flags on the {s['clean_cases']} clean cases: {s['clean_flags']}"
    )
    if s["false_positives"]:
        print("flagged but not planted: " + "; ".join(s["false_positives"]))


if __name__ == "__main__":
    main()
