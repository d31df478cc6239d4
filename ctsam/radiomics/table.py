"""Radiomics tables: the per-case long parquet (+ JSON sidecar) and the cohort-wide wide table.

Per case, ``FEATURES.parquet`` holds one row per extracted value:

==========  =======  ==================================================
column      type     meaning
==========  =======  ==================================================
case        string   case id
structure   string   structure name (label table)
label       int32    label value in the label map
feature     string   pyradiomics key, e.g. ``original_shape_VoxelVolume``
value       float64  feature value (NaN where pyradiomics returns NaN)
==========  =======  ==================================================

Lesions (``--lesions``, from ``ctsam lesions``) are extra structures named ``lesion_<id>`` (label =
lesion id); their status entries say ``kind: lesion`` and name the ``containing_structure``.

Structures that failed or were empty have no rows; every structure's ``status`` (ok, failed, empty, too_small),
``reason`` and ``n_voxels`` are in the parquet schema metadata (key ``ctsam.radiomics``, JSON) together
with software versions, the parameter file's sha256 and its effective settings. The same JSON is
written beside the table as ``FEATURES.json``. Outputs carry no timings and no input paths (no PHI,
byte-identical reruns).

The cohort table has one row per case x structure (every status) and one column per feature.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ctsam.errors import InputDataError
from ctsam.io.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

METADATA_KEY = b"ctsam.radiomics"
LONG_FORMAT = "ctsam.radiomics.long/1"
COHORT_FORMAT = "ctsam.radiomics.cohort/1"
ID_COLUMNS = ("case", "structure", "label", "status", "reason", "n_voxels")


def sidecar_path(parquet_path: str | os.PathLike[str]) -> Path:
    return Path(parquet_path).with_suffix(".json")


def software_versions() -> dict:
    import numpy
    import radiomics
    import SimpleITK

    from ctsam import __version__
    from ctsam.provenance import package_versions

    versions = package_versions(("pyarrow",))
    versions.update(
        {
            "ctsam": __version__,
            "pyradiomics": str(radiomics.__version__),
            "SimpleITK": SimpleITK.Version_VersionString(),
            "numpy": numpy.__version__,
        }
    )
    return dict(sorted(versions.items()))


def case_metadata(features) -> dict:
    """The provenance + structure-status record of a :class:`~ctsam.radiomics.extract.CaseFeatures`."""
    p = features.params
    return {
        "format": LONG_FORMAT,
        "case": features.case,
        "versions": software_versions(),
        "params_file": p.path.name,
        "params_sha256": p.sha256,
        "settings": _jsonable(p.settings),
        "image_types": _jsonable(p.image_types),
        "feature_classes": _jsonable(p.feature_classes),
        "margin_mm": features.margin_mm,
        "ct_geometry": features.geometry,
        "counts": dict(sorted(features.counts().items())),
        "structures": [
            {
                "label": r.label,
                "structure": r.name,
                "status": r.status,
                "reason": r.reason,
                "n_voxels": r.n_voxels,
                "n_features": len(r.features),
                **({"kind": "lesion", **features.lesions[r.name]} if r.name in features.lesions else {}),
            }
            for r in features.results
        ],
    }


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def write_case_features(path: str | os.PathLike[str], features) -> dict:
    """Write the long table (parquet, atomic) and its JSON sidecar; return the metadata written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = case_metadata(features)
    cases, names, labels, keys, values = [], [], [], [], []
    for r in features.results:
        for key, value in r.features:
            cases.append(features.case)
            names.append(r.name)
            labels.append(r.label)
            keys.append(key)
            values.append(value)
    table = pa.table(
        {
            "case": pa.array(cases, pa.string()),
            "structure": pa.array(names, pa.string()),
            "label": pa.array(labels, pa.int32()),
            "feature": pa.array(keys, pa.string()),
            "value": pa.array(values, pa.float64()),
        }
    ).replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    atomic_write_json(sidecar_path(path), meta)
    return meta


def read_case_features(path: str | os.PathLike[str]):
    """Read a long table. Returns ``(pandas.DataFrame, metadata dict)``."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputDataError("radiomics feature table not found", path=path, fix="run 'ctsam radiomics' first")
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - corrupt/foreign file
        raise InputDataError("not a readable parquet file", path=path, found=f"{type(err).__name__}: {err}") from err
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else None
    if not meta or meta.get("format") != LONG_FORMAT:
        raise InputDataError(
            "parquet file is not a ctsam radiomics feature table",
            path=path,
            expected=f"schema metadata '{METADATA_KEY.decode()}' with format {LONG_FORMAT}",
            found=str(meta.get("format")) if meta else "no ctsam metadata",
            fix="pass files written by 'ctsam radiomics'",
        )
    return table.to_pandas(), meta


def cohort_table(paths: list[str | os.PathLike[str]]):
    """Pivot long tables into one wide DataFrame (rows: case x structure; columns: ID_COLUMNS + features).

    Raises :class:`InputDataError` if the inputs used different parameter files or repeat a case.
    Returns ``(DataFrame, metadata dict)``.
    """
    import pandas as pd

    if not paths:
        raise InputDataError("no radiomics feature tables given", fix="pass one or more FEATURES.parquet files")
    frames, status_rows, metas = [], [], {}
    for path in paths:
        df, meta = read_case_features(path)
        case = meta["case"]
        if case in metas:
            raise InputDataError(f"case '{case}' appears twice", path=path, fix="pass each case's feature table once")
        metas[case] = meta
        frames.append(df)
        status_rows += [
            {
                "case": case,
                **{k: s[k] for k in ("structure", "label", "status", "reason", "n_voxels")},
                "containing_structure": s.get("containing_structure"),
                "_lesion": s.get("kind") == "lesion",
            }
            for s in meta["structures"]
        ]
    digests = {m["params_sha256"] for m in metas.values()}
    if len(digests) > 1:
        by_digest = {d: sorted(c for c, m in metas.items() if m["params_sha256"] == d) for d in digests}
        raise InputDataError(
            "feature tables were extracted with different parameter files",
            expected="one parameter file (sha256) for the whole cohort",
            found="; ".join(f"{d[:12]}: {', '.join(c[:3])}{'...' if len(c) > 3 else ''}" for d, c in by_digest.items()),
            fix="re-extract the odd cases with the cohort's parameter file",
        )
    long = pd.concat(frames, ignore_index=True)
    feature_order = list(dict.fromkeys(long["feature"]))
    # rows are keyed by structure name: a lesion's label (its id in the lesion map) may equal an organ's
    wide = long.pivot(index=["case", "structure"], columns="feature", values="value").reindex(columns=feature_order)
    wide.columns.name = None
    status = pd.DataFrame(
        status_rows,
        columns=["case", "structure", "label", "status", "reason", "n_voxels", "containing_structure", "_lesion"],
    )
    status["label"] = status["label"].astype("int32")
    status["n_voxels"] = status["n_voxels"].astype("int64")
    out = status.merge(wide.reset_index(), on=["case", "structure"], how="left")
    out = out.sort_values(["case", "_lesion", "label"], kind="stable").reset_index(drop=True)
    if not out["_lesion"].any():  # no lesions: the table keeps its organ-only columns
        out = out.drop(columns=["containing_structure"])
    out = out.drop(columns=["_lesion"])
    first = next(iter(metas.values()))
    meta = {
        "format": COHORT_FORMAT,
        "n_cases": len(metas),
        "cases": sorted(metas),
        "params_sha256": first["params_sha256"],
        "params_file": first["params_file"],
        "settings": first["settings"],
        "versions": {c: m["versions"] for c, m in sorted(metas.items())},
        "counts": dict(sorted(out["status"].value_counts().to_dict().items())),
    }
    return out, meta


def write_cohort(path: str | os.PathLike[str], df, meta: dict, *, csv: bool = False) -> list[Path]:
    """Write the wide table as parquet (+ metadata, atomic) and optionally ``<stem>.csv``; return paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    written = [path]
    if csv:
        csv_path = path.with_suffix(".csv")
        with atomic_path(csv_path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.17g")
        written.append(csv_path)
    return written
