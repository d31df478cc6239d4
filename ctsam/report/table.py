"""The cohort QC table: one row per case × structure, from ``results/<case>/qc.json`` files."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Columns of the cohort table, in order, with their pandas dtypes (nullable where values may be missing).
COLUMN_DTYPES: dict[str, str] = {
    "case": "string",
    "structure": "string",
    "index": "Int64",
    "source": "string",
    "source_reason": "string",
    "voxels": "Int64",
    "volume_ml": "float64",
    "coarse_volume_ml": "float64",
    "components": "Int64",
    "largest_component_fraction": "float64",
    "agreement_status": "string",
    "dice": "float64",
    "hd95_mm": "float64",
    "msd_mm": "float64",
    "nsd": "float64",
    "nsd_tolerance_mm": "float64",
    "hu_mean": "float64",
    "hu_std": "float64",
    "hu_p5": "float64",
    "hu_p50": "float64",
    "hu_p95": "float64",
    "border_faces": "string",
    "laterality_ok": "boolean",
    "mean_probability": "float64",
    "quality": "float64",
    "n_flags": "Int64",
    "flags": "string",
    "severity": "string",
    "severity_score": "Int64",
}
COLUMNS = list(COLUMN_DTYPES)


@dataclass(frozen=True)
class CaseQC:
    """One case's QC document and where it was found."""

    case: str
    case_dir: Path
    doc: dict


@dataclass(frozen=True)
class UnreadableQC:
    case: str
    path: Path
    error: str


def load_qc_docs(
    results_dir: str | os.PathLike[str], *, qc_name: str = "qc.json"
) -> tuple[list[CaseQC], list[UnreadableQC]]:
    """Every ``<results_dir>/<case>/<qc_name>``, sorted by case. Unreadable files are returned
    separately (one bad case never stops the report)."""
    root = Path(results_dir)
    good: list[CaseQC] = []
    bad: list[UnreadableQC] = []
    for path in sorted(root.glob(f"*/{qc_name}")):
        case = path.parent.name
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or "structures" not in doc:
                raise ValueError("no 'structures' list")
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable QC file %s: %s", path, err)
            bad.append(UnreadableQC(case, path, f"{type(err).__name__}: {err}"))
            continue
        good.append(CaseQC(case=str(doc.get("case") or case), case_dir=path.parent, doc=doc))
    return good, bad


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def qc_rows(cases: list[CaseQC]) -> list[dict]:
    """Flat rows (see :data:`COLUMNS`) for all cases and structures."""
    rows = []
    for c in cases:
        for s in c.doc["structures"]:
            flags = s.get("flags") or []
            rows.append(
                {
                    "case": c.case,
                    "structure": s["name"],
                    "index": s.get("index"),
                    "source": _get(s, "fusion", "source"),
                    "source_reason": _get(s, "fusion", "reason"),
                    "voxels": s.get("voxels"),
                    "volume_ml": s.get("volume_ml"),
                    "coarse_volume_ml": s.get("coarse_volume_ml"),
                    "components": s.get("components"),
                    "largest_component_fraction": s.get("largest_component_fraction"),
                    "agreement_status": _get(s, "agreement", "status"),
                    "dice": _get(s, "agreement", "dice"),
                    "hd95_mm": _get(s, "agreement", "hd95_mm"),
                    "msd_mm": _get(s, "agreement", "msd_mm"),
                    "nsd": _get(s, "agreement", "nsd"),
                    "nsd_tolerance_mm": _get(s, "agreement", "nsd_tolerance_mm"),
                    "hu_mean": _get(s, "hu", "mean"),
                    "hu_std": _get(s, "hu", "std"),
                    "hu_p5": _get(s, "hu", "p5"),
                    "hu_p50": _get(s, "hu", "p50"),
                    "hu_p95": _get(s, "hu", "p95"),
                    "border_faces": ",".join(sorted(s.get("border_voxels") or {})) or None,
                    "laterality_ok": _get(s, "laterality", "ok"),
                    "mean_probability": _get(s, "confidence", "mean_probability"),
                    "quality": _get(s, "confidence", "quality"),
                    "n_flags": len(flags),
                    "flags": ";".join(f["flag"] for f in flags) or None,
                    "severity": s.get("severity"),
                    "severity_score": s.get("severity_score", 0),
                }
            )
    return rows


def qc_dataframe(cases: list[CaseQC]):
    """The cohort table as a pandas DataFrame with fixed dtypes (nullable where values may be missing)."""
    import pandas as pd

    df = pd.DataFrame(qc_rows(cases), columns=COLUMNS)
    return df.astype(COLUMN_DTYPES)


def write_table(df, parquet_path: str | os.PathLike[str], csv_path: str | os.PathLike[str]) -> None:
    """Write the table as parquet and CSV, atomically."""
    from ctsam.io.atomic import atomic_path

    with atomic_path(parquet_path) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
