"""Which slices get converted: stacks inside a series, kernel-aware ranking, one study per case."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from ctsam.cli import main as cli_main
from ctsam.convert import ConvertOptions, convert_study
from ctsam.convert.kernels import MEDIUM, SHARP, SOFT, UNKNOWN, classify_kernel
from ctsam.errors import DicomSeriesError
from tests.convert.synthetic import write_series

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


# ------------------------------------------------------------------ stacks
def test_localizer_inside_the_axial_series_is_dropped_with_a_logged_reason(tmp_path, caplog):
    axial = write_series(tmp_path / "s" / "ax", n_slices=6, seed=1, series_uid="1.2.3.4")
    # a scout sharing the axial series' UID: other orientation, other size, ImageType LOCALIZER
    write_series(
        tmp_path / "s" / "loc",
        n_slices=1,
        rows=20,
        columns=24,
        seed=2,
        series_uid="1.2.3.4",
        sop_uid_prefix="1.2.3.4.9",
        iop=CORONAL,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    with caplog.at_level(logging.WARNING):
        res = convert_study(tmp_path / "s", None, sidecar_path=tmp_path / "ct.json")
    assert res.selection.chosen.key == "1.2.3.4#1"
    assert np.array_equal(res.volume.array, axial.hu_zyx[:, ::-1, :].astype(np.int16))
    assert "dropped 1 slice(s) of the chosen series 1.2.3.4" in caplog.text
    assert "localizer (scout) images" in caplog.text
    side = json.loads((tmp_path / "ct.json").read_text())
    (rej,) = side["selection"]["rejected"]
    assert rej["series_key"] == "1.2.3.4#2" and "localizer (scout) images" in rej["reasons"]
    assert "orientation coronal" in rej["grouped_by"] and "LOCALIZER" in rej["grouped_by"]


def test_reformat_sharing_the_series_uid_is_its_own_candidate(tmp_path):
    axial = write_series(tmp_path / "s" / "ax", n_slices=5, seed=1, series_uid="1.2.3.4")
    write_series(
        tmp_path / "s" / "cor",
        n_slices=8,
        seed=2,
        series_uid="1.2.3.4",
        sop_uid_prefix="1.2.3.4.9",
        iop=CORONAL,
        image_type=("DERIVED", "SECONDARY", "REFORMATTED"),
    )
    res = convert_study(tmp_path / "s", None)
    assert res.selection.chosen.n_files == 5
    assert np.array_equal(res.volume.array, axial.hu_zyx[:, ::-1, :].astype(np.int16))
    ((cand, reasons),) = res.selection.rejected
    assert cand.n_files == 8 and "not ORIGINAL/AXIAL" in reasons[0]
    # --series-uid with the series UID picks its best stack; with a stack key, that stack
    chosen = convert_study(tmp_path / "s", None, options=ConvertOptions(series_uid="1.2.3.4")).selection.chosen
    assert chosen.n_files == 5
    other = convert_study(tmp_path / "s", None, options=ConvertOptions(series_uid=cand.key)).selection.chosen
    assert other.n_files == 8


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize(
    ("kernel", "description", "tier"),
    [
        ("STANDARD", "", SOFT),
        ("SOFT", "", SOFT),
        ("BONE", "", SHARP),
        ("LUNG", "", SHARP),
        ("DETAIL", "", MEDIUM),
        ("B30f", "", SOFT),
        ("B70f", "", SHARP),
        (["Br40d", "3"], "", SOFT),
        ("Br64d", "", SHARP),
        ("Bl57d", "", SHARP),
        ("I41f", "", MEDIUM),
        ("Qr40", "", SOFT),
        ("FC03", "", SOFT),
        ("FC30", "", SHARP),
        ("FC52", "", SHARP),
        ("B", "", SOFT),
        ("B", "THORAX LUNG 1mm", SHARP),
        ("D", "", SHARP),
        ("L", "", SHARP),
        ("XYZ", "abdomen STD", SOFT),
        ("XYZ", "", UNKNOWN),
        (None, "chest bone window", SHARP),
    ],
)
def test_kernel_table(kernel, description, tier):
    assert classify_kernel(kernel, description).tier == tier


def test_standard_reconstruction_beats_bone_of_the_same_acquisition(tmp_path):
    # same slices, same coverage; the BONE series has the smaller UID, so UID order alone would pick it
    write_series(
        tmp_path / "s" / "bone", n_slices=5, seed=3, series_uid="1.2.3.1", extra_tags={"ConvolutionKernel": "BONE"}
    )
    std = write_series(
        tmp_path / "s" / "std", n_slices=5, seed=4, series_uid="1.2.3.2", extra_tags={"ConvolutionKernel": "STANDARD"}
    )
    res = convert_study(tmp_path / "s", None, sidecar_path=tmp_path / "ct.json")
    assert res.selection.chosen.key == std.series_uid
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["selection"]["chosen"]["kernel_class"] == "soft tissue/standard"
    (rej,) = side["selection"]["rejected"]
    assert rej["series_key"] == "1.2.3.1" and rej["kernel_class"] == "sharp (bone/lung/edge)"
    assert rej["reasons"] == [
        (
            "ranked below the chosen series: its kernel ranks after the chosen one's: "
            "'BONE' [sharp (bone/lung/edge)] vs 'STANDARD' [soft tissue/standard]"
        )
    ]
    # convert.prefer_kernels overrides the table
    pref = convert_study(tmp_path / "s", None, options=ConvertOptions(prefer_kernels=("bone",))).selection
    assert pref.chosen.key == "1.2.3.1" and "in convert.prefer_kernels" in pref.why


def test_kernel_ranks_before_coverage_and_coverage_before_thinner_slices(tmp_path):
    write_series(
        tmp_path / "s" / "a", n_slices=9, seed=1, series_uid="1.2.3.1", extra_tags={"ConvolutionKernel": "B70f"}
    )
    soft_short = write_series(tmp_path / "s" / "b", n_slices=4, seed=2, series_uid="1.2.3.2")
    res = convert_study(tmp_path / "s", None)
    assert res.selection.chosen.key == soft_short.series_uid
    assert "kernel ranks after" in res.selection.rejected[0][1][0]


def test_remaining_tie_is_warned_naming_series_uid(tmp_path, caplog):
    write_series(tmp_path / "s" / "x", n_slices=4, seed=7, series_uid="1.2.3.2")
    write_series(tmp_path / "s" / "y", n_slices=4, seed=7, series_uid="1.2.3.1", sop_uid_prefix="1.2.3.9")
    with caplog.at_level(logging.WARNING):
        res = convert_study(tmp_path / "s", None, sidecar_path=tmp_path / "ct.json")
    assert res.selection.chosen.key == "1.2.3.1" and res.selection.tie == ["1.2.3.2"]
    assert "--series-uid" in caplog.text and "ties with 1.2.3.2" in caplog.text
    side = json.loads((tmp_path / "ct.json").read_text())
    assert "TIED on every criterion with 1.2.3.2" in side["selection"]["chosen"]["why"]


# ------------------------------------------------------------------ studies
def test_two_studies_are_never_merged(tmp_path, capsys):
    write_series(tmp_path / "s" / "a", n_slices=5, seed=1, study_uid="1.2.9.1")
    write_series(tmp_path / "s" / "b", n_slices=4, seed=2, study_uid="1.2.9.2", extra_tags={"StudyDate": "20200114"})
    with pytest.raises(DicomSeriesError, match="CT images of 2 studies") as info:
        convert_study(tmp_path / "s", None)
    found = info.value.found
    assert "1.2.9.1 (1 CT series, 5 slices, earliest)" in found
    assert "1.2.9.2 (1 CT series, 4 slices, 12 days after the earliest)" in found
    assert "2020" not in str(info.value)  # dates only relative
    assert "--study-uid" in info.value.fix
    code = cli_main(["convert", str(tmp_path / "s"), "-o", str(tmp_path / "ct.nii.gz")])
    assert code == 2 and "2 studies" in capsys.readouterr().err
    code = cli_main(["convert", str(tmp_path / "s"), "-o", str(tmp_path / "ct.nii.gz"), "--study-uid", "1.2.9.2"])
    assert code == 0
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["n_slices"] == 4 and "1.2.9" not in json.dumps(side)


def test_same_day_studies_and_non_ct_of_another_study(tmp_path):
    write_series(tmp_path / "s" / "a", n_slices=5, seed=1, study_uid="1.2.9.1")
    write_series(tmp_path / "s" / "b", n_slices=4, seed=2, study_uid="1.2.9.2")
    with pytest.raises(DicomSeriesError, match="2 studies") as info:
        convert_study(tmp_path / "s", None)
    assert "same day as the earliest" in info.value.found
    # an MR series of another study does not make two studies
    write_series(tmp_path / "t" / "ct", n_slices=5, seed=1, study_uid="1.2.9.1")
    write_series(tmp_path / "t" / "mr", n_slices=5, seed=2, study_uid="1.2.9.3", modality="MR")
    assert convert_study(tmp_path / "t", None).stack.n_slices == 5
