"""Per-case run manifest: what went in, what came out, with which software, config and weights.

``manifest.json`` records, for one case:

* ``inputs`` / ``outputs``: sha256 and size of every file (a folder, e.g. a DICOM series, gets one
  digest over its files' relative paths and contents). Outputs are named by their path relative to
  the case's results folder when inside it, else by their base name only; inputs (study folders and
  image files, often named after patients) are named ``input-1``, ``input-2`` ... unless the
  config's ``privacy.keep_input_names`` is set;
* ``checkpoints``: sha256 of model weights;
* ``software``: Python and package versions;
* ``config_digest``: sha256 of the canonical JSON of the validated config;
* ``stages``: per-stage timings from Snakemake benchmark files (``benchmarks/<case>/<rule>.tsv``:
  columns ``s``, ``max_rss`` (MB), ``cpu_time`` ...; the mean over repeated rows) and from
  ``timing_s`` fields of stage sidecars (JSON), when present.

No timestamps are written, so the same inputs and environment give an identical file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from ctsam import __version__
from ctsam.errors import InputDataError
from ctsam.provenance import config_digest, package_versions, sha256_dir, sha256_file  # noqa: F401 - sha256_dir re-exported

log = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1
SOFTWARE = (
    "ctsam",
    "numpy",
    "scipy",
    "SimpleITK",
    "nibabel",
    "pydicom",
    "torch",
    "monai",
    "pandas",
    "pyarrow",
    "matplotlib",
    "highdicom",
    "TotalSegmentator",
    "pyradiomics-bhklab",
    "snakemake",
)


def _display_name(path: Path, case_dir: Path | None) -> str:
    if case_dir is not None:
        try:
            return path.resolve().relative_to(case_dir.resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def describe_file(
    path: str | os.PathLike[str], *, case_dir: Path | None = None, case: str | None = None, name: str | None = None
) -> dict:
    """``{name, sha256, bytes}`` (plus ``files`` for folders) of an existing file or folder.

    ``name`` replaces the file's own name (a pseudonymous input name)."""
    p = Path(path)
    if not p.exists():
        raise InputDataError(
            "file listed for the manifest does not exist",
            case=case,
            path=p,
            expected="an existing file or folder",
            found="no such path",
            fix="pass only files the stages wrote (check the rule's input/output lists)",
        )
    shown = name if name is not None else _display_name(p, case_dir)
    if p.is_dir():
        digest, n, size = sha256_dir(p)
        return {"name": shown, "sha256": digest, "bytes": size, "files": n}
    return {"name": shown, "sha256": sha256_file(p), "bytes": p.stat().st_size}


def read_benchmark(path: str | os.PathLike[str], *, case: str | None = None) -> dict:
    """A Snakemake benchmark TSV -> ``{wall_s, max_rss_mb, cpu_s, repeats}`` (means over rows)."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as err:
        raise InputDataError("benchmark file is unreadable", case=case, path=p, found=str(err)) from err
    if not rows or "s" not in rows[0]:
        raise InputDataError(
            "benchmark file has no timing rows",
            case=case,
            path=p,
            expected="a Snakemake benchmark TSV with a header line starting 's\\th:m:s'",
            found=f"{len(rows)} rows, columns {list(rows[0]) if rows else []}",
            fix="pass the file written by the rule's 'benchmark:' directive",
        )

    def mean(key: str) -> float | None:
        vals = []
        for r in rows:
            try:
                vals.append(float(r[key]))
            except (KeyError, TypeError, ValueError):
                continue
        return round(sum(vals) / len(vals), 4) if vals else None

    return {"wall_s": mean("s"), "max_rss_mb": mean("max_rss"), "cpu_s": mean("cpu_time"), "repeats": len(rows)}


def read_sidecar_timing(path: str | os.PathLike[str], *, case: str | None = None) -> dict | None:
    """The ``timing_s`` mapping of a stage sidecar JSON, or None when it has none."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputDataError(
            "sidecar JSON is unreadable", case=case, path=p, found=f"{type(err).__name__}: {err}"
        ) from err
    timing = doc.get("timing_s") if isinstance(doc, dict) else None
    return timing if isinstance(timing, dict) else None


def _stage_name(path: Path) -> str:
    name = path.name
    for suffix in (".tsv", ".json", ".txt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def build_manifest(
    *,
    case: str | None,
    inputs: list[str | os.PathLike[str]] = (),  # type: ignore[assignment]
    outputs: list[str | os.PathLike[str]] = (),  # type: ignore[assignment]
    checkpoints: list[str | os.PathLike[str]] = (),  # type: ignore[assignment]
    benchmarks: list[str | os.PathLike[str]] = (),  # type: ignore[assignment]
    sidecars: list[str | os.PathLike[str]] = (),  # type: ignore[assignment]
    config: dict | None = None,
    case_dir: str | os.PathLike[str] | None = None,
) -> dict:
    """Assemble the manifest document (see the module docstring). Lists keep the given order."""
    from ctsam.privacy import PrivacySettings, input_names

    cdir = Path(case_dir) if case_dir is not None else None
    names = input_names([str(p) for p in inputs], PrivacySettings.from_config(config or {}))
    stages: dict[str, dict] = {}
    for b in benchmarks:
        stages.setdefault(_stage_name(Path(b)), {})["benchmark"] = read_benchmark(b, case=case)
    for s in sidecars:
        timing = read_sidecar_timing(s, case=case)
        if timing is not None:
            stages.setdefault(_stage_name(Path(s)), {})["sidecar_timing_s"] = timing
    doc = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "case": case,
        "ctsam_version": __version__,
        "software": package_versions(SOFTWARE),
        "config_digest": config_digest(config) if config is not None else None,
        "inputs": [describe_file(p, case_dir=cdir, case=case, name=n) for p, n in zip(inputs, names)],
        "checkpoints": [describe_file(p, case_dir=cdir, case=case) for p in checkpoints],
        "outputs": [describe_file(p, case_dir=cdir, case=case) for p in outputs],
        "stages": dict(sorted(stages.items())),
    }
    warnings = demo_weight_warnings(outputs)
    if warnings:
        doc["warnings"] = warnings
    return doc


DEMO_WEIGHTS_WARNING = (
    "DEMO WEIGHTS: refine ran the phantom-trained builtin:demo_* model on a CT that is not a demo "
    "phantom (weights.allow_demo_weights: true); its refined structures are not trustworthy"
)


def demo_weight_warnings(outputs: list[str | os.PathLike[str]]) -> list[str]:
    """The demo-weights warning when a refined file of ``outputs`` records demo weights on a real CT."""
    import zipfile

    for p in outputs:
        path = Path(p)
        if not path.name.endswith(".npz") or not path.is_file():
            continue
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("meta.json")).get("meta") or {}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            continue
        if meta.get("demo_weights_on_real_ct"):
            return [DEMO_WEIGHTS_WARNING]
    return []


def discover_case_files(case_dir: str | os.PathLike[str], *, exclude: tuple[str, ...] = ("manifest.json",)) -> dict:
    """Files of a case's results folder, grouped for :func:`build_manifest`.

    ``outputs``: every file (recursively, sorted) except ``exclude``; ``sidecars``: the ``*.json``
    among them; ``benchmarks``: ``<case_dir>/benchmarks/*.tsv`` if that folder exists.
    """
    d = Path(case_dir)
    if not d.is_dir():
        raise InputDataError("case results folder not found", path=d, fix="pass results/<case>")
    files = sorted(
        p for p in d.rglob("*") if p.is_file() and p.name not in exclude and "benchmarks" not in p.relative_to(d).parts
    )
    bench = sorted((d / "benchmarks").glob("*.tsv")) if (d / "benchmarks").is_dir() else []
    return {"outputs": files, "sidecars": [p for p in files if p.suffix == ".json"], "benchmarks": bench}
