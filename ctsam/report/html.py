"""The self-contained HTML cohort report (inline CSS, PNGs as base64; opens offline)."""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from dataclasses import dataclass, field

from ctsam import __version__

_CSS = """
:root { --fg:#1d2430; --muted:#5b6676; --line:#dde2ea; --bg:#f6f8fb; --err:#c0392b; --warn:#d68910; --info:#2e86c1; --ok:#1e8449; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       margin: 0; background: var(--bg); }
header { background: #1d2430; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c8d0dc; font-size: 13px; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; position: sticky; top: 0; z-index: 2; }
nav a { margin-right: 18px; color: var(--fg); text-decoration: none; font-weight: 500; }
nav a:hover { text-decoration: underline; }
main { padding: 20px 32px 60px; max-width: 1500px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin-bottom: 20px; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; background: var(--bg); }
.card .v { font-size: 24px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
table.compact { width: auto; min-width: 40%; }
table.flags td:first-child { width: 34%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; position: sticky; top: 38px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
.b-error { background: var(--err); } .b-warning { background: var(--warn); } .b-info { background: var(--info); }
.b-ok { background: var(--ok); }
.muted { color: var(--muted); }
.case { border-top: 1px solid var(--line); padding-top: 10px; margin-top: 14px; }
.case:first-of-type { border-top: 0; margin-top: 0; }
img.snap { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: #000; }
code { background: var(--bg); padding: 0 4px; border-radius: 3px; font-size: 12px; }
.small { font-size: 12px; }
details summary { cursor: pointer; color: var(--muted); margin: 6px 0; }
"""


@dataclass
class CaseView:
    """What the report shows for one case."""

    case: str
    severity: str | None
    severity_score: int
    n_structures: int
    flags: list[dict]
    sources: dict[str, int]
    snapshot_png: bytes | None = None
    snapshot_note: str | None = None
    focus: str | None = None
    lesions: list[dict] = field(default_factory=list)  # QC lesion rows (ctsam qc --lesions)
    lesion_snapshot_png: bytes | None = None


@dataclass
class ReportData:
    title: str
    results_name: str
    cases: list[CaseView]
    structure_summary: list[dict]
    provenance: dict
    failures: list[dict]
    unreadable: list[dict]
    table_files: dict[str, str] = field(default_factory=dict)
    n_snapshots_omitted: int = 0


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _num(x, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return '<span class="muted">–</span>'
    return fmt.format(x)


def _badge(sev: str | None) -> str:
    if sev is None:
        return '<span class="badge b-ok">ok</span>'
    return f'<span class="badge b-{_e(sev)}">{_e(sev)}</span>'


def _flag_summary(flags: list[dict], limit: int = 6) -> str:
    by_flag: dict[str, list[str]] = {}
    for f in flags:
        by_flag.setdefault(f["flag"], []).append(f["structure"])
    order = sorted(by_flag, key=lambda k: (-max(_rank(f["severity"]) for f in flags if f["flag"] == k), k))
    parts = []
    for k in order[:limit]:
        names = by_flag[k]
        shown = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        parts.append(f"<b>{_e(k)}</b>: {_e(shown)}")
    if len(order) > limit:
        parts.append(f"+{len(order) - limit} more kinds")
    return "<br>".join(parts)


def _grouped(flags: list[dict], max_rows: int = 4) -> list[tuple[str, dict, int]]:
    """Rows for a case's flag table, most severe first: one row per flag, except that a flag kind
    raised for more than ``max_rows`` structures becomes a single row listing them."""
    by_kind: dict[tuple[str, str], list[dict]] = {}
    for f in flags:
        by_kind.setdefault((f["flag"], f["severity"]), []).append(f)
    rows = []
    for fs in by_kind.values():
        fs = sorted(fs, key=lambda f: f["structure"])
        if len(fs) > max_rows:
            rows.append((", ".join(f["structure"] for f in fs), fs[0], len(fs)))
        else:
            rows.extend((f["structure"], f, 1) for f in fs)
    return sorted(rows, key=lambda r: (-_rank(r[1]["severity"]), r[2] > 1, r[1]["flag"], r[0]))


def _agreement_cells(r: dict) -> str:
    """Dice / HD95 / NSD cells of a structure-summary row; 'coarse' when no case refined the structure
    (its final mask is the coarse mask: a Dice of 1.000 would claim an agreement nobody measured)."""
    if not r.get("refined"):
        return "<td class='num muted' colspan='3'>coarse</td>"
    return (
        f"<td class='num'>{_num(r['dice'])}</td><td class='num'>{_num(r['hd95_mm'], '{:.1f}')}</td>"
        f"<td class='num'>{_num(r['nsd'])}</td>"
    )


def _rank(sev: str) -> int:
    return {"info": 1, "warning": 2, "error": 3}.get(sev, 0)


def render_html(data: ReportData) -> str:
    flagged = [c for c in data.cases if c.flags]
    flagged.sort(key=lambda c: (-c.severity_score, c.case))
    n_flags = sum(len(c.flags) for c in data.cases)
    kinds = Counter(f["flag"] for c in data.cases for f in c.flags)
    out: list[str] = []
    w = out.append
    w("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>")
    w("<meta name='viewport' content='width=device-width, initial-scale=1'>")
    w(f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>")
    w(
        f"<header><h1>{_e(data.title)}</h1><p>results folder <code style='background:#2c3646;color:#fff'>{_e(data.results_name)}</code>"
        f" · {len(data.cases)} cases · ctsam {_e(__version__)}</p></header>"
    )
    demo_cases = data.provenance.get("demo_weight_cases") or []
    if demo_cases:
        w(
            "<div role='alert' style='background:#b00020;color:#fff;padding:12px 24px;font-weight:bold'>"
            f"DEMO WEIGHTS on real CT in {len(demo_cases)} case(s) ({_e(', '.join(demo_cases[:10]))}"
            f"{' ...' if len(demo_cases) > 10 else ''}): refine used the phantom-trained builtin:demo_* model "
            "(weights.allow_demo_weights: true). These refined structures are not trustworthy.</div>"
        )
    w(
        "<nav><a href='#summary'>Summary</a><a href='#flagged'>Flagged cases</a>"
        "<a href='#cases'>Case snapshots</a><a href='#structures'>Structures</a><a href='#provenance'>Provenance</a><a href='#failed'>Failed cases</a></nav><main>"
    )

    # summary
    w("<section id='summary'><h2>Summary</h2><div class='cards'>")
    cards = [
        ("cases with QC", len(data.cases)),
        ("flagged cases", len(flagged)),
        ("cases with errors", sum(1 for c in data.cases if c.severity == "error")),
        ("flags", n_flags),
        ("failed cases", len(data.failures) + len(data.unreadable)),
    ]
    for k, v in cards:
        w(f"<div class='card'><div class='v'>{v}</div><div class='k'>{_e(k)}</div></div>")
    w("</div>")
    if kinds:
        w(
            "<h3>Flags by kind</h3><table class='compact'><tr><th>flag</th><th class='num'>structures flagged</th><th class='num'>cases</th></tr>"
        )
        for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            ncase = sum(1 for c in data.cases if any(f["flag"] == k for f in c.flags))
            w(f"<tr><td>{_e(k)}</td><td class='num'>{n}</td><td class='num'>{ncase}</td></tr>")
        w("</table>")
    if data.table_files:
        files = " · ".join(f"<code>{_e(v)}</code> ({_e(k)})" for k, v in data.table_files.items())
        w(f"<p class='small muted'>Cohort table (one row per case × structure): {files}, next to this file.</p>")
    w("</section>")

    # flagged cases
    w("<section id='flagged'><h2>Flagged cases, most severe first</h2>")
    if flagged:
        w(
            "<table><tr><th>case</th><th>worst</th><th class='num'>score</th><th class='num'>flags</th><th>flags (structures)</th></tr>"
        )
        for c in flagged:
            w(
                f"<tr><td><a href='#case-{_e(c.case)}'>{_e(c.case)}</a></td><td>{_badge(c.severity)}</td>"
                f"<td class='num'>{c.severity_score}</td><td class='num'>{len(c.flags)}</td><td class='small'>{_flag_summary(c.flags)}</td></tr>"
            )
        w("</table><p class='small muted'>Score = sum over flags of error 10, warning 3, info 1.</p>")
    else:
        w("<p>No case has a QC flag.</p>")
    w("</section>")

    # cases
    w("<section id='cases'><h2>Case snapshots</h2>")
    if data.n_snapshots_omitted:
        w(
            f"<p class='small muted'>{data.n_snapshots_omitted} cases without a snapshot (limit reached; flagged cases come first). "
            "Raise <code>--max-snapshots</code> to show more.</p>"
        )
    ordered = flagged + sorted((c for c in data.cases if not c.flags), key=lambda c: c.case)
    for c in ordered:
        src = ", ".join(f"{k}: {v}" for k, v in sorted(c.sources.items())) or "no fusion sidecar"
        w(
            f"<div class='case' id='case-{_e(c.case)}'><h3>{_e(c.case)} {_badge(c.severity)} "
            f"<span class='muted small'>{c.n_structures} structures · sources {_e(src)}</span></h3>"
        )
        if c.snapshot_png is not None:
            b64 = base64.b64encode(c.snapshot_png).decode("ascii")
            alt = f"{c.case}: axial, coronal and sagittal slices" + (f" through {c.focus}" if c.focus else "")
            w(f"<img class='snap' alt='{_e(alt)}' src='data:image/png;base64,{b64}'>")
            if c.focus:
                w(
                    f"<p class='small muted'>Slices pass through the centroid of <b>{_e(c.focus)}</b>, the most severely "
                    "flagged structure, outlined in yellow.</p>"
                )
        elif c.snapshot_note:
            w(f"<p class='small muted'>{_e(c.snapshot_note)}</p>")
        if c.lesions:
            w(
                f"<details><summary>lesions ({len(c.lesions)})</summary><table><tr><th>lesion</th><th>label</th>"
                "<th class='num'>volume (ml)</th><th class='num'>RECIST long / short (mm)</th>"
                "<th class='num'>mean prob.</th><th>in</th><th>flags</th></tr>"
            )
            for le in c.lesions:
                w(
                    f"<tr><td>{_e(le.get('name'))}</td><td>{_e(le.get('label') or '')}</td>"
                    f"<td class='num'>{_num(le.get('volume_ml'), '{:.2f}')}</td>"
                    f"<td class='num'>{_num(le.get('recist_long_axis_mm'), '{:.1f}')} / "
                    f"{_num(le.get('recist_short_axis_mm'), '{:.1f}')}</td>"
                    f"<td class='num'>{_num(le.get('mean_probability'), '{:.2f}')}</td>"
                    f"<td>{_e(le.get('containing_structure') or '')}</td>"
                    f"<td class='small'>{_e(', '.join(f['flag'] for f in le.get('flags') or []))}</td></tr>"
                )
            w("</table>")
            if c.lesion_snapshot_png is not None:
                b64 = base64.b64encode(c.lesion_snapshot_png).decode("ascii")
                w(
                    f"<img class='snap' alt='{_e(c.case)}: slices through the largest lesion' "
                    f"src='data:image/png;base64,{b64}'>"
                )
            w("</details>")
        if c.flags:
            w(
                "<details open><summary>flags</summary><table class='flags'><tr><th>structure</th><th>flag</th><th>severity</th><th>detail</th></tr>"
            )
            for structures, f, n in _grouped(c.flags):
                detail = (
                    _e(f["message"]) if n == 1 else f"{n} structures, e.g. {_e(f['structure'])}: {_e(f['message'])}"
                )
                w(
                    f"<tr><td class='small'>{_e(structures)}</td><td>{_e(f['flag'])}</td><td>{_badge(f['severity'])}</td><td class='small'>{detail}</td></tr>"
                )
            w("</table></details>")
        w("</div>")
    if not ordered:
        w("<p>No cases.</p>")
    w("</section>")

    # structure summary
    w("<section id='structures'><h2>Per-structure summary across cases</h2>")
    if data.structure_summary:
        w(
            f"<details><summary>{len(data.structure_summary)} structures: cases, refined count, medians of volume, Dice, HD95, NSD "
            "and flag counts (click to expand)</summary><table><tr><th>structure</th><th class='num'>cases</th><th class='num'>refined</th><th class='num'>median volume (ml)</th>"
            "<th class='num'>median Dice</th><th class='num'>median HD95 (mm)</th><th class='num'>median NSD</th><th class='num'>flags</th></tr>"
        )
        for r in data.structure_summary:
            w(
                f"<tr><td>{_e(r['structure'])}</td><td class='num'>{r['cases']}</td><td class='num'>{r['refined']}</td>"
                f"<td class='num'>{_num(r['volume_ml'], '{:.1f}')}</td>{_agreement_cells(r)}<td class='num'>{r['flags']}</td></tr>"
            )
        w(
            "</table></details><p class='small muted'>Dice, HD95 and NSD compare each refined structure with its coarse mask "
            "(medians over the cases where it was refined; pinned MONAI definitions, see qc.json <code>definitions</code>). "
            "<i>coarse</i>: never refined, the final mask is the coarse mask, so there is nothing to compare.</p>"
        )
    else:
        w("<p>No structures.</p>")
    w("</section>")

    # provenance
    p = data.provenance
    w("<section id='provenance'><h2>Run provenance</h2>")
    if p.get("n_manifests"):
        w(f"<p>{p['n_manifests']} of {len(data.cases)} cases have a <code>manifest.json</code>.</p>")
        w("<table class='compact'><tr><th>item</th><th>value</th><th class='num'>cases</th></tr>")
        for key, label in (
            ("config_digest", "config digest"),
            ("ctsam_version", "ctsam version"),
            ("checkpoints", "checkpoint sha256"),
        ):
            for value, n in p.get(key, {}).items():
                w(f"<tr><td>{_e(label)}</td><td><code>{_e(value)}</code></td><td class='num'>{n}</td></tr>")
        w("</table>")
        if any(len(p.get(k, {})) > 1 for k in ("config_digest", "ctsam_version", "checkpoints")):
            w(
                "<p><span class='badge b-warning'>mixed</span> cases were processed with different configs, versions or weights.</p>"
            )
        if p.get("software"):
            w("<h3>Software</h3><table class='compact'><tr><th>package</th><th>versions (cases)</th></tr>")
            for pkg, versions in p["software"].items():
                vs = ", ".join(f"{_e(v)} ({n})" for v, n in versions.items())
                w(f"<tr><td>{_e(pkg)}</td><td>{vs}</td></tr>")
            w("</table>")
        if p.get("stages"):
            w(
                "<h3>Stage timings</h3><table class='compact'><tr><th>stage</th><th class='num'>cases</th><th class='num'>median wall (s)</th>"
                "<th class='num'>max wall (s)</th><th class='num'>max RSS (MB)</th></tr>"
            )
            for stage, t in p["stages"].items():
                w(
                    f"<tr><td>{_e(stage)}</td><td class='num'>{t['cases']}</td><td class='num'>{_num(t['median_wall_s'], '{:.1f}')}</td>"
                    f"<td class='num'>{_num(t['max_wall_s'], '{:.1f}')}</td><td class='num'>{_num(t['max_rss_mb'], '{:.0f}')}</td></tr>"
                )
            w("</table>")
    else:
        w("<p class='muted'>No manifest.json files found in the case folders.</p>")
    w("</section>")

    # failures
    w("<section id='failed'><h2>Failed cases</h2>")
    if data.failures:
        w(
            f"<p>{len(data.failures)} case(s) did not complete (from <code>{_e(data.provenance.get('failure_list'))}</code>); "
            "the tables and snapshots above cover the completed cases only.</p>"
        )
    if data.failures or data.unreadable:
        cols: list[str] = []
        for f in data.failures:
            cols += [k for k in f if k != "case" and k not in cols]
        w("<table><tr><th>case</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>")
        for f in data.failures:
            w(
                f"<tr><td>{_e(f.get('case'))}</td>"
                + "".join(f"<td class='small'>{_e(f.get(c))}</td>" for c in cols)
                + "</tr>"
            )
        w("</table>")
        if data.unreadable:
            w("<h3>Unreadable QC files</h3><table><tr><th>case</th><th>error</th></tr>")
            for u in data.unreadable:
                w(f"<tr><td>{_e(u['case'])}</td><td class='small'>{_e(u['error'])}</td></tr>")
            w("</table>")
    else:
        source = data.provenance.get("failure_list")
        w(
            "<p>No failed cases"
            + (
                f" (checked <code>{_e(source)}</code>)."
                if source
                else " (no failure list found: run the workflow, or pass <code>--failures</code>)."
            )
            + "</p>"
        )
    w("</section></main></body></html>\n")
    return "".join(out)
