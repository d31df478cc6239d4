"""The class catalogue: TotalSegmentator 'total', the 107 CT-SAM3D structures and their mapping."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ctsam import labels as L
from ctsam.errors import ConfigError


def test_counts_and_kinds():
    assert len(L.ts_total_classes()) == 117
    structures = L.ctsam107_structures()
    assert len(structures) == 107
    kinds = [s.mapping_kind for s in structures]
    assert kinds.count("one_to_one") == 97
    assert kinds.count("many_to_one") == 5
    assert kinds.count("licensed_only") == 5
    relations = [c.ctsam107_relation for c in L.ts_total_classes()]
    assert relations.count("one_to_one") == 97
    assert relations.count("many_to_one_target") == 1
    assert relations.count("none") == 19  # ctsam3d.md says 20: it counts 'heart' too


def test_every_entry_has_provenance_and_consistent_mapping():
    for c in L.ts_total_classes():
        assert c.provenance
    for s in L.ctsam107_structures():
        assert s.index_provenance and s.mapping_provenance
        if s.mapping_kind == "one_to_one":
            assert L.ts_total_name(s.ts_total_id) == s.name
            assert s.coarse_id == s.ts_total_id
            assert L.ts_total_classes()[s.ts_total_id - 1].ctsam107_relation == "one_to_one"
        elif s.mapping_kind == "many_to_one":
            assert L.ts_total_name(s.ts_total_id) == "heart"
            assert s.licensed_task == "heartchambers_highres"
            assert s.coarse_id > 117
        else:
            assert s.ts_total_id is None and s.licensed_task and s.coarse_id > 117
    # ids 105-107 are flagged as presumed/unknown
    assert all("presumed" in s.index_provenance for s in L.ctsam107_structures())
    assert "unknown" in L.structure("visceral_fat").index_provenance


def test_ts_only_classes_are_the_documented_ones():
    none = {c.name for c in L.ts_total_classes() if c.ctsam107_relation == "none"}
    assert {"thyroid_gland", "prostate", "vertebrae_S1", "spinal_cord", "skull", "sternum", "costal_cartilages"} <= none
    assert "heart" not in none and "liver" not in none


def test_matches_installed_totalsegmentator():
    binary = pytest.importorskip("totalsegmentator.map_to_binary", reason="TotalSegmentator not installed")
    assert L.ts_total_labels() == binary.class_map["total"]
    v1 = binary.class_map["total_v1"]
    assert {s.index: s.name for s in L.ctsam107_structures() if s.index <= 104} == v1
    parts = {}
    for task_id, part in binary.map_taskid_to_partname_ct.items():
        for name in binary.class_map_5_parts.get(part, {}).values():
            parts[name] = task_id
    assert all(parts[c.name] == c.part_task_id for c in L.ts_total_classes())
    for s in L.ctsam107_structures():
        if s.licensed_task:
            assert s.licensed_class in binary.class_map[s.licensed_task].values()


def test_lookups():
    assert L.ts_total_id("kidney_left") == 3
    assert L.ts_total_name(117) == "costal_cartilages"
    assert L.ctsam107_index("aorta") == 7
    assert L.ctsam107_index("urinary_bladder") == 104
    assert L.coarse_id("heart_myocardium") == 118
    cat = L.coarse_catalogue()
    assert len(cat) == 127 and list(cat) == list(range(1, 128))
    with pytest.raises(KeyError):
        L.ts_total_id("heart_myocardium")
    with pytest.raises(KeyError):
        L.ctsam107_index("thyroid_gland")


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("kidney_left", "left"),
        ("rib_right_12", "right"),
        ("lung_upper_lobe_left", "left"),
        ("liver", None),
        ("sternum", None),
    ],
)
def test_laterality(name, side):
    assert L.laterality(name) == side


def test_contralateral():
    assert L.contralateral("rib_left_3") == "rib_right_3"
    assert L.contralateral("gluteus_medius_right") == "gluteus_medius_left"
    assert L.contralateral("lung_middle_lobe_right") is None  # no left middle lobe
    assert L.contralateral("liver") is None


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("liver", "liver"),
        ("Liver", "liver"),
        ("Left Kidney", "kidney_left"),
        ("kidney-left", "kidney_left"),
        ("Vertebrae L5", "vertebrae_L5"),
        ("heart_myocardium", "heart_myocardium"),  # TS v1 name
        ("myocardium", "heart_myocardium"),  # short name
        ("torso_fat", "visceral_fat"),
        ("bladder", "urinary_bladder"),
        ("clavicle_left", "clavicula_left"),
    ],
)
def test_match_name(raw, name):
    assert L.match_name(raw).name == name


def test_unknown_name():
    m = L.match_name("tumour")
    assert not m.known and m.how == "unknown"


def test_refined_by_default_and_config():
    default = L.refined_structures()
    assert len(default) == 97
    assert L.is_refined_by_default("liver")
    assert not L.is_refined_by_default("heart")
    assert not L.is_refined_by_default("thyroid_gland")
    assert not L.is_refined_by_default("heart_myocardium")
    cfg = {"structures": {"refine_include": ["heart_myocardium"], "refine_exclude": ["liver"]}}
    chosen = L.refined_structures(cfg)
    assert "heart_myocardium" in chosen and "liver" not in chosen and len(chosen) == 97
    assert L.keeps_coarse("liver", cfg) and not L.keeps_coarse("spleen", cfg)


def test_refine_config_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown structure name"):
        L.refined_structures({"structures": {"refine_exclude": ["livr"]}})


def test_structures_config_section_defaults():
    from ctsam.config import load_config

    cfg = load_config()
    assert cfg["structures"] == {"refine_include": [], "refine_exclude": []}
    assert L.refined_structures(cfg) == L.refined_structures()


def test_labels_module_imports_nothing_heavy():
    code = "import sys, ctsam.labels as L; L.coarse_catalogue(); print(sorted({'torch','numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
