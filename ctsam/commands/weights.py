"""``ctsam weights``: check TotalSegmentator weights before a cohort runs; build the CI fixture."""

from __future__ import annotations

import argparse
import sys

HELP = (
    "TotalSegmentator weights: 'check' lists every file a mode needs; "
    "'fixture' writes a tiny random-weight model for tests"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="list the weight files a run needs and what is missing (exit 2 if any)")
    mode = check.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast", help="3 mm model (297)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="1.5 mm part models (291-295)")
    mode.add_argument("--fastest", dest="mode", action="store_const", const="fastest", help="6 mm model (298)")
    check.add_argument(
        "--roi-subset", nargs="*", default=None, metavar="CLASS", help="also needs the crop locator (298)"
    )
    check.add_argument("--robust-crop", action="store_true", default=None, help="locator 297 instead of 298")
    check.add_argument(
        "--weights", default=None, help="weights root (default: config, $TOTALSEG_WEIGHTS_PATH, ~/.totalsegmentator)"
    )
    check.add_argument("--json", action="store_true", help="print the check as JSON")
    for action_parser in (check,):
        # also accept the common options after the action; SUPPRESS keeps values given earlier
        action_parser.add_argument("--config", default=argparse.SUPPRESS, help="YAML config (coarse.totalsegmentator)")
        action_parser.add_argument("--case", default=argparse.SUPPRESS, help="case id for messages")
    fix = sub.add_parser(
        "fixture", help="write RANDOM-weight models in TotalSegmentator's layout (tests/demos only; masks are noise)"
    )
    fix.add_argument("weights_dir", help="weights root to write (use it as TOTALSEG_WEIGHTS_PATH)")
    fix.add_argument("--task-ids", type=int, nargs="+", default=[297], help="models to write (291-295, 297, 298)")
    fix.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.weights_action == "fixture":
        from ctsam.coarse.fixture_model import build_fixture_weights
        from ctsam.coarse.weights import TS_MODELS
        from ctsam.errors import ConfigError

        bad = [t for t in args.task_ids if t not in TS_MODELS]
        if bad:
            raise ConfigError("unknown task id(s) for the fixture", expected=str(sorted(TS_MODELS)), found=str(bad))
        build_fixture_weights(args.weights_dir, tuple(args.task_ids), seed=args.seed)
        return 0
    return _check(args)


def _check(args: argparse.Namespace) -> int:
    import json

    from ctsam.coarse.weights import check_weights, default_weights_root
    from ctsam.config import load_config

    ts = load_config(args.config)["coarse"]["totalsegmentator"]
    mode = args.mode or ts["mode"]
    roi = bool(ts["roi_subset"]) if args.roi_subset is None else True  # '--roi-subset' alone also counts
    robust = ts["robust_crop"] if args.robust_crop is None else True
    root = args.weights or ts["weights_path"] or default_weights_root()
    report = check_weights(mode, roi_subset=roi, robust_crop=robust, root=root)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        bad = {p.relpath: p.problem for p in report.problems}
        lines = [f"weights root: {report.root}", f"mode: {mode}; models: {', '.join(map(str, report.task_ids))}"]
        for rel in report.required:
            status = "MISSING" if rel in bad else "ok"
            detail = f"  ({bad[rel]})" if bad.get(rel, "missing") != "missing" else ""
            lines.append(f"  {status:7s} {rel}{detail}")
        sys.stdout.write("\n".join(lines) + "\n")
    if not report.ok:
        raise report.error(case=args.case)
    return 0
