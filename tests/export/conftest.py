"""A small synthetic DICOM CT series full of (synthetic) identity, and a label map on its grid."""

from __future__ import annotations

import numpy as np
import pytest

from ctsam.volume import CTVolume, Geometry, LabelMap

IDENTITY = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN-4711-0815",
    "PatientBirthDate": "19610203",
    "PatientSex": "F",
    "PatientAge": "062Y",
    "OtherPatientIDs": "ALT-99881",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "WHO^DOCTOR",
    "AccessionNumber": "ACC20230517X",
    "StudyDate": "20230517",
    "StudyTime": "093512",
    "SeriesDate": "20230517",
    "StudyDescription": "CT THORAX ABDOMEN JANE",
    "StationName": "CTSCANNER-ROOM3",
}
LABELS = {1: "kidney_left", 2: "liver", 3: "aorta"}


@pytest.fixture(scope="module")
def identified_series(tmp_path_factory):
    """(dicom folder, label map, source UIDs): 12 slices of 40x48, three structures, one with a hole."""
    import pydicom

    from ctsam.demo.dicom import write_series

    d = tmp_path_factory.mktemp("series")
    g = Geometry((12, 40, 48), (0.8, 0.8, 2.5), (-20.0, -16.0, -15.0))
    z, y, x = np.mgrid[0:12, 0:40, 0:48]
    lab = np.zeros(g.shape_zyx, np.uint8)
    lab[((x - 34) / 7.0) ** 2 + ((y - 20) / 9.0) ** 2 + ((z - 6) / 4.0) ** 2 <= 1] = 1
    liver = ((x - 14) / 9.0) ** 2 + ((y - 18) / 11.0) ** 2 + ((z - 5) / 5.0) ** 2 <= 1
    hole = ((x - 14) / 3.0) ** 2 + ((y - 18) / 3.0) ** 2 <= 1
    lab[liver & ~hole] = 2
    lab[3:9, 33:36, 22:25] = 3
    ct = np.where(lab > 0, 50, -100).astype(np.int16)
    files = write_series(CTVolume(ct, g), d / "dicom", case_id="syn", seed=0)
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in IDENTITY.items():
            setattr(ds, k, v)
        ds.add_new(0x00091010, "LO", "private JANE DOE")  # a private element
        ds.save_as(f, enforce_file_format=True)
    src = pydicom.dcmread(files[0])
    uids = {str(src.StudyInstanceUID), str(src.SeriesInstanceUID), str(src.FrameOfReferenceUID)}
    uids |= {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    return d / "dicom", LabelMap(lab, g, dict(LABELS)), uids
