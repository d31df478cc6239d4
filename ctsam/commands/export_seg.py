"""``ctsam export-seg``: write a label map as DICOM-SEG referencing its source CT series."""

from __future__ import annotations

import argparse

HELP = "export a label map as DICOM-SEG (LABELMAP) referencing the source DICOM CT series"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", metavar="LABELS.nii.gz", help="label map on the grid of the DICOM series")
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of the source CT series")
    parser.add_argument("-o", "--output", required=True, metavar="seg.dcm", help="DICOM-SEG file to write")
    parser.add_argument(
        "--transfer-syntax",
        choices=("jpegls", "rle", "explicit"),
        default="jpegls",
        help="pixel encoding: JPEG-LS lossless (smallest, default), RLE lossless, or uncompressed",
    )


def run(args: argparse.Namespace) -> int:
    from ctsam.export.dicomseg import export_seg
    from ctsam.io.image import read_labelmap

    labelmap = read_labelmap(args.labels, case=args.case)
    export_seg(labelmap, args.dicom_dir, args.output, case=args.case, transfer_syntax=args.transfer_syntax)
    return 0
