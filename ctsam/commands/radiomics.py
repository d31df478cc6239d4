"""``ctsam radiomics``: pyradiomics features of every structure of one case -> long parquet table."""

from __future__ import annotations

HELP = "extract pyradiomics features per structure (crops, parallel workers) into a long parquet table"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI/NRRD/MHA, HU)")
    parser.add_argument("labels", help="label map on the CT grid (label table from .tsv sidecar or NIfTI header)")
    parser.add_argument(
        "-o", "--output", required=True, help="output FEATURES.parquet (a FEATURES.json sidecar is written beside it)"
    )
    parser.add_argument(
        "--params",
        default=None,
        help="pyradiomics parameter file, or a shipped one: 'default' (107 features, 2 mm) or "
        "'totalseg' (TotalSegmentator's shape+firstorder at 3 mm) [config radiomics.params]",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, one thread each (= Snakemake threads) [config radiomics.workers]",
    )
    parser.add_argument(
        "--structures",
        nargs="+",
        default=None,
        metavar="NAME",
        help="only these structures (label-table names) [config radiomics.structures; default all]",
    )
    parser.add_argument(
        "--lesions",
        default=None,
        help="lesion map from 'ctsam lesions' (LESIONS.nii.gz): one more structure per lesion, "
        "'lesion_<id>', with its containing structure from LESIONS.json",
    )
    parser.add_argument(
        "--margin-mm",
        type=float,
        default=None,
        help="context kept around each structure's bounding box, mm [config radiomics.margin_mm]",
    )


def run(args) -> int:
    from ctsam.api import extract_radiomics

    extract_radiomics(
        args.ct,
        args.labels,
        args.output,
        config=args.config,
        case=args.case,
        params=args.params,
        workers=args.workers,
        structures=args.structures,
        margin_mm=args.margin_mm,
        lesions=args.lesions,
    )
    return 0
