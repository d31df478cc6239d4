"""CLICKS.tsv parsing and validation, clicks inside the CT, seed label maps -> clicks."""

from __future__ import annotations

import numpy as np
import pytest

from ctsam.errors import InputDataError
from ctsam.lesions.clicks import check_clicks_inside, click_index_zyx, clicks_from_seeds, read_clicks
from ctsam.volume import Geometry, LabelMap

GEOM = Geometry(shape_zyx=(20, 30, 40), spacing_xyz_mm=(1.0, 1.5, 2.0), origin_xyz_mm=(-10.0, 5.0, 100.0))


def write(tmp_path, text: str):
    p = tmp_path / "clicks.tsv"
    p.write_text(text)
    return p


def test_reads_rows_in_order_with_optional_label(tmp_path):
    p = write(tmp_path, "# comment\nlesion_id\tx\ty\tz\tlabel\n3\t1.5\t2\t-3\tliver_tumor\n\n1\t0\t0\t0\t\n")
    clicks = read_clicks(p)
    assert [c.lesion_id for c in clicks] == [3, 1]
    assert clicks[0].world_xyz_mm == (1.5, 2.0, -3.0)
    assert clicks[0].label == "liver_tumor" and clicks[1].label is None
    assert clicks[0].source == "row 3" and clicks[1].source == "row 5"  # rows are lines of the file


def test_label_column_is_optional(tmp_path):
    clicks = read_clicks(write(tmp_path, "lesion_id\tx\ty\tz\n7\t1\t2\t3\n"))
    assert clicks[0].lesion_id == 7 and clicks[0].label is None


@pytest.mark.parametrize(
    "text, message, where",
    [
        ("", "empty", None),
        ("lesion_id\tx\ty\tz\n", "empty", None),
        ("id\tx\ty\tz\n1\t0\t0\t0\n", "lacks required columns", "row 1"),
        ("lesion_id\tx\ty\tz\n1\t0\t0\t0\n2\t1\t1\t1\n1\t2\t2\t2\n", "duplicate lesion_id", "row 4"),
        ("lesion_id\tx\ty\tz\none\t0\t0\t0\n", "not an integer", "row 2"),
        ("lesion_id\tx\ty\tz\n0\t0\t0\t0\n", "out of range", "row 2"),
        ("lesion_id\tx\ty\tz\n70000\t0\t0\t0\n", "out of range", "row 2"),
        ("lesion_id\tx\ty\tz\n1\t0\tnan\t0\n", "coordinate y", "row 2"),
        ("lesion_id\tx\ty\tz\n1\t0\t0\t\n", "coordinate z", "row 2"),
    ],
)
def test_bad_tables_name_the_row(tmp_path, text, message, where):
    with pytest.raises(InputDataError) as err:
        read_clicks(write(tmp_path, text), case="c1")
    assert message in str(err.value)
    assert "case c1" in str(err.value)
    if where:
        assert where in str(err.value)
    assert err.value.exit_code == 2


def test_missing_table(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        read_clicks(tmp_path / "nope.tsv")


def test_clicks_outside_the_ct_are_refused_naming_the_row(tmp_path):
    lo, hi = GEOM.world_bounds_mm()
    inside = (lo + hi) / 2
    text = (
        "lesion_id\tx\ty\tz\n"
        + f"1\t{inside[0]}\t{inside[1]}\t{inside[2]}\n"
        + f"2\t{hi[0] + 5}\t{inside[1]}\t{inside[2]}\n"
    )
    clicks = read_clicks(write(tmp_path, text))
    check_clicks_inside(clicks[:1], GEOM)
    with pytest.raises(InputDataError, match="outside the CT") as err:
        check_clicks_inside(clicks, GEOM, path="clicks.tsv")
    assert "row 3" in str(err.value) and "lesion_id 2" in str(err.value)
    # half a voxel beyond the last centre is still the last voxel; a bit more is outside
    edge = read_clicks(write(tmp_path, f"lesion_id\tx\ty\tz\n1\t{hi[0] + 0.49}\t{inside[1]}\t{inside[2]}\n"))
    check_clicks_inside(edge, GEOM)
    edge = read_clicks(write(tmp_path, f"lesion_id\tx\ty\tz\n1\t{hi[0] + 0.51}\t{inside[1]}\t{inside[2]}\n"))
    with pytest.raises(InputDataError):
        check_clicks_inside(edge, GEOM)


def test_seed_components_become_interior_clicks():
    arr = np.zeros(GEOM.shape_zyx, np.uint8)
    arr[2:9, 3:12, 4:20] = 1  # a box: its most interior voxel is its centre (depth along x/y/z in mm)
    arr[12:15, 20:23, 29:34] = 1  # a second component of the same label (centre unique in mm)
    arr[15:18, 2:5, 1:6] = 4  # another label, named
    seeds = LabelMap(arr, GEOM, {1: "label_1", 4: "kidney_tumor"})
    clicks = clicks_from_seeds(seeds)
    assert [c.lesion_id for c in clicks] == [1, 2, 3]
    assert [c.label for c in clicks] == [None, None, "kidney_tumor"]
    for click in clicks:
        idx = np.round(click_index_zyx(GEOM, click)).astype(int)
        assert arr[tuple(idx)] != 0
    np.testing.assert_allclose(click_index_zyx(GEOM, clicks[1]), [13, 21, 31], atol=1e-9)
    np.testing.assert_allclose(click_index_zyx(GEOM, clicks[2]), [16, 3, 3], atol=1e-9)
    # a C-shaped mark: the click is inside the mark, not at its (empty) centre of mass
    arr = np.zeros(GEOM.shape_zyx, np.uint8)
    arr[5:15, 5:25, 5:10] = 2
    arr[5:15, 5:10, 5:30] = 2
    arr[5:15, 20:25, 5:30] = 2
    (c,) = clicks_from_seeds(LabelMap(arr, GEOM, {}))
    assert arr[tuple(np.round(click_index_zyx(GEOM, c)).astype(int))] == 2


def test_empty_seed_map_is_an_error():
    with pytest.raises(InputDataError, match="empty"):
        clicks_from_seeds(LabelMap(np.zeros(GEOM.shape_zyx, np.uint8), GEOM, {}), case="c1")
