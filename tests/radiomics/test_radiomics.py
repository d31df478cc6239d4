"""ctsam radiomics: crops + parallel workers give pyradiomics' whole-volume features; tables; CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
featureextractor = pytest.importorskip("radiomics.featureextractor")

from ctsam.errors import ConfigError, InputDataError  # noqa: E402
from ctsam.io.labeltable import sidecar_tsv_path, write_label_tsv  # noqa: E402
from ctsam.radiomics.extract import extract_case  # noqa: E402
from ctsam.radiomics.params import load_params  # noqa: E402
from ctsam.radiomics.table import (  # noqa: E402
    METADATA_KEY,
    cohort_table,
    read_case_features,
    sidecar_path,
    write_case_features,
    write_cohort,
)

RTOL = 1e-6
NAMES = {1: "liver", 2: "spleen", 3: "dot", 4: "gland", 5: "absent_organ"}


# ----------------------------------------------------------------------------- synthetic case
def _oblique(angle_deg: float) -> tuple[float, ...]:
    a = np.deg2rad(angle_deg)
    return tuple(np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]]).ravel())


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory):
    """A 48x40x24 (x,y,z) int16 CT with smooth structure + noise, anisotropic and oblique, and 4 labels.

    liver: an ellipsoid; spleen: a blob cut by the image border; dot: 1 voxel (too small: a clear row);
    gland: ~30 voxels; absent_organ: in the label table only (must be reported empty).
    """
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("radiomics_case")
    z, y, x = np.mgrid[0:24, 0:40, 0:48].astype(float)
    ct = 40 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0) + 8 * z + rng.normal(0, 30, z.shape)
    labels = np.zeros(z.shape, np.uint8)
    labels[((x - 20) / 12) ** 2 + ((y - 18) / 9) ** 2 + ((z - 11) / 6) ** 2 <= 1] = 1
    labels[((x - 44) / 8) ** 2 + ((y - 30) / 7) ** 2 + ((z - 20) / 5) ** 2 <= 1] = 2
    labels[3, 3, 3] = 3
    labels[((x - 38) / 2.5) ** 2 + ((y - 8) / 2.2) ** 2 + ((z - 5) / 1.6) ** 2 <= 1] = 4
    ct[labels == 1] += 60
    ct_img = sitk.GetImageFromArray(np.round(ct).astype(np.int16))
    ct_img.SetSpacing((0.8, 0.75, 2.5))
    ct_img.SetOrigin((-20.3, 11.7, -33.1))
    ct_img.SetDirection(_oblique(12.0))
    lab_img = sitk.GetImageFromArray(labels)
    lab_img.CopyInformation(ct_img)
    ct_path, lab_path = d / "ct.nrrd", d / "labels.nrrd"
    sitk.WriteImage(ct_img, str(ct_path))
    sitk.WriteImage(lab_img, str(lab_path))
    write_label_tsv(sidecar_tsv_path(lab_path), NAMES)
    return ct_path, lab_path


def _params_file(tmp_path, name: str, settings: dict, image_types=None, classes=("shape", "firstorder", "glcm")):
    doc = {
        "setting": settings,
        "imageType": image_types or {"Original": {}},
        "featureClass": {c: [] for c in classes},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return load_params(path)


def _direct(params, ct_path, lab_path, label):
    """pyradiomics on the whole volume, as a user would call it; None if it refuses the structure."""
    extractor = featureextractor.RadiomicsFeatureExtractor(params.params)
    try:
        raw = extractor.execute(str(ct_path), str(lab_path), label=label)
    except ValueError:
        return None
    return {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}


def _assert_equal_to_direct(features, params, ct_path, lab_path):
    n_compared = 0
    for r in features.results:
        if r.status == "empty":
            continue
        ref = _direct(params, ct_path, lab_path, r.label)
        if ref is None:
            assert r.status in ("failed", "too_small"), f"{r.name}: pyradiomics refuses it but ctsam says {r.status}"
            continue
        assert r.status == "ok", f"{r.name}: {r.reason}"
        mine = dict(r.features)
        assert list(mine) == list(ref)
        np.testing.assert_allclose(list(mine.values()), list(ref.values()), rtol=RTOL, atol=1e-12, err_msg=r.name)
        n_compared += 1
    return n_compared


SETTINGS = {
    # pyradiomics resamples with a B-spline on a grid anchored to the image corner
    "bspline_resampled": {"resampledPixelSpacing": [1.5, 1.5, 1.5], "binWidth": 10},
    # no resampling: pyradiomics crops to the bounding box
    "not_resampled": {"binWidth": 10},
    # resampling to the image's own spacing: pyradiomics only crops, with padDistance
    "own_spacing": {"resampledPixelSpacing": [0.8, 0.75, 2.5], "binWidth": 10, "padDistance": 3},
    # whole-image normalisation, linear interpolation, a 0 (keep) axis
    "normalized_linear": {
        "resampledPixelSpacing": [1.2, 1.2, 0],
        "interpolator": "sitkLinear",
        "normalize": True,
        "normalizeScale": 100,
        "binWidth": 10,
    },
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_crops_equal_whole_volume_pyradiomics(tmp_path, synthetic_case, name):
    ct_path, lab_path = synthetic_case
    params = _params_file(tmp_path, name, {"geometryTolerance": 1e-3, **SETTINGS[name]})
    features = extract_case(ct_path, lab_path, params, case="syn", workers=1, margin_mm=0.0)
    assert _assert_equal_to_direct(features, params, ct_path, lab_path) == 3  # liver, spleen, gland
    by_name = {r.name: r for r in features.results}
    assert by_name["dot"].status == "too_small" and "minimumROIDimensions" in by_name["dot"].reason
    assert by_name["absent_organ"].status == "empty"


def test_filtered_image_type_with_resampling_is_exact(tmp_path, synthetic_case):
    """With resampling, filters run on the padded resampled box, which ctsam reproduces exactly."""
    ct_path, lab_path = synthetic_case
    params = _params_file(
        tmp_path,
        "log",
        {"resampledPixelSpacing": [1.5, 1.5, 1.5], "binWidth": 10},
        image_types={"Original": {}, "LoG": {"sigma": [1.0, 2.0]}},
        classes=("firstorder",),
    )
    features = extract_case(ct_path, lab_path, params, case="syn", workers=1)
    assert _assert_equal_to_direct(features, params, ct_path, lab_path) == 3
    keys = dict(next(r for r in features.results if r.name == "liver").features)
    assert any(k.startswith("log-sigma-2-0-mm-3D_firstorder") for k in keys)


def test_parallel_workers_give_identical_results(tmp_path, synthetic_case):
    ct_path, lab_path = synthetic_case
    params = _params_file(tmp_path, "p", {"resampledPixelSpacing": [1.5, 1.5, 1.5], "binWidth": 10})
    one = extract_case(ct_path, lab_path, params, case="syn", workers=1)
    two = extract_case(ct_path, lab_path, params, case="syn", workers=2)
    assert [(r.label, r.status, r.reason, r.features) for r in one.results] == [
        (r.label, r.status, r.reason, r.features) for r in two.results
    ]
    a, b = tmp_path / "one.parquet", tmp_path / "two.parquet"
    write_case_features(a, one)
    write_case_features(b, two)
    assert a.read_bytes() == b.read_bytes()  # deterministic, whatever the completion order
    assert sidecar_path(a).read_bytes() == sidecar_path(b).read_bytes()


def test_structure_selection_and_unknown_names(tmp_path, synthetic_case):
    ct_path, lab_path = synthetic_case
    params = _params_file(tmp_path, "p", {"binWidth": 10}, classes=("firstorder",))
    features = extract_case(ct_path, lab_path, params, case="syn", structures=["gland", "absent_organ", "gland"])
    assert [(r.name, r.status) for r in features.results] == [("gland", "ok"), ("absent_organ", "empty")]
    with pytest.raises(ConfigError, match="unknown structure name.*kidney"):
        extract_case(ct_path, lab_path, params, case="syn", structures=["kidney"])


def test_structure_that_cannot_be_prepared_is_reported(tmp_path, synthetic_case):
    ct_path, lab_path = synthetic_case
    params = _params_file(tmp_path, "p2d", {"resampledPixelSpacing": [2.0, 2.0]}, classes=("firstorder",))
    features = extract_case(ct_path, lab_path, params, case="syn", structures=["liver", "gland"])
    assert [r.status for r in features.results] == ["failed", "failed"]
    assert all("could not prepare the crop" in r.reason and "3 values" in r.reason for r in features.results)


def test_case_level_input_errors(tmp_path, synthetic_case):
    ct_path, lab_path = synthetic_case
    params = load_params("totalseg")
    with pytest.raises(InputDataError, match="CT not found"):
        extract_case(tmp_path / "nope.nii.gz", lab_path, params, case="syn")
    small = sitk.Image(5, 5, 5, sitk.sitkUInt8)
    bad = tmp_path / "small_labels.nrrd"
    sitk.WriteImage(small, str(bad))
    with pytest.raises(InputDataError, match="not on the same voxel grid"):
        extract_case(ct_path, bad, params, case="syn")
    with pytest.raises(ConfigError, match="workers"):
        extract_case(ct_path, lab_path, params, case="syn", workers=0)


def test_params_files(tmp_path):
    default = load_params()
    assert default.path.name == "radiomics_params.yaml" and len(default.sha256) == 64
    assert set(default.feature_classes) == {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    assert default.resampled_spacing_xyz_mm == [2.0, 2.0, 2.0]
    ts = load_params("totalseg")
    assert set(ts.feature_classes) == {"shape", "firstorder"}
    assert ts.settings["resampledPixelSpacing"] == [3, 3, 3] and ts.settings["geometryTolerance"] == 1e-3
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: wide\n")
    with pytest.raises(ConfigError, match="pyradiomics rejected"):
        load_params(bad)
    bad.write_text("setting: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


# ----------------------------------------------------------------------------- tables
def test_long_table_metadata_and_sidecar(tmp_path, synthetic_case):
    ct_path, lab_path = synthetic_case
    params = _params_file(tmp_path, "p", {"binWidth": 10}, classes=("firstorder",))
    features = extract_case(ct_path, lab_path, params, case="syn")
    out = tmp_path / "syn.parquet"
    write_case_features(out, features)
    df, meta = read_case_features(out)
    assert list(df.columns) == ["case", "structure", "label", "feature", "value"]
    assert set(df["structure"]) == {"liver", "spleen", "gland"}  # failed/empty have no rows ...
    status = {s["structure"]: (s["status"], s["reason"]) for s in meta["structures"]}
    assert status["dot"][0] == "too_small" and status["dot"][1]  # ... but are recorded with a reason
    assert status["absent_organ"] == ("empty", "no voxels with this label in the label map")
    assert meta["params_sha256"] == params.sha256
    assert {"pyradiomics", "ctsam", "SimpleITK", "numpy"} <= set(meta["versions"])
    assert json.loads(sidecar_path(out).read_text()) == meta
    import pyarrow.parquet as pq

    assert json.loads(pq.read_schema(out).metadata[METADATA_KEY])["case"] == "syn"
    assert str(ct_path.parent) not in sidecar_path(out).read_text()  # no input paths in outputs


def test_cohort_table(tmp_path, synthetic_case):
    ct_path, lab_path = synthetic_case
    params = _params_file(tmp_path, "p", {"binWidth": 10}, classes=("firstorder",))
    paths = []
    for case, structures in (("b", None), ("a", ["liver", "dot"])):
        f = extract_case(ct_path, lab_path, params, case=case, structures=structures)
        paths.append(tmp_path / f"{case}.parquet")
        write_case_features(paths[-1], f)
    wide, meta = cohort_table(paths)
    assert list(wide.columns[:6]) == ["case", "structure", "label", "status", "reason", "n_voxels"]
    assert wide.shape == (2 + 5, 6 + 18)
    assert list(zip(wide["case"], wide["structure"]))[:3] == [("a", "liver"), ("a", "dot"), ("b", "liver")]
    dot = wide[(wide["case"] == "a") & (wide["structure"] == "dot")].iloc[0]
    assert dot["status"] == "too_small" and np.isnan(dot["original_firstorder_Mean"])
    long_a, _ = read_case_features(paths[1])
    liver_mean = long_a[(long_a.structure == "liver") & (long_a.feature == "original_firstorder_Mean")].value.item()
    assert wide.loc[0, "original_firstorder_Mean"] == liver_mean
    written = write_cohort(tmp_path / "cohort.parquet", wide, meta, csv=True)
    assert [p.name for p in written] == ["cohort.parquet", "cohort.csv"]
    import pandas as pd

    back = pd.read_csv(written[1])
    np.testing.assert_array_equal(
        back["original_firstorder_Mean"].to_numpy(), wide["original_firstorder_Mean"].to_numpy()
    )
    with pytest.raises(InputDataError, match="appears twice"):
        cohort_table([paths[0], paths[0]])
    other = _params_file(tmp_path, "other", {"binWidth": 5}, classes=("firstorder",))
    write_case_features(tmp_path / "c.parquet", extract_case(ct_path, lab_path, other, case="c", structures=["gland"]))
    with pytest.raises(InputDataError, match="different parameter files"):
        cohort_table(paths + [tmp_path / "c.parquet"])
    junk = tmp_path / "junk.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(junk)
    with pytest.raises(InputDataError, match="not a ctsam radiomics feature table"):
        cohort_table([junk])


# ----------------------------------------------------------------------------- workers
def _threads_in_worker(_task):
    return (
        sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        os.environ.get("OMP_NUM_THREADS"),
        os.environ.get("OPENBLAS_NUM_THREADS"),
    )


def _die_on_three(task):
    if task == 3:
        os._exit(1)
    return ("ok", task)


def test_workers_are_single_threaded():
    from ctsam.radiomics.parallel import run_tasks

    out = list(run_tasks(_threads_in_worker, [0, 1, 2], workers=2, on_crash=lambda t, e: None))
    assert out == [(1, "1", "1")] * 3


def test_a_dying_worker_fails_only_its_tasks():
    from ctsam.radiomics.parallel import run_tasks

    out = list(run_tasks(_die_on_three, range(8), workers=2, on_crash=lambda t, e: ("crashed", t)))
    assert sorted(t for _, t in out) == list(range(8))
    assert ("crashed", 3) in out
    # only tasks in flight with the crash (at most 2 per worker) may be lost; the pool restarts for the rest
    assert sum(s == "ok" for s, _ in out) >= 8 - 2 * 2


# ----------------------------------------------------------------------------- CLI
def test_cli_radiomics_and_cohort(tmp_path, synthetic_case):
    from ctsam.cli import main

    ct_path, lab_path = synthetic_case
    params = tmp_path / "p.yaml"
    params.write_text("setting: {binWidth: 10}\nfeatureClass: {firstorder: []}\n")
    out = tmp_path / "syn.parquet"
    rc = main(
        [
            "radiomics",
            str(ct_path),
            str(lab_path),
            "-o",
            str(out),
            "--params",
            str(params),
            "--case",
            "syn1",
            "--structures",
            "liver",
            "gland",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and out.is_file() and sidecar_path(out).is_file()
    df, meta = read_case_features(out)
    assert set(df["case"]) == {"syn1"} and meta["margin_mm"] == 10.0 and meta["counts"] == {"ok": 2}
    cfg = tmp_path / "config.yaml"
    cfg.write_text("radiomics:\n  params: totalseg\n  margin_mm: 4\n  structures: [liver]\n")
    out2 = tmp_path / "syn2.parquet"
    assert main(["radiomics", str(ct_path), str(lab_path), "-o", str(out2), "--config", str(cfg)]) == 0
    df2, meta2 = read_case_features(out2)
    assert meta2["case"] == "ct" and meta2["params_file"] == "radiomics_totalseg.yaml" and meta2["margin_mm"] == 4.0
    assert set(df2["structure"]) == {"liver"}
    assert main(["radiomics-cohort", str(out), "-o", str(tmp_path / "c.parquet"), "--csv"]) == 0
    assert (tmp_path / "c.csv").is_file()
    assert main(["radiomics", str(tmp_path / "missing.nii.gz"), str(lab_path), "-o", str(out)]) == 2
    assert main(["radiomics", str(ct_path), str(lab_path), "-o", str(out), "--params", "nope.yaml"]) == 2


# ----------------------------------------------------------------------------- real data
@pytest.mark.shared_data
@pytest.mark.slow
def test_lung1_equals_pyradiomics_direct(shared_data, tmp_path):
    """The default parameter file (107 features, B-spline to 2 mm) on pyradiomics' lung1 tumour."""
    d = shared_data / "pyradiomics_lung1"
    ct_path, lab_path = d / "lung1_image.nrrd", d / "lung1_label.nrrd"
    params = load_params("default")
    features = extract_case(ct_path, lab_path, params, case="lung1", workers=1)
    (result,) = features.results
    assert result.status == "ok" and len(result.features) == 107
    ref = featureextractor.RadiomicsFeatureExtractor(str(params.path)).execute(str(ct_path), str(lab_path))
    ref = {k: float(v) for k, v in ref.items() if not k.startswith("diagnostics_")}
    mine = dict(result.features)
    assert set(mine) == set(ref)
    keys = sorted(ref)
    rel = np.abs(np.array([mine[k] for k in keys]) - np.array([ref[k] for k in keys])) / np.maximum(
        np.abs([ref[k] for k in keys]), 1e-300
    )
    assert rel.max() <= RTOL, keys[int(rel.argmax())]


@pytest.mark.shared_data
@pytest.mark.slow
def test_totalseg_example_all_structures_in_one_table(shared_data, tmp_path):
    """61 structures of TotalSegmentator's example with its own settings (shape + firstorder at 3 mm)."""
    d = shared_data / "totalseg_examples"
    ct_path, lab_path = d / "example_ct.nii.gz", d / "example_seg_fast_force_split.nii.gz"
    params = load_params("totalseg")
    features = extract_case(ct_path, lab_path, params, case="example", workers=2)
    out = tmp_path / "example.parquet"
    write_case_features(out, features)
    df, meta = read_case_features(out)
    statuses = {s["structure"]: s["status"] for s in meta["structures"]}
    assert len(statuses) == 117  # every class of the label table is reported
    assert sum(s != "empty" for s in statuses.values()) == 61  # the 61 present ones extracted or failed
    ok = [s for s, st in statuses.items() if st == "ok"]
    assert df.groupby("structure").size().to_dict() == {s: 32 for s in ok}
    assert len(ok) >= 58
    # a few structures against pyradiomics on the whole volume (TotalSegmentator's way)
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params.path))
    labels = {r.name: r.label for r in features.results}
    for name in ("spleen", "vertebrae_L3", "adrenal_gland_right"):
        ref = extractor.execute(str(ct_path), str(lab_path), label=labels[name])
        sub = df[df.structure == name].set_index("feature")["value"]
        for key, value in ref.items():
            if not key.startswith("diagnostics_"):
                assert sub[key] == pytest.approx(float(value), rel=RTOL, abs=1e-12), (name, key)


def test_lesions_are_extra_structures_with_their_containing_organ(tmp_path, synthetic_case):
    """--lesions: one structure per lesion ('lesion_<id>', label = id, even where an organ has the same label
    value), its containing structure from LESIONS.json, and cohort rows keyed by structure name."""
    import json

    from ctsam.cli import main

    ct_path, lab_path = synthetic_case
    ct_img = sitk.ReadImage(str(ct_path))
    z, y, x = np.mgrid[0:24, 0:40, 0:48].astype(float)
    lesions = np.zeros(z.shape, np.uint8)
    lesions[((x - 20) / 4) ** 2 + ((y - 18) / 3) ** 2 + ((z - 11) / 2) ** 2 <= 1] = 1  # inside the liver
    lesions[((x - 30) / 3) ** 2 + ((y - 30) / 3) ** 2 + ((z - 5) / 2) ** 2 <= 1] = 4
    les_img = sitk.GetImageFromArray(lesions)
    les_img.CopyInformation(ct_img)
    les_path = tmp_path / "lesions.nrrd"
    sitk.WriteImage(les_img, str(les_path))
    write_label_tsv(sidecar_tsv_path(les_path), {1: "lesion_1", 4: "lesion_4"})
    (tmp_path / "lesions.json").write_text(
        json.dumps(
            {
                "format": "ctsam.lesions/1",
                "lesions": [
                    {"lesion_id": 1, "name": "lesion_1", "containing_structure": "liver"},
                    {"lesion_id": 4, "name": "lesion_4", "containing_structure": None},
                ],
            }
        )
    )
    params = tmp_path / "p.yaml"
    params.write_text("setting: {binWidth: 10}\nfeatureClass: {firstorder: []}\n")
    out = tmp_path / "syn.parquet"
    assert (
        main(
            [
                "radiomics",
                str(ct_path),
                str(lab_path),
                "--lesions",
                str(les_path),
                "-o",
                str(out),
                "--params",
                str(params),
                "--case",
                "syn1",
                "--structures",
                "liver",
                "gland",
            ]
        )
        == 0
    )
    df, meta = read_case_features(out)
    assert set(df["structure"]) == {"liver", "gland", "lesion_1", "lesion_4"}
    assert set(df[df.structure == "lesion_4"]["label"]) == {4} and set(df[df.structure == "gland"]["label"]) == {4}
    entries = {s["structure"]: s for s in meta["structures"]}
    assert entries["lesion_1"]["kind"] == "lesion" and entries["lesion_1"]["containing_structure"] == "liver"
    assert entries["lesion_4"]["containing_structure"] is None and "kind" not in entries["liver"]
    # the lesion's features are those of its own mask (compare with an extraction of the lesion map alone)
    alone = extract_case(ct_path, les_path, load_params(str(params)), case="x")
    mean = {r.name: dict(r.features)["original_firstorder_Mean"] for r in alone.results}
    got = df[(df.structure == "lesion_1") & (df.feature == "original_firstorder_Mean")].value.item()
    assert got == mean["lesion_1"]
    wide, _ = cohort_table([out])
    assert list(wide["structure"]) == ["liver", "gland", "lesion_1", "lesion_4"]
    assert list(wide.columns[:7]) == [
        "case",
        "structure",
        "label",
        "status",
        "reason",
        "n_voxels",
        "containing_structure",
    ]
    assert wide.loc[2, "containing_structure"] == "liver" and wide.loc[2, "original_firstorder_Mean"] == got
    assert wide.loc[3, "original_firstorder_Mean"] != wide.loc[1, "original_firstorder_Mean"]  # lesion_4 is not gland
