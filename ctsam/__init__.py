"""ctsam: cohort CT segmentation pipeline.

DICOM studies -> validated CT volumes -> coarse TotalSegmentator masks -> click prompts ->
CT-SAM3D-style promptable refinement -> fused 107-structure label maps -> QC and radiomics.

Arrays are indexed (z, y, x) everywhere inside the package; world coordinates are ITK/DICOM
LPS millimetres given as (x, y, z). Importing this package is cheap: heavy dependencies
(torch, SimpleITK, pydicom) are imported by the modules that need them.
"""

__version__ = "0.1.0"
