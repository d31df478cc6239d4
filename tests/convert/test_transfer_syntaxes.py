"""Every transfer syntax the pinned decoders read converts to the same voxels; one without a decoder is named."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from ctsam.convert import convert_study
from ctsam.errors import DicomSeriesError
from tests.convert.synthetic import write_series


def _recode(paths, uid: str, **kwargs) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        if uid == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = uid
        else:
            ds.compress(uid, **kwargs)
        ds.save_as(path, enforce_file_format=True)


def _gdcm_recode(paths, syntax_name: str) -> None:
    gdcm = pytest.importorskip("gdcm")
    for path in paths:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax_name)))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()


def _gdcm_pixels(path) -> np.ndarray:
    """An independent decoder (GDCM, through pydicom's gdcm plugin) of one file's stored values."""
    pytest.importorskip("gdcm")
    from pydicom.pixels import pixel_array

    return pixel_array(path, decoding_plugin="gdcm")


@pytest.mark.parametrize(
    ("uid", "kwargs"),
    [
        (DeflatedExplicitVRLittleEndian, {}),
        (RLELossless, {}),
        (JPEGLSLossless, {}),
        (JPEG2000Lossless, {}),
    ],
    ids=["deflated", "rle", "jpeg-ls", "jpeg2000-lossless"],
)
def test_lossless_syntaxes_convert_voxel_identical(tmp_path, uid, kwargs):
    s = write_series(tmp_path / "s", n_slices=4, rows=32, columns=32)
    plain = convert_study(tmp_path / "s", None).volume.array
    _recode(s.paths, uid, **kwargs)
    assert pydicom.dcmread(s.paths[0]).file_meta.TransferSyntaxUID == uid
    res = convert_study(tmp_path / "s", None)
    assert np.array_equal(res.volume.array, plain)
    assert np.array_equal(plain, s.hu_zyx[:, ::-1, :].astype(np.int16))


@pytest.mark.parametrize(
    "syntax",
    ["JPEGLosslessProcess14_1", "JPEGLosslessProcess14", "ExplicitVRBigEndian"],
    ids=["jpeg-sv1", "jpeg-p14", "big-endian"],
)
def test_gdcm_written_syntaxes_convert_voxel_identical(tmp_path, syntax):
    s = write_series(tmp_path / "s", n_slices=4, rows=32, columns=32)
    _gdcm_recode(s.paths, syntax)
    res = convert_study(tmp_path / "s", None)
    assert np.array_equal(res.volume.array, s.hu_zyx[:, ::-1, :].astype(np.int16))


@pytest.mark.parametrize(("uid", "kwargs"), [(JPEGLSNearLossless, {"jls_error": 3}), (JPEG2000, {"j2k_cr": [4]})])
def test_lossy_syntaxes_match_an_independent_decoder(tmp_path, uid, kwargs):
    s = write_series(tmp_path / "s", n_slices=3, rows=32, columns=32, rescale_intercept=-1024.0)
    _recode(s.paths, uid, **kwargs)
    res = convert_study(tmp_path / "s", None)
    for k, path in enumerate(s.paths):
        expected = _gdcm_pixels(path).astype(np.int32) - 1024
        assert np.array_equal(res.volume.array[k], expected[::-1].astype(np.int16))
    assert np.abs(res.volume.array.astype(int) - s.hu_zyx[:, ::-1, :]).max() > 0  # really lossy


def test_syntax_without_a_decoder_is_named_not_called_corrupt(tmp_path):
    s = write_series(tmp_path / "s", n_slices=3)
    for path in s.paths:  # MPEG-2: a valid syntax no pydicom decoder reads
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x0a" + b"\0" * 30])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomSeriesError) as info:
        convert_study(tmp_path / "s", None)
    text = str(info.value)
    assert "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)" in text and "corrupt" not in text
    assert "pydicom has no decoder" in text


def test_syntax_whose_decoder_plugins_are_missing_names_the_package(tmp_path):
    from pydicom.pixels.decoders.base import get_decoder

    s = write_series(tmp_path / "s", n_slices=3)
    _recode(s.paths, JPEGLSLossless)
    decoder = get_decoder(JPEGLSLossless)
    saved = dict(decoder._available)
    for label in list(saved):  # as on a machine where none of its plugins is installed
        decoder.remove_plugin(label)
    try:
        with pytest.raises(DicomSeriesError) as info:
            convert_study(tmp_path / "s", None)
    finally:
        decoder._available.update(saved)
    text = str(info.value)
    assert "no decoder plugin is installed for transfer syntax JPEG-LS Lossless (1.2.840.10008.1.2.4.80)" in text
    assert "pip install pyjpegls" in text and "corrupt" not in text
    assert np.array_equal(convert_study(tmp_path / "s", None).volume.array, s.hu_zyx[:, ::-1, :].astype(np.int16))
