"""Masks pyradiomics cannot use (a single voxel, a single slice, a thin line after 2 mm resampling) give
a ``too_small`` row with the reason, never an exception or a bare ``failed``."""

from __future__ import annotations

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("radiomics.featureextractor")

from ctsam.io.labeltable import sidecar_tsv_path, write_label_tsv
from ctsam.radiomics.extract import extract_case
from ctsam.radiomics.params import load_params
from ctsam.radiomics.worker import mask_too_small

NAMES = {1: "organ", 2: "voxel", 3: "slice", 4: "tube"}


def _case(tmp_path):
    z, y, x = np.mgrid[0:30, 0:40, 0:40]
    rng = np.random.default_rng(3)
    ct = (40 + rng.normal(0, 20, z.shape)).astype(np.int16)
    lab = np.zeros(z.shape, np.uint8)
    lab[((x - 12) / 8.0) ** 2 + ((y - 12) / 8.0) ** 2 + ((z - 15) / 5.0) ** 2 <= 1] = 1
    lab[2, 35, 35] = 2  # one voxel
    lab[25, 25:35, 25:35] = 3  # one axial slice
    lab[5:25, 30, 5] = 4  # a line of 0.9 mm voxels along z: a thin tube (the demo esophagus at 2 mm)
    lab[5:25, 31, 5] = 4
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing((0.9, 0.9, 2.5))
    limg = sitk.GetImageFromArray(lab)
    limg.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(limg, str(tmp_path / "labels.nii.gz"))
    write_label_tsv(sidecar_tsv_path(tmp_path / "labels.nii.gz"), NAMES)
    return tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"


def test_small_masks_are_clear_rows(tmp_path):
    ct, labels = _case(tmp_path)
    features = extract_case(ct, labels, load_params("default"), case="small", workers=1)
    by = {r.name: r for r in features.results}
    assert by["organ"].status == "ok" and len(by["organ"].features) == 107
    # one axial slice spans two axes, which pyradiomics accepts (minimumROIDimensions 2): features, no crash
    assert by["slice"].status == "ok" and by["slice"].features
    for name in ("voxel", "tube"):
        assert by[name].status == "too_small", (name, by[name].status, by[name].reason)
        assert "minimumROIDimensions" in by[name].reason
    assert "on the resampled" in by["tube"].reason  # the tube collapses only after resampling


def test_mask_too_small_limits():
    params = {"setting": {"minimumROIDimensions": 2, "minimumROISize": 8}}
    m = np.zeros((4, 4, 4), np.uint8)
    assert "no voxels" in mask_too_small(m, params, resampled=False, spacing_xyz_mm=(1, 1, 1))
    m[1, 1:3, 1:3] = 1  # 4 voxels in one slice: 2 axes, but fewer than 8 voxels
    assert "minimumROISize is 8" in mask_too_small(m, params, resampled=False, spacing_xyz_mm=(1, 1, 1))
    m[1:3, 1:3, 1:3] = 1
    assert mask_too_small(m, params, resampled=False, spacing_xyz_mm=(1, 1, 1)) == ""
