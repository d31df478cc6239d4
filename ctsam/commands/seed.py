"""``ctsam seed CT COARSE -o PROMPTS.json``: automatic click prompts from a coarse label map."""

from __future__ import annotations

HELP = "make click prompts (world mm) for every structure of a coarse label map"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI), used to check that the label map is on its grid")
    parser.add_argument("coarse", help="coarse label map (NIfTI with label table, e.g. TotalSegmentator --ml)")
    parser.add_argument("-o", "--output", required=True, help="prompts JSON to write")


def run(args) -> int:
    import logging
    import time

    from ctsam.config import load_config
    from ctsam.io.image import read_geometry, read_labelmap
    from ctsam.seed.prompts import write_prompts
    from ctsam.seed.seeding import SeedSettings, seed_case
    from ctsam.volume import check_same_space

    log = logging.getLogger("ctsam.seed")
    config = load_config(args.config)
    settings = SeedSettings.from_config(config)
    t0 = time.perf_counter()
    ct_geometry = read_geometry(args.ct, case=args.case)
    labelmap = read_labelmap(args.coarse, case=args.case)
    check_same_space(ct_geometry, labelmap.geometry, name_a="CT", name_b="coarse label map", case=args.case)
    prompts = seed_case(labelmap, settings)
    write_prompts(args.output, prompts)
    log.info("%d structures -> %d prompt sets (%d clicks), %d skipped, in %.1f s -> %s",
             len(prompts.structures), len(prompts.prompt_sets), sum(len(p.clicks) for p in prompts.prompt_sets),
             len(prompts.skipped), time.perf_counter() - t0, args.output)
    return 0
