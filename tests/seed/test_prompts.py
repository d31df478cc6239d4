import json

import pytest

from ctsam.errors import InputDataError
from ctsam.seed.prompts import (
    CORRECTION_COMPONENT,
    CasePrompts,
    Click,
    PromptSet,
    StructureInfo,
    merge_corrections,
    read_corrections,
    read_prompts,
    write_corrections,
    write_prompts,
)
from ctsam.volume import Geometry


def case_prompts() -> CasePrompts:
    g = Geometry(shape_zyx=(4, 5, 6), spacing_xyz_mm=(1, 1, 2), origin_xyz_mm=(0, 0, 0))
    ps = PromptSet(
        "liver",
        0,
        0,
        (Click((1, 2, 3), True, "interior"), Click((4.5, 5, 6), False, "neighbour:spleen")),
        center_xyz_mm=(1.5, 2.5, 3.5),
    )
    info = StructureInfo("liver", 5, 12.3456789, 1, (0, 0, 0), (5, 6, 7))
    return CasePrompts(
        ct_geometry=g,
        prompt_sets=[ps],
        structures={"liver": info},
        skipped={"spleen": "empty coarse mask"},
        settings={"seed": {"tile_size_mm": 84.0}},
    )


def test_prompts_roundtrip_and_deterministic(tmp_path):
    write_prompts(tmp_path / "a.json", case_prompts())
    write_prompts(tmp_path / "b.json", case_prompts())
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    back = read_prompts(tmp_path / "a.json")
    assert back.prompt_sets == case_prompts().prompt_sets
    assert back.structures["liver"].volume_ml == pytest.approx(12.3457)
    assert back.skipped == {"spleen": "empty coarse mask"}
    assert back.ct_geometry.same_space(case_prompts().ct_geometry)
    assert back.prompt_sets[0].positives[0].world_xyz_mm == (1.0, 2.0, 3.0)


def test_prompt_set_centre_defaults_to_first_positive():
    ps = PromptSet("x", 0, 0, (Click((9, 9, 9), False), Click((1, 2, 3), True)))
    assert ps.center_xyz_mm == (1.0, 2.0, 3.0)


def test_click_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="3 finite numbers"):
        Click((1, 2, float("nan")), True)
    with pytest.raises(ValueError, match="3"):
        Click((1, 2), True)


def test_read_prompts_errors(tmp_path):
    with pytest.raises(InputDataError, match="prompts file not found"):
        read_prompts(tmp_path / "missing.json", case="c1")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InputDataError, match="not valid JSON"):
        read_prompts(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something", "format_version": 1}))
    with pytest.raises(InputDataError, match="unknown format"):
        read_prompts(tmp_path / "other.json")


def test_corrections_roundtrip_and_merge(tmp_path):
    clicks = {
        "liver": [Click((7, 7, 7), True), Click((8, 8, 8), False)],
        "spleen": [Click((1, 1, 1), True)],
        "kidney_left": [Click((2, 2, 2), False)],
    }
    write_corrections(tmp_path / "c.json", clicks)
    back = read_corrections(tmp_path / "c.json")
    assert [c.world_xyz_mm for c in back["liver"]] == [(7.0, 7.0, 7.0), (8.0, 8.0, 8.0)]
    assert all(c.source == "correction" for c in back["liver"])
    merged = merge_corrections(case_prompts(), back)
    # the original is unchanged
    assert len(case_prompts().prompt_sets) == 1
    corr = [p for p in merged.prompt_sets if p.component == CORRECTION_COMPONENT]
    assert [p.structure for p in corr] == ["liver", "spleen"]
    assert [c.positive for c in corr[0].clicks] == [True, False]
    # the skipped spleen got a positive click: now active; negative-only kidney_left is ignored
    assert "spleen" not in merged.skipped
    assert merged.settings["corrections"]["ignored_negative_only"] == ["kidney_left"]
    assert merged.structure_names() == ["liver", "spleen"]


def test_corrections_errors(tmp_path):
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "format": "ctsam-corrections",
                "format_version": 1,
                "clicks": {"liver": [{"xyz_mm": [1, 2], "positive": True}]},
            }
        )
    )
    with pytest.raises(InputDataError, match="malformed"):
        read_corrections(tmp_path / "c.json", case="c7")
    (tmp_path / "d.json").write_text(json.dumps({"clicks": []}))
    with pytest.raises(InputDataError, match="no 'clicks' mapping"):
        read_corrections(tmp_path / "d.json")
