"""Assemble the cohort report from a results folder: table, snapshots, provenance, failures."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ctsam.errors import CtsamError, InputDataError
from ctsam.report.html import CaseView, ReportData, render_html
from ctsam.report.table import CaseQC, load_qc_docs, qc_dataframe, write_table

log = logging.getLogger(__name__)


def read_failures(path: str | os.PathLike[str]) -> list[dict]:
    """A failure list: TSV/CSV with a ``case`` column (other columns are shown as they are), or
    plain text with one case per line (optionally ``case<TAB>message``)."""
    p = Path(path)
    if not p.exists():
        raise InputDataError(
            "failure list not found", path=p, fix="pass the workflow's failure list or drop --failures"
        )
    text = p.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return []
    delim = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    if delim and "case" in [c.strip() for c in lines[0].split(delim)]:
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k}
            for row in csv.DictReader(lines, delimiter=delim)
        ]
    out = []
    for ln in lines:
        parts = ln.split("\t", 1)
        out.append({"case": parts[0].strip(), "message": parts[1].strip() if len(parts) > 1 else ""})
    return out


def _focus(doc: dict) -> tuple[str | None, np.ndarray | None]:
    """The structure the snapshot should pass through, and its LPS centroid: the structure with
    the most severe flag other than ``truncated`` (which whole-body scans raise everywhere), ties
    broken by score then size; without such flags, the voxel-weighted centre of all structures."""
    structs = [s for s in doc["structures"] if s.get("centroid_lps_mm") is not None and s.get("voxels")]
    if not structs:
        return None, None
    rank = {"info": 1, "warning": 2, "error": 3}

    def key(s):
        fl = [f for f in s.get("flags") or [] if f["flag"] != "truncated"]
        return (max((rank.get(f["severity"], 0) for f in fl), default=0), len(fl), s["voxels"])

    best = max(structs, key=key)
    if key(best)[0] > 0:
        return best["name"], np.asarray(best["centroid_lps_mm"], dtype=float)
    w = np.array([s["voxels"] for s in structs], dtype=float)
    c = np.array([s["centroid_lps_mm"] for s in structs], dtype=float)
    return None, (c * w[:, None]).sum(axis=0) / w.sum()


def _find(case_dir: Path, name: str | None, pattern: str | None) -> Path | None:
    if pattern:
        hits = sorted(case_dir.glob(pattern))
        return hits[0] if hits else None
    if name and (case_dir / name).exists():
        return case_dir / name
    return None


def snapshot_for(
    c: CaseQC, *, ct_pattern: str | None, labels_pattern: str | None
) -> tuple[bytes | None, str | None, str | None]:
    """(png, note, focus structure) for one case; never raises for missing/broken images."""
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.report.snapshots import render_snapshot

    inputs = c.doc.get("inputs") or {}
    ct_path = _find(c.case_dir, inputs.get("ct"), ct_pattern)
    lab_path = _find(c.case_dir, inputs.get("labels"), labels_pattern)
    if ct_path is None or lab_path is None:
        missing = "CT" if ct_path is None else "label map"
        return None, f"No snapshot: {missing} not found in the case folder.", None
    try:
        ct = read_ct(ct_path, case=c.case)
        lab = read_labelmap(lab_path, case=c.case)
        focus, world = _focus(c.doc)
        outline = next((i for i, n in lab.labels.items() if n == focus), None) if focus else None
        png = render_snapshot(
            ct.array,
            lab.array,
            lab.geometry,
            lab.labels,
            focus_world_xyz=world,
            title=f"{c.case}" + (f" — through {focus} (outlined)" if focus else ""),
            outline_label=outline,
        )
        return png, None, focus
    except (CtsamError, ValueError) as err:
        log.warning("no snapshot for case %s: %s", c.case, err)
        return None, f"No snapshot: {str(err).splitlines()[0]}", None


def lesion_snapshot_for(c: CaseQC) -> bytes | None:
    """Slices through the largest lesion with the lesion map overlaid (``ctsam qc --lesions``), or None."""
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.report.snapshots import render_snapshot

    lesions = [le for le in c.doc.get("lesions") or [] if le.get("voxels") and le.get("centroid_lps_mm")]
    inputs = c.doc.get("inputs") or {}
    ct_path = _find(c.case_dir, inputs.get("ct"), None)
    les_path = _find(c.case_dir, inputs.get("lesions"), None)
    if not lesions or ct_path is None or les_path is None:
        return None
    largest = max(lesions, key=lambda le: (le["voxels"], -le["lesion_id"]))
    try:
        ct = read_ct(ct_path, case=c.case)
        lm = read_labelmap(les_path, case=c.case)
        return render_snapshot(
            ct.array,
            lm.array,
            lm.geometry,
            lm.labels,
            focus_world_xyz=np.asarray(largest["centroid_lps_mm"], dtype=float),
            title=f"{c.case} — lesions, through {largest['name']}",
        )
    except (CtsamError, ValueError) as err:
        log.warning("no lesion snapshot for case %s: %s", c.case, err)
        return None


def provenance_summary(cases: list[CaseQC], manifest_name: str = "manifest.json") -> dict:
    """Counts of config digests, versions, checkpoints and software across the cases' manifests,
    and per-stage timing summaries (median/max wall time, max RSS)."""
    digests: Counter = Counter()
    versions: Counter = Counter()
    ckpts: Counter = Counter()
    software: dict[str, Counter] = {}
    stages: dict[str, dict[str, list[float]]] = {}
    demo_weight_cases: list[str] = []
    n = 0
    for c in cases:
        p = c.case_dir / manifest_name
        if not p.exists():
            continue
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("unreadable manifest %s: %s", p, err)
            continue
        n += 1
        if any("DEMO WEIGHTS" in str(w) for w in m.get("warnings") or []):
            demo_weight_cases.append(c.case)
        digests[str(m.get("config_digest"))] += 1
        versions[str(m.get("ctsam_version"))] += 1
        for ck in m.get("checkpoints") or []:
            ckpts[f"{ck.get('name')}: {ck.get('sha256')}"] += 1
        for pkg, ver in (m.get("software") or {}).items():
            software.setdefault(pkg, Counter())[str(ver)] += 1
        for stage, info in (m.get("stages") or {}).items():
            b = info.get("benchmark") or {}
            st = stages.setdefault(stage, {"wall": [], "rss": []})
            if b.get("wall_s") is not None:
                st["wall"].append(float(b["wall_s"]))
            if b.get("max_rss_mb") is not None:
                st["rss"].append(float(b["max_rss_mb"]))
    return {
        "n_manifests": n,
        "demo_weight_cases": demo_weight_cases,
        "config_digest": dict(digests.most_common()),
        "ctsam_version": dict(versions.most_common()),
        "checkpoints": dict(ckpts.most_common()),
        "software": {k: dict(v.most_common()) for k, v in sorted(software.items())},
        "stages": {
            k: {
                "cases": len(v["wall"]),
                "median_wall_s": float(np.median(v["wall"])) if v["wall"] else None,
                "max_wall_s": max(v["wall"]) if v["wall"] else None,
                "max_rss_mb": max(v["rss"]) if v["rss"] else None,
            }
            for k, v in sorted(stages.items())
        },
    }


def structure_summary(df) -> list[dict]:
    """Per-structure medians across cases (rows in label-index order)."""
    out = []
    if df.empty:
        return out
    for name, g in df.groupby("structure", sort=False):

        def med(col):
            v = g[col].dropna()
            return float(v.median()) if len(v) else None

        refined = g[g["source"] == "refined"]

        def med_refined(col, rows=refined):
            # agreement with the coarse mask means something only where the structure was refined
            v = rows[col].dropna()
            return float(v.median()) if len(v) else None

        out.append(
            {
                "structure": str(name),
                "index": int(g["index"].dropna().min()) if g["index"].notna().any() else 10**6,
                "cases": int(g["case"].nunique()),
                "refined": len(refined),
                "volume_ml": med("volume_ml"),
                "dice": med_refined("dice"),
                "hd95_mm": med_refined("hd95_mm"),
                "nsd": med_refined("nsd"),
                "flags": int(g["n_flags"].sum()),
            }
        )
    return sorted(out, key=lambda r: (r["index"], r["structure"]))


FAILURE_LIST = "cohort/failures.tsv"


def _failure_list(results: Path, failures: str | os.PathLike[str] | None) -> Path | None:
    if failures is None:
        return None
    if str(failures) == "auto":
        p = results / FAILURE_LIST
        return p if p.is_file() else None
    return Path(failures)


def _shown_path(path: Path, results: Path) -> str:
    """``path`` relative to the results folder's parent when inside it (no absolute paths in the report)."""
    try:
        return path.resolve().relative_to(results.resolve().parent).as_posix()
    except ValueError:
        return path.name


def build_report(
    results_dir: str | os.PathLike[str],
    output_html: str | os.PathLike[str],
    *,
    table_stem: str | None = None,
    failures: str | os.PathLike[str] | None = "auto",
    max_snapshots: int = 50,
    ct_pattern: str | None = None,
    labels_pattern: str | None = None,
    qc_name: str = "qc.json",
    title: str = "ctsam cohort QC report",
) -> dict:
    """Write the HTML report plus ``<table_stem>.parquet`` and ``.csv`` beside it.

    ``failures``: the failure list; ``"auto"`` (default) reads ``<results>/cohort/failures.tsv`` when it
    exists (the workflow writes it), None reads none. Cases listed there that have a QC file here
    completed after all (a stale list from an earlier run) and are left out.

    Returns a small summary (``cases``, ``rows``, ``flagged``, ``snapshots``, ``failed``, file paths).
    """
    from ctsam.io.atomic import atomic_write_text

    results = Path(results_dir)
    if not results.is_dir():
        raise InputDataError("results folder not found", path=results, fix="pass the workflow's results/ folder")
    out = Path(output_html)
    stem = table_stem or out.name.removesuffix(".html") + "_qc"
    parquet, csvp = out.with_name(stem + ".parquet"), out.with_name(stem + ".csv")

    cases, unreadable = load_qc_docs(results, qc_name=qc_name)
    df = qc_dataframe(cases)
    write_table(df, parquet, csvp)

    views = []
    for c in cases:
        all_flags = [f | {"structure": "(whole case)"} for f in c.doc.get("case_flags") or []]
        all_flags += [f | {"structure": s["name"]} for s in c.doc["structures"] for f in s.get("flags") or []]
        lesions = c.doc.get("lesions") or []  # lesion rows (ctsam qc --lesions): their flags count with the case's
        all_flags += [f | {"structure": le["name"]} for le in lesions for f in le.get("flags") or []]
        sources = Counter(str((s.get("fusion") or {}).get("source")) for s in c.doc["structures"] if s.get("fusion"))
        summary = c.doc.get("summary") or {}
        views.append(
            CaseView(
                case=c.case,
                severity=summary.get("severity"),
                severity_score=int(summary.get("severity_score") or 0),
                n_structures=len(c.doc["structures"]),
                flags=all_flags,
                sources=dict(sources),
                lesions=lesions,
            )
        )
    order = sorted(range(len(cases)), key=lambda i: (-views[i].severity_score, cases[i].case))
    shown = order[: max(max_snapshots, 0)]
    for i in shown:
        png, note, focus = snapshot_for(cases[i], ct_pattern=ct_pattern, labels_pattern=labels_pattern)
        views[i].snapshot_png, views[i].snapshot_note, views[i].focus = png, note, focus
        if views[i].lesions:
            views[i].lesion_snapshot_png = lesion_snapshot_for(cases[i])
    for i in order[len(shown) :]:
        views[i].snapshot_note = "No snapshot (limit reached)."
    prov = provenance_summary(cases)
    failure_path = _failure_list(results, failures)
    done = {c.case for c in cases} | {c.case_dir.name for c in cases}
    failed = [f for f in read_failures(failure_path) if f.get("case") not in done] if failure_path else []
    prov["failure_list"] = _shown_path(failure_path, results) if failure_path else None
    data = ReportData(
        title=title,
        results_name=results.name,
        cases=views,
        structure_summary=structure_summary(df),
        provenance=prov,
        failures=failed,
        unreadable=[{"case": u.case, "error": u.error} for u in unreadable],
        table_files={"parquet": parquet.name, "CSV": csvp.name},
        n_snapshots_omitted=max(len(cases) - len(shown), 0),
    )
    atomic_write_text(out, render_html(data))
    log.info(
        "report: %d cases, %d rows, %d snapshots -> %s",
        len(cases),
        len(df),
        sum(v.snapshot_png is not None for v in views),
        out,
    )
    return {
        "cases": len(cases),
        "rows": int(len(df)),
        "flagged": sum(1 for v in views if v.flags),
        "snapshots": sum(v.snapshot_png is not None for v in views),
        "failed": len(failed),
        "html": str(out),
        "parquet": str(parquet),
        "csv": str(csvp),
    }
