"""``ctsam weights list|fetch|check``: every model a run needs (docs/weights.md); the CI fixture."""

from __future__ import annotations

import argparse
import sys

HELP = (
    "model weights: 'list' (source, licence, size, sha256, cache), 'fetch' (on a login node), "
    "'check' (offline: every file a run needs); 'fixture' writes a tiny random-weight TotalSegmentator model"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="every model a run may need: source, licence, size, sha256, cache status")
    lst.add_argument("--json", action="store_true", help="print as JSON")
    fetch = sub.add_parser("fetch", help="download models into the cache (needs internet: run on a login node)")
    fetch.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="registry names (ctsam weights list), 'totalseg' (the models of the configured mode)",
    )
    fetch.add_argument(
        "--from",
        dest="source",
        default=None,
        help="URL or file:///path to take the file from instead of the registry's source (one NAME)",
    )
    fetch.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    for action_parser in (lst, fetch):
        action_parser.add_argument(
            "--cache-dir",
            default=None,
            help="cache folder (default: weights.cache_dir, $CTSAM_WEIGHTS, ~/.cache/ctsam/weights)",
        )
        action_parser.add_argument("--config", default=argparse.SUPPRESS, help="YAML config")
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
    if args.weights_action == "list":
        return _list(args)
    if args.weights_action == "fetch":
        return _fetch(args)
    return _check(args)


def _cache(args: argparse.Namespace, config: dict):
    from ctsam.weights import cache_dir

    return cache_dir(getattr(args, "cache_dir", None) or config["weights"]["cache_dir"])


def _list(args: argparse.Namespace) -> int:
    import json

    from ctsam.config import load_config
    from ctsam.weights import REGISTRY, UNKNOWN, read_record

    config = load_config(getattr(args, "config", None))
    cache = _cache(args, config)
    rows = []
    for e in REGISTRY.values():
        record = read_record(cache, e.name)
        rows.append(
            {
                "name": e.name,
                "model": e.model,
                "used_by": e.used_by,
                "source": e.source,
                "licence": e.licence,
                "size": e.size if not record else f"{record['size_bytes']} bytes (fetched)",
                "sha256": e.sha256 or (record or {}).get("sha256") or UNKNOWN,
                "fetched": bool(record),
            }
        )
    if args.json:
        sys.stdout.write(json.dumps({"cache_dir": str(cache), "models": rows}, indent=2) + "\n")
        return 0
    lines = [f"cache folder: {cache} (weights.cache_dir, $CTSAM_WEIGHTS)", ""]
    for r in rows:
        lines += [
            f"{r['name']}{'  [fetched]' if r['fetched'] else ''}",
            f"  model:   {r['model']}",
            f"  used by: {r['used_by']}",
            f"  source:  {r['source']}",
            f"  licence: {r['licence']}",
            f"  size:    {r['size']}",
            f"  sha256:  {r['sha256']}",
            "",
        ]
    sys.stdout.write("\n".join(lines))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ctsam.coarse.weights import default_weights_root, required_task_ids
    from ctsam.config import load_config
    from ctsam.errors import ConfigError
    from ctsam.weights import entry, fetch

    config = load_config(getattr(args, "config", None))
    cache = _cache(args, config)
    ts = config["coarse"]["totalsegmentator"]
    names: list[str] = []
    for name in args.names:
        if name == "totalseg":
            ids = required_task_ids(ts["mode"], roi_subset=bool(ts["roi_subset"]), robust_crop=ts["robust_crop"])
            names += [f"totalseg_{i}" for i in ids]
        else:
            names.append(entry(name).name)
    if args.source and len(names) != 1:
        raise ConfigError("--from takes one NAME", found=", ".join(names), fix="fetch one model per --from")
    root = ts["weights_path"] or default_weights_root()
    for name in names:
        fetch(name, cache, source=args.source, totalseg_root=root, timeout_s=args.timeout)
    return 0


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
    from ctsam.preflight import checkpoint_problem
    from ctsam.weights import REGISTRY, cache_dir, check_cache, read_record

    config = load_config(args.config)
    cache = cache_dir(config["weights"]["cache_dir"])
    fetched = [n for n in REGISTRY if read_record(cache, n) is not None]
    cache_rows = check_cache(cache, fetched)
    ckpt = config["refine"]["checkpoint"]
    ckpt_problem = checkpoint_problem(ckpt)
    if args.json:
        out = report.to_dict()
        out["refine_checkpoint"] = {"checkpoint": ckpt, "ok": ckpt_problem is None, "problem": ckpt_problem}
        out["cache"] = {"dir": str(cache), "fetched": [r.to_dict() for r in cache_rows]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        bad = {p.relpath: p.problem for p in report.problems}
        lines = [f"weights root: {report.root}", f"mode: {mode}; models: {', '.join(map(str, report.task_ids))}"]
        for rel in report.required:
            status = "MISSING" if rel in bad else "ok"
            detail = f"  ({bad[rel]})" if bad.get(rel, "missing") != "missing" else ""
            lines.append(f"  {status:7s} {rel}{detail}")
        lines.append(f"refine checkpoint: {ckpt}: {'ok' if ckpt_problem is None else 'PROBLEM ' + ckpt_problem}")
        lines.append(f"cache {cache}: " + (", ".join(f"{r.name} {r.status}" for r in cache_rows) or "nothing fetched"))
        sys.stdout.write("\n".join(lines) + "\n")
    if not report.ok:
        raise report.error(case=args.case)
    bad = [r for r in cache_rows if r.status != "ok"]
    if ckpt_problem or bad:
        from ctsam.errors import CheckpointError

        raise CheckpointError(
            "weights check failed",
            expected="a loadable refine.checkpoint and intact fetched files",
            found="; ".join(
                ([f"refine.checkpoint: {ckpt_problem}"] if ckpt_problem else [])
                + [f"{r.name}: {r.status} ({r.detail})" for r in bad]
            ),
            fix="fix refine.checkpoint, or fetch the damaged files again (ctsam weights fetch NAME)",
        )
    return 0
