"""``ctsam lesions`` on a real CT: the pyradiomics Lung1 thorax CT with its manual lung-tumour mask as seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.cli import main
from ctsam.io.image import read_ct, read_labelmap

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def test_real_ct_with_a_click_inside_a_tumour(shared_data, tmp_path):
    import torch

    from ctsam.model import build_model, save_model

    ct_path = shared_data / "pyradiomics_lung1" / "lung1_image.nrrd"
    seeds_path = shared_data / "pyradiomics_lung1" / "lung1_label.nrrd"
    if not ct_path.is_file():
        pytest.skip(f"{ct_path} not found")
    torch.manual_seed(0)
    model = save_model(build_model("sam3d_adapter", "tiny"), tmp_path / "tiny.safetensors")
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}" / "lesions.nii.gz"
        assert (
            main(
                [
                    "lesions",
                    str(ct_path),
                    "--seeds",
                    str(seeds_path),
                    "--checkpoint",
                    str(model),
                    "-o",
                    str(out),
                    "--labels",
                    str(seeds_path),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert (outs[0].parent / "lesions.json").read_bytes() == (outs[1].parent / "lesions.json").read_bytes()
    ct = read_ct(ct_path)
    lesions = read_labelmap(outs[0])
    assert lesions.geometry.same_space(ct.geometry) and lesions.array.shape == ct.array.shape == (48, 512, 512)
    side = json.loads((outs[0].parent / "lesions.json").read_text())
    assert side["n_lesions"] == 1
    (rec,) = side["lesions"]
    # the click is the tumour mask's most interior voxel: inside the manual tumour
    seeds = read_labelmap(seeds_path)
    idx = np.floor(np.asarray(rec["click"]["index_zyx"]) + 0.5).astype(int)
    assert seeds.array[tuple(idx)] != 0
    assert rec["voxel_count"] == int((lesions.array == 1).sum())
    for key in (
        "volume_ml",
        "recist_long_axis_mm",
        "recist_short_axis_mm",
        "longest_diameter_3d_mm",
        "centroid_lps_mm",
        "mean_probability",
        "max_probability",
        "touches_patch_border",
        "containing_structure",
    ):
        assert key in rec
    assert str(shared_data) not in json.dumps(side)
