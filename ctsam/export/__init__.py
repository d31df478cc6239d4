"""Exports for the tools users already have: DICOM-SEG (:mod:`.dicomseg`), RTSTRUCT (:mod:`.rtstruct`),
with the patient identity copied from the source series or removed (:mod:`.identity`)."""
