"""``ctsam radiomics``: pyradiomics features of every structure of one case -> long parquet table."""

from __future__ import annotations

HELP = "extract pyradiomics features per structure (crops, parallel workers) into a long parquet table"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI/NRRD/MHA, HU)")
    parser.add_argument("labels", help="label map on the CT grid (label table from .tsv sidecar or NIfTI header)")
    parser.add_argument("-o", "--output", required=True, help="output FEATURES.parquet (a FEATURES.json sidecar is written beside it)")
    parser.add_argument("--params", default=None,
                        help="pyradiomics parameter file, or a shipped one: 'default' (107 features, 2 mm) or "
                             "'totalseg' (TotalSegmentator's shape+firstorder at 3 mm) [config radiomics.params]")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes, one thread each (= Snakemake threads) [config radiomics.workers]")
    parser.add_argument("--structures", nargs="+", default=None, metavar="NAME",
                        help="only these structures (label-table names) [config radiomics.structures; default all]")
    parser.add_argument("--lesions", default=None,
                        help="lesion map from 'ctsam lesions' (LESIONS.nii.gz): one more structure per lesion, "
                             "'lesion_<id>', with its containing structure from LESIONS.json")
    parser.add_argument("--margin-mm", type=float, default=None,
                        help="context kept around each structure's bounding box, mm [config radiomics.margin_mm]")


def run(args) -> int:
    import logging
    from pathlib import Path

    from ctsam.caseid import sanitise_case_id
    from ctsam.config import load_config
    from ctsam.radiomics.extract import extract_case
    from ctsam.radiomics.params import load_params
    from ctsam.radiomics.table import write_case_features

    log = logging.getLogger("ctsam.radiomics")
    cfg = load_config(args.config)["radiomics"]
    case = args.case or sanitise_case_id(_stem(Path(args.ct)))
    params = load_params(args.params if args.params is not None else cfg["params"])
    features = extract_case(
        args.ct,
        args.labels,
        params,
        case=case,
        workers=args.workers if args.workers is not None else cfg["workers"],
        structures=args.structures if args.structures is not None else (cfg["structures"] or None),
        margin_mm=args.margin_mm if args.margin_mm is not None else cfg["margin_mm"],
    )
    if args.lesions:
        features = _with_lesions(features, args, params, case, cfg)
    counts = features.counts()
    n_rows = sum(len(r.features) for r in features.results)
    if n_rows == 0:
        # an empty table is a finding, not a success: the case fails here and is listed in failures.tsv
        from ctsam.errors import InputDataError

        raise InputDataError(
            "radiomics extracted no features for this case",
            case=case,
            expected="at least one structure with features",
            found=(f"{len(features.results)} structures ("
                   + (", ".join(f"{n} {st}" for st, n in sorted(counts.items())) or "the label map is empty")
                   + "), 0 feature rows"),
            fix="check the label map (qc.json flags empty_labelmap) and radiomics.structures",
        )
    write_case_features(args.output, features)
    log.info("%s: %s structures -> %s (read %.1f s, extract %.1f s)", case,
             ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), args.output,
             features.timings_s["read"], features.timings_s["extract"])
    return 0


def _with_lesions(features, args, params, case: str, cfg):
    """``features`` plus one structure per lesion of ``args.lesions`` (every lesion; the --structures
    filter applies to the label map only)."""
    import dataclasses

    from ctsam.lesions.writer import read_lesions_sidecar
    from ctsam.radiomics.extract import extract_case

    lesion_features = extract_case(
        args.ct, args.lesions, params, case=case,
        workers=args.workers if args.workers is not None else cfg["workers"],
        margin_mm=args.margin_mm if args.margin_mm is not None else cfg["margin_mm"],
    )
    sidecar = read_lesions_sidecar(args.lesions) or {"lesions": []}
    by_name = {rec["name"]: rec for rec in sidecar["lesions"]}
    info = {r.name: {"lesion_id": r.label, "containing_structure": by_name.get(r.name, {}).get("containing_structure")}
            for r in lesion_features.results}
    timings = {k: features.timings_s.get(k, 0.0) + lesion_features.timings_s.get(k, 0.0) for k in features.timings_s}
    return dataclasses.replace(features, results=features.results + lesion_features.results, lesions=info,
                               timings_s=timings)


def _stem(path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
