"""Patient identity of exported DICOM objects: ``copy`` (default) or ``deidentify``.

``copy``: a derived object (DICOM-SEG, RTSTRUCT) carries the source series' patient and study modules
and references its instances by UID, so a PACS files it into the right study and viewers overlay it.
This is the standard for returning results to the PACS they came from.

``deidentify``: the object is rewritten following the DICOM Basic Application Level Confidentiality
Profile (PS3.15 Annex E, table E.1-1; no options retained):

* patient and study identifiers emptied (``Z``): PatientName, PatientID (both set to the pseudonymous
  case id when one is given, so the object can still be filed), PatientBirthDate, PatientSex,
  AccessionNumber, StudyID, ReferringPhysicianName;
* attributes that may identify removed (``X``): other patient ids and names, age, size, weight,
  address, institution, station, physicians and operators, descriptions of the source study,
  device serial numbers, private elements, request and referenced-patient sequences;
* every date and time (DA, DT, TM) replaced by a dummy value (``D``: 19000101 / 000000), so no
  longitudinal temporal information remains (LongitudinalTemporalInformationModified = REMOVED);
* every instance UID (study, series, SOP instance, frame of reference, referenced instances,
  tracking and dimension organisation UIDs) replaced (``U``) by a UID derived from the original and
  a salt (``export.uid_salt``): consistent within and across exports with the same salt, so several
  exports of one study still reference one another, but not the original series;
* PatientIdentityRemoved = YES, DeidentificationMethod and its code (DCM 113100, Basic Application
  Confidentiality Profile) added.
"""

from __future__ import annotations

import hashlib

MODES = ("copy", "deidentify")
DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000"}
_UID_PREFIX = "2.25."  # UUID-derived UIDs (PS3.5 B.2): an integer below 2**128

# table E.1-1 "Z": kept, emptied (patient name and id get the pseudonym instead when given)
EMPTY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "ContentCreatorName",
    "PatientBirthTime",
)
# table E.1-1 "X" (and X/Z, X/D, X/Z/D: removed where the object allows it)
REMOVE = (
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MilitaryRank",
    "BranchOfService",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "MedicalRecordLocator",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientReligiousPreference",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PatientInsurancePlanCodeSequence",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionCodeSequence",
    "StationName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "StudyDescription",
    "ProtocolName",
    "RequestAttributesSequence",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepID",
    "AdmissionID",
    "AdmittingDiagnosesDescription",
    "DeviceSerialNumber",
    "PlateID",
    "DetectorID",
    "GantryID",
    "ImageComments",
    "AcquisitionComments",
    "PatientState",
    "PregnancyStatus",
    "SmokingStatus",
    "MedicalAlerts",
    "Allergies",
    "SpecialNeeds",
    "PerformedLocation",
    "ScheduledPatientInstitutionResidence",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ConsultingPhysicianName",
)
# table E.1-1 "U": instance UIDs, replaced consistently
UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "ReferencedFrameOfReferenceUID",
    "RelatedFrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID",
    "DimensionOrganizationUID",
    "TrackingUID",
    "ConcatenationUID",
    "IrradiationEventUID",
    "InstanceCreatorUID",
    "ReferencedSeriesInstanceUID",
    "StorageMediaFileSetUID",
    "TransactionUID",
    "FiducialUID",
    "UID",
)
METHOD = "PS3.15 E.1 Basic Application Level Confidentiality Profile"  # LO: at most 64 characters


def check_mode(mode: str) -> str:
    from ctsam.errors import ConfigError

    if mode not in MODES:
        raise ConfigError(
            "unknown export identity mode",
            expected=" or ".join(MODES),
            found=repr(mode),
            fix="set export.identity to 'copy' (PACS return) or 'deidentify'",
        )
    return mode


def replace_uid(uid: str, salt: str = "") -> str:
    """A new UID for ``uid``: ``2.25.<128-bit integer>`` from sha256(salt, uid); same inputs, same UID."""
    digest = hashlib.sha256(f"ctsam-deid\0{salt}\0{uid}".encode()).digest()
    return _UID_PREFIX + str(int.from_bytes(digest[:16], "big"))


def deidentify(ds, *, pseudonym: str | None = None, salt: str = "") -> None:
    """Apply the basic confidentiality profile to ``ds`` (a pydicom Dataset) in place (see the module doc)."""
    from pydicom.dataset import Dataset

    ds.remove_private_tags()
    _walk(ds, salt)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key in EMPTY:
        if key in ds:
            setattr(ds, key, "")
    if pseudonym:
        ds.PatientName = pseudonym
        ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]


def _walk(ds, salt: str) -> None:
    for key in REMOVE:
        if key in ds:
            delattr(ds, key)
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                item.remove_private_tags()
                _walk(item, salt)
        elif elem.keyword in UIDS and elem.value:
            if elem.VM > 1:
                elem.value = [replace_uid(str(v), salt) for v in elem.value]
            else:
                elem.value = replace_uid(str(elem.value), salt)
        elif elem.VR in DUMMY and elem.keyword not in EMPTY and elem.value not in (None, ""):
            elem.value = DUMMY[elem.VR]


def apply_identity(ds, mode: str, *, pseudonym: str | None = None, salt: str = "") -> None:
    """``copy``: leave ``ds`` as built; ``deidentify``: :func:`deidentify` it."""
    if check_mode(mode) == "deidentify":
        deidentify(ds, pseudonym=pseudonym, salt=salt)
