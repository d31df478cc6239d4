"""--checkpoint [LABEL=]MODEL parsing and the click -> model choice."""

from __future__ import annotations

import pytest

from ctsam.errors import ConfigError, InputDataError
from ctsam.lesions.clicks import Click
from ctsam.lesions.engine import model_for
from ctsam.lesions.models import parse_checkpoint_specs


def test_cli_values_win_over_the_config():
    assert parse_checkpoint_specs([], {"kidney_tumor": "kits.safetensors"}, "builtin:demo_lesion") == {
        "": "builtin:demo_lesion",
        "kidney_tumor": "kits.safetensors",
    }
    got = parse_checkpoint_specs(["lits.pth", "kidney_tumor=/models/kits.safetensors"], None, "builtin:demo_lesion")
    assert got == {"": "lits.pth", "kidney_tumor": "/models/kits.safetensors"}
    # builtin:NAME is a model, not a LABEL=MODEL pair
    assert parse_checkpoint_specs(["builtin:demo_lesion"]) == {"": "builtin:demo_lesion"}


def test_bad_specs():
    with pytest.raises(ConfigError, match="two default lesion models"):
        parse_checkpoint_specs(["a.safetensors", "b.safetensors"])
    with pytest.raises(ConfigError, match="no lesion model"):
        parse_checkpoint_specs([])
    with pytest.raises(ConfigError, match="bad lesion model mapping"):
        parse_checkpoint_specs([], {"liver tumour": "x.safetensors"})


def test_a_click_goes_to_its_label_model_else_the_default():
    models = {"": "default", "liver_tumor": "lits"}
    assert model_for(Click(1, (0, 0, 0), "liver_tumor"), models) == "liver_tumor"
    assert model_for(Click(2, (0, 0, 0), "kidney_tumor"), models) == ""
    assert model_for(Click(3, (0, 0, 0), None), models) == ""
    with pytest.raises(InputDataError, match="no lesion model"):
        model_for(Click(4, (0, 0, 0), "kidney_tumor", "row 5"), {"liver_tumor": "lits"})
