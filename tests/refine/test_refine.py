"""Refinement engine: unit tests of its bookkeeping, an end-to-end CLI run on a synthetic CT with the micro
network (random weights), determinism, corrections, and (slow) the real TotalSegmentator example case."""

import hashlib

import numpy as np
import pytest

from ctsam.refine.engine import Job, RefineEngine, RefineSettings, StructureState
from ctsam.refine.patching import PatchBox
from ctsam.refine.refined_file import probs_to_u8
from ctsam.seed.prompts import CasePrompts, Click, PromptSet, StructureInfo, write_corrections, write_prompts
from ctsam.volume import CTVolume, Geometry

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------ bookkeeping (no network)
def engine(**kw) -> RefineEngine:
    return RefineEngine(predictor=None, settings=RefineSettings(**kw))


def test_update_settles_on_small_change_and_stops_at_max_rounds():
    e = engine(rounds=3, settle_threshold=0.05)
    job = Job("liver", PatchBox((0, 0, 0), 8), [(4.0, 4.0, 4.0)], "seed")
    p = np.zeros((8, 8, 8), np.float32)
    p[2:6, 2:6, 2:6] = 0.9
    e._update(job, p, 0.8)
    assert not job.settled and job.rounds_done == 1 and job.n_decodes == 1
    p2 = p.copy()
    p2[2, 2, 2] = 0.1  # 1 voxel of 64 changes: 1 - Dice = 0.008
    e._update(job, p2, 0.8)
    assert job.settled and job.stop_reason == "settled"
    job2 = Job("liver", PatchBox((0, 0, 0), 8), [], "seed")
    for k in range(3):
        q = np.zeros((8, 8, 8), np.float32)
        q[k : k + 3] = 1.0  # keeps moving
        e._update(job2, q, 0.5)
    assert job2.settled and job2.stop_reason == "max_rounds" and job2.rounds_done == 3


def test_request_clicks_anchor_first_pool_inside_box_and_capped():
    e = engine(max_clicks=3)
    st = StructureState("liver", pool_pos=[(10.0, 10.0, 10.0), (100.0, 0.0, 0.0)], pool_neg=[(5.0, 6.0, 7.0)])
    job = Job("liver", PatchBox((0, 0, 0), 64), [(32.0, 33.0, 34.0)], "seed")
    r = e._request(st, job, 64)
    assert r.points_xyz.tolist() == [[34, 33, 32], [10, 10, 10], [7, 6, 5]]  # (x, y, z); outside click dropped
    assert r.labels.tolist() == [1, 1, 0] and r.prev_probs is None
    st.pool_neg += [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]
    assert len(e._request(st, job, 64).labels) == 3


def test_first_round_mask_prompt_is_the_coarse_mask_when_on():
    from types import SimpleNamespace

    from ctsam.errors import ConfigError

    def eng(mode, trained):
        pred = SimpleNamespace(model=SimpleNamespace(metadata={"coarse_prompt_trained": trained}))
        return RefineEngine(pred, RefineSettings(coarse_mask_prompt=mode))

    assert eng("auto", True).uses_coarse_prompt(True) and not eng("auto", False).uses_coarse_prompt(True)
    assert not eng("auto", True).uses_coarse_prompt(False) and not eng("off", True).uses_coarse_prompt(True)
    assert eng("on", False).uses_coarse_prompt(True)
    with pytest.raises(ConfigError, match="coarse_mask_prompt"):
        eng("on", True).uses_coarse_prompt(False, case="c1")
    e = eng("on", False)
    frame_coarse = np.zeros((20, 20, 20), np.uint8)
    frame_coarse[4:9, 5:10, 6:12] = 7
    frame_coarse[12:14] = 3
    e._frame_coarse, e._coarse_label = frame_coarse, {"liver": 7}
    st = StructureState("liver")
    job = Job("liver", PatchBox((-2, 0, 1), 16), [(6.0, 7.0, 8.0)], "seed")
    prev = e._request(st, job, 16).prev_probs
    expected = np.zeros((16, 16, 16), np.float32)
    expected[6:11, 5:10, 5:11] = 1.0  # the box starts at (-2, 0, 1): out-of-frame voxels are background
    assert np.array_equal(prev, expected)
    probs = np.full((16, 16, 16), 0.25, np.float32)
    e._update(job, probs, 0.5)
    assert e._starts_from_coarse(job) and job.settled and job.stop_reason == "max_rounds"  # coarse_prompt_rounds 1
    job2 = Job("liver", PatchBox((-2, 0, 1), 16), [(6.0, 7.0, 8.0)], "seed")
    e2 = RefineEngine(e.predictor, RefineSettings(coarse_mask_prompt="on", coarse_prompt_rounds=2, rounds=5))
    e2._frame_coarse, e2._coarse_label = frame_coarse, {"liver": 7}
    e2._request(st, job2, 16)
    e2._update(job2, probs, 0.5)
    assert not job2.settled
    assert np.allclose(e2._request(st, job2, 16).prev_probs, probs_to_u8(probs) / 255.0)  # round 2: own probabilities
    e2._update(job2, 1 - probs, 0.5)
    assert job2.settled and job2.stop_reason == "max_rounds" and job2.rounds_done == 2
    assert (
        e._request(StructureState("spleen"), Job("spleen", PatchBox((0, 0, 0), 16), [], "seed"), 16).prev_probs is None
    )


def test_quality_scores_of_an_uninformative_head_are_not_reported():
    from types import SimpleNamespace

    def eng(r):
        pred = SimpleNamespace(model=SimpleNamespace(metadata={"quality_r": r}))
        return RefineEngine(pred, RefineSettings(min_quality_r=0.3))

    p = np.zeros((8, 8, 8), np.float32)
    for r, expected in ((None, 0.8), (0.6, 0.8), (0.05, None)):
        e = eng(r)
        job = Job("liver", PatchBox((0, 0, 0), 8), [], "seed")
        e._update(job, p, 0.8)
        assert np.isnan(job.quality) if expected is None else job.quality == expected, (r, job.quality)
        assert e.quality_trusted == (expected is not None)


def test_propagation_click_from_mask_and_limits():
    e = engine(
        propagation_stride_voxels=48,
        propagation_min_border_voxels=4,
        max_patches_per_structure=3,
        propagation_margin_mm=0.0,
    )
    st = StructureState("colon")
    st.region_lo, st.region_hi = np.array([0.0, 0.0, 0.0]), np.array([200.0, 63.0, 63.0])
    job = Job("colon", PatchBox((0, 0, 0), 64), [(32.0, 32.0, 32.0)], "seed")
    st.jobs.append(job)
    probs = np.zeros((64, 64, 64), np.uint8)
    probs[20:64, 28:36, 28:36] = 255  # a tube leaving through the z+ face only
    job.probs_u8 = probs
    n = e._propagate(
        {"colon": st}, [job], session=None, frame=Geometry((300, 64, 64), (1.5,) * 3, (0, 0, 0)), size=64, use_cpp=False
    )
    assert n == 1
    new = st.jobs[1]
    assert new.box == PatchBox((48, 0, 0), 64) and new.source == "propagation" and new.generation == 1
    z, y, x = new.anchors[0]
    assert 48 <= z < 64 and 28 <= y < 36 and 28 <= x < 36  # inside the mask, in the overlap
    # the same face again: box already a job -> nothing new; a box out of the coarse region -> nothing
    assert e._propagate({"colon": st}, [job], None, Geometry((300, 64, 64), (1.5,) * 3, (0, 0, 0)), 64, False) == 0
    new.probs_u8 = probs
    st.region_hi = np.array([90.0, 63.0, 63.0])
    assert e._propagate({"colon": st}, [new], None, Geometry((300, 64, 64), (1.5,) * 3, (0, 0, 0)), 64, False) == 0


def test_coverage_skip_of_a_mask_inside_settled_patches():
    e = engine(coverage_skip_fraction=0.9, blend_ramp_voxels=4)
    a = Job("liver", PatchBox((0, 0, 0), 32), [], "seed", settled=True, rounds_done=2)
    a.probs_u8 = np.zeros((32,) * 3, np.uint8)
    b = Job("liver", PatchBox((8, 0, 0), 32), [], "seed", rounds_done=1)
    pb = np.zeros((32,) * 3, np.uint8)
    pb[4:16, 8:20, 8:20] = 255  # frame z 12..23: inside a's interior (4..27)
    b.probs_u8 = pb
    c = Job("liver", PatchBox((8, 0, 0), 32), [], "seed", rounds_done=1)
    pc = np.zeros((32,) * 3, np.uint8)
    pc[20:30, 8:20, 8:20] = 255  # frame z 28..37: outside a
    c.probs_u8 = pc
    st = StructureState("liver", jobs=[a, b, c])
    e._skip_covered({"liver": st}, [b, c])
    assert b.settled and b.stop_reason == "covered"
    assert not c.settled


# ------------------------------------------------------------------ end to end with the micro network
def synthetic_case(tmp_path):
    from ctsam.io.image import write_ct, write_labelmap
    from ctsam.volume import LabelMap

    g = Geometry(
        shape_zyx=(30, 40, 44),
        spacing_xyz_mm=(3.0, 3.0, 3.0),
        origin_xyz_mm=(60.0, 40.0, -10.0),
        direction=((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    )
    z, y, x = np.mgrid[:30, :40, :44]
    ct = np.full(g.shape_zyx, -1000, np.int16)
    body = (y - 20) ** 2 / 18**2 + (x - 22) ** 2 / 20**2 <= 1
    ct[body] = 0
    organ = (z - 15) ** 2 / 8**2 + (y - 18) ** 2 / 7**2 + (x - 16) ** 2 / 7**2 <= 1
    bone = (z - 15) ** 2 / 12**2 + (y - 26) ** 2 / 3**2 + (x - 30) ** 2 / 3**2 <= 1
    ct[organ] = 60
    ct[bone] = 500
    lab = np.zeros(g.shape_zyx, np.uint8)
    lab[organ] = 1
    lab[bone] = 2
    write_ct(tmp_path / "ct.nii.gz", CTVolume(ct, g))
    write_labelmap(tmp_path / "seg.nii.gz", LabelMap(lab, g, {1: "liver", 2: "vertebrae_L1", 3: "spleen"}))
    return g, lab


def micro_checkpoint(path, spacing_mm=3.0):
    from ctsam.model import build_model, save_model

    torch.manual_seed(0)
    model = build_model("ctsam3d", "micro").update_metadata(spacing_mm=spacing_mm)
    save_model(model, path, sidecar=False)
    return path


def write_config(path, **refine):
    import yaml

    cfg = {"refine": {"device": "cpu", "rounds": 2, "batch_size": 4, **refine}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_refine_cli_end_to_end_deterministic_with_corrections(tmp_path):
    from ctsam.cli import main
    from ctsam.refine.refined_file import load_refined

    g, lab = synthetic_case(tmp_path)
    ckpt = micro_checkpoint(tmp_path / "micro.safetensors")
    cfg = write_config(tmp_path / "c.yaml", propagation=False, rounds=1)
    assert (
        main(["seed", str(tmp_path / "ct.nii.gz"), str(tmp_path / "seg.nii.gz"), "-o", str(tmp_path / "p.json")]) == 0
    )
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}.npz"
        assert (
            main(
                [
                    "refine",
                    str(tmp_path / "ct.nii.gz"),
                    str(tmp_path / "p.json"),
                    "-o",
                    str(out),
                    "--checkpoint",
                    str(ckpt),
                    "--config",
                    str(cfg),
                    "--timings",
                    str(tmp_path / f"t{k}.json"),
                ]
            )
            == 0
        )
        outs.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert outs[0] == outs[1]
    r = load_refined(tmp_path / "r0.npz")
    assert r.geometry.same_space(g)
    assert {s.name for s in r.structures} | set(r.skipped) == {"liver", "vertebrae_L1", "spleen"}
    assert r.skipped["spleen"] == "empty coarse mask"
    c = r.meta["counts"]
    assert c["decodes"] == sum(s.n_decodes for s in r.structures) + sum(
        r.meta["structures"][n]["decodes"] for n in r.skipped if n in r.meta["structures"]
    )
    assert c["decodes"] == 2 and c["patches_encoded"] <= 2  # 2 structures, 1 round, no propagation
    for s in r.structures:
        assert all(0 <= a and a + n <= m for a, n, m in zip(s.bbox_start_zyx, s.probs_u8.shape, g.shape_zyx))
    # a reviewer adds a positive click for the skipped spleen and a negative one for the liver
    spleen_xyz = g.index_to_world([5, 10, 25])
    write_corrections(
        tmp_path / "corr.json",
        {"spleen": [Click(tuple(spleen_xyz), True)], "liver": [Click(tuple(g.index_to_world([16, 18, 15])), False)]},
    )
    assert (
        main(
            [
                "refine",
                str(tmp_path / "ct.nii.gz"),
                str(tmp_path / "p.json"),
                "-o",
                str(tmp_path / "rc.npz"),
                "--checkpoint",
                str(ckpt),
                "--config",
                str(cfg),
                "--extra-clicks",
                str(tmp_path / "corr.json"),
            ]
        )
        == 0
    )
    rc = load_refined(tmp_path / "rc.npz")
    assert "spleen" not in rc.skipped or rc.skipped["spleen"].startswith("refined mask empty")
    assert rc.meta["structures"]["spleen"]["decodes"] >= 1 and rc.meta["corrections"] is True
    # missing corrections file: input error (exit 2)
    assert (
        main(
            [
                "refine",
                str(tmp_path / "ct.nii.gz"),
                str(tmp_path / "p.json"),
                "-o",
                str(tmp_path / "x.npz"),
                "--checkpoint",
                str(ckpt),
                "--config",
                str(cfg),
                "--extra-clicks",
                str(tmp_path / "nope.json"),
            ]
        )
        == 2
    )


def test_refine_cli_feeds_the_coarse_mask_as_first_prompt(tmp_path):
    from ctsam.cli import main
    from ctsam.refine.refined_file import load_refined

    synthetic_case(tmp_path)
    ckpt = micro_checkpoint(tmp_path / "micro.safetensors")  # not trained for coarse prompts: 'on' forces them
    ct, seg, p = (str(tmp_path / n) for n in ("ct.nii.gz", "seg.nii.gz", "p.json"))
    assert main(["seed", ct, seg, "-o", p]) == 0
    on = write_config(tmp_path / "on.yaml", propagation=False, rounds=1, coarse_mask_prompt="on")
    auto = write_config(tmp_path / "auto.yaml", propagation=False, rounds=1)
    args = [ct, p, "--checkpoint", str(ckpt)]
    assert main(["refine", *args, "-o", str(tmp_path / "a.npz"), "--config", str(on), "--coarse", seg]) == 0
    assert main(["refine", *args, "-o", str(tmp_path / "b.npz"), "--config", str(auto), "--coarse", seg]) == 0
    a, b = load_refined(tmp_path / "a.npz"), load_refined(tmp_path / "b.npz")
    assert a.meta["coarse_mask_prompt_used"] is True and b.meta["coarse_mask_prompt_used"] is False
    assert (
        hashlib.sha256((tmp_path / "a.npz").read_bytes()).digest()
        != hashlib.sha256((tmp_path / "b.npz").read_bytes()).digest()
    )  # the prompt reached the network
    # 'on' without the coarse labels: a config error naming the option, nothing written
    assert main(["refine", *args, "-o", str(tmp_path / "c.npz"), "--config", str(on)]) == 2
    assert not (tmp_path / "c.npz").exists()


def test_refine_rejects_prompts_from_another_grid(tmp_path):
    from ctsam.cli import main

    synthetic_case(tmp_path)
    ckpt = micro_checkpoint(tmp_path / "micro.safetensors")
    other = Geometry(shape_zyx=(5, 5, 5), spacing_xyz_mm=(1, 1, 1), origin_xyz_mm=(0, 0, 0))
    p = CasePrompts(
        ct_geometry=other,
        prompt_sets=[PromptSet("liver", 0, 0, (Click((0, 0, 0), True),))],
        structures={"liver": StructureInfo("liver", 1, 1.0, 1, (0, 0, 0), (1, 1, 1))},
    )
    write_prompts(tmp_path / "p.json", p)
    assert (
        main(
            [
                "refine",
                str(tmp_path / "ct.nii.gz"),
                str(tmp_path / "p.json"),
                "-o",
                str(tmp_path / "r.npz"),
                "--checkpoint",
                str(ckpt),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert not (tmp_path / "r.npz").exists()


# ------------------------------------------------------------------ the real example case (slow)
@pytest.mark.slow
@pytest.mark.shared_data
def test_real_ct_all_structures_covered_and_far_ends_reached(shared_data, tmp_path):
    """seed -> refine on the TotalSegmentator example (61 structures), micro network with random weights.

    To stay within a few CPU minutes the micro checkpoint declares a 3 mm frame (192 mm patches), one
    round and one tile per component, so liver and colon must be reached by propagation.
    """
    import yaml

    from ctsam.cli import main
    from ctsam.io.image import read_labelmap
    from ctsam.refine.refined_file import load_refined
    from ctsam.seed.prompts import read_prompts

    ct = shared_data / "totalseg_examples" / "example_ct.nii.gz"
    seg = shared_data / "totalseg_examples" / "example_seg_fast_force_split.nii.gz"
    ckpt = micro_checkpoint(tmp_path / "micro.safetensors", spacing_mm=3.0)
    cfg = tmp_path / "c.yaml"
    coarse = read_labelmap(seg)
    present = {coarse.labels[i] for i in coarse.present_labels()}
    cfg.write_text(
        yaml.safe_dump(
            {
                # refine every structure present, also those that keep their coarse mask by default
                "structures": {"refine_include": sorted(present)},
                "seed": {"max_components": 1, "tile_size_mm": 1000.0, "max_negatives": 3},
                "refine": {
                    "device": "cpu",
                    "rounds": 1,
                    "batch_size": 8,
                    "patch_snap_voxels": 16,
                    "max_patches_per_structure": 8,
                    "max_propagation_steps": 3,
                },
            }
        )
    )
    assert main(["seed", str(ct), str(seg), "-o", str(tmp_path / "p.json"), "--config", str(cfg)]) == 0
    prompts = read_prompts(tmp_path / "p.json")
    assert len(present) == 61 and set(prompts.structure_names()) == present
    assert (
        main(
            [
                "refine",
                str(ct),
                str(tmp_path / "p.json"),
                "-o",
                str(tmp_path / "r.npz"),
                "--checkpoint",
                str(ckpt),
                "--config",
                str(cfg),
            ]
        )
        == 0
    )
    r = load_refined(tmp_path / "r.npz")
    done = {s.name for s in r.structures}
    assert present <= done | set(r.skipped)
    assert len(done) + len(r.skipped) == len(coarse.labels)
    label_of = {v: k for k, v in coarse.labels.items()}
    for s in r.structures:
        ref = np.argwhere(coarse.array == label_of[s.name])
        lo, hi = ref.min(axis=0), ref.max(axis=0) + 1
        # the refined crop overlaps the coarse mask's box (refined where the coarse mask is)
        assert all(a < h and l < b for a, b, l, h in zip(s.bbox_start_zyx, s.bbox_stop_zyx, lo, hi)), s.name
    by = r.by_name()
    for name in ("liver", "colon"):
        ref = np.argwhere(coarse.array == label_of[name])
        lo, hi = ref.min(axis=0), ref.max(axis=0) + 1
        s = by[name]
        tol = 3  # voxels (9 mm)
        assert all(a <= l + tol for a, l in zip(s.bbox_start_zyx, lo)), (name, s.bbox_start_zyx, lo)
        assert all(b >= h - tol for b, h in zip(s.bbox_stop_zyx, hi)), (name, s.bbox_stop_zyx, hi)
    assert r.meta["structures"]["colon"]["patches"] > 1  # one seed patch + propagated neighbours
    assert r.meta["counts"]["propagated_jobs"] >= 1
