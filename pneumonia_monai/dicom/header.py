"""Read a DICOM file's header without its pixel data, and recognise DICOM files by their first bytes.

One sniffer for the package: a file is DICOM when it has the PS3.10 ``DICM`` prefix at byte 128
(:func:`has_dicom_prefix`), or, written without preamble and file meta, when its first element is a
plausible group 0002 or 0008 element in either byte order (:func:`looks_like_bare_dataset`) and the data
set parsed from it holds file meta information or a group 0008 element the DICOM dictionary knows
(:func:`holds_dicom`). :func:`is_dicom` applies that test to a path and never raises;
:func:`read_header` applies it while reading a header and says why a file is not DICOM, cut short or
unreadable (:class:`NotDicomError`, :class:`TruncatedDicomError`, :data:`HEADER_READ_ERRORS`).
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.datadict import dictionary_has_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble

from pneumonia_monai.dicom import limits
from pneumonia_monai.dicom.walk import open_regular_file

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)

#: What reading a corrupt header can raise (pydicom raises a variety of errors on damaged files).
HEADER_READ_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    EOFError,
    ValueError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    NotImplementedError,
    RecursionError,
    zlib.error,
)


class NotDicomError(ValueError):
    """The file is not a DICOM file (no ``DICM`` prefix and no data set at its start)."""


class TruncatedDicomError(ValueError):
    """A DICOM file ends before the lengths its header declares (an interrupted copy, typically)."""


@dataclass(frozen=True)
class Header:
    """A DICOM header read without its pixel data.

    Attributes:
        dataset: the attributes read (only those asked for, plus the file meta information).
        has_pixel_data: whether a non-empty Pixel Data (or Float / Double Float Pixel Data) element follows.
        has_preamble: whether the file has the 128-byte preamble and ``DICM`` prefix.
    """

    dataset: Dataset
    has_pixel_data: bool
    has_preamble: bool


# ------------------------------------------------------------------------------------ sniffing


def has_dicom_prefix(head: bytes) -> bool:
    """Whether the first 132 bytes of a file hold the preamble and the ``DICM`` prefix (PS3.10 7.1)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_like_bare_dataset(head: bytes) -> bool:
    """Whether ``head`` plausibly starts a data set written without preamble.

    Its first element must be of group 0002 (file meta) or 0008 with an element number below 4000H, read
    little endian (explicit VR: an upper-case VR follows the tag; implicit VR: a length below 64 KiB) or,
    for Explicit VR Big Endian, big endian with an upper-case VR.
    """
    if len(head) < 8:
        return False
    vr = head[4:6]
    explicit = vr.isalpha() and vr.isupper()
    for endian in ("<", ">"):
        group, element = struct.unpack(f"{endian}HH", head[:4])
        if group not in (0x0002, 0x0008) or element > 0x3FFF:
            continue
        if explicit:
            return True
        if endian == "<":  # implicit VR is little endian only
            (length,) = struct.unpack("<L", head[4:8])
            return length < 0x10000
    return False


def holds_dicom(ds: Dataset) -> bool:
    """Whether a data set parsed from a file without preamble is DICOM.

    It is when it has file meta information or a group 0008 element the DICOM dictionary knows
    (pydicom with ``force=True`` parses almost anything into some data set).
    """
    if ds.file_meta:
        return True
    return any(tag.group == 0x0008 and dictionary_has_tag(tag) for tag in ds.keys())  # noqa: SIM118


def is_dicom(path: str | Path) -> bool:
    """Return whether ``path`` is a DICOM file, judged by its header, never by its name.

    True for the ``DICM`` prefix at byte 128, or for a file without preamble that starts like a data set
    (:func:`looks_like_bare_dataset`) and parses, with ``force=True`` and without its pixel data, into one
    that :func:`holds_dicom`. Never raises: unreadable paths, folders and special files are not DICOM.
    """
    try:
        with open_regular_file(path) as handle:
            head = handle.read(132)
            if has_dicom_prefix(head):
                return True
            if not looks_like_bare_dataset(head):  # cheap reject of JPEGs, text, ... before parsing
                return False
            handle.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a parse failure is an answer here, not a warning
                ds, _ = limits.read_dicom(handle, force=True, stop_before_pixels=True)
            return holds_dicom(ds)
    except Exception:  # noqa: BLE001 - any read or parse failure means "not DICOM"
        return False


def _describe_non_dicom(head: bytes) -> str:
    """The reason for a file that is not DICOM, naming a JPEG or PNG picture by its signature."""
    if head.startswith(b"\xff\xd8\xff"):
        return "not a DICOM file (JPEG image)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a DICOM file (PNG image)"
    return "not a DICOM file (no DICM prefix at byte 128, no data set at byte 0)"


def _pixel_data_follows(fp: BinaryIO, little_endian: bool, implicit_vr: bool) -> tuple[bool, int | None]:
    """Read the element at the file position (where ``stop_before_pixels`` stops).

    Returns:
        ``(present, value_end)``: whether it is non-empty pixel data, and the file offset where its value
        ends (``None`` for an undefined length, i.e. encapsulated pixel data).
    """
    start = fp.tell()
    chunk = fp.read(12)
    if len(chunk) < 8:
        return False, None
    endian = "<" if little_endian else ">"
    group, element = struct.unpack(f"{endian}HH", chunk[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return False, None
    if implicit_vr:
        (length,) = struct.unpack(f"{endian}L", chunk[4:8])
        header = 8
    elif chunk[4:6] in _LONG_LENGTH_VRS:
        if len(chunk) < 12:
            return False, None
        (length,) = struct.unpack(f"{endian}L", chunk[8:12])
        header = 12
    else:
        (length,) = struct.unpack(f"{endian}H", chunk[6:8])
        header = 8
    if length == 0:
        return False, None
    return True, (None if length == 0xFFFFFFFF else start + header + length)


def _dataset_start(fp: BinaryIO, force: bool) -> int:
    """The offset of the data set in the file: after the preamble and file meta, as pydicom reads them."""
    fp.seek(0)
    read_preamble(fp, force)
    _read_file_meta_info(fp)
    return fp.tell()


def _structure_problem(fp: BinaryIO, start: int, size: int, little_endian: bool, implicit_vr: bool) -> str:
    """Walk the elements from ``start`` to the end, without reading values; say where the file is cut.

    Nested sequences and items of undefined length are followed with a depth count, not recursion, so
    any nesting is walked. Returns ``""`` when the data set ends at an element boundary at depth 0.
    """
    endian = "<" if little_endian else ">"
    pos, depth = start, 0
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if not head:
            return "" if depth == 0 else f"the file ends inside a sequence (nesting depth {depth})"
        if len(head) < 8:
            return f"the file ends inside an element header at byte {pos}"
        group, element = struct.unpack(f"{endian}HH", head[:4])
        if group == 0xFFFE:  # items and delimiters: tag and 4-byte length, no VR
            (length,) = struct.unpack(f"{endian}L", head[4:8])
            if element in (0xE00D, 0xE0DD):
                depth = max(depth - 1, 0)
                pos += 8
                continue
            if length == 0xFFFFFFFF:
                depth += 1
                pos += 8
                continue
            header = 8
        elif implicit_vr:
            (length,) = struct.unpack(f"{endian}L", head[4:8])
            header = 8
        elif head[4:6] in _LONG_LENGTH_VRS:
            more = fp.read(4)
            if len(more) < 4:
                return f"the file ends inside the header of element ({group:04X},{element:04X}) at byte {pos}"
            (length,) = struct.unpack(f"{endian}L", more)
            header = 12
        else:
            (length,) = struct.unpack(f"{endian}H", head[6:8])
            header = 8
        if length == 0xFFFFFFFF:
            depth += 1
            pos += header
            continue
        end = pos + header + length
        if end > size:
            return f"element ({group:04X},{element:04X}) at byte {pos} needs {end} bytes, file has {size}"
        pos = end


def read_header(path: str | Path, keywords: Sequence[str] | None = None) -> Header:
    """Read a DICOM file's header (never its pixel data) and tell whether it has pixel data.

    The file is recognised as :func:`is_dicom` recognises it (the ``DICM`` prefix, or a data set without
    preamble that starts like one and :func:`holds_dicom`). Pixel data presence is found without
    reading it: pydicom stops at, and rewinds to, the top-level (7FE0,0010) element when told
    ``stop_before_pixels``, so the element's tag and length are the next bytes of the file.

    Args:
        path: the file.
        keywords: the attributes to read (default: all but pixel data); the file meta, SOP Class UID and
            SOP Instance UID are always read (the last two tell a data set without preamble from noise).

    Raises:
        NotDicomError: if the file is not DICOM.
        TruncatedDicomError: if the file ends before its file meta, an element or its Pixel Data does.
        SizeLimitError: if an encapsulated codestream claims more than the pixel budget or another size
            than Rows x Columns (read from frame 0's first bytes, see :func:`limits.check_codestream`).
        DeflateError: if a deflated data set is corrupt or inflates past its limit.
        InvalidDicomError, OSError, ValueError, EOFError, struct.error: if the header cannot be parsed.
    """
    path = Path(path)
    specific = None
    if keywords is not None:
        bad = [k for k in keywords if tag_for_keyword(k) is None]
        if bad:
            raise ValueError(f"not DICOM keyword(s): {bad}")
        specific = [tag_for_keyword(k) for k in dict.fromkeys([*keywords, "SOPClassUID", "SOPInstanceUID"])]
    with open_regular_file(path) as fp:
        head = fp.read(132)
        has_preamble = has_dicom_prefix(head)
        if not has_preamble and not looks_like_bare_dataset(head):
            raise NotDicomError(_describe_non_dicom(head))
        size = os.fstat(fp.fileno()).st_size
        fp.seek(0)
        ds, inflated = limits.read_dicom(
            fp, force=not has_preamble, stop_before_pixels=True, specific_tags=specific
        )
        meta_length = ds.file_meta.get("FileMetaInformationGroupLength")
        if has_preamble and isinstance(meta_length, int) and 144 + meta_length > size:
            raise TruncatedDicomError(
                f"truncated file (file meta information needs {144 + meta_length} bytes)"
            )
        if fp.tell() > size:
            raise TruncatedDicomError(
                f"truncated file (an element ends at byte {fp.tell()}, file has {size})"
            )
        if not has_preamble and not holds_dicom(ds):
            raise NotDicomError(
                "not a DICOM file (no DICM prefix, no file meta and no group 0008 element at byte 0)"
            )
        implicit_vr, little_endian = ds.original_encoding
        # A deflated data set is read through its inflating reader, inflated only as far as the header.
        stream: Any = inflated if inflated is not None else fp
        has_pixels, value_end = _pixel_data_follows(stream, bool(little_endian), bool(implicit_vr))
        if has_pixels and value_end is None and inflated is None and not implicit_vr:
            # encapsulated: the codestream's own size, from frame 0's first bytes (as infer checks it)
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is not None:
                limits.check_codestream(ds, str(syntax), limits.read_encapsulated_head(fp))
        if not has_pixels and inflated is not None:
            inflated.seek(0, os.SEEK_END)  # the walk below reads to the end: inflate it (bounded)
        stream_size = size if inflated is None else inflated.drain()  # counted, not kept
        if value_end is not None and value_end > stream_size:
            raise TruncatedDicomError(
                f"truncated file (Pixel Data ends at byte {value_end}, file has {stream_size})"
            )
        if not has_pixels:
            # pydicom stops quietly where a file cut inside its header ends: walk the elements to tell a
            # data set without pixel data from a damaged one.
            start = 0 if inflated is not None else _dataset_start(fp, not has_preamble)
            problem = _structure_problem(stream, start, stream_size, bool(little_endian), bool(implicit_vr))
            if problem:
                raise TruncatedDicomError(f"truncated file ({problem}; no Pixel Data reached)")
    return Header(ds, has_pixels, has_preamble)
