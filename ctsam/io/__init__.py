"""File input/output: atomic writes, NIfTI/NRRD images with label tables, DICOM."""
