"""Export identity: ``copy`` keeps the source's patient and study; ``deidentify`` leaves none of it
(basic confidentiality profile), in DICOM-SEG and RTSTRUCT alike."""

from __future__ import annotations

import pytest

from tests.export.conftest import IDENTITY

pydicom = pytest.importorskip("pydicom")


def _export(kind, labelmap, dicom_dir, out, identity):
    if kind == "seg":
        pytest.importorskip("highdicom")
        from ctsam.export.dicomseg import export_seg

        export_seg(labelmap, dicom_dir, out, case="case-7f3a", identity=identity, transfer_syntax="explicit")
    else:
        from ctsam.export.rtstruct import export_rtstruct

        export_rtstruct(labelmap, dicom_dir, out, case="case-7f3a", identity=identity)


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_copy_keeps_the_source_identity(identified_series, tmp_path, kind):
    dicom_dir, labelmap, uids = identified_series
    out = tmp_path / f"{kind}.dcm"
    _export(kind, labelmap, dicom_dir, out, "copy")
    ds = pydicom.dcmread(out)
    assert str(ds.PatientName) == IDENTITY["PatientName"] and ds.PatientID == IDENTITY["PatientID"]
    assert ds.StudyInstanceUID in uids and ds.get("PatientIdentityRemoved") is None


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_deidentify_leaves_no_identity(identified_series, tmp_path, kind):
    dicom_dir, labelmap, uids = identified_series
    out = tmp_path / f"{kind}.dcm"
    _export(kind, labelmap, dicom_dir, out, "deidentify")
    raw = out.read_bytes()
    for key, value in IDENTITY.items():
        for needle in {value, value.split("^")[0]} - {"F"}:
            assert needle.encode() not in raw, f"{key} value {needle!r} left in the {kind}"
    assert b"JANE" not in raw and b"DOE" not in raw  # also not in the private element
    for uid in uids:
        assert uid.encode() not in raw, f"source UID {uid} left in the {kind}"
    ds = pydicom.dcmread(out)
    assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert str(ds.PatientName) == "case-7f3a" and ds.PatientID == "case-7f3a"  # the pseudonym, so it can be filed
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # replacement UIDs are consistent: the same salt gives the same object
    again = tmp_path / f"{kind}-2.dcm"
    _export(kind, labelmap, dicom_dir, again, "deidentify")
    assert again.read_bytes() == raw


def test_unknown_identity_mode_is_a_config_error(identified_series, tmp_path):
    from ctsam.errors import ConfigError
    from ctsam.export.rtstruct import export_rtstruct

    dicom_dir, labelmap, _ = identified_series
    with pytest.raises(ConfigError, match="export.identity"):
        export_rtstruct(labelmap, dicom_dir, tmp_path / "x.dcm", identity="keep")
