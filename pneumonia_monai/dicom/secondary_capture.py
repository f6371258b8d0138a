"""Grad-CAM overlays as DICOM Secondary Capture images, so that they reach PACS viewers next to the film.

The SC image is built with highdicom from the source film: same patient and study (the Patient and
Study modules are copied, each element only if it can be read), a series and SOP instance of its own
whose UIDs derive from the study, the model version and the source image
(:func:`pneumonia_monai.dicom.uids.result_uids`: the same heatmap built again is the same object), RGB
pixels, and everything a viewer shows
says what it is - Series Description, Image Comments and Derivation Description carry "NOT FOR
DIAGNOSTIC USE", Image Type is DERIVED/SECONDARY/OTHER, Conversion Type is WSD (workstation).

Burned In Annotation: DICOM defines it as whether the pixels carry enough burned-in text to identify
the patient (PS3.3 C.7.6.1.1.x), not whether graphics are drawn on them. The overlay reproduces the
source's pixels, so it is "NO" only when the source itself says "NO", and "YES" otherwise - the
conservative answer for de-identification tools when the source does not say.

The source's lossy compression history is carried over (Lossy Image Compression "01" with its ratio and
method), as PS3.3 C.7.6.1.1.5 requires of images derived from lossy-compressed ones.
"""

from __future__ import annotations

import copy
import logging

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sc.enum import ConversionTypeValues
from pydicom.sr.codedict import codes

from pneumonia_monai import checks
from pneumonia_monai.dicom.sr import NOT_FOR_DIAGNOSTIC_USE, SERIES_DESCRIPTION_PREFIX, readable_copy
from pneumonia_monai.dicom.uids import result_uids, result_version
from pneumonia_monai.dicom.values import check_long_string, check_positive_int

logger = logging.getLogger(__name__)

#: Series Description of the heatmap series (LO, at most 64 characters).
SC_SERIES_DESCRIPTION = f"{SERIES_DESCRIPTION_PREFIX} Grad-CAM heatmap - {NOT_FOR_DIAGNOSTIC_USE}"
#: Image Comments of every heatmap (ASCII: the source's character set may be Latin-1 only).
SC_IMAGE_COMMENTS = f"{NOT_FOR_DIAGNOSTIC_USE} - AI heatmap (Grad-CAM)"

#: Patient orientation letters highdicom accepts for a biped (one letter per direction).
_BIPED_LETTERS = frozenset("APRLHF")
#: Attributes that record the lossy compression history of the pixels.
_LOSSY_ATTRIBUTES = ("LossyImageCompressionRatio", "LossyImageCompressionMethod")
#: Attributes of the source read here besides those :func:`~pneumonia_monai.dicom.sr.readable_copy` copies.
_SOURCE_ATTRIBUTES = (
    "PatientOrientation",
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "AcquisitionDateTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "BurnedInAnnotation",
    "LossyImageCompression",
    *_LOSSY_ATTRIBUTES,
)


def _patient_orientation(source: pydicom.Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation when highdicom can take it (two single letters), else None."""
    value = source.get("PatientOrientation")
    if not value or isinstance(value, str) or len(value) != 2:
        return None
    row, column = (str(v) for v in value)
    if row in _BIPED_LETTERS and column in _BIPED_LETTERS:
        return row, column
    return None


def build_heatmap_sc(
    source: pydicom.Dataset,
    overlay_rgb: np.ndarray,
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 991,
    instance_number: int = 1,
    operating_point: str | None = None,
) -> hd.sc.SCImage:
    """Build a Secondary Capture image of a heatmap overlay, in the study of its source film.

    The overlay must be in the source's row/column orientation (it may be resized, e.g. to the
    model's input size, but neither transposed nor flipped): its Patient Orientation is the source's.

    Args:
        source: the film the heatmap explains (its header is enough).
        overlay_rgb: ``(rows, columns, 3)`` uint8 RGB image, e.g. from
            :func:`pneumonia_monai.visualize.overlay.film_heatmap`.
        algorithm_name: name of the model (Manufacturer's Model Name, Derivation Description).
        algorithm_version: version of the model (Software Versions, Derivation Description).
        series_number: Series Number of the heatmap series.
        operating_point: where the decision threshold in the caption comes from; a site operating point
            (:mod:`pneumonia_monai.site_overlay`) gives other UIDs
            (:func:`~pneumonia_monai.dicom.uids.result_version`), as the caption's call may differ.
        instance_number: Instance Number of the image.

    Returns:
        The SC image (Explicit VR Little Endian); write it with
        :func:`pneumonia_monai.dicom.writer.write_dataset_atomic`.

    Raises:
        TypeError: if ``source`` is not a dataset or ``overlay_rgb`` not a uint8 array.
        ValueError: if ``overlay_rgb`` is not ``(rows, columns, 3)``, the source lacks its UIDs, or a
            name or number is invalid.
    """
    if not isinstance(source, pydicom.Dataset):
        raise TypeError(f"source must be a pydicom.Dataset, got {type(source).__name__}")
    # Only the attributes needed, each only if readable (an unknown VR, a date that does not parse):
    # an unreadable one is left out, logged by tag, instead of failing the heatmap.
    source = readable_copy(source, "heatmap source", _SOURCE_ATTRIBUTES)
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not source.get(keyword):
            raise ValueError(f"source has no {keyword}")
    checks.rgb_image("overlay_rgb", overlay_rgb)
    if max(overlay_rgb.shape[:2]) > 0xFFFF:
        raise ValueError(f"overlay_rgb is too large for DICOM Rows/Columns: {overlay_rgb.shape}")
    check_long_string("algorithm_name", algorithm_name)
    check_long_string("algorithm_version", algorithm_version)
    check_positive_int("series_number", series_number)
    check_positive_int("instance_number", instance_number)

    series_uid, sop_uid = result_uids(
        "sc",
        str(source.StudyInstanceUID),
        result_version(algorithm_version, operating_point),
        [str(source.SOPInstanceUID)],
    )
    orientation = _patient_orientation(source)
    acquisition = (
        [hd.ContributingEquipment.for_image_acquisition(source)] if source.get("Manufacturer") else None
    )
    # The constructor gets only the UIDs: the Patient and Study modules are copied verbatim from the
    # source just below (all of their attributes, and without highdicom re-validating, and warning
    # about, person names the source already carries).
    sc = hd.sc.SCImage(
        pixel_array=np.ascontiguousarray(overlay_rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=SERIES_DESCRIPTION_PREFIX,
        # highdicom requires an orientation for the PATIENT coordinate system; an unknown one is
        # emptied just below (DICOM's Type 2C Patient Orientation may be empty).
        patient_orientation=orientation or ("L", "F"),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        contributing_equipment=acquisition,
        specific_character_set=source.get("SpecificCharacterSet"),
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
    )
    if orientation is None:
        sc["PatientOrientation"].value = None
        logger.debug("source Patient Orientation unknown or compound: left empty in the heatmap")
    sc.copy_patient_and_study_information(source)
    # What the image shows is still the source's body part (and laterality, when it has one); a chest
    # classifier's heatmap is of the chest when the source does not say.
    sc.BodyPartExamined = source.get("BodyPartExamined") or "CHEST"
    for keyword in ("Laterality", "ImageLaterality"):
        if source.get(keyword):
            sc[keyword] = copy.deepcopy(source[keyword])

    sc.ConversionType = ConversionTypeValues.WSD.value
    sc.BurnedInAnnotation = "NO" if source.get("BurnedInAnnotation") == "NO" else "YES"
    sc.ImageComments = SC_IMAGE_COMMENTS
    sc.DerivationDescription = (
        f"{NOT_FOR_DIAGNOSTIC_USE}. Grad-CAM heatmap of {algorithm_name} {algorithm_version} "
        "(class: pneumonia) blended over the source image for display."
    )
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = codes.DCM.SourceImageForImageProcessingOperation  # CID 7202
    reference.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept(purpose.value, purpose.scheme_designator, purpose.meaning)
    ]
    sc.SourceImageSequence = [reference]
    if source.get("LossyImageCompression") == "01":
        sc.LossyImageCompression = "01"
        for keyword in _LOSSY_ATTRIBUTES:
            if keyword in source:
                sc[keyword] = copy.deepcopy(source[keyword])
    logger.debug("built heatmap SC %dx%d for one source image", overlay_rgb.shape[1], overlay_rgb.shape[0])
    return sc
