"""The lung fields of a DICOM film as a binary DICOM Segmentation (highdicom), for a PACS or a viewer.

IHE AI Results (AIR) lists the Segmentation IOD beside the SR for what an algorithm delineated. The
lung fields that :func:`pneumonia_monai.transforms.lung_crop.lung_field_mask` finds (the regions the
classifier's crop is built on) become one segment of a ``BINARY`` Segmentation:

- Segmented Property Category SCT 91723000 *Anatomical Structure*, Type SCT 39607008 *Lung*, Segment
  Label ``Lung fields``, Segment Algorithm Type ``AUTOMATIC`` with the Algorithm Identification Sequence
  (family DCM 113065 *Image Processing*: thresholds and morphology, not the network);
- built from the source film's header (highdicom copies its Patient and Study modules; the same study,
  a new series), on its pixel grid, in its row and column orientation (Patient Orientation copied), and
  referencing it (Referenced Series Sequence, and the Source Image Sequence of its one frame); without
  Pixel Measures: the grid is the source's, fixed by the reference;
- Series and SOP Instance UIDs derived from the study, the model version and the source
  (:func:`pneumonia_monai.dicom.uids.result_uids`), so a rerun gives the same object.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from pneumonia_monai.dicom.sr import NOT_FOR_DIAGNOSTIC_USE, SERIES_DESCRIPTION_PREFIX, readable_copy
from pneumonia_monai.dicom.uids import result_uids
from pneumonia_monai.dicom.values import check_long_string, check_positive_int

logger = logging.getLogger(__name__)

#: Series Description of the lung-field Segmentations.
SEG_SERIES_DESCRIPTION = f"{SERIES_DESCRIPTION_PREFIX} lung fields - {NOT_FOR_DIAGNOSTIC_USE}"
#: Segment Label of the one segment.
LUNG_FIELDS_LABEL = "Lung fields"
#: Attributes of the source read here besides those :func:`~pneumonia_monai.dicom.sr.readable_copy` copies.
_SOURCE_ATTRIBUTES = (
    "Rows",
    "Columns",
    "PatientOrientation",
    "FrameOfReferenceUID",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "Manufacturer",
)


def build_lung_seg(
    source: pydicom.Dataset,
    mask: np.ndarray,
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 992,
    instance_number: int = 1,
) -> hd.seg.Segmentation:
    """Build the binary Segmentation of a film's lung fields, referencing the film.

    Args:
        source: the film (its header is enough).
        mask: ``(Rows, Columns)`` boolean (or 0/1) mask on the source's pixel grid, not all empty.
        algorithm_name: name of the model whose crop the fields are (Manufacturer's Model Name).
        algorithm_version: its version (Software Versions, the algorithm's version, the UIDs).
        series_number: Series Number of the Segmentation series.
        instance_number: Instance Number of the Segmentation.

    Returns:
        The Segmentation; write it with :func:`pneumonia_monai.dicom.writer.write_dataset_atomic`.

    Raises:
        TypeError: if ``source`` is not a dataset or ``mask`` not a numeric or boolean array.
        ValueError: if the mask's shape is not the source's Rows x Columns, it is not binary or empty,
            the source lacks its UIDs, or a name or number is invalid.
    """
    if not isinstance(source, pydicom.Dataset):
        raise TypeError(f"source must be a pydicom.Dataset, got {type(source).__name__}")
    source = readable_copy(source, "segmentation source", _SOURCE_ATTRIBUTES)
    # No Pixel Measures: the mask is on the source's own grid, which the reference fixes. (highdicom
    # copies Pixel Spacing without a Slice Thickness, which a projection film has not, and then cannot
    # read its own object back; and CR headers carry spacings of 0, which DICOM forbids.)
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        source.pop(keyword, None)
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "Rows",
        "Columns",
    ):
        if not source.get(keyword):
            raise ValueError(f"source has no {keyword}")
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array, got {type(mask).__name__}")
    if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
        raise TypeError(f"mask must be boolean or integer 0/1, got dtype {mask.dtype}")
    shape = (int(source.Rows), int(source.Columns))
    if mask.shape != shape:
        raise ValueError(f"mask must have the source's Rows x Columns {shape}, got {mask.shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must be binary (0 and 1 only)")
    if not mask.any():
        raise ValueError("mask is empty: there are no lung fields to segment")
    check_long_string("algorithm_name", algorithm_name)
    check_long_string("algorithm_version", algorithm_version)
    check_positive_int("series_number", series_number)
    check_positive_int("instance_number", instance_number)

    series_uid, sop_uid = result_uids(
        "seg", str(source.StudyInstanceUID), algorithm_version, [str(source.SOPInstanceUID)]
    )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version, family=codes.DCM.ImageProcessing
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=LUNG_FIELDS_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Lung,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=mask.astype(bool)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=SERIES_DESCRIPTION_PREFIX,
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        device_serial_number="0",
        series_description=SEG_SERIES_DESCRIPTION,
    )
    # Type 2C where the source has no Image Orientation / Position (CR, most DX): the mask is on the
    # source's grid in its orientation, so the source's Patient Orientation holds (empty if unknown).
    if "ImageOrientationPatient" not in source and "PatientOrientation" not in seg:
        seg.PatientOrientation = source.get("PatientOrientation")
    seg.BodyPartExamined = source.get("BodyPartExamined") or "CHEST"
    logger.debug("built lung-field SEG %dx%d for one source image", shape[1], shape[0])
    return seg
