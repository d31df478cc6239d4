"""Lesions planted in the demo phantoms: inside their organ, varied, deterministic, written with the cohort."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ctsam.demo.cohort import write_cohort
from ctsam.demo.lesions import DIAMETER_RANGE_MM, LESION_COLUMNS, lesion_rng
from ctsam.demo.phantom import draw_spec, make_phantom
from ctsam.demo.structures import ORGANS
from ctsam.io.image import read_labelmap


def _phantom(seed: int, k: int, lesions: bool = True):
    rng = np.random.default_rng([seed, k])
    return make_phantom(draw_spec(rng), rng, lesion_rng=lesion_rng(seed, k) if lesions else None)


@pytest.fixture(scope="module")
def pair():
    return _phantom(0, 2), _phantom(0, 2, lesions=False)


def test_lesions_lie_inside_their_organ_and_the_click_inside_the_lesion(pair):
    ph, _ = pair
    assert ph.lesions and {les.label for les in ph.lesions} <= {"liver_tumor", "kidney_tumor"}
    for les in ph.lesions:
        mask = ph.lesion_truth.array == les.lesion_id
        assert mask.sum() == les.voxels > 0
        assert (ph.truth.array[mask] == ORGANS[les.organ]).all(), les
        assert ph.lesion_truth.array[les.click_zyx] == les.lesion_id
        world = ph.ct.geometry.index_to_world(np.array(les.click_zyx[::-1], dtype=float))
        np.testing.assert_allclose(world, les.click_xyz_mm)
        assert DIAMETER_RANGE_MM[0] <= les.diameter_mm <= DIAMETER_RANGE_MM[1]


def test_lesion_contrast_shows_in_the_ct(pair):
    ph, plain = pair
    for les in ph.lesions:
        mask = ph.lesion_truth.array == les.lesion_id
        from scipy import ndimage

        core = ndimage.binary_erosion(mask) if ndimage.binary_erosion(mask).sum() >= 5 else mask
        shift = float(ph.ct.array[core].mean()) - float(plain.ct.array[core].mean())
        assert np.sign(shift) == np.sign(les.delta_hu)
        assert abs(shift) > 0.4 * abs(les.delta_hu)


def test_lesions_change_nothing_but_ct_near_the_lesions(pair):
    from scipy import ndimage

    ph, plain = pair
    np.testing.assert_array_equal(ph.truth.array, plain.truth.array)
    np.testing.assert_array_equal(ph.coarse.array, plain.coarse.array)
    near = ndimage.binary_dilation(ph.lesion_truth.array > 0, iterations=3)
    changed = ph.ct.array != plain.ct.array
    assert changed.any() and not (changed & ~near).any()


def test_lesions_vary_across_the_cohort_and_are_deterministic():
    lesions = [les for k in (1, 2, 3, 4) for les in _phantom(0, k).lesions]
    labels = {les.label for les in lesions}
    assert labels == {"liver_tumor", "kidney_tumor"}
    assert {les.contrast for les in lesions} == {"hypodense", "hyperdense"}
    sizes = [les.diameter_mm for les in lesions]
    assert max(sizes) > 2 * min(sizes)
    again = _phantom(0, 3)
    assert [les.to_dict() for les in again.lesions] == [les.to_dict() for les in _phantom(0, 3).lesions]


def test_cohort_writes_lesion_truth_and_click_table(tmp_path):
    write_cohort(tmp_path, n_cases=2, seed=5, only=["demo-002"])
    case = tmp_path / "demo-002"
    truth = read_labelmap(case / "lesions_truth.nii.gz")
    anatomy = read_labelmap(case / "truth.nii.gz")
    assert truth.geometry.same_space(anatomy.geometry)
    with open(case / "lesions.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert tuple(rows[0].keys()) == LESION_COLUMNS
    assert sorted(int(r["lesion_id"]) for r in rows) == truth.present_labels()
    for r in rows:
        ijk = np.rint(truth.geometry.world_to_index(np.array([float(r["x"]), float(r["y"]), float(r["z"])])))
        x, y, z = (int(v) for v in ijk)
        assert truth.array[z, y, x] == int(r["lesion_id"])
        assert truth.labels[int(r["lesion_id"])] == r["label"]
        host = anatomy.array[z, y, x]
        assert anatomy.labels[int(host)] in ("liver", "kidney_left", "kidney_right")
    meta = json.loads((case / "phantom.json").read_text())
    assert [m["lesion_id"] for m in meta["lesions"]] == [int(r["lesion_id"]) for r in rows]
