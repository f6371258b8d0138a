"""A film as a DICOM DX For Presentation instance, and its encoding (uncompressed, JPEG 2000 or RLE lossless).

:func:`build_dx_dataset` writes one 8-bit grayscale film (the Kaggle JPEGs, see
:func:`pneumonia_monai.data.kaggle_dicom.kaggle_to_dicom`) as a *Digital X-Ray Image Storage - For
Presentation* instance; :func:`encode_dataset` writes it in the chosen transfer syntax.

What the source does not tell is left empty where the IOD allows it (Study Date and Time, Patient's Birth
Date and Sex, Manufacturer: all Type 2) rather than invented. Two Type 1 attributes have no known value and
get a documented nominal one: Imager Pixel Spacing (the films were resampled to an unknown scale, see
:data:`NOMINAL_IMAGER_PIXEL_SPACING_MM`) and Pixel Intensity Relationship (``LOG``, sign -1: processed
films, brighter = less X-ray intensity). The films are antero-posterior (Kermany et al. 2018: "Chest X-ray
images (anterior-posterior) were selected from retrospective cohorts of pediatric patients"), so View Position
is ``AP``; the source went through lossy JPEG, so Lossy Image Compression is ``01`` (ISO_10918_1).
"""

from __future__ import annotations

import io
import logging

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

logger = logging.getLogger(__name__)

#: ``--compression`` choices -> transfer syntax (``None``: Explicit VR Little Endian, uncompressed).
COMPRESSIONS: dict[str, UID | None] = {"none": None, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}
#: Encoder plugin used for each compressed transfer syntax (pydicom's own RLE encoder; OpenJPEG for J2K).
_ENCODER_PLUGINS: dict[str, str] = {"jpeg2000": "pylibjpeg", "rle": "pydicom"}
#: How each ``--compression`` choice is named in reports.
COMPRESSION_WORDS: dict[str, str] = {
    "none": "uncompressed",
    "jpeg2000": "JPEG 2000 lossless",
    "rle": "RLE lossless",
}

#: Imager Pixel Spacing (0018,1164) written for the converted films, in mm. The attribute is Type 1 in the
#: DX Detector module but the true value is unknown: the Kaggle films were resampled from various sizes.
#: 1.0 is a deliberately round, *nominal* value (Derivation Description says so); do not measure with it.
NOMINAL_IMAGER_PIXEL_SPACING_MM = 1.0

_CHEST = ("SCT", "816094009", "Chest")
_ANTERO_POSTERIOR = ("SCT", "399348003", "antero-posterior")


# ---------------------------------------------------------------------------- the DX dataset


def _code(scheme: str, value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_dx_dataset(
    pixels: np.ndarray,
    *,
    patient: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    imager_pixel_spacing_mm: float = NOMINAL_IMAGER_PIXEL_SPACING_MM,
) -> Dataset:
    """Build a DX For Presentation instance (uncompressed) of one 8-bit grayscale film.

    Args:
        pixels: ``(rows, columns)`` ``uint8`` array, stored as is (MONOCHROME2, Bits Stored 8).
        patient: the pseudonym written as Patient ID, Patient's Name (family name) and Study ID.
        study_uid: Study Instance UID.
        series_uid: Series Instance UID.
        sop_uid: SOP Instance UID.
        instance_number: Instance Number (1 or more).
        imager_pixel_spacing_mm: Imager Pixel Spacing, both directions.

    Raises:
        TypeError: if ``pixels`` is not a ``uint8`` array.
        ValueError: if ``pixels`` is not 2-D, ``patient`` is not a 1-16 character ``[A-Z0-9]`` pseudonym, or a
            number is out of range.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be a uint8 numpy array, got {getattr(pixels, 'dtype', type(pixels))}")
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"pixels must be a non-empty 2-D array, got shape {pixels.shape}")
    if not (patient.isascii() and patient.isalnum() and 1 <= len(patient) <= 16):
        raise ValueError(f"patient must be a 1-16 character alphanumeric pseudonym, got {patient!r}")
    if instance_number < 1:
        raise ValueError(f"instance_number must be 1 or more, got {instance_number!r}")
    if not imager_pixel_spacing_mm > 0:
        raise ValueError(f"imager_pixel_spacing_mm must be positive, got {imager_pixel_spacing_mm!r}")
    ds = Dataset()
    # SOP Common
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_uid
    # Patient: a pseudonym; what the source does not say stays empty (Type 2).
    ds.PatientName = f"{patient}^"
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Kaggle patient id replaced by a one-way pseudonym"
    # General Study: dates unknown, left empty rather than invented.
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = patient
    ds.AccessionNumber = ""
    ds.StudyDescription = "Chest X-ray (Kermany 2018, converted)"
    # General Series, DX Series
    ds.Modality = "DX"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Chest AP (converted from JPEG)"
    ds.BodyPartExamined = "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    # General Equipment: unknown
    ds.Manufacturer = ""
    # General Image, DX Image
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = (
        "Converted from an 8-bit JPEG (Kermany et al. 2018) by pneumonia_monai; "
        "Imager Pixel Spacing is nominal (true spacing unknown)"
    )
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    # VOI LUT: centre 128, width 256 maps stored value x to x / 255 exactly (PS3.3 C.11.2.1.2.1).
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    # DX Anatomy Imaged
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = DicomSequence([_code(*_CHEST)])
    # DX Detector
    ds.DetectorType = ""
    ds.ImagerPixelSpacing = [imager_pixel_spacing_mm, imager_pixel_spacing_mm]
    # DX Positioning
    ds.PositionerType = ""
    ds.ViewPosition = "AP"
    ds.ViewCodeSequence = DicomSequence([_code(*_ANTERO_POSTERIOR)])
    # Acquisition Context
    ds.AcquisitionContextSequence = DicomSequence([])
    # Image Pixel
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def check_compression(compression: str) -> UID | None:
    """Return the transfer syntax of a ``--compression`` choice, checking its encoder is installed.

    Raises:
        ValueError: on an unknown choice.
        RuntimeError: if the encoder is not available (the message names the missing packages).
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    tsyntax = COMPRESSIONS[compression]
    if tsyntax is not None:
        encoder = get_encoder(tsyntax)
        plugin = _ENCODER_PLUGINS[compression]
        if plugin not in encoder.available_plugins:
            missing = encoder.missing_dependencies or [f"the {plugin!r} encoder plugin"]
            raise RuntimeError(f"cannot encode {tsyntax.name}: missing {'; '.join(missing)}")
    return tsyntax


def encode_dataset(ds: Dataset, compression: str = "none") -> bytes:
    """Return the DICOM file bytes of ``ds`` (preamble, file meta, data set), compressed as asked.

    ``"jpeg2000"`` is JPEG 2000 Lossless (OpenJPEG through pylibjpeg), ``"rle"`` is RLE Lossless (pydicom's
    encoder); both are lossless, so the decoded pixels equal the input.

    Raises:
        ValueError, RuntimeError: see :func:`check_compression`.
    """
    tsyntax = check_compression(compression)
    if tsyntax is not None:
        ds.compress(tsyntax, encoding_plugin=_ENCODER_PLUGINS[compression], generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
