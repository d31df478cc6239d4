"""DICOM-SEG export (highdicom) on the real JPEG-2000 series with empty UIDs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ctsam.errors import SpaceMismatchError
from ctsam.volume import Geometry, LabelMap

pytestmark = [pytest.mark.shared_data, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def series(shared_data):
    pytest.importorskip("highdicom")
    from ctsam.export.dicomseg import read_source_series
    from ctsam.io.image import read_labelmap

    d = shared_data / "totalseg_examples"
    datasets, repairs = read_source_series(d / "example_ct_dicom")
    return d, datasets, repairs, read_labelmap(d / "example_seg_dicom.nii.gz")


def test_source_uids_repaired_in_memory(series):
    d, datasets, repairs, _ = series
    assert len(datasets) == 20
    assert all(str(ds.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.2" for ds in datasets)
    assert len({str(ds.SOPInstanceUID) for ds in datasets}) == 20
    assert len({str(ds.SeriesInstanceUID) for ds in datasets}) == 1 and str(datasets[0].StudyInstanceUID)
    assert any("SeriesInstanceUID was empty" in r for r in repairs)
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert z == sorted(z)


def test_frames_follow_world_positions(series):
    """The label map is stored with y flipped relative to the DICOM rows; frames must undo it."""
    from ctsam.export.dicomseg import frames_from_labelmap

    _, datasets, _, lab = series
    frames = frames_from_labelmap(lab, datasets)
    ds = datasets[7]
    iop = np.asarray(ds.ImageOrientationPatient, float)
    for r, c in [(100, 200), (300, 260), (256, 256)]:
        world = np.asarray(ds.ImagePositionPatient, float) + c * 0.9765625 * iop[:3] + r * 0.9765625 * iop[3:]
        i = np.rint(lab.geometry.world_to_index(world)).astype(int)
        assert frames[7, r, c] == lab.array[i[2], i[1], i[0]]
    assert np.count_nonzero(frames) == np.count_nonzero(lab.array)


def test_export_seg_reads_back_and_is_deterministic(series, tmp_path):
    import highdicom as hd

    from ctsam.cli import main
    from ctsam.export.dicomseg import frames_from_labelmap

    d, datasets, _, lab = series
    outs = []
    for n in (1, 2):
        out = tmp_path / f"seg{n}.dcm"
        assert (
            main(["export-seg", str(d / "example_seg_dicom.nii.gz"), str(d / "example_ct_dicom"), "-o", str(out), "-q"])
            == 0
        )
        outs.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert outs[0] == outs[1]
    seg = hd.seg.segread(tmp_path / "seg1.dcm")
    present = [v for v in np.unique(lab.array) if v]
    names = [s.SegmentLabel for s in seg.SegmentSequence if int(s.SegmentNumber) > 0]
    assert names == [lab.labels[v] for v in present]
    arr = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in datasets], combine_segments=True, relabel=False
    )
    lut = np.zeros(256, np.uint8)
    lut[present] = np.arange(1, len(present) + 1)
    assert np.array_equal(arr, lut[frames_from_labelmap(lab, datasets)])


def test_label_map_off_the_series_grid_is_refused(series):
    from ctsam.export.dicomseg import build_segmentation

    _, datasets, _, lab = series
    g = lab.geometry
    shifted = Geometry(g.shape_zyx, g.spacing_xyz_mm, tuple(np.add(g.origin_xyz_mm, (0.4, 0.0, 0.0))), g.direction)
    with pytest.raises(SpaceMismatchError, match="not on the grid of the DICOM series"):
        build_segmentation(LabelMap(lab.array, shifted, lab.labels), datasets)
