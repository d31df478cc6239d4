"""``ctsam export-seg``: write a label map as DICOM-SEG or RTSTRUCT referencing its source CT series."""

from __future__ import annotations

import argparse

HELP = "export a label map as DICOM-SEG (LABELMAP) or RTSTRUCT referencing the source DICOM CT series"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", metavar="LABELS.nii.gz", help="label map on the grid of the DICOM series")
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of the source CT series")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.dcm", help="DICOM file to write")
    parser.add_argument("--format", choices=("seg", "rtstruct"), default="seg",
                        help="seg: DICOM-SEG (default); rtstruct: RT Structure Set, one ROI per structure")
    parser.add_argument(
        "--transfer-syntax",
        choices=("jpegls", "rle", "explicit"),
        default="jpegls",
        help="DICOM-SEG pixel encoding: JPEG-LS lossless (smallest, default), RLE lossless, or uncompressed",
    )
    parser.add_argument("--identity", choices=("copy", "deidentify"), default=None,
                        help="copy the source's patient/study identity (PACS return) or de-identify (DICOM basic "
                        "confidentiality profile); default: config export.identity (copy)")


def run(args: argparse.Namespace) -> int:
    from ctsam.config import load_config
    from ctsam.io.image import read_labelmap

    export = load_config(args.config).get("export") or {}
    identity = args.identity or export.get("identity", "copy")
    salt = str(export.get("uid_salt", ""))
    labelmap = read_labelmap(args.labels, case=args.case)
    if args.format == "rtstruct":
        from ctsam.export.rtstruct import export_rtstruct

        export_rtstruct(labelmap, args.dicom_dir, args.output, case=args.case, identity=identity, uid_salt=salt)
    else:
        from ctsam.export.dicomseg import export_seg

        export_seg(labelmap, args.dicom_dir, args.output, case=args.case, transfer_syntax=args.transfer_syntax,
                   identity=identity, uid_salt=salt)
    return 0
