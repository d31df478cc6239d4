"""DICOM study -> validated int16 HU NIfTI + JSON sidecar (the ``convert`` stage).

Modules: :mod:`~ctsam.convert.selection` (which series), :mod:`~ctsam.convert.geometry` (slice
checks), :mod:`~ctsam.convert.volume` (pixels, HU, grid, tilt), :mod:`~ctsam.convert.sidecar`
(metadata allow-list), :mod:`~ctsam.convert.study` (the whole stage).
"""

from ctsam.convert.study import ConvertOptions, ConvertResult, convert_study

__all__ = ["ConvertOptions", "ConvertResult", "convert_study"]
