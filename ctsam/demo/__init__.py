"""Synthetic demo cohort: whole-body CT phantoms as DICOM series with ground truth and coarse labels.

The phantoms are small (about 128 x 128 x 100 voxels, 0.9 x 0.9 x 2.5 mm) so the whole pipeline
runs in seconds on a laptop: HU values, noise, label names (TotalSegmentator ``total`` classes) and
anisotropic spacing are realistic; organ sizes are scaled down to fit the small field of view.

* :mod:`ctsam.demo.structures` -- the labelled structures (TotalSegmentator ids and names).
* :mod:`ctsam.demo.phantom` -- one phantom: CT in HU, ground-truth and coarse label maps.
* :mod:`ctsam.demo.dicom` -- writing a CT volume as a DICOM series (pydicom).
* :mod:`ctsam.demo.cohort` -- the cohort folder layout, case ids, and writing a whole cohort.
"""
