"""``ctsam qc``: per-structure QC metrics and flags of a fused label map."""

from __future__ import annotations

import argparse

HELP = "per-structure QC of a label map: volumes, components, coarse-vs-final agreement, HU, laterality, flags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", metavar="CT.nii.gz", help="the CT (HU)")
    parser.add_argument("labels", metavar="LABELS.nii.gz", help="the fused label map")
    parser.add_argument("--coarse", default=None, metavar="COARSE.nii.gz", help="coarse label map (reference for Dice/HD95/NSD)")
    parser.add_argument("--refined", default=None, metavar="REFINED.npz", help="refined probabilities (model confidence)")
    parser.add_argument("--fuse-sidecar", default=None, metavar="FUSE.json", help="fusion sidecar (records each structure's source)")
    parser.add_argument("--lesions", default=None, metavar="LESIONS.nii.gz",
                        help="lesion map from 'ctsam lesions' (its LESIONS.json beside it): one QC row per lesion")
    parser.add_argument("-o", "--output", required=True, metavar="QC.json", help="QC document (JSON)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.qc.case import compute_case_qc
    from ctsam.qc.naming import final_name_map
    from ctsam.refine.refined_file import load_refined

    full = load_config(args.config)
    config = full["qc"]
    final = read_labelmap(args.labels, case=args.case)
    coarse = read_labelmap(args.coarse, case=args.case) if args.coarse else None
    refined = load_refined(args.refined, case=args.case) if args.refined else None
    ct = read_ct(args.ct, case=args.case)
    sources = None
    if args.fuse_sidecar:
        from ctsam.errors import InputDataError

        try:
            doc = json.loads(Path(args.fuse_sidecar).read_text(encoding="utf-8"))
            sources = {s["name"]: {"source": s["source"], "reason": s["reason"]} for s in doc["structures"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputDataError(
                "fusion sidecar is unreadable",
                case=args.case,
                path=args.fuse_sidecar,
                expected="the JSON written by 'ctsam fuse --sidecar'",
                found=f"{type(err).__name__}: {err}",
                fix="re-run 'ctsam fuse' for this case or drop --fuse-sidecar",
            ) from err
    name_map = final_name_map(final.labels, keep_unmapped=bool(full["fuse"]["keep_unmapped_coarse"]))
    doc = compute_case_qc(ct, final, coarse, config, refined=refined, name_map=name_map, fusion_sources=sources, case=args.case)
    if args.lesions:
        from ctsam.lesions.writer import read_lesions_sidecar
        from ctsam.qc.lesions import lesion_qc
        from ctsam.volume import check_same_space

        lesion_map = read_labelmap(args.lesions, case=args.case)
        check_same_space(ct.geometry, lesion_map.geometry, name_a="CT", name_b="lesion map", case=args.case)
        lq = lesion_qc(ct, lesion_map, final, read_lesions_sidecar(args.lesions), config)
        doc["lesions"] = lq["lesions"]
        doc["lesion_summary"] = lq["summary"]
    doc["inputs"] = {
        "ct": Path(args.ct).name,
        "labels": Path(args.labels).name,
        "coarse": Path(args.coarse).name if args.coarse else None,
        "refined": Path(args.refined).name if args.refined else None,
        **({"lesions": Path(args.lesions).name} if args.lesions else {}),
    }
    atomic_write_json(args.output, doc)
    return 0
