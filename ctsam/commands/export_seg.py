"""``ctsam export-seg``: write a label map as DICOM-SEG or RTSTRUCT referencing its source CT series."""

from __future__ import annotations

import argparse

HELP = "export a label map as DICOM-SEG (LABELMAP) or RTSTRUCT referencing the source DICOM CT series"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", metavar="LABELS.nii.gz", help="label map on the grid of the DICOM series")
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of the source CT series")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.dcm", help="DICOM file to write")
    parser.add_argument(
        "--format",
        choices=("seg", "rtstruct"),
        default="seg",
        help="seg: DICOM-SEG (default); rtstruct: RT Structure Set, one ROI per structure",
    )
    parser.add_argument(
        "--transfer-syntax",
        choices=("jpegls", "rle", "explicit"),
        default="jpegls",
        help="DICOM-SEG pixel encoding: JPEG-LS lossless (smallest, default), RLE lossless, or uncompressed",
    )
    parser.add_argument(
        "--identity",
        choices=("copy", "deidentify"),
        default=None,
        help="copy the source's patient/study identity (PACS return) or de-identify (DICOM basic "
        "confidentiality profile); default: config export.identity (copy)",
    )


def run(args: argparse.Namespace) -> int:
    from ctsam.api import export_dicom

    export_dicom(
        args.labels,
        args.dicom_dir,
        args.output,
        fmt=args.format,
        config=args.config,
        case=args.case,
        identity=args.identity,
        transfer_syntax=args.transfer_syntax,
    )
    return 0
