"""Radiomics export: pyradiomics features per structure of a label map, fast and tidy.

Pipeline for one case (``extract.extract_case``):

1. read the CT and the label map with SimpleITK (as pyradiomics itself would), check they share a grid;
2. find every structure's bounding box in one pass over the label map (``grid``);
3. cut a small crop per structure -- and, when the parameter file resamples, reproduce the exact
   resampling grid pyradiomics would use on the whole volume (``grid.resample_grid``) -- so the
   features equal whole-volume extraction while each worker only touches a few megabytes;
4. extract structures in parallel worker processes (``parallel``, ``worker``), one thread each;
5. write a long table ``(case, structure, label, feature, value)`` as parquet with provenance in
   its schema metadata and a JSON sidecar (``table``); ``table.cohort_table`` pivots many cases
   into one wide table.

Importing this package is cheap: pyradiomics, SimpleITK and pyarrow are imported where used.
"""
