import json

import numpy as np
import pytest

from ctsam.seed.prompts import read_prompts
from ctsam.seed.seeding import SeedSettings, interior_point, seed_case, subsample_labelmap, tile_edges
from ctsam.volume import Geometry, LabelMap


def geometry(shape=(40, 40, 60), spacing=(2.0, 2.0, 2.0)):
    return Geometry(
        shape_zyx=shape,
        spacing_xyz_mm=spacing,
        origin_xyz_mm=(-10.0, 5.0, 0.0),
        direction=((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    )


def test_interior_point_is_the_deepest_voxel_in_mm():
    z, y, x = np.mgrid[:20, :20, :30]
    ball = (z - 6) ** 2 + (y - 9) ** 2 + (x - 11) ** 2 <= 25
    ball |= (z - 12) ** 2 + (y - 10) ** 2 + (x - 22) ** 2 <= 9  # a smaller second blob
    assert interior_point(ball, (1.0, 1.0, 1.0)) == (6, 9, 11)
    # spacing in mm: 5 slices of 3 mm are thicker than 7 voxels of 1 mm
    slab = np.zeros((10, 30, 30), bool)
    slab[2:7, 4:24, 4:11] = True  # 15 mm x 20 mm x 7 mm: deepest voxel is mid-x (x = 7)
    pz, py, px = interior_point(slab, (3.0, 1.0, 1.0))
    assert px == 7 and 3 <= pz <= 5 and 7 <= py <= 20  # x (7 mm) is the thinnest side in mm
    # the array border counts as outside
    m3 = np.ones((5, 5, 5), bool)
    assert interior_point(m3, (1, 1, 1)) == (2, 2, 2)
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((3, 3, 3), bool), (1, 1, 1))


def test_tile_edges():
    assert tile_edges(40, 2.0, 84.0) == [(0, 40)]
    assert tile_edges(50, 2.0, 84.0) == [(0, 25), (25, 50)]
    e = tile_edges(100, 3.0, 84.0)
    assert len(e) == 4 and e[0][0] == 0 and e[-1][1] == 100 and all(b - a <= 28 for a, b in e)


def synthetic_labels():
    g = geometry()
    a = np.zeros(g.shape_zyx, np.uint8)
    a[10:30, 10:30, 2:58] = 1  # "colon": 40 x 40 x 112 mm -> two tiles along x
    a[10:30, 31:36, 20:30] = 2  # "kidney" right beside it (2 mm gap)
    a[2:4, 2:4, 2:4] = 3  # "speck": 8 voxels * 0.008 ml = 0.064 ml
    return LabelMap(array=a, geometry=g, labels={1: "colon", 2: "kidney", 3: "speck", 4: "empty_one"})


def test_seed_case_tiles_negatives_and_skips():
    lm = synthetic_labels()
    p = seed_case(lm, SeedSettings(min_component_ml=0.5, tile_size_mm=84.0, tile_min_ml=0.5, negative_margin_mm=6.0))
    assert p.skipped["empty_one"] == "empty coarse mask"
    assert "below seed.min_component_ml" in p.skipped["speck"]
    colon = p.for_structure("colon")
    assert [s.tile for s in colon] == [0, 1] and all(s.component == 0 for s in colon)
    g = lm.geometry
    for s in colon:
        pos = s.positives
        assert len(pos) == 1
        idx = np.rint(g.world_to_index(pos[0].world_xyz_mm)).astype(int)  # (x, y, z)
        assert lm.array[idx[2], idx[1], idx[0]] == 1  # positive click inside the structure
        assert 14 <= idx[2] <= 25 and 14 <= idx[1] <= 25  # interior, not at the border
    # each tile's click lies inside its own half along x
    xs = sorted(int(np.rint(g.world_to_index(s.positives[0].world_xyz_mm))[0]) for s in colon)
    assert xs[0] < 30 <= xs[1]
    # kidney sits within 6 mm of the first tile only (x 20..29): negative click on the kidney there
    neg_sources = [[c.source for c in s.negatives] for s in colon]
    assert "neighbour:kidney" in neg_sources[0] + neg_sources[1]
    for s in colon:
        for c in s.negatives:
            idx = np.rint(g.world_to_index(c.world_xyz_mm)).astype(int)
            assert lm.array[idx[2], idx[1], idx[0]] == 2
    kidney = p.for_structure("kidney")
    assert len(kidney) == 1 and kidney[0].negatives[0].source == "neighbour:colon"
    assert p.structures["colon"].volume_ml == pytest.approx(20 * 20 * 56 * 0.008)
    # the centre of a single-tile component is its bounding-box centre
    c = np.asarray(g.world_to_index(kidney[0].center_xyz_mm))
    assert c == pytest.approx([24.5, 33.0, 19.5])


def test_seed_include_exclude_and_determinism(tmp_path):
    lm = synthetic_labels()
    p = seed_case(lm, SeedSettings(include=("kidney", "liver"), exclude=("kidney",)))
    assert p.prompt_sets == []
    assert set(p.skipped) == set(lm.labels.values())
    assert all(r.startswith("not refined: keeps its coarse mask") for r in p.skipped.values())
    from ctsam.seed.prompts import write_prompts

    write_prompts(tmp_path / "a.json", seed_case(lm))
    write_prompts(tmp_path / "b.json", seed_case(lm))
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["format"] == "ctsam-prompts"


def test_subsample_keeps_world_coordinates():
    g = geometry(shape=(8, 8, 8), spacing=(0.5, 0.5, 2.0))
    a = np.zeros(g.shape_zyx, np.uint8)
    a[:, 4:, 4:] = 1
    sub = subsample_labelmap(LabelMap(array=a, geometry=g, labels={1: "x"}), 1.5)
    assert sub.array.shape == (8, 3, 3) and sub.geometry.spacing_xyz_mm == (1.5, 1.5, 2.0)
    assert np.allclose(sub.geometry.index_to_world([1, 1, 0]), g.index_to_world([3, 3, 0]))


def test_seed_cli(tmp_path):
    from ctsam.cli import main
    from ctsam.io.image import write_ct, write_labelmap
    from ctsam.volume import CTVolume

    lm = synthetic_labels()
    lm = LabelMap(lm.array, lm.geometry, {1: "colon", 2: "kidney_left", 3: "spleen", 4: "liver"})
    write_labelmap(tmp_path / "seg.nii.gz", lm)
    write_ct(tmp_path / "ct.nii.gz", CTVolume(np.zeros(lm.geometry.shape_zyx, np.int16), lm.geometry))
    assert (
        main(["seed", str(tmp_path / "ct.nii.gz"), str(tmp_path / "seg.nii.gz"), "-o", str(tmp_path / "p.json")]) == 0
    )
    p = read_prompts(tmp_path / "p.json")
    assert p.structure_names() == ["colon", "kidney_left"]
    assert p.skipped["liver"] == "empty coarse mask"
    assert p.skipped["spleen"].startswith("all 1 component(s) below seed.min_component_ml")
    other = Geometry(shape_zyx=(40, 40, 61), spacing_xyz_mm=(2, 2, 2), origin_xyz_mm=(0, 0, 0))
    write_ct(tmp_path / "ct2.nii.gz", CTVolume(np.zeros(other.shape_zyx, np.int16), other))
    assert (
        main(["seed", str(tmp_path / "ct2.nii.gz"), str(tmp_path / "seg.nii.gz"), "-o", str(tmp_path / "q.json")]) == 2
    )


def test_from_config_seeds_only_refined_structures():
    from ctsam.config import validate_config

    g = geometry()
    a = np.zeros(g.shape_zyx, np.uint8)
    a[10:30, 10:30, 2:20] = 1
    a[10:30, 10:30, 30:50] = 2
    a[2:8, 2:8, 2:8] = 3
    lm = LabelMap(array=a, geometry=g, labels={1: "liver", 2: "heart", 3: "spleen"})
    config = validate_config({"structures": {"refine_exclude": ["spleen"]}})
    p = seed_case(lm, SeedSettings.from_config(config))
    assert p.structures.keys() == {"liver"}  # heart keeps coarse by default, spleen excluded
    assert p.skipped["heart"].startswith("not refined") and p.skipped["spleen"].startswith("not refined")
