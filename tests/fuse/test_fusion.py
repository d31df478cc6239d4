"""Fusion rules on tiny synthetic cases (hand-made vocabulary; no shared data)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ctsam.config import load_config
from ctsam.errors import InputDataError, SpaceMismatchError
from ctsam.fuse.fusion import OutputVocabulary, build_vocabulary, fuse, threshold_u8
from ctsam.io.image import read_labelmap, write_labelmap
from ctsam.refine.refined_file import RefinedCase, StructureProbability, save_refined
from ctsam.volume import Geometry, LabelMap

SHAPE = (24, 28, 32)
GEOM = Geometry(SHAPE, (1.5, 1.5, 2.0), (-20.0, 10.0, 5.0))
# coarse (TotalSegmentator-like) ids
COARSE_LABELS = {1: "spleen", 2: "liver", 3: "heart", 4: "kidney_left"}


def vocab(keep_unmapped: bool = True) -> OutputVocabulary:
    return build_vocabulary(
        ["liver", "spleen", "kidney_left", "heart_myocardium"],
        {},
        ["spleen", "liver", "heart", "kidney_left"],
        keep_unmapped=keep_unmapped,
    )


def cfg(**over) -> dict:
    c = dict(load_config()["fuse"])
    c.update(over)
    return c


def coarse_map() -> LabelMap:
    a = np.zeros(SHAPE, np.uint8)
    a[4:12, 4:12, 4:12] = 2  # liver
    a[4:12, 4:12, 16:24] = 1  # spleen
    a[14:20, 16:24, 4:10] = 3  # heart (no 1:1 counterpart)
    return LabelMap(a, GEOM, dict(COARSE_LABELS))


def structure(name: str, start, probs: np.ndarray, quality: float = 0.9) -> StructureProbability:
    return StructureProbability(
        name=name, bbox_start_zyx=tuple(start), probs_u8=probs.astype(np.uint8), quality=quality
    )


def test_vocabulary_numbers_unmapped_after_structures():
    v = vocab()
    assert v.labels == {1: "liver", 2: "spleen", 3: "kidney_left", 4: "heart_myocardium", 5: "heart"}
    assert v.output_name("heart") == "heart" and v.output_index("heart") == 5
    assert vocab(keep_unmapped=False).output_name("heart") is None
    with pytest.raises(ValueError, match="missing from the output labels"):
        OutputVocabulary({1: "a"}, {"x": "b"})


def test_threshold_u8_matches_float_comparison():
    for t in (0.0, 0.3, 0.5, 0.99, 1.0):
        tu = threshold_u8(t)
        u = np.arange(256)
        assert np.array_equal(u >= tu, (u / 255.0 >= t) & (u >= 1))


def test_coarse_only_without_refined_file():
    res = fuse(coarse_map(), None, vocab(), cfg())
    out = res.labelmap.array
    c = coarse_map().array
    assert np.array_equal(out == 1, c == 2) and np.array_equal(out == 2, c == 1) and np.array_equal(out == 5, c == 3)
    assert {s.name: (s.source, s.reason) for s in res.structures} == {
        "liver": ("coarse", "no_refined_file"),
        "spleen": ("coarse", "no_refined_file"),
        "heart": ("coarse", "no_refined_file"),
    }
    assert res.labelmap.labels == vocab().labels


def test_unmapped_coarse_dropped_when_not_kept():
    res = fuse(coarse_map(), None, vocab(keep_unmapped=False), cfg())
    assert res.dropped_coarse == ["heart"]
    assert not np.any(res.labelmap.array == 5)


def test_refined_replaces_coarse_within_margin_only():
    coarse = coarse_map()
    # refined liver: shrinks on one side, grows 2 voxels (3 mm in x... 4 mm at 2 mm/voxel) on another,
    # and has a spurious blob far away (outside the 6 mm margin)
    probs = np.zeros((20, 20, 20), np.uint8)  # crop at (2, 2, 2)
    probs[3:10, 2:10, 2:12] = 230  # z 5..11, y 4..11, x 4..13 -> grows into x 12,13 (spleen gap side)
    probs[16:19, 16:19, 16:19] = 250  # far blob at z 18..20, y/x 18..20
    refined = RefinedCase(GEOM, [structure("liver", (2, 2, 2), probs)])
    res = fuse(coarse, refined, vocab(), cfg(dilation_margin_mm=6.0))
    out = res.labelmap.array
    liver = out == 1
    assert liver[5:12, 4:12, 4:14].all()
    assert not liver[4].any()  # z 4 was coarse liver but p = 0 there: shrunk (not enclosed -> not filled)
    assert not liver[18:21, 18:21, 18:21].any()  # spurious blob outside the margin is ignored
    rec = {s.name: s for s in res.structures}["liver"]
    assert rec.source == "refined" and rec.reason is None
    assert rec.final_voxels == int(liver.sum())
    # coarse spleen untouched
    assert np.array_equal(out == 2, coarse.array == 1)


def test_highest_probability_wins_and_ties_keep_lower_index():
    a = np.zeros(SHAPE, np.uint8)
    a[4:12, 4:12, 4:12] = 2
    a[4:12, 4:12, 12:20] = 1
    coarse = LabelMap(a, GEOM, dict(COARSE_LABELS))
    p_liver = np.zeros(SHAPE, np.uint8)
    p_spleen = np.zeros(SHAPE, np.uint8)
    p_liver[4:12, 4:12, 4:14] = 200
    p_spleen[4:12, 4:12, 11:20] = 180
    p_spleen[4:12, 4:12, 13] = 220  # spleen more probable at x=13
    p_spleen[4:12, 4:12, 12] = 200  # tie at x=12 -> liver (output index 1 < 2)
    refined = RefinedCase(GEOM, [structure("spleen", (0, 0, 0), p_spleen), structure("liver", (0, 0, 0), p_liver)])
    out = fuse(coarse, refined, vocab(), cfg()).labelmap.array
    assert (out[4:12, 4:12, 11] == 1).all()  # liver 200 > spleen 180
    assert (out[4:12, 4:12, 12] == 1).all()  # tie -> lower output index
    assert (out[4:12, 4:12, 13] == 2).all()  # spleen 220 > liver 200
    assert (out[4:12, 4:12, 14:20] == 2).all()


def test_refined_structure_beats_coarse_neighbour_inside_margin_unless_protected():
    coarse = coarse_map()
    probs = np.zeros(SHAPE, np.uint8)
    probs[4:12, 4:12, 4:18] = 200  # liver refined grows 6 voxels (x spacing 1.5 mm) into the gap and spleen
    refined = RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs)])
    off = dict(max_volume_ratio=3.0, protect_coarse=False)
    out = fuse(coarse, refined, vocab(), cfg(dilation_margin_mm=6.0, **off)).labelmap.array
    assert (out[4:12, 4:12, 12:16] == 1).all()  # background gap x 12..15: 1.5..6.0 mm from coarse liver
    assert (out[4:12, 4:12, 16:24] == 2).all()  # spleen from x 16 (7.5 mm away): outside the margin
    out = fuse(coarse, refined, vocab(), cfg(dilation_margin_mm=8.0, **off)).labelmap.array
    assert (out[4:12, 4:12, 16] == 1).all()  # 7.5 mm: now inside the margin, refined liver beats coarse spleen
    assert (out[4:12, 4:12, 17] == 2).all()  # 9 mm: spleen keeps it
    # default protect_coarse: the spleen was not refined, so it keeps every coarse voxel; the gap still goes to liver
    out = fuse(coarse, refined, vocab(), cfg(dilation_margin_mm=8.0, max_volume_ratio=3.0)).labelmap.array
    assert (out[4:12, 4:12, 16:24] == 2).all() and (out[4:12, 4:12, 12:16] == 1).all()
    # a rejected refinement protects its coarse mask too; an accepted one competes by probability
    p_spleen = np.zeros(SHAPE, np.uint8)
    p_spleen[4:12, 4:12, 16:24] = 150
    both = RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs), structure("spleen", (0, 0, 0), p_spleen)])
    out = fuse(coarse, both, vocab(), cfg(dilation_margin_mm=8.0, max_volume_ratio=3.0)).labelmap.array
    assert (out[4:12, 4:12, 16] == 1).all() and (out[4:12, 4:12, 17:24] == 2).all()
    low = RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs), structure("spleen", (0, 0, 0), p_spleen, 0.1)])
    out = fuse(coarse, low, vocab(), cfg(dilation_margin_mm=8.0, max_volume_ratio=3.0)).labelmap.array
    assert (out[4:12, 4:12, 16:24] == 2).all()


@pytest.mark.parametrize(
    "kwargs, probs_value, quality, reason",
    [
        ({}, 200, 0.2, "low_quality"),
        ({}, 40, 0.9, "refined_empty"),
        ({"max_volume_ratio": 1.2}, 200, 0.9, "volume_ratio"),
    ],
)
def test_rejected_refinement_keeps_coarse(kwargs, probs_value, quality, reason):
    coarse = coarse_map()
    probs = np.zeros(SHAPE, np.uint8)
    probs[3:13, 3:13, 3:13] = probs_value  # 1000 voxels vs 512 coarse: ratio 1.95
    refined = RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs, quality=quality)])
    res = fuse(coarse, refined, vocab(), cfg(**kwargs))
    rec = {s.name: s for s in res.structures}["liver"]
    assert rec.source == "coarse" and rec.reason.startswith(reason)
    assert np.array_equal(res.labelmap.array == 1, coarse.array == 2)


def test_skipped_and_not_refined_reasons():
    refined = RefinedCase(GEOM, [], skipped={"spleen": "no seed point"})
    res = fuse(coarse_map(), refined, vocab(), cfg())
    reasons = {s.name: s.reason for s in res.structures}
    assert reasons == {"liver": "not_refined", "spleen": "refine_skipped: no seed point", "heart": "not_refined"}


@pytest.mark.parametrize("mode, filled", [("enclosed", True), ("all", True), ("none", False)])
def test_enclosed_hole_filled_from_coarse(mode, filled):
    coarse = coarse_map()
    probs = np.zeros(SHAPE, np.uint8)
    probs[4:12, 4:12, 4:12] = 240
    probs[7:9, 7:9, 7:9] = 10  # hole inside the liver
    probs[4, 4:12, 4:12] = 10  # slab on the edge: not enclosed
    refined = RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs)])
    res = fuse(coarse, refined, vocab(), cfg(fill_holes=mode))
    out = res.labelmap.array
    assert (out[7:9, 7:9, 7:9] == 1).all() == filled
    assert (out[4, 4:12, 4:12] == 1).all() == (mode == "all")
    rec = {s.name: s for s in res.structures}["liver"]
    expected = {"enclosed": 8, "all": 8 + 64, "none": 0}[mode]
    assert rec.filled_from_coarse_voxels == expected


def test_refined_without_coarse_needs_permission():
    probs = np.zeros((4, 4, 4), np.uint8) + 220
    refined = RefinedCase(GEOM, [structure("kidney_left", (16, 4, 20), probs)])
    res = fuse(coarse_map(), refined, vocab(), cfg())
    assert {s.name: s.reason for s in res.structures}["kidney_left"] == "no_coarse_mask"
    assert not np.any(res.labelmap.array == 3)
    res = fuse(coarse_map(), refined, vocab(), cfg(accept_without_coarse=True))
    assert np.count_nonzero(res.labelmap.array == 3) == 64


def test_grid_mismatch_and_duplicate_structures_raise():
    other = Geometry(SHAPE, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(SpaceMismatchError, match="not on the same voxel grid"):
        fuse(coarse_map(), RefinedCase(other, []), vocab(), cfg())
    p = np.zeros((2, 2, 2), np.uint8)
    dup = RefinedCase(GEOM, [structure("liver", (0, 0, 0), p), structure("liver", (1, 1, 1), p)])
    with pytest.raises(InputDataError, match="same output structure"):
        fuse(coarse_map(), dup, vocab(), cfg())


def test_memory_streaming_touches_only_bboxes(monkeypatch):
    """Fusion never builds per-structure full-size volumes: count full-shape allocations."""
    import ctsam.fuse.fusion as fusion_mod

    allocs = []
    real_zeros = np.zeros
    coarse = coarse_map()
    probs = real_zeros((10, 10, 10), np.uint8) + 200
    refined = RefinedCase(GEOM, [structure("liver", (3, 3, 3), probs), structure("spleen", (3, 3, 15), probs)])

    def spy(shape, *a, **k):
        if tuple(np.atleast_1d(shape)) == SHAPE:
            allocs.append(shape)
        return real_zeros(shape, *a, **k)

    monkeypatch.setattr(fusion_mod.np, "zeros", spy)
    fuse(coarse, refined, vocab(), cfg())
    assert len(allocs) == 2  # the output label volume and the best-probability volume


def test_cli_fuse_writes_labels_sidecar_deterministically(tmp_path):
    pytest.importorskip("ctsam.labels", reason="ctsam.labels (the class catalogue) is not on this branch yet")
    from ctsam.cli import main

    a = np.zeros(SHAPE, np.uint8)
    a[4:12, 4:12, 4:12] = 5  # TotalSegmentator total id 5 = liver
    a[14:20, 16:24, 4:10] = 51  # heart
    coarse = tmp_path / "coarse.nii.gz"
    write_labelmap(coarse, LabelMap(a, GEOM, {5: "liver", 51: "heart"}))
    probs = np.zeros(SHAPE, np.uint8)
    probs[4:12, 4:12, 4:13] = 220
    refined = tmp_path / "refined.npz"
    save_refined(refined, RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs)]))
    digests = []
    for n in (1, 2):
        out, side = tmp_path / f"labels{n}.nii.gz", tmp_path / f"fuse{n}.json"
        assert main(["fuse", str(coarse), str(refined), "-o", str(out), "--sidecar", str(side)]) == 0
        digests.append((hashlib.sha256(out.read_bytes()).hexdigest(), json.loads(side.read_text())))
    assert digests[0][0] == digests[1][0]
    assert digests[0][1] == digests[1][1]
    fused = read_labelmap(tmp_path / "labels1.nii.gz")
    liver_idx = [i for i, n in fused.labels.items() if n == "liver"][0]
    assert liver_idx == 5 and len(fused.labels) == 127
    assert np.count_nonzero(fused.array == liver_idx) == 8 * 8 * 9
    heart_idx = [i for i, n in fused.labels.items() if n == "heart"][0]
    assert heart_idx > 107
    assert np.count_nonzero(fused.array == heart_idx) == np.count_nonzero(a == 51)
    side = digests[0][1]
    by = {s["name"]: s for s in side["structures"]}
    assert by["liver"]["source"] == "refined" and by["heart"]["reason"] == "not_refined"
    # without a refined file
    out = tmp_path / "coarse_only.nii.gz"
    assert main(["fuse", str(coarse), "-o", str(out)]) == 0
    assert np.count_nonzero(read_labelmap(out).array == liver_idx) == 8 * 8 * 8


def test_margin_rule_equals_distance_transform_definition(rng):
    """Refined voxels kept = p >= t within margin_mm (EDT with spacing) of the coarse mask."""
    from scipy import ndimage

    a = np.zeros(SHAPE, np.uint8)
    z, y, x = np.indices(SHAPE)
    a[((z - 12) / 6.0) ** 2 + ((y - 14) / 7.0) ** 2 + ((x - 16) / 8.0) ** 2 <= 1] = 2
    coarse = LabelMap(a, GEOM, dict(COARSE_LABELS))
    probs = np.where(rng.random(SHAPE) < 0.35, 230, 0).astype(np.uint8)
    probs[a == 2] = 240  # keep the volume ratio plausible
    refined = RefinedCase(GEOM, [structure("liver", (0, 0, 0), probs)])
    out = fuse(
        coarse, refined, vocab(), cfg(dilation_margin_mm=4.0, max_volume_ratio=100.0, fill_holes="none")
    ).labelmap.array
    dist = ndimage.distance_transform_edt(a != 2, sampling=GEOM.spacing_xyz_mm[::-1])
    assert np.array_equal(out == 1, (probs >= 128) & (dist <= 4.0))
