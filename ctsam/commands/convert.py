"""``ctsam convert``: DICOM study folder -> int16 HU NIfTI + JSON sidecar."""

from __future__ import annotations

import argparse

HELP = "convert the CT series of a DICOM study folder into a validated HU NIfTI (+ JSON sidecar)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", metavar="STUDY_DIR", help="folder searched recursively for DICOM files")
    parser.add_argument("-o", "--output", required=True, metavar="CT.nii.gz", help="output NIfTI (int16 HU)")
    parser.add_argument(
        "--sidecar",
        metavar="CT.json",
        default=None,
        help="JSON sidecar with acquisition facts and the series choice (default: beside the output, .json)",
    )
    parser.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="convert this series (SeriesInstanceUID, or the auto-... key of a series without one)",
    )
    parser.add_argument(
        "--study-uid",
        default=None,
        metavar="UID",
        help="when the folder holds several studies (StudyInstanceUID), convert this one (default: refuse)",
    )
    parser.add_argument(
        "--uneven-spacing",
        choices=("error", "resample"),
        default=None,
        help="uneven slice spacing: refuse (error) or resample linearly in z onto equal spacing "
        "(default: config convert.uneven_spacing)",
    )
    parser.add_argument(
        "--tilt",
        choices=("error", "resample"),
        default=None,
        help="gantry-tilted series: refuse (error) or resample onto an orthogonal grid (default: config convert.tilt)",
    )


def run(args: argparse.Namespace) -> int:
    from ctsam.api import convert_study

    convert_study(
        args.study_dir,
        args.output,
        sidecar=args.sidecar,
        config=args.config,
        series_uid=args.series_uid,
        tilt=args.tilt,
        study_uid=args.study_uid,
        uneven_spacing=args.uneven_spacing,
        case=args.case,
    )
    return 0
