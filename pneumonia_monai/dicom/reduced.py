"""Reduced-resolution decoding: decode a film only as finely as the network and the lung crop need.

A 2,048-pixel film is shown to the network as a crop of its lung fields resized to the network input
(224 pixels). Decoding every pixel of it is wasted work; the codecs can do less:

- **JPEG 2000** (1.2.840.10008.1.2.4.90, .91) stores its resolution levels: OpenJPEG decodes the
  level ``2**-r`` of the film without the finer wavelet subbands (Pillow's ``reduce``), at a fraction
  of the cost. The level is at most the number of decomposition levels of the codestream's COD marker.
- **JPEG baseline** (1.2.840.10008.1.2.4.50, and 8-bit 1.2.840.10008.1.2.4.51) with DCT-domain scaling
  (libjpeg-turbo's scaled inverse DCT, through Pillow's draft mode): 1/2, 1/4 or 1/8 of each side.
- everything else (uncompressed, RLE, JPEG-LS, JPEG Lossless, 12-bit JPEG Extended): decoded whole,
  then **averaged over k x k blocks** of stored values in one pass (:func:`block_average`), so that
  the LUT steps, the lung-field search and the resize run on a quarter of the pixels.

All three reduce **stored values** (before the Modality and VOI LUT steps), so every encoding of a film
arrives at the same kind of image. The low band of a wavelet is not an area average, nor is a scaled
IDCT; ``tests/test_parity.py`` measures what that changes (on the parity films and on pydicom-data's
RG1 CR in its uncompressed, JPEG 2000 lossless and lossy encodings): the reduced paths give the
probability of the full decode within 0.01.

**The level** (:func:`reduction_factor`): the largest power of two ``k`` (at most :data:`MAX_FACTOR`)
that keeps the film's shorter side, decoded, at least :func:`min_decoded_side` pixels: twice the
network input across a lung box that covers at least :data:`MIN_BOX_FRACTION` of the side. For the
shipped 224-pixel network that is 747 pixels: a 2,048-pixel film is decoded at 1,024, a 1,500-pixel
film at 750, a 1,400-pixel film whole.

Not reduced (decoded whole, as without reduction): colour films, films with *Pixel Padding Value*
(0028,0120) (padding is matched on each stored value, which an average no longer is), signed JPEG 2000
(Pillow reads unsigned samples only) and anything whose reduced decode fails (logged, then the full
decode runs). The full decode stays available: heatmaps are drawn on the whole film, and
``infer --full-decode`` turns reduction off.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from collections.abc import Sequence

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: The decoded lung box is at least this many times the network input (each side).
INPUT_OVERSAMPLING = 2.0
#: The lung box covers at least this fraction of the film's side (the crop of a frontal film).
MIN_BOX_FRACTION = 0.6
#: Largest reduction: JPEG's DCT scaling goes down to 1/8.
MAX_FACTOR = 8
#: Transfer syntaxes decoded at a JPEG 2000 resolution level.
JPEG2000_SYNTAXES: frozenset[str] = frozenset({uid.JPEG2000Lossless, uid.JPEG2000})
#: Transfer syntaxes decoded with DCT-domain scaling (8-bit samples only).
JPEG_DCT_SYNTAXES: frozenset[str] = frozenset({uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit})
#: Rows per band of :func:`block_average` (bounded temporaries whatever the film's size).
_BAND_ROWS = 512


def min_decoded_side(spatial_size: Sequence[int] | int) -> int:
    """The shortest side a film may be decoded at for a network input of ``spatial_size``.

    ``ceil(INPUT_OVERSAMPLING * max(spatial_size) / MIN_BOX_FRACTION)``: 747 for 224 x 224.

    Raises:
        ValueError: for sizes that are not positive.
    """
    sizes = [int(spatial_size)] if isinstance(spatial_size, int) else [int(s) for s in spatial_size]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"spatial_size must be positive sizes, got {spatial_size!r}")
    return math.ceil(INPUT_OVERSAMPLING * max(sizes) / MIN_BOX_FRACTION)


def reduction_factor(rows: int, columns: int, min_side: int | None, max_factor: int = MAX_FACTOR) -> int:
    """The largest power of two ``k <= max_factor`` with ``min(rows, columns) // k >= min_side``.

    ``min_side`` None (reduction off) gives 1, as does a film already small.

    Raises:
        ValueError: for a non-positive size or ``min_side``.
    """
    if rows < 1 or columns < 1:
        raise ValueError(f"rows and columns must be positive, got {rows} x {columns}")
    if min_side is None:
        return 1
    if min_side < 1:
        raise ValueError(f"min_side must be positive, got {min_side!r}")
    factor = 1
    while factor * 2 <= max_factor and min(rows, columns) // (factor * 2) >= min_side:
        factor *= 2
    return factor


def block_sums(arr: np.ndarray, factor: int) -> np.ndarray:
    """The sum of each ``factor`` x ``factor`` block of a 2-D array, as float32.

    The last ``rows % factor`` rows and ``columns % factor`` columns (an edge less than a block wide)
    are left out. The sums run in float32 in bands of rows, by strided adds of whole rows and then of
    columns (several times faster than a reshaped ``sum``): exact for integer samples whose block sums
    stay below 2**24 (16-bit samples up to factor 8, 8-bit grey levels up to factor 256).

    Raises:
        ValueError: for an array that is not 2-D or a factor below 1 or larger than a side.
    """
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"block_sums needs a 2-D array, got shape {arr.shape}")
    if factor < 1 or factor > min(arr.shape):
        raise ValueError(f"factor must be 1..{min(arr.shape)} for shape {arr.shape}, got {factor!r}")
    rows, cols = arr.shape[0] - arr.shape[0] % factor, arr.shape[1] - arr.shape[1] % factor
    out = np.empty((rows // factor, cols // factor), dtype=np.float32)
    band = factor * max(1, _BAND_ROWS // factor)
    for r in range(0, rows, band):
        chunk = arr[r : min(r + band, rows), :cols]
        sums = chunk[0::factor].astype(np.float32)
        for i in range(1, factor):
            sums += chunk[i::factor]
        block = sums[:, 0::factor].copy()
        for j in range(1, factor):
            block += sums[:, j::factor]
        out[r // factor : r // factor + block.shape[0]] = block
    return out


def block_average(arr: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block of a 2-D array, as float32 (:func:`block_sums`).

    ``factor`` 1 returns the array as float32.

    Raises:
        ValueError: for an array that is not 2-D or a factor below 1 or larger than a side.
    """
    if factor == 1 and np.ndim(arr) == 2:
        return np.asarray(arr).astype(np.float32)
    out = block_sums(arr, factor)
    out *= 1.0 / (factor * factor)
    return out


def jpeg2000_header(codestream: bytes) -> tuple[int, bool, int] | None:
    """``(precision, signed, decomposition_levels)`` of a JPEG 2000 codestream's main header, if found.

    From the first component of the SIZ marker (Ssiz: bit depth minus one, sign in bit 7) and the COD
    marker (SPcod: number of decomposition levels). The main header is walked from SIZ to the first
    tile-part (SOT); a JP2 file's ``jp2c`` box is found by its SOC + SIZ markers.
    """
    at = codestream.find(b"\xff\x4f\xff\x51")  # SOC, SIZ
    if at < 0 or len(codestream) < at + 43:
        return None
    ssiz = codestream[at + 42]  # after SOC, SIZ, Lsiz, Rsiz, 8 x 4 bytes of sizes and offsets, Csiz
    precision, signed = (ssiz & 0x7F) + 1, bool(ssiz & 0x80)
    pos = at + 2
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack_from(">HH", codestream, pos)
        if marker == 0xFF90 or marker & 0xFF00 != 0xFF00:  # SOT: end of the main header
            return None
        if marker == 0xFF52:  # COD: Lcod, Scod, SGcod (4 bytes), then SPcod's decomposition levels
            return (precision, signed, codestream[pos + 9]) if pos + 9 < len(codestream) else None
        pos += 2 + length
    return None


def _reduced_jpeg2000(frame: bytes, factor: int, ds: Dataset) -> tuple[np.ndarray, int] | None:
    """Frame 0 at resolution ``1 / factor`` (or the coarsest level stored) through OpenJPEG (Pillow)."""
    from PIL import Image

    header = jpeg2000_header(frame)
    if header is None or int(ds.PixelRepresentation) != 0:
        return None
    precision, signed, levels = header
    if signed or levels < 1 or precision > 16:
        return None  # Pillow reads unsigned samples of up to 16 bits only
    reduce = min(int(math.log2(factor)), levels)
    with Image.open(io.BytesIO(frame), formats=["JPEG2000"]) as img:
        img.reduce = reduce
        img.load()
        container = {"L": 8, "I;16": 16, "I;16L": 16, "I;16B": 16}.get(img.mode)
        if container is None or precision > container:
            return None
        arr = np.asarray(img)
    # Pillow scales samples up to its container (j2ku_shift: a left shift by 8 or 16 - precision)
    if container > precision:
        arr = arr >> (container - precision)
    return arr, 1 << reduce


def _reduced_jpeg(frame: bytes, factor: int, ds: Dataset) -> tuple[np.ndarray, int] | None:
    """Frame 0 at ``1 / factor`` with libjpeg-turbo's DCT scaling (Pillow's draft mode)."""
    from PIL import Image

    if int(ds.BitsAllocated) != 8 or int(ds.BitsStored) != 8:
        return None  # Pillow reads 8-bit JPEG only
    with Image.open(io.BytesIO(frame), formats=["JPEG"]) as img:
        if img.mode != "L":
            return None
        columns, rows = img.size
        img.draft("L", (columns // factor, rows // factor))  # scale 1/factor (factor 2, 4 or 8)
        img.load()
        return np.asarray(img), factor


def decode_reduced(ds: Dataset, transfer_syntax: str, factor: int) -> tuple[np.ndarray, int] | None:
    """Decode frame 0 of ``ds`` at ``1 / factor`` of its size in the codestream, where the codec can.

    Returns:
        ``(stored, factor_used)``: the stored values (integers, ``rows // factor_used`` x
        ``columns // factor_used``, as :func:`block_average` gives) of a JPEG 2000 resolution level
        (``factor_used`` is smaller than ``factor`` when the codestream has fewer decomposition
        levels) or of a DCT-scaled JPEG;
        or None where this syntax (or this data set) is decoded whole and block-averaged instead
        (:func:`block_average`).

    Raises:
        ValueError: if the reduced image is not the size the header calls for (the caller decodes
            whole then), or what the codec raises for undecodable data.
    """
    syntax = str(transfer_syntax)
    if factor <= 1 or syntax not in JPEG2000_SYNTAXES | JPEG_DCT_SYNTAXES:
        return None
    from pydicom.encaps import get_frame

    frame = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1))
    reduced = (
        _reduced_jpeg2000(frame, factor, ds)
        if syntax in JPEG2000_SYNTAXES
        else _reduced_jpeg(frame, factor, ds)
    )
    if reduced is None:
        return None
    arr, factor = reduced
    rows, columns = int(ds.Rows), int(ds.Columns)
    got = arr.shape[0] * factor, arr.shape[1] * factor
    # A reduced level is ceil(side / 2**r); less when the codec stopped early (fewer levels).
    if arr.ndim != 2 or not (rows <= got[0] < rows + factor and columns <= got[1] < columns + factor):
        raise ValueError(
            f"the reduced decode gave shape {arr.shape}, not 1/{factor} of Rows {rows} x Columns {columns}"
        )
    # The last partial block row and column are left out, as block_average leaves them out: every
    # reduced path then gives the same geometry (and the same lung box) for the same film.
    return arr[: rows // factor, : columns // factor], factor
