"""Size limits that keep a hostile or broken file from exhausting memory: decoded size and inflated size.

A 17 KB JPEG 2000 file may claim a 40,000 x 40,000 image, and a 1 MB deflated data set may inflate to a
gigabyte. Every reader of the package checks, before it allocates:

- **decoded size**: *Rows* x *Columns* x *Number of Frames* (pixels) at most :func:`max_pixels`, and
  that times *Samples per Pixel* x bytes per sample (*Bits Allocated* / 8) at most
  :func:`max_decoded_bytes` (two bytes per pixel of the pixel budget: a 16-bit grey film). The header is
  checked before the pixel data is read, and for the compressed syntaxes the codestream's own size too,
  before decoding: the JPEG 2000 SIZ marker, the JPEG SOF marker, the JPEG-LS SOF55 marker of the first
  frame (:func:`codestream_geometry`). A codestream larger than the header says is refused as well: a
  decoder allocates what the codestream says.
- **inflated size** of a Deflated Explicit VR Little Endian data set: inflated in chunks of
  :data:`INFLATE_CHUNK` bytes, as far as it is read (:class:`InflatingReader`; a header read inflates
  the header only), never in one piece, and refused once it passes :func:`max_inflated_bytes` (the
  decoded-size budget plus :data:`HEADER_ALLOWANCE` for the header), in :func:`read_dicom` (used by
  ``infer`` and ``select``) and :func:`check_inflated_size` (the node's C-STORE handler, before
  pynetdicom inflates the data set).
- **Pillow**: ``PIL.Image.MAX_IMAGE_PIXELS`` is set to the same pixel budget, and JPEG/PNG files are
  checked against it before they are decoded.
- **films in memory at once**: inside :func:`film_budget` (batch inference), each film being decoded
  and preprocessed holds a share of a budget of one film at the pixel budget (:func:`film_ticket`).

The default budget, :data:`MAX_PIXELS` = 8192 x 8192 (67,108,864 pixels, about 64 megapixels), is above
the largest real CR/DX films (a 43 x 43 cm detector at 100 um is 4,300 x 4,300; long-leg stitched DX
stay under 30 megapixels). It is one process-wide setting (:func:`set_max_pixels`; the ``infer`` and
``select`` commands' ``--max-pixels``), as Pillow's is.
"""

from __future__ import annotations

import gc
import logging
import os
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from pneumonia_monai import checks

logger = logging.getLogger(__name__)

#: Default pixel budget: Rows x Columns x Number of Frames of one object (8192 x 8192).
MAX_PIXELS = 8192 * 8192
#: Bytes per pixel of the decoded-size budget (a 16-bit grey film).
BUDGET_BYTES_PER_PIXEL = 2
#: Inflated bytes allowed beyond the decoded-size budget, for the header of a deflated data set.
HEADER_ALLOWANCE = 16 * 1024 * 1024
#: Compressed bytes read, and inflated bytes produced, per step of the inflation (:class:`InflatingReader`).
INFLATE_CHUNK = 1024 * 1024
#: Bytes a film takes per pixel while it is decoded and preprocessed (measured: a 16-bit film at the
#: budget adds about 400 MiB to the process, 6 bytes per pixel; encoded and decoded samples and the
#: float32 image, with room for the inflated copy of a deflated data set).
FILM_BYTES_PER_PIXEL = 10
#: Seconds a film waits for its share of the film budget before it goes on regardless (logged).
FILM_BUDGET_WAIT = 120.0
#: Bytes of the first frame read to find the codestream's size marker.
CODESTREAM_HEAD = 64 * 1024

#: JPEG 2000 and High-Throughput JPEG 2000 (its codestreams have the same SIZ marker).
_JPEG2000_SYNTAXES = frozenset(
    {
        JPEG2000Lossless,
        JPEG2000,
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
_JPEGLS_SYNTAXES = frozenset({JPEGLSLossless, JPEGLSNearLossless})

_lock = threading.Lock()
_max_pixels = MAX_PIXELS


class SizeLimitError(ValueError):
    """A file whose decoded or inflated size is over the limit, or whose codestream claims so."""


class DeflateError(ValueError):
    """A deflated data set whose compressed stream is corrupt or cut short."""


# --------------------------------------------------------------------------------------------------
# the setting


def max_pixels() -> int:
    """Return the pixel budget in force (default :data:`MAX_PIXELS`)."""
    return _max_pixels


def max_decoded_bytes() -> int:
    """Return the decoded-size budget in bytes: :func:`max_pixels` x :data:`BUDGET_BYTES_PER_PIXEL`."""
    return _max_pixels * BUDGET_BYTES_PER_PIXEL


def max_inflated_bytes() -> int:
    """Return the most bytes a deflated data set may inflate to: the decoded budget plus the header's."""
    return max_decoded_bytes() + HEADER_ALLOWANCE


def set_max_pixels(pixels: int) -> int:
    """Set the process-wide pixel budget (and Pillow's ``MAX_IMAGE_PIXELS``); return the previous value.

    Raises:
        TypeError: if ``pixels`` is not an int.
        ValueError: if ``pixels`` is below 1.
    """
    global _max_pixels
    pixels = checks.positive_int("max_pixels", pixels)
    from PIL import Image

    with _lock:
        previous, _max_pixels = _max_pixels, pixels
        Image.MAX_IMAGE_PIXELS = pixels
    if pixels != previous:
        logger.debug("pixel budget set to %d (decoded-size budget %d bytes)", pixels, max_decoded_bytes())
    return previous


def _sync_pillow() -> None:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = _max_pixels


_sync_pillow()


# --------------------------------------------------------------------------------------------------
# films in memory at once


class FilmTicket:
    """A share of the film budget (:func:`film_ticket`).

    It is given back once: by :meth:`release`, or when the array it was attached to (:meth:`attach`) is
    garbage.
    """

    def __init__(self, budget: _FilmBudget | None, nbytes: int) -> None:
        self._budget = budget
        self.nbytes = nbytes
        self._released = budget is None

    def release(self) -> None:
        """Give the share back (idempotent)."""
        if not self._released and self._budget is not None:
            self._released = True
            self._budget.give_back(self.nbytes)

    def attach(self, array: Any) -> Any:
        """Give the share back when ``array`` (the film, or what keeps its memory) is garbage; return it."""
        if not self._released:
            weakref.finalize(array, self.release)
        return array


class _FilmBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._free = threading.Condition()

    def take(self, nbytes: int, timeout: float) -> int:
        nbytes = min(nbytes, self.capacity)  # one film alone always fits
        deadline = time.monotonic() + timeout
        collected = False
        with self._free:
            while self.used + nbytes > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning(
                        "film budget: waited %.0f s for %d bytes (%d of %d in use); going on",
                        timeout,
                        nbytes,
                        self.used,
                        self.capacity,
                    )
                    break
                if not collected and timeout - left > 2.0:  # films kept only by reference cycles
                    collected = True
                    self._free.release()
                    try:
                        gc.collect()
                    finally:
                        self._free.acquire()
                    continue
                self._free.wait(min(left, 1.0))
            self.used += nbytes
        return nbytes

    def give_back(self, nbytes: int) -> None:
        with self._free:
            self.used = max(self.used - nbytes, 0)
            self._free.notify_all()


_film_budget: _FilmBudget | None = None
_film_budget_users = 0


@contextmanager
def film_budget(capacity: int | None = None) -> Iterator[None]:
    """Bound the memory of the films decoded and preprocessed at once in this process, while in the block.

    Each film read by :func:`pneumonia_monai.dicom.io.read_image` or
    :func:`pneumonia_monai.transforms.io.load_raster` takes ``rows x columns x frames x``
    :data:`FILM_BYTES_PER_PIXEL` bytes of ``capacity`` (default: one film at the pixel budget,
    :func:`max_pixels` x :data:`FILM_BYTES_PER_PIXEL`) until its image is garbage, and waits while they do
    not fit: two films at the budget are never in memory at once, ten small ones are. A wait longer than
    :data:`FILM_BUDGET_WAIT` seconds goes on with a warning, so that nothing ever deadlocks.

    Batch inference (:func:`pneumonia_monai.inference.runner.run_inference`) runs inside it; outside, no
    film waits (a training ``CacheDataset`` keeps its films, which would hold the budget). Blocks may nest
    or overlap (threads): the budget of the first is shared until the last ends.

    Raises:
        ValueError: if ``capacity`` is below 1.
    """
    global _film_budget, _film_budget_users
    capacity = max_pixels() * FILM_BYTES_PER_PIXEL if capacity is None else int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1 byte, got {capacity}")
    with _lock:
        if _film_budget is None:
            _film_budget = _FilmBudget(capacity)
        _film_budget_users += 1
    try:
        yield
    finally:
        with _lock:
            _film_budget_users -= 1
            if _film_budget_users == 0:
                _film_budget = None  # tickets still out give back to the budget they came from


def film_ticket(pixels: int) -> FilmTicket:
    """Take the share of the film budget of a film of ``pixels`` pixels (waiting while it does not fit).

    A no-op ticket outside :func:`film_budget`.
    """
    budget = _film_budget
    if budget is None:
        return FilmTicket(None, 0)
    return FilmTicket(budget, budget.take(max(int(pixels), 1) * FILM_BYTES_PER_PIXEL, FILM_BUDGET_WAIT))


# --------------------------------------------------------------------------------------------------
# decoded size


def check_decoded_size(
    rows: int, columns: int, *, frames: int = 1, samples: int = 1, bits_allocated: int = 16, source: str = ""
) -> None:
    """Refuse an image whose decoded size is over the budget.

    Args:
        rows: Rows (0028,0010).
        columns: Columns (0028,0011).
        frames: Number of Frames (0028,0008).
        samples: Samples per Pixel (0028,0002).
        bits_allocated: Bits Allocated (0028,0100).
        source: where the geometry comes from, for the message (e.g. ``"header"``).

    Raises:
        SizeLimitError: if ``rows x columns x frames`` is over :func:`max_pixels` or the decoded bytes
            are over :func:`max_decoded_bytes`.
    """
    pixels = rows * columns * frames
    nbytes = pixels * samples * max(1, (bits_allocated + 7) // 8)
    where = f" ({source})" if source else ""
    frames_text = f" x {frames} frames" if frames != 1 else ""
    if pixels > _max_pixels:
        raise SizeLimitError(
            f"image too large{where}: {rows} x {columns}{frames_text} = {pixels} pixels, over the limit of "
            f"{_max_pixels} (--max-pixels)"
        )
    if nbytes > max_decoded_bytes():
        raise SizeLimitError(
            f"image too large{where}: {rows} x {columns}{frames_text} x {samples} sample(s) x "
            f"{bits_allocated} bits = {nbytes} bytes decoded, over the limit of {max_decoded_bytes()} "
            "(2 bytes per pixel of --max-pixels)"
        )


def check_dataset_size(ds: Dataset) -> None:
    """Check the Image Pixel attributes of ``ds`` against the budget (before any pixel data is decoded).

    Raises:
        SizeLimitError: if the decoded size the header declares is over the budget.
        ValueError: if Rows (0028,0010), Columns (0028,0011), Number of Frames (0028,0008), Samples per
            Pixel (0028,0002) or Bits Allocated (0028,0100) is not an integer.
    """
    check_decoded_size(
        int(ds.Rows),
        int(ds.Columns),
        frames=int(ds.get("NumberOfFrames") or 1),
        samples=int(ds.get("SamplesPerPixel") or 1),
        bits_allocated=int(ds.get("BitsAllocated") or 16),
        source="Rows (0028,0010) x Columns (0028,0011) of the header",
    )


# --------------------------------------------------------------------------------------------------
# codestream size


def _first_fragment_head(pixel_data: bytes, limit: int = CODESTREAM_HEAD) -> bytes:
    """Return the first ``limit`` bytes of frame 0's fragments (the Basic Offset Table item skipped)."""
    view = memoryview(pixel_data)
    offset, items, head = 0, 0, bytearray()
    while offset + 8 <= len(view) and len(head) < limit:
        group, element, length = struct.unpack_from("<HHL", view, offset)
        offset += 8
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            break
        if items:  # item 0 is the Basic Offset Table
            head += view[offset : offset + min(length, limit - len(head))]
        items += 1
        offset += length
    return bytes(head)


def _jpeg2000_siz(head: bytes) -> tuple[int, int, int, int] | None:
    at = head.find(b"\xff\x4f\xff\x51")  # SOC then SIZ (a bare codestream, or inside a JP2 jp2c box)
    if at < 0 or len(head) < at + 4 + 38:
        return None
    (_lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz, _xt, _yt, _xto, _yto, csiz) = struct.unpack_from(
        ">HHLLLLLLLLH", head, at + 4
    )
    bits = (head[at + 4 + 38] & 0x7F) + 1 if len(head) > at + 4 + 38 else 0
    return max(ysiz - yosiz, 0), max(xsiz - xosiz, 0), csiz, bits


def _jpeg_sof(head: bytes, wanted: frozenset[int]) -> tuple[int, int, int, int] | None:
    if not head.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(head):
        if head[offset] != 0xFF:
            return None
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # TEM, RSTn: no length
            offset += 2
            continue
        (length,) = struct.unpack_from(">H", head, offset + 2)
        if marker in wanted:
            if offset + 10 > len(head):
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", head, offset + 4)
            return height, width, components, precision
        if marker in (0xDA, 0xD9):  # start of scan / end of image before any frame header
            return None
        offset += 2 + length
    return None


#: JPEG frame-header markers SOF0..SOF15 (not DHT C4, JPG C8, DAC CC), and JPEG-LS SOF55 (F7).
_JPEG_SOF = frozenset(set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC})
_JPEGLS_SOF = frozenset({0xF7})


def codestream_geometry(transfer_syntax: str, pixel_data: bytes) -> tuple[str, int, int, int, int] | None:
    """Return the size frame 0's codestream declares: ``(marker, rows, columns, components, bits)``.

    Read from the first :data:`CODESTREAM_HEAD` bytes of the first fragment: the SIZ marker of JPEG 2000,
    the SOF marker of the JPEG processes, the SOF55 marker of JPEG-LS. ``None`` for other syntaxes or
    when no marker is found there (the decoder then reports the damage).
    """
    syntax = str(transfer_syntax)
    if not UID(syntax).is_encapsulated:
        return None
    head = _first_fragment_head(pixel_data)
    if syntax in _JPEG2000_SYNTAXES:
        found = _jpeg2000_siz(head)
        return None if found is None else ("JPEG 2000 SIZ marker", *found)
    if syntax in _JPEGLS_SYNTAXES:
        found = _jpeg_sof(head, _JPEGLS_SOF)
        return None if found is None else ("JPEG-LS SOF55 marker", *found)
    if syntax.startswith("1.2.840.10008.1.2.4."):
        found = _jpeg_sof(head, _JPEG_SOF)
        return None if found is None else ("JPEG SOF marker", *found)
    return None


def read_encapsulated_head(fp: BinaryIO, limit: int = CODESTREAM_HEAD) -> bytes:
    """Read, from the start of an encapsulated Pixel Data value, what :func:`check_codestream` needs.

    Returns an empty Basic Offset Table item followed by the first fragment's item tag and at most
    ``limit`` bytes of it (the table itself, 4 bytes a frame, is skipped, not read), so a header-only
    reader such as ``select`` can check the codestream without reading the pixel data.
    """
    tag = fp.read(8)
    if len(tag) < 8:
        return b""
    group, element, length = struct.unpack("<HHL", tag)
    if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
        return b""
    fp.seek(length, os.SEEK_CUR)
    return struct.pack("<HHL", 0xFFFE, 0xE000, 0) + fp.read(8 + limit)


def check_codestream(ds: Dataset, transfer_syntax: str, pixel_data: bytes | None = None) -> None:
    """Refuse, before decoding, a codestream over the budget or larger than the header says.

    Args:
        ds: the data set (its Rows and Columns).
        transfer_syntax: its Transfer Syntax UID.
        pixel_data: the encapsulated Pixel Data, or as much of its start as holds the Basic Offset Table
            item and :data:`CODESTREAM_HEAD` bytes of the first fragment (default: ``ds.PixelData``).

    Raises:
        SizeLimitError: if frame 0's codestream declares more pixels than the budget, or other
            dimensions than Rows (0028,0010) x Columns (0028,0011).
    """
    found = codestream_geometry(transfer_syntax, ds.PixelData if pixel_data is None else pixel_data)
    if found is None:
        return
    marker, rows, columns, components, bits = found
    header_rows, header_columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * columns > _max_pixels or rows * columns * components * max(1, (bits + 7) // 8) > (
        max_decoded_bytes()
    ):
        raise SizeLimitError(
            f"codestream too large: its {marker} claims {rows} x {columns} x {components} component(s) "
            f"of {bits} bits, over the limit of {_max_pixels} pixels (--max-pixels); the header says "
            f"{header_rows} x {header_columns}; not decoded"
        )
    if rows and header_rows and (rows, columns) != (header_rows, header_columns):
        raise SizeLimitError(
            f"codestream does not match the header: its {marker} says {rows} x {columns}, Rows "
            f"(0028,0010) x Columns (0028,0011) say {header_rows} x {header_columns}; not decoded"
        )


# --------------------------------------------------------------------------------------------------
# inflated size


def _inflate_chunks(read: Any, limit: int) -> Iterator[bytes]:
    """Yield the inflated output of the raw deflate stream that ``read(n)`` returns, one chunk at a time.

    Raises:
        SizeLimitError: once the output passes ``limit``.
        DeflateError: for a corrupt stream or one that ends before its last block.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, b""
    try:
        while not inflater.eof:
            if pending:
                chunk = inflater.decompress(pending, INFLATE_CHUNK)
                pending = inflater.unconsumed_tail
            else:
                pending = read(INFLATE_CHUNK)
                if pending:
                    continue
                chunk = inflater.flush()  # the input is spent: what zlib still holds, if anything
                if not inflater.eof:
                    raise DeflateError(
                        "deflated data set is cut short: the compressed stream ends after "
                        f"{total + len(chunk)} inflated bytes, before its last block"
                    )
            total += len(chunk)
            if total > limit:
                raise SizeLimitError(
                    f"deflated data set inflates to more than {limit} bytes, over the limit "
                    "(2 bytes per pixel of --max-pixels plus 16 MiB); not read"
                )
            yield chunk
    except zlib.error as exc:
        raise DeflateError(f"deflated data set is corrupt (zlib: {exc})") from None


def check_inflated_size(data: bytes, limit: int | None = None) -> int:
    """Return the size the raw deflate stream ``data`` inflates to, without keeping the output.

    Raises:
        SizeLimitError: once the output passes ``limit`` (default :func:`max_inflated_bytes`).
        DeflateError: for a corrupt stream or one that ends before its last block.
    """
    stream = BytesIO(data)
    return sum(len(c) for c in _inflate_chunks(stream.read, max_inflated_bytes() if limit is None else limit))


class InflatingReader:
    """A read-only, seekable view of a raw deflate stream, inflated lazily as far as it is read.

    pydicom reads a data set through ``read``, ``seek`` and ``tell``; this inflates only as far as it
    goes (a header read that stops before the pixel data inflates the header, not the pixel data),
    :data:`INFLATE_CHUNK` bytes at a time, and never past ``limit``. What was inflated is kept, so
    pydicom may seek back. :meth:`drain` measures the rest without keeping it.

    Args:
        fp: positioned at the start of the deflated data set; must stay open while this is read.
        limit: most inflated bytes (default :func:`max_inflated_bytes`).
    """

    def __init__(self, fp: BinaryIO, limit: int | None = None) -> None:
        self._chunks = _inflate_chunks(fp.read, max_inflated_bytes() if limit is None else limit)
        self._data = bytearray()
        self._pos = 0
        self._done = False
        self._drained = 0
        self.name = getattr(fp, "name", "")

    def _fill(self, end: int | None) -> None:
        while not self._done and (end is None or len(self._data) < end):
            try:
                self._data += next(self._chunks)
            except StopIteration:
                self._done = True

    def read(self, size: int | None = -1) -> bytes:
        """Return up to ``size`` bytes (all that is left for ``-1``), inflating as needed."""
        end = None if size is None or size < 0 else self._pos + size
        self._fill(end)
        with memoryview(self._data) as view:  # one copy, not a bytearray slice and then its bytes
            data = bytes(view[self._pos : end])
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` (from the start, the current position or the end); return the position."""
        if whence == 2:
            self._fill(None)
            base = len(self._data)
        else:
            base = self._pos if whence == 1 else 0
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        """Return the position."""
        return self._pos

    def drain(self) -> int:
        """Inflate the rest, counting it without keeping it; return the whole inflated size.

        After this only the bytes inflated before it can be read.
        """
        if not self._done:
            self._drained += sum(len(chunk) for chunk in self._chunks)
            self._done = True
        return len(self._data) + self._drained


def read_dicom(
    path: str | Path | BinaryIO,
    *,
    force: bool = False,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[Any] | None = None,
) -> tuple[FileDataset, InflatingReader | None]:
    """``pydicom.dcmread`` with the inflated-size limit for Deflated Explicit VR Little Endian files.

    Other syntaxes are read by :func:`pydicom.dcmread` itself. A deflated data set is parsed through an
    :class:`InflatingReader` (pydicom would inflate it in one piece), so a header read inflates only the
    header.

    Returns:
        ``(dataset, inflated)``: for a deflated data set read from an open file, ``inflated`` is the
        reader, positioned where pydicom stopped (at the Pixel Data element with
        ``stop_before_pixels``), to be used while the file is open; else ``None``.

    Raises:
        SizeLimitError, DeflateError: for a deflated data set over the limit, corrupt or cut short.
        Whatever :func:`pydicom.dcmread` raises for a damaged file.
    """
    if isinstance(path, str | Path):
        with Path(path).open("rb") as opened:
            ds, _ = read_dicom(
                opened, force=force, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags
            )
        ds.filename = str(path)
        return ds, None
    # Private pydicom 3 readers: the file meta is read as dcmread reads it, the data set from memory.
    from pydicom.filereader import _at_pixel_data, _read_file_meta_info, read_dataset, read_preamble

    fp = path
    start = fp.tell()
    preamble = read_preamble(fp, force)
    file_meta = _read_file_meta_info(fp)
    if file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        fp.seek(start)
        return (
            dcmread(
                fp,
                force=force,
                stop_before_pixels=stop_before_pixels,
                specific_tags=None if specific_tags is None else list(specific_tags),
            ),
            None,
        )
    buffer = InflatingReader(fp)
    dataset = read_dataset(
        buffer,  # type: ignore[arg-type]
        False,
        True,
        stop_when=_at_pixel_data if stop_before_pixels else None,
        specific_tags=[Tag(t) for t in specific_tags] if specific_tags else None,
    )
    ds = FileDataset(getattr(fp, "name", "") or "", dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, buffer
