"""``ctsam convert``: DICOM study folder -> int16 HU NIfTI + JSON sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ctsam.volume import Geometry

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


def default_sidecar(output: str) -> Path:
    """CT.nii.gz -> CT.json beside it."""
    out = Path(output)
    name = out.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".json")


def run(args: argparse.Namespace) -> int:
    from ctsam.config import load_config
    from ctsam.convert import ConvertOptions, convert_study
    from ctsam.guards import GuardSettings, check_ct
    from ctsam.io.atomic import atomic_write_json
    from ctsam.privacy import PrivacySettings, scrub

    config = load_config(args.config)
    options = ConvertOptions.from_config(
        config.get("convert", {}),
        tilt=args.tilt,
        series_uid=args.series_uid,
        study_uid=args.study_uid,
        uneven_spacing=args.uneven_spacing,
    )
    sidecar = Path(args.sidecar) if args.sidecar else default_sidecar(args.output)
    guards = GuardSettings.from_config(config)

    def guard(hu_range: np.ndarray, geometry: Geometry) -> None:
        check_ct(hu_range, geometry, guards, case=args.case)

    # the input guards run on the converted volume before the NIfTI is committed (a refused CT leaves
    # no output behind); a plain stack streams from the decoder into the file, never held in memory
    result = convert_study(
        args.study_dir, args.output, sidecar_path=None, options=options, keep_volume=False, guard=guard
    )
    atomic_write_json(sidecar, scrub(result.sidecar, PrivacySettings.from_config(config)))
    return 0
