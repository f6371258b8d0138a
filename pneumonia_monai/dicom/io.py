"""Read a DICOM file as a display image plus non-PHI facts.

Files are recognised as DICOM by :func:`pneumonia_monai.dicom.header.is_dicom` (by their header).

:func:`read_image` reads the whole data set with pydicom (``force=True``, so files without the
128-byte preamble are read too), decodes **the first frame only** with pydicom 3's decoder for the
file's transfer syntax and runs :func:`pneumonia_monai.dicom.pixels.to_display` on it. With
``min_side`` it decodes at a reduced resolution instead (a JPEG 2000 level, a DCT-scaled JPEG, or block
averages of the stored values; :mod:`pneumonia_monai.dicom.reduced`) and says so in ``meta["reduction"]``.

Multi-frame rule: frame 0 is used; ``meta["frames"]`` says how many the file holds and
``meta["frame_used"]`` which one was used (always 0), and a debug message is logged. A chest film
stored as several frames is rare (a dual-energy or stitched series would be several objects); taking
the first frame is explicit and reproducible, where averaging or picking a "best" frame would not be.

Everything that makes a file unusable is raised as :class:`DicomReadError` with a message meant to be
logged as the file's ``reason`` in a batch run; pydicom's and numpy's exceptions are wrapped in it.
pydicom's warnings while reading are captured and logged at debug level (and quoted in the message
when the file turns out unusable, since they often say why: "End of file reached ..."). The capture
uses :func:`warnings.catch_warnings`, which is process-wide state on Python < 3.14: reading from
several threads at once may misplace a warning (never an image); data loader worker processes are
unaffected.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import as_pixel_options

from pneumonia_monai.dicom import codecs, limits, pixels, reduced
from pneumonia_monai.dicom.header import is_dicom

logger = logging.getLogger(__name__)

#: Attributes without which no image can be made: keyword -> tag text for messages.
REQUIRED_ATTRIBUTES: dict[str, str] = {
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "BitsAllocated": "(0028,0100)",
    "BitsStored": "(0028,0101)",
    "PixelRepresentation": "(0028,0103)",
    "SamplesPerPixel": "(0028,0002)",
    "PhotometricInterpretation": "(0028,0004)",
    "PixelData": "(7FE0,0010)",
}

#: Photometric interpretations read_image accepts before decoding; YBR_ICT / YBR_RCT only occur in
#: JPEG 2000 and come back from the decoders as RGB.
SUPPORTED_PHOTOMETRIC: frozenset[str] = pixels.GRAYSCALE | pixels.COLOUR | {"YBR_ICT", "YBR_RCT"}


class DicomReadError(ValueError):
    """A DICOM file that cannot be turned into an image; the message says why, for humans."""


# --------------------------------------------------------------------------------------------------
# reading


def _warning_text(caught: list[warnings.WarningMessage]) -> str:
    return "; ".join(dict.fromkeys(str(w.message) for w in caught))


def _transfer_syntax(ds: Dataset) -> uid.UID:
    """The file's transfer syntax, or the one pydicom found the data set encoded in (no meta)."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax:
        return uid.UID(str(tsyntax))
    implicit, little = ds.original_encoding
    if implicit:
        inferred = uid.ImplicitVRLittleEndian
    else:
        inferred = uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian
    logger.debug("no (0002,0010) Transfer Syntax UID; data set read as %s", inferred.name)
    ds.file_meta.TransferSyntaxUID = inferred  # pydicom's decoder looks it up there
    return inferred


def _check_attributes(ds: Dataset, read_warnings: str) -> None:
    missing = [
        f"{keyword} {tag}"
        for keyword, tag in REQUIRED_ATTRIBUTES.items()
        if keyword not in ds or ds[keyword].value in (None, "", b"")
    ]
    if missing:
        hint = f" (pydicom: {read_warnings[:300]})" if read_warnings else ""
        raise DicomReadError(f"missing required attribute(s): {', '.join(missing)}{hint}")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits_allocated, bits_stored = int(ds.BitsAllocated), int(ds.BitsStored)
        pixel_rep, samples = int(ds.PixelRepresentation), int(ds.SamplesPerPixel)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(f"invalid Image Pixel attribute value: {exc}") from exc
    if rows < 1 or columns < 1 or frames < 1:
        raise DicomReadError(f"invalid image size: Rows {rows}, Columns {columns}, Number of Frames {frames}")
    if bits_allocated not in (1, 8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
        raise DicomReadError(
            f"unsupported Bits Allocated (0028,0100) {bits_allocated} / Bits Stored (0028,0101) {bits_stored}"
        )
    if pixel_rep not in (0, 1):
        raise DicomReadError(f"invalid Pixel Representation (0028,0103) {pixel_rep}")
    pi = str(ds.PhotometricInterpretation).strip().upper()
    if pi not in SUPPORTED_PHOTOMETRIC:
        raise DicomReadError(
            f"unsupported Photometric Interpretation (0028,0004) {pi!r} "
            f"(supported: {', '.join(sorted(SUPPORTED_PHOTOMETRIC))})"
        )
    expected_samples = 1 if pi in pixels.GRAYSCALE else 3
    if samples != expected_samples:
        raise DicomReadError(f"Samples per Pixel (0028,0002) is {samples}, {pi} needs {expected_samples}")


def _check_native_length(ds: Dataset) -> None:
    """Refuse native pixel data shorter than Rows x Columns x Samples x Frames x Bits Allocated."""
    frames = int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * frames * int(ds.BitsAllocated)
    expected = (bits + 7) // 8
    if str(ds.PhotometricInterpretation).strip().upper() == "YBR_FULL_422":
        expected = expected // 3 * 2  # two chroma samples shared by each pair of pixels
    actual = len(ds.PixelData)
    if actual < expected:
        raise DicomReadError(
            f"truncated pixel data: {actual} of the {expected} bytes that Rows x Columns x Samples per "
            f"Pixel x Number of Frames x Bits Allocated call for"
        )


def _decode_with(
    decoder: Any, ds: Dataset, options: dict[str, Any], preferred: str | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode frame 0 with the ``preferred`` plugin first, then with pydicom's own choice of plugins."""
    if preferred is not None:
        try:
            return decoder.as_array(ds, index=0, decoding_plugin=preferred, **options)
        except Exception as exc:  # noqa: BLE001 - pydicom's own plugin order below gets its chance
            logger.debug("%s plugin failed (%s: %s); trying the others", preferred, type(exc).__name__, exc)
    return decoder.as_array(ds, index=0, **options)


def _decode_first_frame(ds: Dataset, tsyntax: uid.UID) -> tuple[np.ndarray, str]:
    """Decode frame 0; return it with the photometric interpretation the decoder left it in."""
    label = codecs.syntax_label(tsyntax)
    codecs.register_extra_decoders()
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DicomReadError(f"unsupported transfer syntax {label}: pydicom has no decoder for it") from None
    if not decoder.is_available:
        raise DicomReadError(
            f"cannot decode {label}: no decoder plugin is installed for it; "
            f"install {codecs.install_hint(tsyntax)}"
        )
    if not tsyntax.is_encapsulated:
        _check_native_length(ds)
    else:
        limits.check_codestream(ds, tsyntax)  # before the decoder allocates what the codestream claims
    options = as_pixel_options(ds)
    try:
        arr, changes = _decode_with(decoder, ds, options, codecs.preferred_plugin(tsyntax))
    except Exception as exc:  # every decoder failure becomes a per-file reason
        if tsyntax == uid.JPEGExtended12Bit and int(ds.BitsStored) > 8:
            raise DicomReadError(
                f"cannot decode {label} with {int(ds.BitsStored)}-bit samples: "
                + codecs.JPEG_EXTENDED_12BIT_NOTE
            ) from exc
        raise DicomReadError(f"cannot decode {label} pixel data: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        # pylibjpeg-rle (Rust, pyo3) panics on some corrupt RLE data; pyo3's PanicException derives
        # from BaseException, so neither pydicom's plugin loop nor ``except Exception`` stops it.
        if type(exc).__name__ != "PanicException":
            raise
        raise DicomReadError(f"cannot decode {label} pixel data: the decoder crashed: {exc}") from exc
    photometric = str(changes.get("photometric_interpretation", ds.PhotometricInterpretation))
    return arr, photometric.strip().upper()


def _reduction(ds: Dataset, min_side: int | None) -> int:
    """The reduction factor for frame 0 (:func:`pneumonia_monai.dicom.reduced.reduction_factor`).

    1 (decoded whole) without ``min_side``, for colour, for more than 16 bits stored and with *Pixel
    Padding Value* (0028,0120), which is matched on each stored value.
    """
    if min_side is None:
        return 1
    pi = str(ds.PhotometricInterpretation).strip().upper()
    if pi not in pixels.GRAYSCALE or int(ds.BitsStored) > 16 or ds.get("PixelPaddingValue") not in (None, ""):
        return 1
    return reduced.reduction_factor(int(ds.Rows), int(ds.Columns), min_side)


def _decode_frame(ds: Dataset, tsyntax: uid.UID, min_side: int | None) -> tuple[np.ndarray, str, int]:
    """Decode frame 0, reduced where ``min_side`` allows; return it, its photometric and the factor.

    A JPEG 2000 level or a DCT-scaled JPEG comes from the codec (integer stored values); any other
    reduction decodes whole and block-averages the masked stored values (float32). Where the reduced
    decode fails, the film is decoded whole (and the failure logged at debug level).
    """
    factor = _reduction(ds, min_side)
    if factor > 1 and tsyntax.is_encapsulated:
        limits.check_codestream(ds, tsyntax)  # before the codec allocates what the codestream claims
        try:
            done = reduced.decode_reduced(ds, tsyntax, factor)
        except Exception as exc:  # noqa: BLE001 - the full decode below gets its chance
            logger.debug("reduced decode failed (%s: %s); decoding whole", type(exc).__name__, exc)
            done = None
        if done is not None:
            arr, used = done
            return arr, str(ds.PhotometricInterpretation).strip().upper(), used
    arr, photometric = _decode_first_frame(ds, tsyntax)
    if factor > 1 and arr.ndim == 2 and min(arr.shape) >= factor:
        stored = pixels.mask_unused_bits(arr, int(ds.BitsStored), int(ds.PixelRepresentation))
        return reduced.block_average(stored, factor), photometric, factor
    return arr, photometric, 1


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _pixel_spacing(ds: Dataset) -> tuple[list[float] | None, str | None]:
    """Pixel Spacing (0028,0030), else the detector-plane Imager Pixel Spacing (0018,1164) of CR/DX."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value:
            try:
                return [float(v) for v in value], keyword
            except (TypeError, ValueError):
                logger.debug("ignoring unreadable %s %r", keyword, value)
    return None, None


def _meta(
    ds: Dataset, tsyntax: uid.UID, info: dict[str, Any], image: np.ndarray, factor: int
) -> dict[str, Any]:
    """Non-PHI facts of the file (no patient name, id, birth date ...)."""
    spacing, spacing_source = _pixel_spacing(ds)
    return {
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "sop_uid": _text(ds, "SOPInstanceUID"),
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "modality": _text(ds, "Modality"),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "transfer_syntax_uid": str(tsyntax),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "bits_stored": int(ds.BitsStored),
        "view_position": _text(ds, "ViewPosition"),
        "pixel_spacing": spacing,
        "pixel_spacing_source": spacing_source,
        "voi_source": info["voi_source"],
        "inverted": bool(info["inverted"]),
        "frames": int(ds.get("NumberOfFrames") or 1),
        "frame_used": 0,
        "decoded_rows": int(image.shape[0]),
        "decoded_columns": int(image.shape[1]),
        "reduction": factor,
    }


def read_image(path: str | Path, *, min_side: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a DICOM file as a display image, whole or at a reduced resolution.

    Args:
        path: the file.
        min_side: decode at the coarsest power-of-two reduction whose shorter side is still at least
            this many pixels (:mod:`pneumonia_monai.dicom.reduced`); None decodes every pixel.

    Returns:
        ``(image, meta)``: a float32 ``(rows, columns)`` array in [0, 1] in display sense (0 black,
        1 white: MONOCHROME2 after the VOI LUT; see :mod:`pneumonia_monai.dicom.pixels`) and a dict of
        non-PHI facts: ``study_uid``, ``series_uid``, ``sop_uid``, ``sop_class_uid``, ``modality``,
        ``photometric_interpretation``, ``transfer_syntax_uid``, ``rows``, ``columns``,
        ``bits_stored``, ``view_position``, ``pixel_spacing`` (list or None) with
        ``pixel_spacing_source``, ``voi_source``, ``inverted``, ``frames``, ``frame_used``, and the
        image's own size with the factor it was reduced by: ``decoded_rows``, ``decoded_columns``,
        ``reduction`` (``rows`` and ``columns`` are the header's).

    Raises:
        DicomReadError: for a missing, empty, non-DICOM or truncated file, missing Image Pixel
            attributes, an unsupported photometric interpretation or transfer syntax, a missing
            decoder (the message names the syntax and the package to install) or undecodable data.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DicomReadError(f"cannot read file: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise DicomReadError("not a regular file")
    if size == 0:
        raise DicomReadError("empty file (0 bytes)")
    if size > limits.max_inflated_bytes():
        raise DicomReadError(
            f"file too large: {size} bytes, over the limit of {limits.max_inflated_bytes()} "
            "(2 bytes per pixel of --max-pixels plus 16 MiB); not read"
        )
    if not is_dicom(path):
        raise DicomReadError(
            "not a DICOM file: no 'DICM' marker at byte 128 and no data set with group 0008 elements"
        )

    try:
        return _read(path, min_side)
    except DicomReadError:
        raise
    except (limits.SizeLimitError, limits.DeflateError) as exc:
        raise DicomReadError(str(exc)) from exc
    except Exception as exc:  # a broken file must never end a batch with another exception type
        raise DicomReadError(f"cannot read the DICOM data set: {type(exc).__name__}: {exc}") from exc


def _read(path: Path, min_side: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    # pydicom converts elements lazily, so it may warn at any step, not only in dcmread
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _read_dataset(path, caught, min_side)
        finally:
            if caught:
                logger.debug("%s: pydicom warned: %s", path, _warning_text(caught))


#: Attributes read first, without the pixel data, to size the film before it is read.
_GEOMETRY = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated")


def _header_pixels(path: Path) -> int:
    """Check the decoded size the header declares; return its pixels (1 when it cannot say)."""
    header, _ = limits.read_dicom(path, force=True, stop_before_pixels=True, specific_tags=list(_GEOMETRY))
    try:
        count = int(header.Rows) * int(header.Columns) * int(header.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return 1  # the whole read says what is wrong
    limits.check_dataset_size(header)
    return count


def _read_dataset(
    path: Path, caught: list[warnings.WarningMessage], min_side: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    # The film's share of the memory budget is taken before its pixel data is read (when batch
    # inference runs inside limits.film_budget), and given back once the image
    # returned is garbage, or at once on failure.
    ticket = limits.film_ticket(_header_pixels(path))
    try:
        ds, _ = limits.read_dicom(path, force=True)
        _check_attributes(ds, _warning_text(caught))
        limits.check_dataset_size(ds)
        tsyntax = _transfer_syntax(ds)
        arr, photometric, factor = _decode_frame(ds, tsyntax, min_side)
        del ds.PixelData  # the encoded frames are not needed past here (a film at the budget: 128 MiB)
        frames = int(ds.get("NumberOfFrames") or 1)
        if frames > 1:
            logger.debug("%s: %d frames, using frame 0", path, frames)
        try:
            image, info = pixels.to_display(ds, arr, photometric=photometric)
        except ValueError as exc:
            raise DicomReadError(f"cannot display the pixel data: {exc}") from exc
    except BaseException:
        ticket.release()
        raise
    return ticket.attach(image), _meta(ds, tsyntax, info, image, factor)
