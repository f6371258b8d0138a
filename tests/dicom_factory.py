"""Build small, synthetic but well-formed DICOM files for the tests.

Everything here is made up (no real patient); the pixel data is a deterministic ramp unless given.

Typical use::

    from dicom_factory import make_cr, make_dx, make_sr, make_presentation_state

    make_cr(tmp_path / "pa.dcm")                                   # CR chest PA, 12-bit, MONOCHROME2
    make_dx(tmp_path / "ap.dcm", view="AP")                        # DX For Presentation
    make_cr(tmp_path / "lat.dcm", view="LL")
    chest = [code("SCT", "816094009", "Chest")]
    make_cr(tmp_path / "nobody.dcm", body_part=None, AnatomicRegionSequence=chest)
    make_cr(tmp_path / "nopix.dcm", PixelData=None)                # keyword=None removes an attribute
    make_cr(tmp_path / "raw.dcm", preamble=False)                  # no preamble, no file meta

Every ``make_*`` returns the dataset it wrote (``path=None`` writes nothing).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "code",
    "make_cr",
    "make_dx",
    "make_presentation_state",
    "make_sr",
    "ramp",
    "write",
]

#: Transfer syntaxes that need ``Dataset.compress`` rather than a plain write.
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def code(scheme: str, value: str, meaning: str) -> Dataset:
    """Return one code sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def ramp(rows: int = 40, cols: int = 48, bits_stored: int = 12) -> np.ndarray:
    """Return a deterministic ``(rows, cols)`` ramp using the whole range of ``bits_stored`` bits."""
    top = (1 << bits_stored) - 1
    values = np.linspace(0, top, rows * cols).round().reshape(rows, cols)
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    return values.astype(dtype)


def _base(sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Factory^Synthetic"
    ds.PatientID = "SYNTH-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20240102"
    ds.StudyTime = "030405"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "Factory"
    return ds


def _apply(ds: Dataset, overrides: dict[str, Any]) -> None:
    for keyword, value in overrides.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def write(
    ds: Dataset, path: str | Path, *, transfer_syntax: str = ExplicitVRLittleEndian, preamble: bool = True
) -> Path:
    """Write ``ds`` to ``path`` (parents created).

    Args:
        ds: the dataset (its ``file_meta`` is replaced).
        path: where to write.
        transfer_syntax: native syntaxes are written as is; others are compressed with ``Dataset.compress``.
        preamble: ``False`` writes the bare data set: no 128-byte preamble, no ``DICM``, no file meta
            (implicit VR little endian), like files from old modalities.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tsyntax = UID(transfer_syntax)
    if not preamble:
        ds.file_meta = FileMetaDataset()
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        return path
    ds.file_meta = FileMetaDataset()
    if tsyntax in _NATIVE:
        ds.file_meta.TransferSyntaxUID = tsyntax
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(tsyntax, generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def make_cr(
    path: str | Path | None = None,
    *,
    modality: str = "CR",
    body_part: str | None = "CHEST",
    view: str | None = "PA",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    pixels: np.ndarray | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    presentation_intent: str | None = None,
    sop_class: str | None = None,
    preamble: bool = True,
    **overrides: Any,
) -> Dataset:
    """Build (and write, if ``path`` is given) a single-frame projection radiograph.

    Args:
        path: where to write; ``None`` only builds the dataset.
        modality: ``"CR"`` (CR Image Storage), ``"DX"`` (DX For Presentation unless ``presentation_intent``
            is ``"FOR PROCESSING"``) or ``"OT"`` (Secondary Capture); ``sop_class`` overrides the choice.
        body_part: Body Part Examined; ``None`` leaves it out.
        view: View Position; ``None`` leaves it out.
        photometric: ``"MONOCHROME1"`` or ``"MONOCHROME2"``.
        bits_stored: 1 to 16; 8 or less is stored in 8-bit words, more in 16-bit words.
        pixels: a 2-D unsigned array; default :func:`ramp`.
        transfer_syntax: the transfer syntax to write with.
        presentation_intent: Presentation Intent Type for DX (default ``"FOR PRESENTATION"``).
        sop_class: SOP Class UID to use instead of the modality's.
        preamble: see :func:`write`.
        **overrides: attributes set last, by keyword; ``None`` removes the attribute (``PixelData=None``).
    """
    if modality == "DX":
        intent = presentation_intent or "FOR PRESENTATION"
        default_class = (
            DigitalXRayImageStorageForProcessing
            if intent == "FOR PROCESSING"
            else DigitalXRayImageStorageForPresentation
        )
    elif modality == "OT":
        intent, default_class = presentation_intent, SecondaryCaptureImageStorage
    else:
        intent, default_class = presentation_intent, ComputedRadiographyImageStorage
    ds = _base(sop_class or default_class, modality)
    if intent is not None:
        ds.PresentationIntentType = intent
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if view is not None:
        ds.ViewPosition = view
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    array = ramp(bits_stored=bits_stored) if pixels is None else np.asarray(pixels)
    if array.ndim != 2:
        raise ValueError(f"pixels must be 2-D, got shape {array.shape}")
    bits_allocated = 8 if bits_stored <= 8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in array.shape)
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = array.astype(np.uint8 if bits_allocated == 8 else "<u2").tobytes()
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    _apply(ds, overrides)
    if path is not None:
        write(ds, path, transfer_syntax=transfer_syntax, preamble=preamble)
    return ds


def make_dx(path: str | Path | None = None, **kwargs: Any) -> Dataset:
    """:func:`make_cr` with ``modality="DX"`` (DX For Presentation unless told otherwise)."""
    kwargs.setdefault("modality", "DX")
    return make_cr(path, **kwargs)


def make_sr(
    path: str | Path | None = None, *, sop_class: str = BasicTextSRStorage, **overrides: Any
) -> Dataset:
    """Build (and write) a minimal SR document header: no content tree, no pixel data."""
    ds = _base(sop_class, "SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([code("LN", "18748-4", "Diagnostic imaging report")])
    _apply(ds, overrides)
    if path is not None:
        write(ds, path)
    return ds


def make_presentation_state(
    path: str | Path | None = None,
    *,
    sop_class: str = GrayscaleSoftcopyPresentationStateStorage,
    **overrides: Any,
) -> Dataset:
    """Build (and write) a minimal softcopy presentation state header."""
    ds = _base(sop_class, "PR")
    ds.ContentLabel = "GSPS"
    ds.PresentationCreationDate = "20240102"
    ds.PresentationCreationTime = "030405"
    _apply(ds, overrides)
    if path is not None:
        write(ds, path)
    return ds


def referenced_sop_uids(ds: Dataset) -> set[str]:
    """SOP Instance UIDs referenced anywhere in an SR's content tree."""
    found: set[str] = set()

    def walk(items: Iterable[Dataset]) -> None:
        for item in items:
            for ref in item.get("ReferencedSOPSequence", []):
                found.add(str(ref.ReferencedSOPInstanceUID))
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def with_unknown_vr(source: Dataset, name: str) -> Dataset:
    """``source`` written and read back with Patient's Name ``name`` under the VR bytes ``ZZ``."""
    ds = copy.deepcopy(source)
    ds.PatientName = name
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    at = raw.index(b"\x10\x00\x10\x00PN")
    raw = raw[: at + 4] + b"ZZ" + raw[at + 6 :]
    return pydicom.dcmread(io.BytesIO(raw), force=True)
