"""QC flags: turn per-structure measurements into named flags with a severity.

Every flag is ``{"flag", "severity", "message", "value", "threshold"}``; thresholds and severities
come from the ``qc`` config section. Severities order as ``info < warning < error``; a case's
severity score is the sum of its flags' weights (:data:`SEVERITY_WEIGHT`).
"""

from __future__ import annotations

import fnmatch
import re

SEVERITY_WEIGHT = {"info": 1, "warning": 3, "error": 10}

_SIDE = re.compile(r"(?:^|_)(left|right)(?:_|$)")
# the faces across the slice axis (axial scans: the scan's superior and inferior ends)
SLICE_AXIS_FACES = ("z_min", "z_max")
# hu_groups keys -> the statistic of qc.json's "hu" they bound
HU_STATISTICS = {"mean_hu": "mean", "p5_hu": "p5", "p50_hu": "p50", "p95_hu": "p95"}


def flag(config: dict, name: str, message: str, value=None, threshold=None) -> dict:
    return {
        "flag": name,
        "severity": config["flag_severity"][name],
        "message": message,
        "value": value,
        "threshold": threshold,
    }


def matches(name: str, patterns: list[str]) -> bool:
    """True when ``name`` equals or glob-matches one of ``patterns``."""
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def side_of(name: str) -> str | None:
    """``left``/``right`` for lateral structure names (``kidney_left``, ``rib_right_3``), else None."""
    m = _SIDE.search(name)
    return m.group(1) if m else None


def partner_of(name: str) -> str | None:
    """The contralateral structure name (``kidney_left`` -> ``kidney_right``)."""
    side = side_of(name)
    if side is None:
        return None
    other = "right" if side == "left" else "left"
    return _SIDE.sub(lambda m: m.group(0).replace(side, other), name, count=1)


def hu_group(name: str, groups: list[dict]) -> dict | None:
    for g in groups:
        if matches(name, g["structures"]):
            return g
    return None


def nsd_tolerance_for(name: str, config: dict) -> float:
    for pattern, tol in config["nsd_tolerance_mm_by_structure"].items():
        if name == pattern or fnmatch.fnmatchcase(name, pattern):
            return float(tol)
    return float(config["nsd_tolerance_mm"])


def laterality_flags(records: list[dict], config: dict) -> None:
    """Add ``laterality`` flags in place, using centroids in LPS world mm (+x = patient left).

    Two checks per lateral structure with a centroid:

    * pair: ``x(left) > x(right)`` for a left/right pair that are both present;
    * midline: a left structure lies at ``x >= midline - tolerance``, a right one at
      ``x <= midline + tolerance``, where midline = voxel-weighted mean x of the configured
      midline structures present (skipped when none is present).
    The result is also recorded under ``record["laterality"]``.
    """
    tol = float(config["laterality_tolerance_mm"])
    by_name = {r["name"]: r for r in records if r.get("centroid_lps_mm") is not None}
    mids = [r for r in by_name.values() if matches(r["name"], config["midline_structures"])]
    midline = None
    if mids:
        w = sum(r["voxels"] for r in mids)
        midline = sum(r["centroid_lps_mm"][0] * r["voxels"] for r in mids) / w
    for r in by_name.values():
        side = side_of(r["name"])
        if side is None:
            continue
        x = r["centroid_lps_mm"][0]
        sign = 1.0 if side == "left" else -1.0
        info: dict = {"side": side, "centroid_x_lps_mm": x, "midline_x_lps_mm": midline, "ok": True}
        problems = []
        partner = by_name.get(partner_of(r["name"]) or "")
        if partner is not None:
            px = partner["centroid_lps_mm"][0]
            info["partner"] = partner["name"]
            info["partner_centroid_x_lps_mm"] = px
            if sign * (x - px) <= 0:
                problems.append(
                    f"{r['name']} centroid (x={x:.1f} mm) is not to the patient's {side} of "
                    f"{partner['name']} (x={px:.1f} mm)"
                )
        if midline is not None:
            offset = sign * (x - midline)
            info["offset_from_midline_mm"] = offset
            if offset < -tol:
                problems.append(
                    f"{r['name']} centroid lies {-offset:.1f} mm on the wrong side of the midline (tolerance {tol} mm)"
                )
        if problems:
            info["ok"] = False
            r["flags"].append(flag(config, "laterality", "; ".join(problems), value=x, threshold=midline))
        r["laterality"] = info


def missing_partner_records(records: list[dict], config: dict, index_of: dict[str, int]) -> list[dict]:
    """Records (with a ``missing`` flag) for paired structures absent while their partner is present.

    Applies to ``qc.paired_structures`` (kidneys, lungs, femurs ...: organs a patient rarely lacks
    on one side only, so one side absent is a segmentation that missed it, or an anatomy to note);
    the present side must hold at least ``qc.missing_partner_min_ml``, so a partner barely inside the
    field of view does not count. Ribs are not paired here: segmenters often miss one at the scan ends.
    """
    present = {r["name"]: r for r in records if r.get("voxels")}
    known = {r["name"] for r in records}
    out = []
    for name, r in sorted(present.items()):
        partner = partner_of(name)
        if (
            partner is None
            or partner in known
            or not matches(name, config["paired_structures"])
            or r["volume_ml"] < config["missing_partner_min_ml"]
        ):
            continue
        missing = flag(
            config,
            "missing",
            f"absent, while {name} holds {r['volume_ml']:.1f} ml",
            0.0,
            config["missing_partner_min_ml"],
        )
        rec: dict = {"name": partner, "index": index_of.get(partner), "voxels": 0, "volume_ml": 0.0, "flags": [missing]}
        known.add(partner)
        out.append(rec)
    return out


def structure_flags(r: dict, config: dict) -> None:
    """Add the single-structure flags to ``r["flags"]`` in place."""
    ag = r.get("agreement")
    if ag is not None:
        if ag["status"] == "final_empty":
            r["flags"].append(flag(config, "lost", "structure is in the coarse map but empty in the final map"))
        # Dice of a thin structure (esophagus, a 4-voxel tube) drops below min_dice with a one-voxel shift
        # of its boundary; flag it only when the boundaries also disagree (NSD below min_nsd)
        nsd = ag.get("nsd")
        if (
            ag["dice"] is not None
            and ag["status"] == "ok"
            and ag["dice"] < config["min_dice"]
            and (nsd is None or nsd < config["min_nsd"])
        ):
            nsd_text = f", NSD {nsd:.3f} < {config['min_nsd']}" if nsd is not None else ""
            r["flags"].append(
                flag(
                    config,
                    "low_dice",
                    f"coarse-vs-final Dice {ag['dice']:.3f} < {config['min_dice']}{nsd_text}",
                    ag["dice"],
                    config["min_dice"],
                )
            )
        if ag["hd95_mm"] is not None and ag["hd95_mm"] > config["max_hd95_mm"]:
            r["flags"].append(
                flag(
                    config,
                    "high_hd95",
                    f"coarse-vs-final HD95 {ag['hd95_mm']:.1f} mm > {config['max_hd95_mm']} mm",
                    ag["hd95_mm"],
                    config["max_hd95_mm"],
                )
            )
        lo, hi = config["volume_ratio_bounds"]
        if ag["voxels_reference"] and ag["voxels_final"]:
            ratio = ag["voxels_final"] / ag["voxels_reference"]
            if not lo <= ratio <= hi:
                r["flags"].append(
                    flag(
                        config,
                        "volume_change",
                        f"final/coarse volume ratio {ratio:.2f} outside [{lo}, {hi}]",
                        ratio,
                        [lo, hi],
                    )
                )
    frac = r.get("largest_component_fraction")
    stray_ml = (1.0 - frac) * float(r.get("volume_ml") or 0.0) if frac is not None else 0.0
    if (
        frac is not None
        and frac < config["min_largest_component_fraction"]
        and stray_ml >= config["fragment_min_ml"]
        and not matches(r["name"], config["multi_component_structures"])
    ):
        r["flags"].append(
            flag(
                config,
                "fragmented",
                f"{r['components']} components; the largest holds {frac:.1%} of the voxels ({stray_ml:.1f} ml elsewhere)",
                frac,
                config["min_largest_component_fraction"],
            )
        )
    border = r.get("border_voxels") or {}
    through = matches(r["name"], config["through_structures"])
    touching = {
        f: n
        for f, n in border.items()
        if n >= config["truncation_min_voxels"] and not (through and f in SLICE_AXIS_FACES)
    }
    if touching:
        faces = ", ".join(f"{f} ({n} voxels)" for f, n in sorted(touching.items()))
        r["flags"].append(
            flag(
                config,
                "truncated",
                f"touches the image border: {faces}",
                sum(touching.values()),
                config["truncation_min_voxels"],
            )
        )
    hu = r.get("hu") or {}
    group = hu_group(r["name"], config["hu_groups"])
    if group is not None and hu.get("mean") is not None:
        r["hu_group"] = group["name"]
        for key, stat in HU_STATISTICS.items():
            if key not in group or hu.get(stat) is None:
                continue
            lo, hi = group[key]
            if not lo <= hu[stat] <= hi:
                r["flags"].append(
                    flag(
                        config,
                        "hu_implausible",
                        f"{stat} {hu[stat]:.0f} HU outside [{lo}, {hi}] for group {group['name']}",
                        hu[stat],
                        [lo, hi],
                    )
                )
                break
    conf = r.get("confidence")
    if conf:
        mp = conf.get("mean_probability")
        if mp is not None and mp < config["min_mean_probability"]:
            r["flags"].append(
                flag(
                    config,
                    "low_confidence",
                    f"mean refined probability {mp:.2f} < {config['min_mean_probability']}",
                    mp,
                    config["min_mean_probability"],
                )
            )
        q = conf.get("quality")
        if q is not None and q < config["min_quality"]:
            r["flags"].append(
                flag(
                    config,
                    "low_quality",
                    f"quality-head score {q:.2f} < {config['min_quality']}",
                    q,
                    config["min_quality"],
                )
            )


def severity_score(flags: list[dict]) -> int:
    return sum(SEVERITY_WEIGHT[f["severity"]] for f in flags)


def worst_severity(flags: list[dict]) -> str | None:
    if not flags:
        return None
    return max((f["severity"] for f in flags), key=lambda s: SEVERITY_WEIGHT[s])
