"""``ctsam evaluate``: the interactive protocol and the automatic pipeline against ground truth.

**Interactive protocol** (per case and structure, in the model frame): one 64^3 patch centred on the
structure's most interior voxel; click 1 at that point, then each further click at the centre of the
largest error region of the current prediction (:mod:`~ctsam.training.clicks`), the previous
probabilities fed back as mask prompt; the encoder runs once per patch. Dice is measured inside the
patch (a structure larger than the 96 mm patch is judged on its part inside it) after k = 1..K clicks.
NoC@85 / NoC@90 = the first k with Dice >= 0.85 / 0.90, or K when never reached (standard convention;
the table also tells whether it was reached).

**Automatic pipeline** (when the table has coarse labels): the real ``seed -> refine -> fuse`` path
(:func:`ctsam.seed_prompts`, :func:`ctsam.refine_structures` given the coarse labels, as the workflow's refine rule is,
and :func:`ctsam.fuse_labels`, with the config's ``seed``, ``refine`` and ``fuse`` sections) on the CT grid. Per ground-truth structure (Dice on the CT grid, whole structure):

* ``coarse_dice``: the coarse mask (0 when the coarse labels miss the structure);
* ``refined_dice``: the refined mask (probability >= 0.5), empty when the structure was not refined
  (not seeded, e.g. a rib the coarse segmenter missed) -- the summary's refined means cover the
  refined structures only, with the coarse Dice of the same structures beside them;
* ``fused_dice``: the pipeline's output, the fused label map (refined where fusion accepted the
  refinement, else the coarse mask), with ``fused_source`` saying which.

Outputs in ``EVAL_DIR``: ``interactive.csv`` (case, structure, clicks, dice), ``noc.csv``,
``automatic.csv`` (case, structure, coarse/refined/fused Dice), ``summary.json``, ``curve.png``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.masks import dice, dice_from_counts
from ctsam.training.clicks import ClickSequence, add_correction_clicks, start_sequences

log = logging.getLogger(__name__)

NOC_THRESHOLDS = (0.85, 0.90)


def _seam(model):
    """The model seam's view of a network (input spec, variant, metadata)."""
    from ctsam.model import wrap_module

    return wrap_module(model)


def click_curve(
    model, image: np.ndarray, target: np.ndarray, *, n_clicks: int = 10, max_points: int = 24
) -> list[float]:
    """Dice after 1..n_clicks simulated clicks on one patch (see :func:`click_curves`)."""
    return click_curves(model, [image], [target], n_clicks=n_clicks, max_points=max_points)[0]


def click_curves(
    model,
    images: list[np.ndarray],
    targets: list[np.ndarray],
    *,
    n_clicks: int = 10,
    max_points: int = 24,
    batch_size: int = 8,
) -> list[list[float]]:
    """Dice after 1..n_clicks simulated clicks for each patch, ``batch_size`` patches per network call.

    Args:
        model: a CT-SAM3D network (``ctsam.model.load_model(...).module``; any mode; run without gradients, mode restored).
        images: (S, S, S) float32 windowed patches, (z, y, x). targets: (S, S, S) bool masks.

    Returns:
        One list of ``n_clicks`` Dice values per patch (once a prediction is exact, later values repeat).
    """
    import torch

    dev = model.device
    cl = next(model.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
    was_training = model.training
    model.eval()
    from ctsam.progress import Progress

    curves: list[list[float]] = []
    progress = Progress(len(images), "evaluate: structures (click curves)")
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                imgs, tgts = images[i : i + batch_size], targets[i : i + batch_size]
                progress.update(len(imgs))
                x = torch.from_numpy(np.stack(imgs)[:, None].astype(np.float32)).to(dev)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                feats = model.encode(x)
                seqs = start_sequences(tgts)
                prev = None
                chunk: list[list[float]] = [[] for _ in tgts]
                for k in range(n_clicks):
                    pts, lab = ClickSequence.tensors(seqs)
                    prev = model.decode(feats, pts, lab, prev)["probs"].float()
                    preds = list((prev[:, 0] > 0.5).cpu().numpy())
                    for c, p, t in zip(chunk, preds, tgts):
                        c.append(dice(p, t))
                    if k + 1 < n_clicks:
                        add_correction_clicks(seqs, preds, tgts, max_points=max_points)
                curves += chunk
    finally:
        model.train(was_training)
    return curves


#: patches used to measure the quality head (``ctsam train`` with validation data, ``train-demo``)
QUALITY_CALIBRATION_PATCHES = 32


def first_decodes(model, sampler, n_samples: int, *, seed: int, coarse_every: int, stream: int) -> list[dict]:
    """One decode per patch, prompted as the pipeline prompts it, on items ``0..n_samples-1`` of step 0.

    Every ``coarse_every``-th patch (1: all) starts from a simulated coarse mask of its target
    (:func:`~ctsam.training.data.simulate_coarse`, drawn from ``default_rng([seed, i, stream])``) with the
    click at its most interior point; the others, and those whose coarse mask vanished, start from zeros
    with one click at the target's most interior point (:func:`~ctsam.training.clicks.start_prompts`).

    Returns per patch ``{"coarse_dice": Dice of the coarse prompt or None, "dice", "iou", "score"}``
    (``score``: the quality head's). Runs without gradients; the model's mode is restored.
    """
    import torch

    from ctsam.training.clicks import stack_patches, start_prompts
    from ctsam.training.data import simulate_coarse

    cl = next(model.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
    was_training = model.training
    model.eval()
    records = []
    try:
        with torch.inference_mode():
            for i in range(n_samples):
                smp = sampler.sample(0, i)
                coarse = (
                    simulate_coarse(smp.target, np.random.default_rng([seed, i, stream]))
                    if i % coarse_every == coarse_every - 1
                    else None
                )
                seqs, prev = start_prompts([smp.target], [coarse], model.device, cl)
                pts, lab = ClickSequence.tensors(seqs)
                out = model.decode(model.encode(stack_patches([smp.image], model.device, cl)), pts, lab, prev)
                pred = (out["probs"][0, 0] > 0.5).cpu().numpy()
                union = int((pred | smp.target).sum())
                records.append(
                    {
                        "coarse_dice": None if coarse is None else dice(coarse, smp.target),
                        "dice": dice(pred, smp.target),
                        "iou": int((pred & smp.target).sum()) / union if union else 1.0,
                        "score": float(out["iou"][0, 0]),
                    }
                )
    finally:
        model.train(was_training)
    return records


def quality_calibration(model, sampler, n_samples: int = QUALITY_CALIBRATION_PATCHES, *, seed: int = 0) -> dict:
    """How well the quality head predicts the true IoU, on ``n_samples`` patches of ``sampler``.

    Half the patches start from zeros, half from a simulated coarse mask (:func:`first_decodes`), the
    two ways the network is prompted. Returns ``{"r": Pearson r (0.0 when either side is constant),
    "n", "mean_score", "mean_iou"}``.
    """
    recs = first_decodes(model, sampler, n_samples, seed=seed, coarse_every=2, stream=17)
    s_arr, i_arr = np.array([r["score"] for r in recs]), np.array([r["iou"] for r in recs])
    r = float(np.corrcoef(s_arr, i_arr)[0, 1]) if s_arr.std() > 1e-6 and i_arr.std() > 1e-6 else 0.0
    return {
        "r": round(r, 4),
        "n": len(recs),
        "mean_score": round(float(s_arr.mean()), 4),
        "mean_iou": round(float(i_arr.mean()), 4),
    }


def noc(curve: list[float], threshold: float) -> tuple[int, bool]:
    """(number of clicks to reach ``threshold``, reached?) -- len(curve) when never reached."""
    for k, d in enumerate(curve, start=1):
        if d >= threshold:
            return k, True
    return len(curve), False


@dataclass(frozen=True)
class EvalSettings:
    n_clicks: int = 10
    min_voxels: int = 20
    spacing_mm: float = 1.5


def interactive_case(model, case, settings: EvalSettings) -> list[dict]:
    """Click curves for every structure of a :class:`~ctsam.training.data.PreparedCase`."""
    from ctsam.refine.patching import crop_padded
    from ctsam.seed.seeding import interior_point
    from ctsam.training.data import PAD_HU, window

    spec = _seam(model).input_spec
    s = int(spec.patch_size_zyx[0])
    labels, images, targets = [], [], []
    for label in case.structure_labels:
        mask = case.labels == label
        centre = interior_point(mask, (1.0, 1.0, 1.0))
        start = [c - s // 2 for c in centre]
        hu = crop_padded(case.hu, start, (s, s, s), pad_value=np.int16(PAD_HU))
        labels.append(label)
        images.append(window(hu, spec.hu_window))
        targets.append(crop_padded(case.labels, start, (s, s, s), pad_value=0) == label)
    curves = click_curves(model, images, targets, n_clicks=settings.n_clicks)
    return [
        {"case": case.case_id, "structure": case.names.get(label, f"label_{label}"), "label": label, "curve": c}
        for label, c in zip(labels, curves)
    ]


def automatic_case(model, row, config: dict) -> list[dict]:
    """Coarse, refined and fused Dice per structure for one table row through seed -> refine -> fuse."""
    import copy

    from ctsam import api
    from ctsam.config import fill_defaults, load_schema
    from ctsam.fuse.fusion import threshold_u8
    from ctsam.io.image import read_labelmap
    from ctsam.labels import default_vocabulary
    from ctsam.training.data import align_labels, read_ct_any

    ct = read_ct_any(row.ct, case=row.case_id)
    truth = read_labelmap(row.labels, case=row.case_id)
    coarse = read_labelmap(row.coarse, case=row.case_id)
    truth = align_labels(truth, ct.geometry, case=row.case_id, what="ground truth")
    coarse = align_labels(coarse, ct.geometry, case=row.case_id, what="coarse labels")
    config = fill_defaults(copy.deepcopy(dict(config)), load_schema())  # a partial config gets the defaults
    prompts = api.seed_prompts(coarse, config=config, case=row.case_id)
    run = api.refine_structures(
        ct, prompts, coarse=coarse, model=model, config=config, case=row.case_id, deterministic=False
    )
    refined, timing = run.refined, run.timing_s
    fuse_cfg = config["fuse"]
    vocabulary = default_vocabulary(keep_unmapped=bool(fuse_cfg["keep_unmapped_coarse"]))
    fused = api.fuse_labels(coarse, refined, config=config, case=row.case_id)
    source = {f.name: f.source for f in fused.structures}
    by_name = {sp.name: sp for sp in refined.structures}
    coarse_idx = {n: i for i, n in coarse.labels.items()}
    vs_coarse = label_overlaps(truth.array, coarse.array)  # one pass per label map, not one per structure
    vs_fused = label_overlaps(truth.array, fused.labelmap.array)
    t_u8 = threshold_u8(float(fuse_cfg["threshold"]))
    rows = []
    for idx in truth.present_labels():
        name = truth.labels[idx]
        sp = by_name.get(name)
        refined_dice = float("nan")
        if sp is not None:  # inside the refined structure's box only
            ref = sp.probs_u8 >= t_u8
            inter = int(np.count_nonzero(ref & (truth.array[sp.slices] == idx)))
            refined_dice = dice_from_counts(inter, int(vs_coarse[idx].sum()), int(np.count_nonzero(ref)))
        out_name = vocabulary.output_name(name)
        out_idx = vocabulary.output_index(out_name) if out_name is not None else None
        rows.append(
            {
                "case": row.case_id,
                "structure": name,
                "coarse_dice": _overlap_dice(vs_coarse, idx, coarse_idx.get(name) if name else None),
                "refined_dice": refined_dice,
                "fused_dice": _overlap_dice(vs_fused, idx, out_idx),
                "fused_source": source.get(out_name, "none"),
                "truth_ml": float(vs_coarse[idx].sum() * ct.geometry.voxel_volume_ml),
                "refined": sp is not None,
            }
        )
    log.info("%s: automatic pipeline on %d structures in %.1f s", row.case_id, len(rows), timing.get("total_s", 0.0))
    return rows


def label_overlaps(a: np.ndarray, b: np.ndarray, *, slab_voxels: int = 1 << 23) -> np.ndarray:
    """(max a + 1, max b + 1) int64 voxel counts of every (label in ``a``, label in ``b``) pair, z-slab-wise."""
    from ctsam.volume import z_slabs

    na, nb = int(a.max(initial=0)) + 1, int(b.max(initial=0)) + 1
    counts = np.zeros(na * nb, dtype=np.int64)
    for zs in z_slabs(a.shape, slab_voxels):
        counts += np.bincount(a[zs].ravel().astype(np.int64) * nb + b[zs].ravel(), minlength=na * nb)
    return counts.reshape(na, nb)


def _overlap_dice(counts: np.ndarray, i: int, j: int | None) -> float:
    """Dice of label ``i`` of the first map and ``j`` of the second from :func:`label_overlaps` (j None or
    absent: an empty mask)."""
    size_a = int(counts[i].sum())
    if j is None or j >= counts.shape[1]:
        return dice_from_counts(0, size_a, 0)
    return dice_from_counts(int(counts[i, j]), size_a, int(counts[:, j].sum()))


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _plot(curve_mean: np.ndarray, coarse: float | None, refined: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctsam.io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    k = np.arange(1, len(curve_mean) + 1)
    ax.plot(k, curve_mean, "o-", label="interactive (patch Dice)")
    if coarse is not None:
        ax.axhline(coarse, color="tab:gray", ls="--", label=f"coarse labels {coarse:.3f}")
    if refined is not None:
        ax.axhline(refined, color="tab:green", ls="-.", label=f"automatic seed->refine->fuse {refined:.3f}")
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(0, 1)
    ax.set_xticks(k)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def evaluate(
    model,
    rows,
    out_dir: str | os.PathLike[str],
    *,
    config: dict | None = None,
    settings: EvalSettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    automatic: bool = True,
) -> dict:
    """Run both protocols on table rows and write the outputs (see the module docstring); returns the summary."""
    import pandas as pd

    from ctsam.io.atomic import atomic_path, atomic_write_json
    from ctsam.training.data import prepare_case

    settings = settings or EvalSettings()
    config = config or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ctsam.progress import Progress

    inter_rows, auto_rows, failed = [], [], {}
    progress = Progress(len(rows), "evaluate: cases")
    for row in rows:
        try:
            case = prepare_case(
                row,
                spacing_mm=float(_seam(model).input_spec.spacing_zyx_mm[0]),
                cache_dir=cache_dir,
                min_voxels=settings.min_voxels,
            )
            inter_rows += interactive_case(model, case, settings)
            if automatic and row.coarse is not None:
                auto_rows += automatic_case(model, row, config)
        except Exception as err:  # noqa: BLE001 - one bad case never stops the evaluation
            log.error("%s: evaluation failed: %s", row.case_id, err)
            failed[row.case_id] = f"{type(err).__name__}: {err}"
        progress.update(item=row.case_id)
    long = pd.DataFrame(
        [
            {"case": r["case"], "structure": r["structure"], "clicks": k + 1, "dice": d}
            for r in inter_rows
            for k, d in enumerate(r["curve"])
        ],
        columns=["case", "structure", "clicks", "dice"],
    )
    noc_rows = []
    for r in inter_rows:
        rec = {"case": r["case"], "structure": r["structure"], "dice_1": r["curve"][0], "dice_last": r["curve"][-1]}
        for t in NOC_THRESHOLDS:
            n, ok = noc(r["curve"], t)
            rec[f"noc{int(round(t * 100))}"] = n
            rec[f"reached{int(round(t * 100))}"] = ok
        noc_rows.append(rec)
    noc_df = pd.DataFrame(noc_rows)
    auto_df = pd.DataFrame(
        auto_rows,
        columns=[
            "case",
            "structure",
            "coarse_dice",
            "refined_dice",
            "fused_dice",
            "fused_source",
            "truth_ml",
            "refined",
        ],
    )
    ref_df = auto_df[auto_df["refined"].astype(bool)]
    for name, df in (("interactive.csv", long), ("noc.csv", noc_df), ("automatic.csv", auto_df)):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4f")
    curve_mean = long.groupby("clicks")["dice"].mean().to_numpy() if len(long) else np.zeros(0)
    summary = {
        "cases": len(rows),
        "failed": failed,
        "structures_interactive": len(inter_rows),
        "dice_by_clicks": [round(float(v), 4) for v in curve_mean],
        "noc85_mean": float(noc_df["noc85"].mean()) if len(noc_df) else None,
        "noc90_mean": float(noc_df["noc90"].mean()) if len(noc_df) else None,
        "reached85_fraction": float(noc_df["reached85"].mean()) if len(noc_df) else None,
        "reached90_fraction": float(noc_df["reached90"].mean()) if len(noc_df) else None,
        "structures_automatic": len(auto_df),
        "coarse_dice_mean": _mean(auto_df["coarse_dice"]),
        "fused_dice_mean": _mean(auto_df["fused_dice"]),
        "fused_refined_fraction": _mean(auto_df["fused_source"] == "refined"),
        "structures_refined": len(ref_df),
        "coarse_dice_mean_refined": _mean(ref_df["coarse_dice"]),
        "refined_dice_mean": _mean(ref_df["refined_dice"]),
        "refined_better_fraction": _mean(ref_df["refined_dice"] > ref_df["coarse_dice"]),
        "model": {"variant": _seam(model).variant, "source": _seam(model).metadata.get("source")},
    }
    atomic_write_json(out / "summary.json", summary)
    if len(curve_mean):
        _plot(
            curve_mean,
            _mean(auto_df["coarse_dice"]),
            _mean(auto_df["fused_dice"]),
            out / "curve.png",
            f"{_seam(model).variant}: {len(inter_rows)} structures, {len(rows)} cases",
        )
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable report lines (what ``ctsam evaluate`` prints)."""
    lines = []
    curve = summary.get("dice_by_clicks") or []
    if curve:
        lines.append("interactive mean Dice by clicks: " + "  ".join(f"{k}:{d:.3f}" for k, d in enumerate(curve, 1)))
        lines.append(
            f"NoC@85 {summary['noc85_mean']:.2f} (reached {summary['reached85_fraction']:.0%}), "
            f"NoC@90 {summary['noc90_mean']:.2f} (reached {summary['reached90_fraction']:.0%}) "
            f"over {summary['structures_interactive']} structures"
        )
    if summary.get("coarse_dice_mean") is not None:
        lines.append(
            f"automatic pipeline (seed -> refine -> fuse) mean Dice over {summary['structures_automatic']} "
            f"structures: coarse {summary['coarse_dice_mean']:.3f} -> pipeline {summary['fused_dice_mean']:.3f} "
            f"(refinement accepted for {summary['fused_refined_fraction']:.0%})"
        )
        if summary.get("structures_refined"):
            lines.append(
                f"refined structures only ({summary['structures_refined']}): coarse "
                f"{summary['coarse_dice_mean_refined']:.3f} -> refined {summary['refined_dice_mean']:.3f} "
                f"(refined better for {summary['refined_better_fraction']:.0%})"
            )
    if summary.get("failed"):
        lines.append(f"failed cases: {', '.join(sorted(summary['failed']))}")
    return "\n".join(lines)
