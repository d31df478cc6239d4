"""Planted defects of the demo cohort: each kind spoils what it says, and records the truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.demo.defects import DEFECTS, defect_case_ids, defect_of, plant
from ctsam.demo.structures import ORGANS


@pytest.fixture(scope="module")
def phantom():
    from ctsam.demo.phantom import draw_spec, make_phantom

    rng = np.random.default_rng([0, 101])
    return make_phantom(draw_spec(rng), rng)


@pytest.mark.parametrize("kind", DEFECTS)
def test_each_defect_spoils_what_it_says(phantom, kind):
    spoiled, truth = plant(kind, phantom)
    assert truth["kind"] == kind and truth["structures"] and truth["expected_flags"]
    c0, c1 = phantom.coarse.array, spoiled.coarse.array
    kl, kr, spleen = ORGANS["kidney_left"], ORGANS["kidney_right"], ORGANS["spleen"]
    if kind == "missing_organ":
        assert (c0 == kl).any() and not (c1 == kl).any()
    elif kind == "swapped_side":
        assert np.array_equal(c1 == kl, c0 == kr) and np.array_equal(c1 == kr, c0 == kl)
    elif kind == "truncated_fov":
        n = spoiled.ct.geometry.shape_zyx[0]
        assert n < phantom.ct.geometry.shape_zyx[0] and c1.shape[0] == n == spoiled.truth.array.shape[0]
        assert "liver" in truth["structures"] and (c1[-1] == ORGANS["liver"]).sum() >= 20
        assert "esophagus" not in truth["structures"]  # a tube: through any scan's end
    else:
        assert (c1 == spleen).sum() >= 2.5 * (c0 == spleen).sum()
        assert np.array_equal(c1[c0 == spleen], c0[c0 == spleen])  # grown, not moved
    assert np.array_equal(spoiled.truth.array, phantom.truth.array) or kind == "truncated_fov"


def test_defect_cases_in_the_cohort(tmp_path):
    from ctsam.demo.cohort import cohort_case_ids, write_case

    assert cohort_case_ids(2, defects=True) == ["demo-001", "demo-002", *defect_case_ids()]
    assert defect_of("demo-swapped-side") == "swapped_side" and defect_of("demo-001") is None
    paths = write_case(tmp_path, "demo-missing-organ", n_cases=2, seed=0, corrupt_case=False)
    meta = json.loads(paths.meta.read_text())
    assert meta["defect"]["structures"] == ["kidney_left"] and "kidney_left removed" in meta["coarse_errors"][-1]
