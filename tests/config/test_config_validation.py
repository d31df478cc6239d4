"""The config is validated as a whole: unknown keys (with the closest valid one), types, bounds;
defaults live in the schema only; ``ctsam`` reads ./config.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctsam.config import cross_field_problems, fill_defaults, load_schema, unknown_keys, validate_config
from ctsam.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _error(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, source="test.yaml")
    return str(info.value)


def test_unknown_top_level_section_names_the_closest():
    text = _error({"refien": {"rounds": 2}})
    assert "'refien'" in text and "did you mean 'refine'?" in text
    assert len(text.splitlines()) <= 4


def test_unknown_nested_key_names_the_closest_in_a_few_lines():
    text = _error({"refine": {"rouns": 2}})
    assert "'refine.rouns'" in text and "did you mean 'refine.rounds'?" in text
    assert len(text.splitlines()) <= 4  # not the schema


def test_unknown_key_without_a_close_match_lists_the_valid_ones():
    text = _error({"convert": {"zzz": 1}})
    assert "'convert.zzz'" in text and "valid keys in convert:" in text and "min_slices" in text


def test_every_unknown_key_is_listed():
    text = _error({"seed": {"tile_sise_mm": 80}, "qc": {"min_dise": 0.5}})
    assert "did you mean 'seed.tile_size_mm'?" in text and "did you mean 'qc.min_dice'?" in text


def test_moved_key_points_to_its_one_replacement():
    text = _error({"workflow": {"coarse_backend": "labels"}})
    assert "this key moved: use 'coarse.backend'" in text


def test_unknown_key_inside_a_list_of_mappings():
    text = _error({"qc": {"hu_groups": [{"name": "x", "structures": ["a"], "mean_hu": [0, 1], "mean": 3}]}})
    assert "qc.hu_groups[0].mean" in text


def test_free_form_mappings_are_not_checked_for_keys():
    assert validate_config({"qc": {"nsd_tolerance_mm_by_structure": {"liver": 3.0}}})


def test_type_error_is_short_and_names_the_key():
    text = _error({"refine": {"rounds": "three"}})
    assert "'refine.rounds'" in text and "not of type 'integer'" in text
    assert len(text.splitlines()) <= 5


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (
            {"fuse": {"min_volume_ratio": 3.0}},
            "'fuse.min_volume_ratio' (3.0) is larger than 'fuse.max_volume_ratio' (2.0)",
        ),
        ({"qc": {"volume_ratio_bounds": [2.0, 0.5]}}, "'qc.volume_ratio_bounds[0]' (2.0) is larger than"),
        ({"train": {"scale_min": 1.2, "scale_max": 1.1}}, "'train.scale_min' (1.2) is larger than 'train.scale_max'"),
        (
            {"qc": {"hu_groups": [{"name": "x", "structures": ["*"], "mean_hu": [400, -150]}]}},
            "'qc.hu_groups[0].mean_hu[0]' (400) is larger than",
        ),
    ],
)
def test_inverted_bounds_are_refused(cfg, expected):
    text = _error(cfg)
    assert "inconsistent bounds" in text and expected in text


def test_defaults_have_consistent_bounds():
    assert cross_field_problems(validate_config({})) == []


def test_config_yaml_values_are_the_schema_defaults():
    """config.yaml documents every key with the schema's default: no second place for defaults."""
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert unknown_keys(shipped, load_schema()) == []
    defaults = fill_defaults({}, load_schema())

    def walk(node, ref, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, ref[key], f"{prefix}{key}.")
            else:
                assert value == ref[key], f"config.yaml {prefix}{key} = {value!r}, schema default {ref[key]!r}"

    walk(shipped, defaults, "")


def test_one_coarse_backend_key_with_auto_default():
    schema = load_schema()
    assert "coarse_backend" not in schema["properties"]["workflow"]["properties"]
    assert validate_config({})["coarse"]["backend"] == "auto"


def _ctsam(*args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "ctsam", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ctsam_reads_config_yaml_of_the_working_directory(tmp_path):
    (tmp_path / "config.yaml").write_text("coarse:\n  totalsegmentator:\n    mode: fastest\n")
    proc = _ctsam("weights", "check", "--json", "--weights", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["task_ids"] == [298]  # mode from ./config.yaml, not the default 'full'


def test_ctsam_reports_a_bad_key_in_config_yaml(tmp_path):
    (tmp_path / "config.yaml").write_text("seed:\n  max_componets: 3\n")
    proc = _ctsam("weights", "check", cwd=tmp_path)
    assert proc.returncode == 2
    assert "did you mean 'seed.max_components'?" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 4
