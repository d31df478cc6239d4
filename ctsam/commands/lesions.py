"""``ctsam lesions CT --clicks CLICKS.tsv | --seeds SEEDS.nii.gz --checkpoint MODEL -o LESIONS.nii.gz``."""

from __future__ import annotations

HELP = "segment lesions from one click each (3DSAM-adapter models) -> lesion map + per-lesion measures (JSON)"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI/NRRD/MHA, HU)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--clicks", help="CLICKS.tsv: lesion_id, x, y, z (world LPS mm) [, label]; one row per lesion")
    src.add_argument(
        "--seeds",
        help="seed label map on the CT grid: each connected component becomes one click at its most interior voxel",
    )
    src.add_argument(
        "--no-clicks",
        action="store_true",
        help="this case has no lesion clicks: write an empty lesion map and sidecar (workflow use)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="lesion map to write (LESIONS.nii.gz; LESIONS.json and LESIONS.tsv are written beside it)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[LABEL=]MODEL",
        help="lesion model: published 3DSAM-adapter .pth (with --preset), ctsam .safetensors or "
        "builtin:NAME; LABEL=MODEL maps a click label to its own model; repeatable "
        "(default: config lesions.checkpoint / lesions.checkpoints)",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=["kits", "lits", "msd_pancreas", "msd_colon"],
        help="published input convention for a .pth that does not store one [config lesions.preset]",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="label map on the CT grid (e.g. labels.nii.gz): name the structure containing each lesion",
    )
    parser.add_argument("--device", default=None, help="cpu | cuda[:N] | auto [config lesions.device]")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability at or above which a voxel belongs to the lesion [config lesions.threshold]",
    )


def run(args) -> int:
    from ctsam.api import lesions_file

    lesions_file(
        args.ct,
        args.output,
        clicks=args.clicks,
        seeds=args.seeds,
        labels=args.labels,
        checkpoints=args.checkpoint,
        preset=args.preset,
        device=args.device,
        threshold=args.threshold,
        config=args.config,
        case=args.case,
    )
    return 0
