"""``ctsam refine CT PROMPTS -o REFINED.npz --checkpoint MODEL``: promptable refinement of every structure."""

from __future__ import annotations

HELP = "refine every prompted structure with the promptable 3D network (per-structure probabilities)"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI)")
    parser.add_argument("prompts", help="prompts JSON from 'ctsam seed'")
    parser.add_argument("-o", "--output", required=True, help="refined result to write (refined.npz)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="model: published params.pth, ctsam .safetensors or builtin:NAME (default: config refine.checkpoint)",
    )
    parser.add_argument(
        "--coarse",
        default=None,
        help="the coarse label map the prompts were seeded from: the first round's mask prompt "
        "(config refine.coarse_mask_prompt: auto uses it when the checkpoint was trained for it)",
    )
    parser.add_argument("--device", default=None, help="cpu | cuda[:N] | auto (default: config refine.device)")
    parser.add_argument(
        "--extra-clicks",
        default=None,
        help="reviewer corrections JSON (see docs/refine.md); a missing file is an error",
    )
    parser.add_argument("--timings", default=None, help="write timing figures (JSON) here (not deterministic)")


def run(args) -> int:
    from ctsam.api import refine_file

    refine_file(
        args.ct,
        args.prompts,
        args.output,
        coarse_labels=args.coarse,
        checkpoint=args.checkpoint,
        device=args.device,
        extra_clicks=args.extra_clicks,
        timings=args.timings,
        config=args.config,
        case=args.case,
    )
    return 0
