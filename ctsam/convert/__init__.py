"""DICOM study -> validated HU NIfTI + JSON sidecar (the ``convert`` stage; reference: docs/convert.md).

Modules: :mod:`~ctsam.convert.studies` (one study per case), :mod:`~ctsam.convert.stacks` (series ->
stacks), :mod:`~ctsam.convert.kernels` (kernel table), :mod:`~ctsam.convert.selection` (which stack),
:mod:`~ctsam.convert.geometry` (slice checks), :mod:`~ctsam.convert.volume` (pixels, HU without
loss, grid, tilt, uneven spacing, threaded decode), :mod:`~ctsam.convert.nifti` (fast gzip writer),
:mod:`~ctsam.convert.sidecar` (metadata allow-list), :mod:`~ctsam.convert.study` (the whole stage).
"""

from ctsam.convert.study import ConvertOptions, ConvertResult, convert_study

__all__ = ["ConvertOptions", "ConvertResult", "convert_study"]
