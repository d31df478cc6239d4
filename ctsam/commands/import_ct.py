"""``ctsam import-ct IMAGE -o CT.nii.gz``: take a CT given as an image file (NIfTI/NRRD/MHA) into the pipeline.

The workflow's convert stage for samples whose path is an image instead of a DICOM folder:
the volume is read with its geometry, checked (3-D, numeric, plausible HU range), stored as int16
HU NIfTI, and a JSON sidecar records the source's sha256, dtype and geometry (never its path,
which may carry a patient name).
"""

from __future__ import annotations

import argparse

HELP = (
    "import a CT image file (NIfTI/NRRD/MHA) as int16 HU NIfTI (+ JSON sidecar): the convert stage for non-DICOM inputs"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="CT image in HU (NIfTI, NRRD or MHA)")
    parser.add_argument("-o", "--output", required=True, metavar="CT.nii.gz", help="output NIfTI (int16 HU)")
    parser.add_argument("--sidecar", default=None, metavar="CT.json", help="JSON sidecar (default: beside the output)")


def run(args: argparse.Namespace) -> int:
    from ctsam.api import import_ct

    import_ct(args.image, args.output, sidecar=args.sidecar, case=args.case, config=args.config)
    return 0
