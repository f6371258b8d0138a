"""The pixel pipeline: decoded stored values -> display intensities in [0, 1] (0 black, 1 white).

Grayscale (MONOCHROME1 / MONOCHROME2) images go through the steps of the DICOM grayscale pipeline
(PS3.4 Annex N.2, PS3.3 C.11), in this order:

1. **Stored values** (:func:`mask_unused_bits`). Only the low *Bits Stored* (0028,0101) bits of each
   *Bits Allocated* (0028,0100) container carry the value (PS3.5 8.1.1); the high bits may hold junk
   (old overlays). They are masked off and, for *Pixel Representation* (0028,0103) = 1, the value is
   sign-extended from bit ``Bits Stored - 1``. pydicom 3 already does this on decode for the native,
   RLE and JPEG syntaxes (its ``correct_unused_bits`` option), and JPEG 2000 / JPEG-LS decoders return
   values of the codestream's precision; repeating the step is a no-op on conforming data.
2. **Padding** (:func:`padding_mask`). *Pixel Padding Value* (0028,0120), or the inclusive range it
   spans with *Pixel Padding Range Limit* (0028,0121), is matched against the **stored** values (after
   step 1) before anything is normalised. Padded pixels are set to 0 (black) at the very end, after the
   polarity step. No step below is data-driven (no min/max of the pixels is used anywhere), so padding
   far outside the real range cannot change how the other pixels are scaled.
3. **Modality LUT** (:func:`apply_modality_lut`, PS3.3 C.11.1). A *Modality LUT Sequence* (0028,3000)
   wins over *Rescale Slope* (0028,1053) / *Rescale Intercept* (0028,1052); with neither the stored
   values pass unchanged. The step also returns the range its output can take (used by step 4's
   default): the LUT's ``[0, 2**bits - 1]`` (third value of *LUT Descriptor* (0028,3002)), or the
   stored-value range given *Bits Stored* and *Pixel Representation* mapped through the rescale.
4. **VOI LUT** (:func:`apply_voi`, PS3.3 C.11.2), output already scaled to [0, 1]:

   * a *VOI LUT Sequence* (0028,3010) wins over a window; its first item is used; the output is
     divided by ``2**bits - 1`` where ``bits`` is the third value of its *LUT Descriptor* -- the LUT's
     nominal output range, not the min/max of its entries. ``voi_source = "voi_lut_sequence"``.
   * else *Window Center* (0028,1050) / *Window Width* (0028,1051): when they are multi-valued the
     **first** pair is used (``voi_source = "window[0]"``); *VOI LUT Function* (0028,1056) selects
     LINEAR (the default when absent, C.11.2.1.2.1), LINEAR_EXACT (C.11.2.1.3.2) or SIGMOID
     (C.11.2.1.3.1), computed here with the standard's formulas and ``y_min = 0, y_max = 1``, which is
     the same as scaling the standard's output range ``[y_min, y_max]`` to [0, 1]. (pydicom's
     ``apply_windowing`` returns values in the *input* range instead, which is why it is not used.)
   * else the full range the Modality LUT output can take, linearly to [0, 1]
     (``voi_source = "none(full range)"``) -- never the data's min/max.

   An unusable first window (LINEAR width < 1, other functions width <= 0) is logged and the full
   range is used instead; an unknown *VOI LUT Function* is logged and treated as LINEAR.
   Modality outputs are rounded to the nearest integer before a LUT (modality or VOI) is indexed;
   inputs below the first mapped value take the first entry, above the last the last (C.11.1.1).
5. **Polarity** (:func:`output_inverted`), applied after the VOI step. The rule:

   * *Presentation LUT Shape* (2050,0020) present: it alone decides. ``INVERSE`` -> the VOI output is
     inverted (``1 - v``, "P-Value = maximum value - output value", C.11.6.1.2); ``IDENTITY`` -> it
     is not. *Photometric Interpretation* is not applied on top: in the image modules that carry the
     attribute (DX Image Module C.8.11.3 and its kin) INVERSE *is* the account taken of MONOCHROME1
     ("shall be used if Photometric Interpretation is MONOCHROME1"), so MONOCHROME1 + INVERSE is
     inverted once, not twice, and MONOCHROME2 + INVERSE is inverted. MONOCHROME1 + IDENTITY
     (non-conformant: IDENTITY "shall be used if ... MONOCHROME2") follows the shape as well -- not
     inverted -- and is logged as a warning, since some vendors write it wrongly.
     (pydicom 3's ``apply_presentation_lut`` likewise ignores Photometric Interpretation.)
   * absent: MONOCHROME1 is inverted (its minimum is displayed white "after any VOI gray scale
     transformations", C.7.6.3.1.2), MONOCHROME2 is not.

   A *Presentation LUT Sequence* (2050,0010) belongs to presentation states, not image objects, and is
   not applied.
6. **Output**: float32 in [0, 1], padded pixels 0. Steps 1 to 5 run on blocks of rows of
   :data:`BLOCK_PIXELS` pixels, so that a large film needs its float32 output and a few small float64
   blocks, not several float64 copies of itself.

Colour secondary captures (RGB, YBR_FULL, YBR_FULL_422, and JPEG 2000's YBR_ICT / YBR_RCT that the
decoders hand back as RGB) become gray by this rule: converted to RGB first (pydicom 3's decoders
already convert YBR_FULL / YBR_FULL_422 to RGB by default and report it; otherwise
:func:`pydicom.pixels.convert_color_space` does it here, 8-bit only), then luminance by the ITU-R BT.601
weights ``Y = 0.299 R + 0.587 G + 0.114 B``, divided by ``2**BitsStored - 1`` (255 for 8-bit
samples). The Modality, VOI and Presentation steps are grayscale-only and do not apply to colour, nor
does pixel padding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import convert_color_space

logger = logging.getLogger(__name__)

#: Photometric interpretations that go through the grayscale pipeline.
GRAYSCALE: frozenset[str] = frozenset({"MONOCHROME1", "MONOCHROME2"})
#: Photometric interpretations of 3-sample arrays accepted by :func:`to_display`.
COLOUR: frozenset[str] = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422"})
#: ITU-R BT.601 luma weights for R, G, B.
BT601: tuple[float, float, float] = (0.299, 0.587, 0.114)
#: VOI LUT Function (0028,1056) values defined by PS3.3 C.11.2.1.3.
VOI_FUNCTIONS: frozenset[str] = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})
#: Pixels per block of rows that :func:`to_display` runs the grayscale steps on: their float64
#: temporaries stay this size (8 MiB each) whatever the film's size; the steps are per pixel, so
#: the result does not depend on it.
BLOCK_PIXELS = 1 << 20


# --------------------------------------------------------------------------------------------------
# small readers of the data set


def _int_attr(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise ValueError(f"{keyword} is missing or empty")
    return int(value)


def _first(value: Any) -> Any:
    """First value of a possibly multi-valued element value."""
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value


def _is_little_endian(ds: Dataset) -> bool:
    """Byte order the data set was encoded in (for OW LUT Data); little endian when unknown."""
    encoding = getattr(ds, "original_encoding", (None, None))
    if encoding[1] is not None:
        return bool(encoding[1])
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return True if tsyntax is None else bool(tsyntax.is_little_endian)


# --------------------------------------------------------------------------------------------------
# 1. stored values


def stored_value_range(bits_stored: int, pixel_representation: int) -> tuple[int, int]:
    """Return the inclusive range of stored values for *Bits Stored* and *Pixel Representation*.

    ``(0, 2**bits - 1)`` for unsigned (0), ``(-2**(bits-1), 2**(bits-1) - 1)`` for two's complement (1).
    """
    if not 1 <= bits_stored <= 32:
        raise ValueError(f"Bits Stored (0028,0101) must be 1..32, got {bits_stored}")
    if pixel_representation == 0:
        return 0, (1 << bits_stored) - 1
    if pixel_representation == 1:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    raise ValueError(f"Pixel Representation (0028,0103) must be 0 or 1, got {pixel_representation}")


def mask_unused_bits(arr: np.ndarray, bits_stored: int, pixel_representation: int) -> np.ndarray:
    """Keep the low ``bits_stored`` bits of each value; sign-extend them when signed.

    Returns a new array: of the input's own type for unsigned data that type holds (no ``int64`` copy of
    a film of millions of pixels), else ``int64``. Idempotent: values already in range are unchanged.
    """
    stored_value_range(bits_stored, pixel_representation)  # validates both arguments
    arr = np.asarray(arr)
    if pixel_representation == 0 and arr.dtype.kind == "u" and bits_stored <= 8 * arr.dtype.itemsize:
        return arr & arr.dtype.type((1 << bits_stored) - 1)
    out = arr.astype(np.int64)
    out &= (1 << bits_stored) - 1
    if pixel_representation == 1:
        sign = 1 << (bits_stored - 1)
        out ^= sign
        out -= sign
    return out


# --------------------------------------------------------------------------------------------------
# 2. padding


def _stored_scalar(value: Any, bits_stored: int, pixel_representation: int) -> int:
    """A US/SS attribute of the stored-value domain (Pixel Padding Value...) as a stored value."""
    if isinstance(value, (bytes, bytearray)):  # ambiguous VR left unresolved
        value = int.from_bytes(bytes(value[:4]), "little", signed=pixel_representation == 1)
    return int(mask_unused_bits(np.asarray([int(value)]), bits_stored, pixel_representation)[0])


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Boolean mask of padded pixels, matched on the stored values; ``None`` without padding.

    *Pixel Padding Value* (0028,0120) alone marks the pixels equal to it; with *Pixel Padding Range
    Limit* (0028,0121) it marks the inclusive range between the two (PS3.3 C.7.5.1.1.2). Both are read
    in the stored-value domain (bits masked, signed when *Pixel Representation* is 1).
    """
    value = ds.get("PixelPaddingValue")
    if value is None or value == "":
        return None
    bits_stored = _int_attr(ds, "BitsStored")
    pixel_rep = _int_attr(ds, "PixelRepresentation")
    first = _stored_scalar(value, bits_stored, pixel_rep)
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None or limit == "":
        return np.asarray(stored) == first
    second = _stored_scalar(limit, bits_stored, pixel_rep)
    low, high = min(first, second), max(first, second)
    return (np.asarray(stored) >= low) & (np.asarray(stored) <= high)


# --------------------------------------------------------------------------------------------------
# LUTs (Modality LUT Sequence, VOI LUT Sequence)


def lut_descriptor(item: Dataset, signed_input: bool) -> tuple[int, int, int]:
    """Return ``(entries, first_mapped, bits)`` of an item's *LUT Descriptor* (0028,3002).

    ``entries`` 0 means 2**16 (PS3.3 C.11.1.1). The first mapped value is US or SS depending on what
    feeds the LUT: when ``signed_input`` a US-decoded value >= 2**15 is read as its SS meaning.
    """
    desc = item.get("LUTDescriptor")
    if desc is None or isinstance(desc, (str, bytes)) or len(desc) != 3:
        raise ValueError(f"LUT Descriptor (0028,3002) must have 3 values, got {desc!r}")
    entries, first, bits = (int(v) for v in desc)
    entries = entries or 1 << 16
    if signed_input and first >= 1 << 15:
        first -= 1 << 16
    if not 1 <= bits <= 16:
        raise ValueError(f"LUT Descriptor (0028,3002) bits per entry must be 1..16, got {bits}")
    return entries, first, bits


def lut_data(item: Dataset, ds: Dataset, entries: int, bits: int) -> np.ndarray:
    """Return an item's *LUT Data* (0028,3006) as ``int64`` entries masked to ``bits``.

    US data comes decoded; OW data comes as bytes in the data set's byte order. Retired 8-bit LUTs that
    pack two entries per 16-bit word are recognised by their length.
    """
    if "LUTData" not in item or item["LUTData"].value is None:
        raise ValueError("LUT Data (0028,3006) is missing")
    value = item["LUTData"].value
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        words = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2" if _is_little_endian(ds) else ">u2")
        data = np.frombuffer(raw, dtype=np.uint8) if len(words) < entries <= len(raw) and bits <= 8 else words
    elif isinstance(value, int):
        data = np.asarray([value])
    else:
        data = np.asarray(list(value))
    if data.size < entries:
        raise ValueError(f"LUT Data (0028,3006) has {data.size} entries, its descriptor says {entries}")
    return data[:entries].astype(np.int64) & ((1 << bits) - 1)


def _lookup(values: np.ndarray, lut: np.ndarray, first_mapped: int) -> np.ndarray:
    """Map ``values`` through ``lut``: below the first mapped value -> entry 0, past the end -> last."""
    index = np.rint(np.asarray(values, dtype=np.float64)).astype(np.int64) - first_mapped
    np.clip(index, 0, lut.size - 1, out=index)
    return lut[index]


# --------------------------------------------------------------------------------------------------
# 3. Modality LUT


def apply_modality_lut(ds: Dataset, stored: np.ndarray) -> tuple[np.ndarray, tuple[float, float], str]:
    """Apply the Modality LUT step (PS3.3 C.11.1) to stored values.

    Returns ``(values, (low, high), source)``: float64 output values, the range the output can take
    (used as the VOI default), and ``"modality_lut_sequence"``, ``"rescale"`` or ``"none"``.

    Raises:
        ValueError: for an unusable LUT or a *Rescale Slope* of 0.
    """
    bits_stored = _int_attr(ds, "BitsStored")
    pixel_rep = _int_attr(ds, "PixelRepresentation")
    low, high = stored_value_range(bits_stored, pixel_rep)
    stored = np.asarray(stored)

    seq = ds.get("ModalityLUTSequence")
    if seq:  # (0028,3000) wins over Rescale Slope/Intercept
        item = seq[0]
        entries, first, bits = lut_descriptor(item, signed_input=pixel_rep == 1)
        lut = lut_data(item, ds, entries, bits)
        return (
            _lookup(stored, lut, first).astype(np.float64),
            (0.0, float((1 << bits) - 1)),
            "modality_lut_sequence",
        )

    slope_value, intercept_value = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    has_slope = slope_value not in (None, "")
    has_intercept = intercept_value not in (None, "")
    if not has_slope and not has_intercept:
        return stored.astype(np.float64), (float(low), float(high)), "none"
    # Both are Type 1 in the Modality LUT module; a lone one is read with the neutral other.
    slope = float(slope_value) if has_slope else 1.0
    intercept = float(intercept_value) if has_intercept else 0.0
    if slope == 0:
        raise ValueError("Rescale Slope (0028,1053) is 0: every pixel would map to the same value")
    ends = sorted((low * slope + intercept, high * slope + intercept))
    values = stored.astype(np.float64)  # in place from here: films are 4 million pixels or more
    values *= slope
    values += intercept
    return values, (ends[0], ends[1]), "rescale"


# --------------------------------------------------------------------------------------------------
# 4. VOI LUT


def window_linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """LINEAR window (PS3.3 C.11.2.1.2.1) with output range [0, 1].

    ``x <= c - 0.5 - (w-1)/2 -> 0``; ``x > c - 0.5 + (w-1)/2 -> 1``;
    otherwise ``((x - (c - 0.5)) / (w - 1) + 0.5)``. Requires ``w >= 1`` (``w == 1`` is a threshold).
    """
    if width < 1:
        raise ValueError(f"a LINEAR window needs Window Width >= 1, got {width}")
    x = np.asarray(x, dtype=np.float64)
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    # The middle piece meets 0 and 1 exactly at the two thresholds, so clipping is the piecewise rule.
    out = x - (center - 0.5)  # a new array, then in place
    out /= width - 1
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def window_linear_exact(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """LINEAR_EXACT window (PS3.3 C.11.2.1.3.2) with output range [0, 1].

    ``x <= c - w/2 -> 0``; ``x > c + w/2 -> 1``; otherwise ``(x - c) / w + 0.5``. Requires ``w > 0``.
    """
    if width <= 0:
        raise ValueError(f"a LINEAR_EXACT window needs Window Width > 0, got {width}")
    out = np.asarray(x, dtype=np.float64) - center  # a new array, then in place
    out /= width
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def window_sigmoid(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """SIGMOID window (PS3.3 C.11.2.1.3.1) with output range [0, 1]: ``1 / (1 + exp(-4 (x - c) / w))``.

    Requires ``w > 0``.
    """
    if width <= 0:
        raise ValueError(f"a SIGMOID window needs Window Width > 0, got {width}")
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):  # exp overflow -> inf -> 0, the correct limit
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))


_WINDOWS = {"LINEAR": window_linear, "LINEAR_EXACT": window_linear_exact, "SIGMOID": window_sigmoid}


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window ``x`` with the named *VOI LUT Function*; output in [0, 1].

    Raises:
        ValueError: for an unknown function or a width the function does not allow.
    """
    name = (function or "LINEAR").strip().upper()
    if name not in _WINDOWS:
        raise ValueError(f"unknown VOI LUT Function (0028,1056) {function!r}")
    return _WINDOWS[name](x, float(center), float(width))


def apply_voi(
    ds: Dataset, values: np.ndarray, value_range: tuple[float, float], *, log: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the VOI LUT step (PS3.3 C.11.2) to Modality LUT output; the result is in [0, 1].

    ``value_range`` is the range the Modality LUT output can take (see :func:`apply_modality_lut`);
    it is only used when the data set has neither a VOI LUT Sequence nor a window. ``log=False``
    leaves out the warnings about an unusable window or VOI LUT Function (for the second and later
    blocks of one film, whose first block logged them).

    Returns:
        ``(v, info)``: float64 values in [0, 1] (in the sense of the stored data: for MONOCHROME1,
        0 is still white) and ``{"voi_source", "voi_function", "window"}``.
    """
    values = np.asarray(values, dtype=np.float64)
    info: dict[str, Any] = {"voi_source": "none(full range)", "voi_function": None, "window": None}

    seq = ds.get("VOILUTSequence")
    if seq and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]:
        item = seq[0]
        # PS3.3 C.11.2.1.1: the first mapped value is SS when the modality output may be negative.
        entries, first, bits = lut_descriptor(item, signed_input=value_range[0] < 0)
        lut = lut_data(item, ds, entries, bits)
        out = _lookup(values, lut, first).astype(np.float64) / float((1 << bits) - 1)
        info["voi_source"] = "voi_lut_sequence"
        return np.clip(out, 0.0, 1.0), info

    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center not in (None, "") and width not in (None, ""):
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        if function not in VOI_FUNCTIONS:
            if log:
                logger.warning("unknown VOI LUT Function (0028,1056) %r, using LINEAR", function)
            function = "LINEAR"
        try:
            out = apply_window(values, float(center), float(width), function)
        except ValueError as exc:
            if log:
                logger.warning("ignoring the first window (%s); using the full range", exc)
        else:
            info.update(voi_source="window[0]", voi_function=function, window=(float(center), float(width)))
            return out, info

    low, high = value_range
    if high <= low:
        raise ValueError(f"empty Modality LUT output range [{low}, {high}]")
    return np.clip((values - low) / (high - low), 0.0, 1.0), info


# --------------------------------------------------------------------------------------------------
# 5. polarity


def output_inverted(ds: Dataset, photometric: str | None = None) -> tuple[bool, str]:
    """Return ``(invert, reason)``: whether the VOI output is inverted to give display values.

    *Presentation LUT Shape* (2050,0020), when present, decides (INVERSE inverts, IDENTITY does not);
    when absent, MONOCHROME1 inverts. See the module docstring for the reasoning.
    """
    pi = (photometric or str(ds.get("PhotometricInterpretation", ""))).strip().upper()
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    if shape == "INVERSE":
        return True, f"PresentationLUTShape INVERSE ({pi})"
    if shape == "IDENTITY":
        if pi == "MONOCHROME1":
            logger.warning(
                "MONOCHROME1 with Presentation LUT Shape IDENTITY (non-conformant for DX); "
                "following the shape: not inverted"
            )
        return False, f"PresentationLUTShape IDENTITY ({pi})"
    if shape:
        logger.warning("ignoring unknown Presentation LUT Shape (2050,0020) %r", shape)
    if pi == "MONOCHROME1":
        return True, "MONOCHROME1"
    return False, pi


# --------------------------------------------------------------------------------------------------
# colour


def rgb_luminance(rgb: np.ndarray, bits_stored: int) -> np.ndarray:
    """ITU-R BT.601 luma of an ``(..., 3)`` RGB array, divided by ``2**bits_stored - 1``; float64 [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB samples in the last axis, got shape {rgb.shape}")
    luma = rgb[..., 0] * BT601[0] + rgb[..., 1] * BT601[1] + rgb[..., 2] * BT601[2]
    return np.clip(luma / float((1 << bits_stored) - 1), 0.0, 1.0)


def to_rgb(arr: np.ndarray, photometric: str) -> np.ndarray:
    """Return ``arr`` in RGB: unchanged for RGB, converted from YBR_FULL / YBR_FULL_422 (8-bit only).

    A YBR_FULL_422 array is expected with its sub-sampling already removed (pydicom does that).
    """
    pi = photometric.strip().upper()
    if pi == "RGB":
        return np.asarray(arr)
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            raise ValueError(f"{pi} to RGB conversion needs 8-bit samples, got {arr.dtype}")
        return convert_color_space(arr, pi, "RGB")
    raise ValueError(f"cannot convert Photometric Interpretation {photometric!r} to RGB")


# --------------------------------------------------------------------------------------------------
# the whole pipeline


def to_display(
    ds: Dataset, arr: np.ndarray, *, photometric: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the pixel pipeline on one decoded frame.

    Args:
        ds: the data set (Image Pixel, Modality LUT, VOI LUT, Presentation LUT attributes are read).
        arr: one frame of stored values ``(rows, columns)``, or ``(rows, columns, 3)`` colour samples.
            A floating-point grayscale frame is taken as block averages of stored values whose unused
            bits were already masked (:func:`pneumonia_monai.dicom.reduced.block_average`).
        photometric: the colour space ``arr`` is in when the decoder changed it (pydicom 3 returns
            YBR_FULL / YBR_ICT / YBR_RCT data as RGB and says so); defaults to the data set's
            *Photometric Interpretation*.

    Returns:
        ``(image, info)``: a float32 ``(rows, columns)`` array in [0, 1], 0 black and 1 white, and
        ``{"voi_source", "voi_function", "window", "modality_lut", "inverted", "polarity",
        "padded_pixels"}``.

    Raises:
        ValueError: for an unsupported photometric interpretation, a wrong array shape or an unusable
            LUT / rescale (the message says which).
    """
    pi = (photometric or str(ds.get("PhotometricInterpretation", ""))).strip().upper()
    arr = np.asarray(arr)
    info: dict[str, Any] = {
        "voi_source": "none(full range)",
        "voi_function": None,
        "window": None,
        "modality_lut": "none",
        "inverted": False,
        "polarity": pi,
        "padded_pixels": 0,
    }
    if pi in COLOUR:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"a {pi} frame must have shape (rows, columns, 3), got {arr.shape}")
        luma = rgb_luminance(to_rgb(arr, pi), _int_attr(ds, "BitsStored"))
        info["voi_source"] = "none(BT.601 luminance)"
        return luma.astype(np.float32), info
    if pi not in GRAYSCALE:
        raise ValueError(f"unsupported Photometric Interpretation (0028,0004) {pi!r}")
    if arr.ndim != 2:
        raise ValueError(f"a {pi} frame must have shape (rows, columns), got {arr.shape}")

    bits_stored, pixel_rep = _int_attr(ds, "BitsStored"), _int_attr(ds, "PixelRepresentation")
    info["inverted"], info["polarity"] = output_inverted(ds, pi)
    image = np.empty(arr.shape, dtype=np.float32)
    step = max(1, BLOCK_PIXELS // max(1, arr.shape[1]))
    for first_row in range(0, arr.shape[0], step):
        rows = slice(first_row, first_row + step)
        # a float frame holds block averages of masked stored values (dicom.reduced)
        stored = arr[rows] if arr.dtype.kind == "f" else mask_unused_bits(arr[rows], bits_stored, pixel_rep)
        padded = padding_mask(ds, stored)
        values, value_range, info["modality_lut"] = apply_modality_lut(ds, stored)
        out, voi_info = apply_voi(ds, values, value_range, log=first_row == 0)
        info.update(voi_info)
        if info["inverted"]:
            np.subtract(1.0, out, out=out)  # apply_voi returns a new array: ours to change
        if padded is not None:
            out[padded] = 0.0
            info["padded_pixels"] += int(padded.sum())
        image[rows] = out
    return image, info
