"""``ctsam seed CT COARSE -o PROMPTS.json``: automatic click prompts from a coarse label map."""

from __future__ import annotations

HELP = "make click prompts (world mm) for every structure of a coarse label map"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI), used to check that the label map is on its grid")
    parser.add_argument("coarse", help="coarse label map (NIfTI with label table, e.g. TotalSegmentator --ml)")
    parser.add_argument("-o", "--output", required=True, help="prompts JSON to write")


def run(args) -> int:
    from ctsam.api import seed_file

    seed_file(args.ct, args.coarse, args.output, config=args.config, case=args.case)
    return 0
