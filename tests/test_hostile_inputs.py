"""Hostile inputs (issue 10, items 2, 5, 6, 7, 8 and the input side of 12), each built here in test code.

Memory bombs (a codestream or a header claiming a huge image, a deflated data set that inflates past
the limit, a PNG of 12,000 x 12,000), file names that are not UTF-8, folder entries that are not
regular files, a file cut inside its header, deflated bodies that are garbage or cut short, 20,000
nested sequences, a spreadsheet formula in a cell, temporary files left by a killed run and a second
run into a locked output folder. The last tests run ``infer`` over a folder holding all of them beside
good films, in the process and in a subprocess whose peak memory is measured.
"""

from __future__ import annotations

import copy
import csv
import errno
import fcntl
import io
import json
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import make_cr, ramp
from infer_helpers import SMALL_NET, film, write_bundle
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
)

from pneumonia_monai import atomic
from pneumonia_monai.cli import infer as infer_cli
from pneumonia_monai.cli import select as select_cli
from pneumonia_monai.cli.common import DEFAULT_MAX_PIXELS
from pneumonia_monai.dicom import io as dicom_io
from pneumonia_monai.dicom import limits
from pneumonia_monai.dicom.selection import ERROR, SKIPPED
from pneumonia_monai.inference import runner
from pneumonia_monai.inference.manifest import read_results_csv
from pneumonia_monai.names import escape_name, unescape_name
from pneumonia_monai.transforms.io import ImageLoadError, load_raster
from pneumonia_monai.triage import decide_file, select_files

STUDY = "1.2.826.0.1.3680043.8.498.7001"
#: The peak resident memory a whole ``infer`` run at 2 workers may reach, whatever the input.
PEAK_RSS_LIMIT = 1.5 * 1024**3


# ----------------------------------------------------------------------------------------- builders


@pytest.fixture
def small_budget() -> Iterator[int]:
    """A pixel budget of 512 x 512 for the duration of a test (inflated-size limit 0.5 MiB + 16 MiB)."""
    previous = limits.set_max_pixels(512 * 512)
    try:
        yield limits.max_inflated_bytes()
    finally:
        limits.set_max_pixels(previous)


def patch_siz(pixel_data: bytes, rows: int, columns: int) -> bytes:
    """Rewrite Xsiz / Ysiz (image offsets 0) of the JPEG 2000 SIZ marker inside encapsulated data."""
    at = pixel_data.find(b"\xff\x4f\xff\x51")
    assert at > 0
    data = bytearray(pixel_data)
    struct.pack_into(">LL", data, at + 8, columns, rows)
    return bytes(data)


def patch_sof(pixel_data: bytes, marker: bytes, rows: int, columns: int) -> bytes:
    """Rewrite the height and width of the JPEG (or JPEG-LS) frame header ``marker``."""
    at = pixel_data.find(marker)
    assert at > 0
    data = bytearray(pixel_data)
    struct.pack_into(">HH", data, at + 5, rows, columns)
    return bytes(data)


def write_j2k_bomb(path: Path, claim: int = 40_000) -> pydicom.Dataset:
    """A 256 x 256 JPEG 2000 film whose codestream's SIZ marker claims ``claim`` x ``claim``."""
    ds = make_cr(path, pixels=ramp(256, 256), transfer_syntax=JPEG2000Lossless, StudyInstanceUID=STUDY)
    ds.PixelData = patch_siz(ds.PixelData, claim, claim)
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_jpeg_bomb(path: Path, claim: int = 40_000) -> None:
    """An 8-bit JPEG baseline film (Pillow's encoder) whose SOF0 claims ``claim`` x ``claim``."""
    buffer = io.BytesIO()
    Image.fromarray(film(2, 64, 8).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    frame = patch_sof(buffer.getvalue(), b"\xff\xc0", claim, claim)
    ds = make_cr(None, pixels=ramp(64, 64, bits_stored=8), bits_stored=8, StudyInstanceUID=STUDY)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def write_jpegls_bomb(path: Path, claim: int = 40_000) -> None:
    """A JPEG-LS film whose SOF55 marker claims ``claim`` x ``claim``."""
    ds = make_cr(path, pixels=ramp(128, 128), transfer_syntax=JPEGLSLossless, StudyInstanceUID=STUDY)
    ds.PixelData = patch_sof(ds.PixelData, b"\xff\xf7", claim, claim)
    ds.save_as(path, enforce_file_format=True)


def deflated_file(
    ds: pydicom.Dataset,
    *,
    pixel_bytes: int = 0,
    pattern: bytes = b"\0",
    body: bytes | None = None,
    cut: int | None = None,
) -> bytes:
    """The bytes of a Deflated Explicit VR Little Endian file of ``ds``.

    Args:
        ds: the header (its Pixel Data, if any, is dropped).
        pixel_bytes: a Pixel Data (OW) element of this many bytes of ``pattern`` is deflated after it,
            in chunks, so that a body inflating to gigabytes is built in little memory.
        pattern: the repeated content of the pixel data.
        body: the compressed body to write instead (garbage, say).
        cut: keep only this many bytes of the compressed body.
    """
    header = copy.deepcopy(ds)
    if "PixelData" in header:
        del header.PixelData
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    if body is None:
        plain = DicomBytesIO()
        plain.is_little_endian, plain.is_implicit_VR = True, False
        write_dataset(plain, header)
        compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        parts = [compressor.compress(plain.getvalue())]
        if pixel_bytes:
            parts.append(compressor.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)))
            chunk = pattern * max(1, 4 * 1024 * 1024 // len(pattern))  # whole periods of the pattern
            left = pixel_bytes
            while left:
                piece = chunk[: min(left, len(chunk))]
                parts.append(compressor.compress(piece))
                left -= len(piece)
        parts.append(compressor.flush())
        body = b"".join(parts)
    if cut is not None:
        body = body[:cut]
    return out.getvalue() + body


def nested_sequences(depth: int) -> bytes:
    """``depth`` Referenced Series Sequences (0008,1115) nested in one another, undefined lengths."""
    sequence = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return (sequence + item) * depth + (item_end + sequence_end) * depth


def write_deeply_nested(path: Path, depth: int = 20_000) -> None:
    """A chest CR whose header holds ``depth`` nested sequences before the pixel data."""
    ds = make_cr(path, StudyInstanceUID=STUDY)
    data = path.read_bytes()
    at = data.rfind(b"\xe0\x7f\x10\x00")  # Pixel Data (7FE0,0010), the last element
    path.write_bytes(data[:at] + nested_sequences(depth) + data[at:])
    assert ds.Rows == 40


def write_png_bomb(path: Path, side: int = 12_000) -> None:
    """An 8-bit grey PNG of ``side`` x ``side`` zeros: a real, decodable image of ~140 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">L", len(data)) + kind + data + struct.pack(">L", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte 0 and the row
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">LLBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_long_path(base: Path, total: int = 4300) -> Path:
    """Folders nested under ``base`` until the path is longer than PATH_MAX; returns the deepest one.

    Built with descriptors relative to their parent (``dir_fd``), as no path-based call reaches it.
    """
    name = "d" * 200
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base, os.O_RDONLY)
    length = len(os.fsencode(base))
    parts = []
    try:
        while length <= total:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
            parts.append(name)
            length += len(name) + 1
        leaf = os.open("film.dcm", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(leaf, b"\0" * 128 + b"DICM")
        os.close(leaf)
    finally:
        os.close(fd)
    return base.joinpath(*parts)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:  # strict UTF-8: a lone surrogate fails here
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- item 2: memory bombs


def test_default_budget_is_64_megapixels_and_pillow_follows_it():
    assert limits.MAX_PIXELS == DEFAULT_MAX_PIXELS == 8192 * 8192
    assert limits.max_decoded_bytes() == 2 * limits.max_pixels()
    assert limits.max_pixels() == Image.MAX_IMAGE_PIXELS
    previous = limits.set_max_pixels(1000)
    try:
        assert Image.MAX_IMAGE_PIXELS == 1000
    finally:
        limits.set_max_pixels(previous)
    assert previous == Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="max_pixels must be a positive int, got 0"):
        limits.set_max_pixels(0)
    with pytest.raises(TypeError, match="int"):
        limits.set_max_pixels(2.5)  # type: ignore[arg-type]


def _never_decode(*args, **kwargs):
    raise AssertionError("the decoder was called")


def test_a_17_kb_jpeg2000_claiming_40000_squared_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.dcm"
    write_j2k_bomb(path)
    assert path.stat().st_size < 17 * 1024
    monkeypatch.setattr(dicom_io, "_decode_with", _never_decode)
    with pytest.raises(dicom_io.DicomReadError) as caught:
        dicom_io.read_image(path)
    message = str(caught.value)
    assert "JPEG 2000 SIZ marker claims 40000 x 40000" in message
    assert "header says 256 x 256" in message
    assert "not decoded" in message


@pytest.mark.parametrize(
    ("writer", "marker"), [(write_jpeg_bomb, "JPEG SOF marker"), (write_jpegls_bomb, "JPEG-LS SOF55 marker")]
)
def test_jpeg_and_jpegls_frame_headers_are_checked_before_decoding(tmp_path, monkeypatch, writer, marker):
    path = tmp_path / "bomb.dcm"
    writer(path)
    monkeypatch.setattr(dicom_io, "_decode_with", _never_decode)
    with pytest.raises(dicom_io.DicomReadError, match=f"{marker} claims 40000 x 40000"):
        dicom_io.read_image(path)


def test_a_codestream_larger_than_its_header_is_refused_even_under_the_budget(tmp_path, monkeypatch):
    path = tmp_path / "mismatch.dcm"
    write_j2k_bomb(path, claim=512)
    monkeypatch.setattr(dicom_io, "_decode_with", _never_decode)
    with pytest.raises(dicom_io.DicomReadError, match=r"SIZ marker says 512 x 512, Rows .* say 256 x 256"):
        dicom_io.read_image(path)


def test_a_header_over_the_budget_is_refused_before_the_pixel_data_is_used(tmp_path, monkeypatch):
    path = tmp_path / "huge_header.dcm"
    make_cr(path, Rows=9000, Columns=9000)  # 81 megapixels declared, 40 x 48 stored
    monkeypatch.setattr(dicom_io, "_decode_with", _never_decode)
    with pytest.raises(dicom_io.DicomReadError, match=r"image too large .*9000 x 9000 = 81000000 pixels"):
        dicom_io.read_image(path)


def test_a_good_film_just_under_a_budget_is_read(tmp_path, small_budget):
    path = tmp_path / "ok.dcm"
    make_cr(path, pixels=ramp(512, 512), transfer_syntax=JPEG2000Lossless)
    image, meta = dicom_io.read_image(path)
    assert image.shape == (512, 512) and meta["rows"] == 512
    make_cr(path, pixels=ramp(513, 512))
    with pytest.raises(dicom_io.DicomReadError, match="over the limit of 262144"):
        dicom_io.read_image(path)


def test_a_deflate_bomb_is_refused_while_inflating_in_bounded_chunks(tmp_path, small_budget):
    limit = small_budget
    path = tmp_path / "deflate_bomb.dcm"
    path.write_bytes(deflated_file(make_cr(None), pixel_bytes=4 * limit))
    assert path.stat().st_size < limit // 50  # a small file that inflates to 4 times the limit
    tracemalloc.start()
    try:
        with pytest.raises(dicom_io.DicomReadError, match=f"inflates to more than {limit} bytes"):
            dicom_io.read_image(path)
        decision = decide_file(path)  # select and infer's triage: headers only
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (decision.status, decision.reason) == (ERROR, decision.reason)
    assert f"inflates to more than {limit} bytes" in decision.reason
    # pydicom alone would hold the whole inflated body (4 x limit) at once
    assert peak < limit + 4 * limits.INFLATE_CHUNK, peak


def test_a_deflated_film_within_the_budget_reads_as_the_plain_one(tmp_path):
    plain = make_cr(tmp_path / "plain.dcm", pixels=ramp(64, 80))
    deflated = tmp_path / "deflated.dcm"
    deflated.write_bytes(deflated_file(plain))  # the header only: no Pixel Data
    decision = decide_file(deflated)
    assert (decision.status, decision.reason) == (SKIPPED, "no Pixel Data (7FE0,0010)")
    ds = plain.copy()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(deflated, enforce_file_format=True)  # pydicom's own deflated writer
    assert decide_file(deflated).status == "selected"
    image, meta = dicom_io.read_image(deflated)
    reference, _ = dicom_io.read_image(tmp_path / "plain.dcm")
    assert meta["transfer_syntax_uid"] == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(image, reference)


def test_a_png_of_12000_squared_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    write_png_bomb(path)
    assert path.stat().st_size < 400 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match=r"image too large \(.*144000000 pixels"):
            load_raster(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_a_png_over_the_budget_is_refused_from_its_header(tmp_path, small_budget):
    path = tmp_path / "big.png"
    write_png_bomb(path, side=600)  # 360,000 pixels, over a budget of 262,144
    refused = r"image too large \(PNG header\): 600 x 600 = 360000 pixels"
    # Pillow only warns below twice its limit; the header check refuses
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageLoadError, match=refused):
        load_raster(path)


def test_pillow_s_own_bomb_error_is_a_clear_reason(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    write_png_bomb(path, side=3000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses at open, over twice its limit
    with pytest.raises(ImageLoadError, match=r"image too large .*decompression bomb"):
        load_raster(path)


def test_the_store_handler_refuses_a_deflate_bomb_before_decoding(small_budget):
    from types import SimpleNamespace

    from pneumonia_monai.node import scp

    limit = small_budget
    raw = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = raw.compress(b"\0" * (4 * limit)) + raw.flush()

    inflated_whole = []

    class Event:
        context = SimpleNamespace(transfer_syntax=DeflatedExplicitVRLittleEndian)
        request = SimpleNamespace(DataSet=io.BytesIO(data))
        assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="SENDER", address="127.0.0.1", port=1))

        @property
        def dataset(self):  # pynetdicom's decode: zlib.decompress of the whole data set
            inflated_whole.append(True)
            return pydicom.Dataset()

    handler = scp.StorageSCP.__new__(scp.StorageSCP)
    handler._counts_lock = threading.Lock()
    handler.counts = {"refused": 0, "error": 0}
    assert handler._handle_store(Event()) == scp.STATUS_CANNOT_UNDERSTAND
    assert handler.counts["refused"] == 1
    assert not inflated_whole


def test_two_films_at_the_budget_are_never_in_memory_at_once(small_budget):
    side = 512  # a film at the (small) pixel budget takes the whole film budget
    assert limits.film_ticket(side * side).nbytes == 0  # outside film_budget(): nothing waits
    with limits.film_budget():
        first = limits.film_ticket(side * side).attach(np.zeros((side, side), np.float32))
        taken, waiting = threading.Event(), threading.Event()
        held = []

        class WatchedCondition(threading.Condition):
            """The budget's condition, marking when a ticket waits on it for space."""

            def wait(self, timeout: float | None = None) -> bool:
                waiting.set()
                return super().wait(timeout)

        assert limits._film_budget is not None
        limits._film_budget._free = WatchedCondition()

        def second() -> None:
            held.append(limits.film_ticket(side * side))
            taken.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(30)  # the second ticket waits for space: the first film is alive
        assert not taken.is_set()
        del first  # its image is garbage: its share comes back
        assert taken.wait(30)
        thread.join()
        assert held[0].nbytes == side * side * limits.FILM_BYTES_PER_PIXEL
        held[0].release()
        small = [limits.film_ticket(32 * 32) for _ in range(10)]  # small films share it
        assert sum(t.nbytes for t in small) == 10 * 32 * 32 * limits.FILM_BYTES_PER_PIXEL
        for ticket in small:
            ticket.release()


# --------------------------------------------------------------------- item 5: names that are not UTF-8


def test_escape_name_is_lossless_and_utf8_safe():
    for raw in (b"plain.dcm", "caf\u00e9.png".encode(), b"bad-\xff\xfe.dcm", b"back\\slash\\x41", b"\xe9\\"):
        name = os.fsdecode(raw)
        text = escape_name(name)
        text.encode("utf-8")  # writable
        assert os.fsencode(unescape_name(text)) == raw
    assert escape_name(os.fsdecode(b"bad-\xff.dcm")) == "bad-\\xff.dcm"
    assert escape_name("plain/name.dcm") == "plain/name.dcm"


def test_infer_and_select_write_a_name_that_is_not_utf8(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", network_def=SMALL_NET)
    data = tmp_path / "in"
    data.mkdir()
    name = os.fsdecode(b"film-\xff\xfe.png")
    Image.fromarray(film(0, 96, 8).astype(np.uint8)).save(data / name, format="PNG")
    make_cr(data / os.fsdecode(b"\xe9tude.dcm"), pixels=film(1), StudyInstanceUID=STUDY)
    out = tmp_path / "out"
    status = infer_cli.main(
        [str(data), "--output", str(out), "--bundle", str(bundle), "--workers", "0", "-q"]
    )
    assert status == 0
    rows = read_rows(out / "results.csv")
    assert [r["path"] for r in rows] == ["film-\\xff\\xfe.png", "\\xe9tude.dcm"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert os.fsencode(unescape_name(rows[0]["path"])) == b"film-\xff\xfe.png"
    as_json = json.loads((out / "results.json").read_bytes().decode("utf-8"))
    assert [r["path"] for r in as_json] == [r["path"] for r in rows]
    decisions = tmp_path / "decisions.csv"
    assert select_cli.main([str(data), "--output", str(decisions), "-q"]) == 0
    assert [r["path"] for r in read_rows(decisions)] == ["film-\\xff\\xfe.png", "\\xe9tude.dcm"]


# ------------------------------------------------------------------------ item 6: every entry a row


def _unreadable(monkeypatch, folder: Path) -> None:
    """Make ``folder`` unreadable: chmod where that binds (not root), a refusing scandir where not."""
    if os.geteuid() != 0:
        folder.chmod(0)
        return
    real = os.scandir

    def scandir(path=".", *args, **kwargs):
        if Path(os.fsdecode(path)) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)


def build_odd_entries(root: Path, monkeypatch) -> dict[str, tuple[str, str]]:
    """Entries that are not regular files; returns relative path -> (status, piece of the reason)."""
    make_cr(root / "good.dcm", pixels=film(3), StudyInstanceUID=STUDY)
    (root / "dangling.dcm").symlink_to(root / "missing.dcm")
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    (root / "link_to_good.dcm").symlink_to(root / "good.dcm")
    os.mkfifo(root / "pipe.dcm")
    locked = root / "locked"
    make_cr(locked / "hidden.dcm", pixels=film(4), StudyInstanceUID=STUDY)
    _unreadable(monkeypatch, locked)
    deepest = make_long_path(root / "deep")
    long_rel = deepest.relative_to(root)
    # the folder whose path first passes PATH_MAX is the one that cannot be listed
    cut = next(
        i
        for i in range(1, len(long_rel.parts) + 1)
        if len(os.fsencode(root.joinpath(*long_rel.parts[:i]))) >= 4096
    )
    long_entry = Path(*long_rel.parts[:cut]).as_posix()
    return {
        "dangling.dcm": (ERROR, "dangling symbolic link"),
        "link_to_good.dcm": (SKIPPED, "symbolic link to a regular file (links are not followed)"),
        "locked": (ERROR, "cannot read folder (PermissionError"),
        "loop_a": (ERROR, "symbolic link loop"),
        "loop_b": (ERROR, "symbolic link loop"),
        "pipe.dcm": (SKIPPED, "not a regular file (named pipe; not opened)"),
        long_entry: (ERROR, "path longer than PATH_MAX"),
    }


@pytest.mark.timeout(120)  # opening the pipe would block for ever
def test_every_entry_found_gets_a_row_and_links_and_pipes_are_never_opened(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    expected = build_odd_entries(root, monkeypatch)
    result = select_files([root])
    got = {d.relative_path: (d.status, d.reason) for d in result.decisions}
    assert got.pop("good.dcm")[0] == "selected"
    assert set(got) == set(expected)
    for rel, (status, piece) in expected.items():
        assert got[rel][0] == status, (rel, got[rel])
        assert piece in got[rel][1], (rel, got[rel])
    output = tmp_path / "decisions.csv"
    assert select_cli.main([str(root), "--output", str(output), "-q"]) == 1  # errors: exit 1
    assert len(read_rows(output)) == len(expected) + 1
    # a link named as an input is the user's choice: its target is read
    (named,) = select_files([root / "link_to_good.dcm"]).decisions
    assert (named.relative_path, named.status) == ("good.dcm", "selected")


# ---------------------------------------------------------------- item 7: a file cut inside its header


@pytest.mark.parametrize("keep", [-3, -37, -100, 500])
def test_a_file_cut_inside_its_header_is_an_error_not_no_pixel_data(tmp_path, keep):
    """Cut inside an element: its declared length (or its header) runs past the end of the file.

    (A cut exactly between two elements leaves a well-formed data set; nothing tells it from a header
    written without pixel data.)
    """
    source = tmp_path / "whole.dcm"
    make_cr(source)
    data = source.read_bytes()
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: pixel_tag + keep] if keep < 0 else data[:keep])
    decision = decide_file(cut)
    assert decision.status == ERROR, decision.reason
    assert decision.reason.startswith("truncated file")


def test_a_header_without_pixel_data_that_ends_cleanly_is_still_skipped(tmp_path):
    path = tmp_path / "nopix.dcm"
    make_cr(path, PixelData=None)
    decision = decide_file(path)
    assert (decision.status, decision.reason) == (SKIPPED, "no Pixel Data (7FE0,0010)")


# ------------------------------------------------------------ item 8: select on broken deflate, nesting


def write_select_hostiles(root: Path) -> dict[str, tuple[str, str]]:
    header = make_cr(None, StudyInstanceUID=STUDY)
    good = deflated_file(header, pixel_bytes=40 * 48 * 2, pattern=b"\x10\x02")
    (root / "deflate_garbage.dcm").write_bytes(deflated_file(header, body=os.urandom(3000)))
    (root / "deflate_cut.dcm").write_bytes(good[: len(good) - 200])
    write_deeply_nested(root / "nested.dcm")
    return {
        "deflate_garbage.dcm": (ERROR, "deflated data set is corrupt"),
        "deflate_cut.dcm": (ERROR, "deflated data set is cut short"),
        "nested.dcm": (ERROR, "nested too deeply"),
    }


def test_select_gives_error_rows_for_broken_deflate_and_deep_nesting(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    expected = write_select_hostiles(root)
    make_cr(root / "good.dcm", StudyInstanceUID=STUDY)
    output = tmp_path / "decisions.csv"
    assert select_cli.main([str(root), "--output", str(output), "-q"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    rows = {r["path"]: r for r in read_rows(output)}
    assert rows.pop("good.dcm")["status"] == "selected"
    for rel, (status, piece) in expected.items():
        assert rows[rel]["status"] == status, rows[rel]
        assert piece in rows[rel]["reason"], rows[rel]


# ------------------------------------------------------------------- item 12: the input side


def test_a_formula_in_a_cell_is_not_written_as_a_formula(tmp_path, capsys):
    root = tmp_path / "in"
    make_cr(root / "formula.dcm", view="=1+2", StudyInstanceUID=STUDY)
    make_cr(root / "minus.dcm", view="-HYPERLINK", StudyInstanceUID=STUDY)
    assert select_cli.main([str(root), "-q"]) == 0
    stdout = capsys.readouterr().out
    cells = [cell for row in csv.reader(io.StringIO(stdout)) for cell in row]
    assert "'=1+2" in cells and "'-HYPERLINK" in cells
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    out = tmp_path / "rows.csv"
    atomic.write_csv_atomic(out, ["a", "b"], [{"a": "=1+2", "b": "-0.5"}, {"a": "'=x", "b": "@SUM(A1)"}])
    assert out.read_text(encoding="utf-8").splitlines()[1:] == ["'=1+2,-0.5", "''=x,'@SUM(A1)"]
    assert read_results_csv(out) == [{"a": "=1+2", "b": "-0.5"}, {"a": "'=x", "b": "@SUM(A1)"}]


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", network_def=SMALL_NET)
    data = tmp_path / "in"
    data.mkdir()
    Image.fromarray(film(0, 64, 8).astype(np.uint8)).save(data / "a.png")
    out = tmp_path / "out"
    stale = [
        out / f".results.csv.{'a' * 32}.tmp",
        out / ".state" / f".journal.jsonl.{'b' * 32}.tmp",
        out / "sr" / f".1.2.3.dcm.{'c' * 32}.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    keep = out / ".notes.tmp"  # not a name atomic_open makes
    keep.write_text("mine")
    summary = runner.run_inference([data], out, bundle=bundle, workers=0, progress=False)
    assert summary.counts["ok"] == 1
    assert not [path for path in stale if path.exists()]
    assert keep.read_text() == "mine"


def test_a_locked_output_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch, caplog):
    data = tmp_path / "in"
    data.mkdir()
    Image.fromarray(film(0, 64, 8).astype(np.uint8)).save(data / "a.png")
    out = tmp_path / "out"
    out.mkdir()

    def load_bundle(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "load_bundle", load_bundle)
    with (out / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert infer_cli.main([str(data), "--output", str(out), "-q"]) == 2
    assert "another inference run is writing to" in caplog.text


# ------------------------------------------------------------------------- all of them, with films


def build_hostile_folder(root: Path, monkeypatch) -> dict[str, tuple[str, str]]:
    """Good films beside every hostile input above; returns relative path -> (status, reason piece)."""
    root.mkdir(parents=True)
    for index in range(3):
        make_cr(root / f"good/cr_{index}.dcm", pixels=film(index), StudyInstanceUID=STUDY)
    Image.fromarray(film(5, 128, 8).astype(np.uint8)).save(root / "good/film.png")
    Image.fromarray(film(6, 128, 8).astype(np.uint8)).save(root / os.fsdecode(b"good/na\xefve-\xff.png"))
    write_j2k_bomb(root / "bombs/j2k_40000.dcm")
    write_jpeg_bomb(root / "bombs/jpeg_40000.dcm")
    write_jpegls_bomb(root / "bombs/jpegls_40000.dcm")
    # 1 MiB on disk, 1 GiB inflated: seven times the limit
    (root / "bombs/deflate_1gb.dcm").write_bytes(
        deflated_file(make_cr(None, StudyInstanceUID=STUDY), pixel_bytes=1024**3)
    )
    write_png_bomb(root / "bombs/png_12000.png")
    expected = {f"good/cr_{i}.dcm": ("ok", "CR chest frontal") for i in range(3)}
    expected["good/film.png"] = ("ok", "PNG image")
    expected["good/na\\xefve-\\xff.png"] = ("ok", "PNG image")
    expected |= {
        "bombs/j2k_40000.dcm": (ERROR, "JPEG 2000 SIZ marker claims 40000 x 40000"),
        "bombs/jpeg_40000.dcm": (ERROR, "JPEG SOF marker claims 40000 x 40000"),
        "bombs/jpegls_40000.dcm": (ERROR, "JPEG-LS SOF55 marker claims 40000 x 40000"),
        "bombs/deflate_1gb.dcm": (ERROR, "deflated data set inflates to more than"),
        "bombs/png_12000.png": (ERROR, "image too large (Image size (144000000 pixels)"),
    }
    (root / "broken").mkdir()
    expected |= {f"broken/{k}": v for k, v in write_select_hostiles(root / "broken").items()}
    source = root / "broken/whole.tmp"
    make_cr(source, StudyInstanceUID=STUDY)
    data = source.read_bytes()
    source.unlink()
    (root / "broken/cut_header.dcm").write_bytes(data[: data.rfind(b"\xe0\x7f\x10\x00") - 37])
    expected["broken/cut_header.dcm"] = (ERROR, "truncated file")
    make_cr(root / "broken/formula.dcm", view="=1+2", StudyInstanceUID=STUDY)
    expected["broken/formula.dcm"] = (SKIPPED, "not a frontal view (ViewPosition==1+2)")
    (root / "odd").mkdir()
    odd = build_odd_entries(root / "odd", monkeypatch)
    expected["odd/good.dcm"] = ("ok", "CR chest frontal")
    expected["odd/link_to_good.dcm"] = odd.pop("link_to_good.dcm")
    expected |= {f"odd/{k}": v for k, v in odd.items()}
    return expected


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink() and len(os.fsencode(path)) < 4000:
                out[str(path)] = path.read_bytes()
    return out


@pytest.mark.timeout(600)
def test_infer_over_every_hostile_input_beside_good_films(tmp_path, monkeypatch, capsys):
    bundle = write_bundle(tmp_path / "bundle", network_def=SMALL_NET)
    root = tmp_path / "in"
    expected = build_hostile_folder(root, monkeypatch)
    before = _files(root)
    out = tmp_path / "out"
    status = infer_cli.main(
        [str(root), "--output", str(out), "--bundle", str(bundle), "--workers", "2", "-q"]
    )
    assert status == 1
    assert "Traceback" not in capsys.readouterr().err
    rows = read_rows(out / "results.csv")
    assert len(rows) == len(expected)  # one row per entry
    got = {row["path"]: row for row in rows}
    assert set(got) == set(expected)
    for rel, (status_, piece) in expected.items():
        assert got[rel]["status"] == status_, (rel, got[rel])
        assert piece in got[rel]["reason"], (rel, got[rel])
        if status_ == "ok":
            assert 0.0 <= float(got[rel]["prob_pneumonia"]) <= 1.0
    assert got["broken/formula.dcm"]["view"] == "'=1+2"  # never a formula in a spreadsheet
    assert {r["path"]: r for r in read_results_csv(out / "results.csv")}["broken/formula.dcm"][
        "view"
    ] == "=1+2"
    assert _files(root) == before  # inputs unchanged


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_peak_memory_of_infer_at_two_workers_stays_under_1_5_gb(tmp_path):
    """A subprocess runs ``infer`` over the bombs and two films at the pixel budget (8192 x 8192).

    The peak is the child's ``VmHWM`` (``/proc/self/status``), the high-water mark of its own address
    space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not: Linux folds the pre-``exec`` image's high-water
    mark into it, and a child forked (or vforked) from pytest starts from pytest's resident size, which
    is what made this read 1,544-1,608 MiB inside full-suite runs against about 1,000 alone.
    """
    bundle = write_bundle(tmp_path / "bundle", network_def=SMALL_NET)
    root = tmp_path / "in"
    write_j2k_bomb(root / "j2k_40000.dcm")
    write_jpegls_bomb(root / "jpegls_40000.dcm")
    (root / "deflate_1gb.dcm").write_bytes(deflated_file(make_cr(None), pixel_bytes=1024**3))
    write_png_bomb(root / "png_12000.png")
    side = 8192
    header = make_cr(None, pixels=ramp(8, 8), Rows=side, Columns=side, StudyInstanceUID=STUDY)
    for index in range(2):  # two films at the budget, decoded at once by the two workers
        band = np.tile(film(index, 256), (1, side // 256)).astype("<u2").tobytes()  # 256 rows of tiles
        header.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.7{index}"
        (root / f"at_budget_{index}.dcm").write_bytes(
            deflated_file(header, pixel_bytes=side * side * 2, pattern=band)
        )
    out = tmp_path / "out"
    driver = (
        "import sys\n"
        "from pneumonia_monai.cli import infer\n"
        "status = infer.main(sys.argv[1:])\n"
        "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
        "print('PEAK_RSS_KB', hwm[0], file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            driver,
            str(root),
            "-o",
            str(out),
            "--bundle",
            str(bundle),
            "--workers",
            "2",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    peak = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) * 1024
    print(f"peak RSS of infer at 2 workers: {peak / 1024**2:.0f} MiB")
    rows = {r["path"]: r for r in read_rows(out / "results.csv")}
    assert rows["at_budget_0.dcm"]["status"] == rows["at_budget_1.dcm"]["status"] == "ok", rows
    assert {rows[k]["status"] for k in ("j2k_40000.dcm", "jpegls_40000.dcm", "deflate_1gb.dcm")} == {ERROR}
    assert peak <= PEAK_RSS_LIMIT, f"peak RSS {peak / 1024**2:.0f} MiB"


@pytest.mark.parametrize(
    ("writer", "marker"),
    [
        (write_j2k_bomb, "JPEG 2000 SIZ marker"),
        (write_jpeg_bomb, "JPEG SOF marker"),
        (write_jpegls_bomb, "JPEG-LS SOF55 marker"),
    ],
)
def test_select_refuses_a_codestream_bomb_from_its_first_bytes(tmp_path, writer, marker):
    """``select`` reads headers only, yet reports the bomb ``infer`` would refuse, with the same reason."""
    path = tmp_path / "bomb.dcm"
    writer(path)
    decision = decide_file(path)
    assert decision.status == ERROR, decision
    assert f"{marker} claims 40000 x 40000" in decision.reason
    good = tmp_path / "good.dcm"
    make_cr(good, pixels=film(1), StudyInstanceUID=STUDY)
    assert decide_file(good).status == "selected"
