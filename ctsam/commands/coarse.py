"""``ctsam coarse``: first masks for one CT, from TotalSegmentator or from user-supplied labels."""

from __future__ import annotations

import argparse

HELP = (
    "coarse label map for one CT: TotalSegmentator (subprocess) or user labels, "
    "in the TotalSegmentator 'total' id space"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ct", help="CT image (NIfTI; NRRD/MHA are converted for TotalSegmentator)")
    p.add_argument(
        "-o", "--output", required=True, help="coarse label map to write (.nii.gz); sidecars .tsv and .json beside it"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "totalsegmentator", "labels"],
        default=None,
        help="default: coarse.backend (auto: labels when --labels is given, else TotalSegmentator)",
    )
    p.add_argument("--sidecar", default=None, help="JSON sidecar path (default: <output stem>.json)")
    ts = p.add_argument_group("totalsegmentator backend (defaults: coarse.totalsegmentator.*)")
    mode = ts.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast", help="3 mm model (297)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="1.5 mm part models (291-295)")
    mode.add_argument("--fastest", dest="mode", action="store_const", const="fastest", help="6 mm model (298)")
    ts.add_argument("--device", default=None, help="gpu | gpu:N | cpu | mps")
    ts.add_argument("--roi-subset", nargs="+", default=None, metavar="CLASS", help="predict only these 'total' classes")
    ts.add_argument("--robust-crop", action="store_true", default=None, help="3 mm locator for --roi-subset")
    ts.add_argument("--threads", type=int, default=None, help="TotalSegmentator -nr and -ns (resampling/saving)")
    ts.add_argument("--weights", default=None, help="weights root (default: $TOTALSEG_WEIGHTS_PATH)")
    ts.add_argument("--timeout", type=float, default=None, help="stop TotalSegmentator after this many seconds")
    ts.add_argument("--workdir", default=None, help="job folder (default: .<output stem>.totalseg_job beside it)")
    ts.add_argument("--keep-workdir", action="store_true", default=None, help="keep the job folder after success")
    lab = p.add_argument_group("labels backend (defaults: coarse.labels.*)")
    lab.add_argument("--labels", default=None, help="label map (NIfTI/NRRD) or folder of <name>.nii.gz masks")
    lab.add_argument("--label-table", default=None, help="TSV 'index<TAB>name' naming the label values")
    lab.add_argument(
        "--resample",
        action="store_true",
        default=None,
        help="nearest-neighbour resample labels when only the grid differs",
    )
    lab.add_argument("--unknown", choices=["drop", "keep"], default=None, help="label names not in the catalogue")


def run(args: argparse.Namespace) -> int:
    from ctsam.api import coarse_file

    ts = {
        "mode": args.mode,
        "device": args.device,
        "roi_subset": args.roi_subset,
        "robust_crop": args.robust_crop,
        "weights_path": args.weights,
        "timeout_s": args.timeout,
        "threads_resampling": args.threads,
        "threads_saving": args.threads,
    }
    coarse_file(
        args.ct,
        args.output,
        labels=args.labels,
        backend=args.backend,
        sidecar=args.sidecar,
        config=args.config,
        case=args.case,
        label_table=args.label_table,
        resample=args.resample,
        unknown=args.unknown,
        totalsegmentator=ts,
        workdir=args.workdir,
        keep_workdir=args.keep_workdir,
    )
    return 0
