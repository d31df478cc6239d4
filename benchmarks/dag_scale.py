"""DAG scale: dry-run the workflow on a synthetic 1,000-case samples.tsv with the SLURM profile.

Prints the dry-run wall time (goal < 30 s), the number of jobs, and the number of SLURM
submissions per case (goal <= 3: the grouped CPU stages, refine, ...), against a 10-case dry-run
measured in the same run as the baseline (time per case ratio). Needs no SLURM: the slurm
executor plugin dry-runs without it.

    python benchmarks/dag_scale.py [--cases 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_cohort_sheet(folder: Path, n_cases: int) -> Path:
    """``n_cases`` empty study folders and coarse label files, and a samples.tsv naming them."""
    lines = ["case_id\tpath\tcoarse_labels"]
    for k in range(n_cases):
        study = folder / "studies" / f"study{k:05d}"
        study.mkdir(parents=True)
        (study / "coarse.nii.gz").write_bytes(b"")
        lines.append(f"c{k:05d}\t{study}\t{study / 'coarse.nii.gz'}")
    sheet = folder / "samples.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def snakemake_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def dry_run(workdir: Path, configfile: Path, *, quiet: bool, profile: str = "slurm") -> tuple[float, float, str]:
    """Dry-run from the repository root into ``workdir``; return (wall s, CPU s, stdout+stderr).

    ``quiet``: build the DAG and print only the job counts (printing every job of a large DAG
    costs more than building it).
    """
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--profile",
        f"workflow/profiles/{profile}",
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
    ] + (["--quiet"] if quiet else [])
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=snakemake_env(), capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"dry-run failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, cpu, proc.stdout + proc.stderr


_UNIT = re.compile(r"^(?:\[[^\]]*\] )?(?:Group job (?P<group>\S+)[^\n]*|(?P<local>local)?rule (?P<rule>\w+)):", re.M)
LOCAL_RULES = {"all"}  # `localrules:` in workflow/Snakefile
_CASE = re.compile(r"wildcards: .*?\bcase=([^,\s]+)")


def submissions_per_case(dry_run_text: str) -> tuple[Counter, Counter]:
    """From a dry-run listing: SLURM submissions per case, and submissions per unit kind.

    A unit is a top-level group job or a top-level (non-local) rule job; local rules run on the
    submit host and are not counted. Jobs inside a group are indented and belong to their group.
    """
    per_case: Counter = Counter()
    kinds: Counter = Counter()
    units = list(_UNIT.finditer(dry_run_text))
    for i, m in enumerate(units):
        if m.group("local") or m.group("rule") in LOCAL_RULES:
            continue
        end = units[i + 1].start() if i + 1 < len(units) else len(dry_run_text)
        block = dry_run_text[m.end() : end]
        kind = f"group {m.group('group')}" if m.group("group") else m.group("rule")
        kinds[kind] += 1
        cases = set(_CASE.findall(block))
        for case in cases:
            per_case[case] += 1
    return per_case, kinds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--baseline-cases", type=int, default=10)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctsam-dag-") as tmp:
        results = {}
        for n in (args.baseline_cases, args.cases):
            folder = Path(tmp) / f"n{n}"
            sheet = write_cohort_sheet(folder, n)
            config = folder / "config.yaml"
            config.write_text(f"workflow:\n  samples: {sheet}\n")
            seconds, cpu, _ = dry_run(folder / "run", config, quiet=True)
            list_seconds, _, listing = dry_run(folder / "run", config, quiet=False)
            n_jobs = int(re.search(r"^total\s+(\d+)", listing, re.M).group(1))
            per_case, kinds = submissions_per_case(listing)
            results[n] = (seconds, cpu, per_case)
            print(
                f"{n:5d} cases: DAG + dry-run {seconds:6.1f} s wall, {cpu:5.1f} s CPU; {n_jobs} jobs; "
                f"SLURM submissions {sum(kinds.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}); "
                f"listing every job: {list_seconds:.1f} s"
            )
        seconds, cpu, per_case = results[args.cases]
        base_seconds, base_cpu, _ = results[args.baseline_cases]
        worst = max(per_case.values()) if per_case else 0
        print(
            f"SLURM submissions per case: max {worst}, min {min(per_case.values(), default=0)} "
            f"(goal <= 3); cases seen {len(per_case)} of {args.cases}"
        )
        print(
            f"dry-run of {args.cases} cases: {seconds:.1f} s wall, {cpu:.1f} s CPU (goal < 30 s); "
            f"{args.baseline_cases} cases: {base_seconds:.1f} s wall, {base_cpu:.1f} s CPU; "
            f"ratio {seconds / base_seconds:.1f}x wall for {args.cases / args.baseline_cases:.0f}x the cases"
        )
    return 0 if worst <= 3 and seconds < 30 else 1


if __name__ == "__main__":
    raise SystemExit(main())
