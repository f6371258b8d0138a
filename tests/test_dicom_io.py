"""Reading DICOM files: header sniffing, the real chest CR trio, multi-frame, bits, and bad input."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import make_cr, make_dx
from PIL import Image
from pydicom import dcmread, uid
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames

from pneumonia_monai.dicom import pixels
from pneumonia_monai.dicom.header import is_dicom
from pneumonia_monai.dicom.io import DicomReadError, read_image

CONTRACT_KEYS = {
    "study_uid",
    "series_uid",
    "sop_uid",
    "sop_class_uid",
    "modality",
    "photometric_interpretation",
    "transfer_syntax_uid",
    "rows",
    "columns",
    "bits_stored",
    "view_position",
    "pixel_spacing",
    "voi_source",
    "frames",
    "frame_used",
}


def data_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} not found: install the test extra (pydicom-data)"
    return Path(path)


def without_preamble(source: Path, target: Path) -> Path:
    """Rewrite ``source`` as a bare data set: no preamble, no 'DICM', no file meta group."""
    ds = dcmread(source)
    implicit, little = ds.original_encoding
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    ds.save_as(target, implicit_vr=implicit, little_endian=little)
    raw = target.read_bytes()
    assert raw[128:132] != b"DICM" and raw[:2] in (b"\x08\x00", b"\x00\x08")
    return target


@pytest.fixture(scope="module")
def rg1() -> dict[str, tuple[np.ndarray, dict]]:
    """The real 15-bit MONOCHROME1 chest CR, uncompressed and JPEG 2000 lossless / lossy."""
    return {name: read_image(data_file(f"RG1_{name}.dcm")) for name in ("UNCR", "UNCI", "J2KR", "J2KI")}


# ------------------------------------------------------------------------------------------- sniffing


def test_is_dicom_by_header_not_by_name(tmp_path):
    assert is_dicom(data_file("RG1_UNCR.dcm"))
    assert is_dicom(str(data_file("MR_small_RLE.dcm")))
    renamed = tmp_path / "film.jpg"
    shutil.copy(data_file("MR_small.dcm"), renamed)
    assert is_dicom(renamed)
    jpeg = tmp_path / "image.dcm"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(jpeg, format="JPEG")
    assert not is_dicom(jpeg)


def test_is_dicom_without_preamble(tmp_path):
    assert is_dicom(without_preamble(data_file("MR_small_implicit.dcm"), tmp_path / "bare_implicit"))
    assert is_dicom(without_preamble(data_file("MR_small_bigendian.dcm"), tmp_path / "bare_be"))
    assert is_dicom(data_file("OT-PAL-8-face.dcm"))  # pydicom's no-preamble file, group length first


def test_is_dicom_rejects_everything_else(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("patient list\n")
    empty = tmp_path / "empty.dcm"
    empty.touch()
    almost = tmp_path / "almost"
    almost.write_bytes(b"\x08\x00" + b"\xff" * 40)
    for path in (text, empty, almost, tmp_path, tmp_path / "missing.dcm", data_file("README.txt")):
        assert is_dicom(path) is False


# ---------------------------------------------------------------------------------- the real CR trio


def test_rg1_lossless_identical_and_lossy_close(rg1):
    uncr, unci, j2kr, j2ki = (rg1[k][0] for k in ("UNCR", "UNCI", "J2KR", "J2KI"))
    np.testing.assert_array_equal(j2kr, uncr)  # J2K lossless == original
    np.testing.assert_array_equal(j2ki, unci)  # our J2K lossy decoding == the reference decoding
    # Lossy (~10:1) against the original: measured mean 0.00167, max 0.0134 in display units, i.e. a
    # mean of 50 stored values under the file's 30000-wide window. A wrong window, polarity or bit depth
    # moves the mean by > 0.1.
    diff = np.abs(j2ki.astype(np.float64) - uncr)
    assert 0 < diff.mean() < 0.005
    assert diff.max() < 0.05


def test_rg1_is_displayed_as_a_radiograph_not_a_negative(rg1):
    # MONOCHROME1: the stored minimum is white. Correctly inverted, the air-filled lungs are darker
    # than the mediastinum between them (checked by eye on a PNG of the output as well).
    for name, (image, meta) in rg1.items():
        assert meta["inverted"] is True, name
        rows = slice(400, 1000)
        lungs = [image[rows, 350:700].mean(), image[rows, 1150:1500].mean()]
        mediastinum = image[rows, 830:1000].mean()
        assert max(lungs) < mediastinum - 0.15, (name, lungs, mediastinum)


def test_rg1_meta(rg1):
    image, meta = rg1["UNCR"]
    assert set(meta) >= CONTRACT_KEYS
    assert image.shape == (1955, 1841) and image.dtype == np.float32
    assert meta["modality"] == "CR"
    assert meta["photometric_interpretation"] == "MONOCHROME1"
    assert meta["transfer_syntax_uid"] == uid.ExplicitVRLittleEndian
    assert (meta["rows"], meta["columns"], meta["bits_stored"]) == (1955, 1841, 15)
    assert meta["voi_source"] == "window[0]"
    assert (meta["frames"], meta["frame_used"]) == (1, 0)
    assert meta["view_position"] == dcmread(data_file("RG1_UNCR.dcm")).get("ViewPosition", "")
    assert rg1["J2KI"][1]["transfer_syntax_uid"] == uid.JPEG2000


def test_meta_has_no_phi(tmp_path):
    path = tmp_path / "dx.dcm"
    make_dx(
        path,
        pixels=np.full((4, 5), 100, dtype=np.uint16),
        WindowCenter=100,
        WindowWidth=200,
        PatientName="Doe^Jane",
        PatientID="PID-12345",
        PatientBirthDate="19700101",
        ImagerPixelSpacing=[0.139, 0.139],
    )
    image, meta = read_image(path)
    assert set(meta) >= CONTRACT_KEYS
    assert not any(key.lower().startswith("patient") for key in meta)
    text = repr(meta)
    for phi in ("Doe", "Jane", "PID-12345", "19700101"):
        assert phi not in text
    assert meta["pixel_spacing"] == [0.139, 0.139]
    assert meta["pixel_spacing_source"] == "ImagerPixelSpacing"
    assert meta["view_position"] == "PA" and meta["modality"] == "DX"
    assert meta["sop_class_uid"] == uid.DigitalXRayImageStorageForPresentation
    assert image.shape == (4, 5)


# ---------------------------------------------------------------------------------- frames and bits


def test_multi_frame_uses_the_first_frame(tmp_path, caplog):
    frames = np.stack([np.full((3, 4), v) for v in (100, 2000, 4000)])
    path = tmp_path / "three.dcm"
    make_cr(path, pixels=frames[0], NumberOfFrames=3, PixelData=frames.astype("<u2").tobytes())
    with caplog.at_level(logging.DEBUG, logger="pneumonia_monai.dicom.io"):
        image, meta = read_image(path)
    np.testing.assert_allclose(image, 100 / 4095, atol=1e-7)
    assert (meta["frames"], meta["frame_used"]) == (3, 0)
    assert "3 frames, using frame 0" in caplog.text


def test_real_multi_frame_first_frame(tmp_path):
    ds = dcmread(data_file("emri_small.dcm"))
    image, meta = read_image(data_file("emri_small.dcm"))
    expected, _ = pixels.to_display(ds, ds.pixel_array[0])
    np.testing.assert_array_equal(image, expected)
    assert (meta["frames"], meta["frame_used"]) == (10, 0)
    assert not np.array_equal(ds.pixel_array[0], ds.pixel_array[1])  # the rule matters here


def test_bits_stored_below_bits_allocated_garbage_is_masked(tmp_path):
    clean = np.array([[0x0123, 0x0FFF], [0x0000, 0x0800]], dtype=np.uint16)
    dirty = clean | np.array([[0xF000, 0xA000], [0x5000, 0x1000]], dtype=np.uint16)
    clean_path, dirty_path = tmp_path / "clean.dcm", tmp_path / "dirty.dcm"
    make_cr(clean_path, pixels=clean, WindowCenter=2048, WindowWidth=4096)
    make_cr(dirty_path, pixels=dirty, WindowCenter=2048, WindowWidth=4096)
    assert dcmread(dirty_path).PixelData != dcmread(clean_path).PixelData
    # pydicom 3 already masks on decode for native data ...
    np.testing.assert_array_equal(dcmread(dirty_path).pixel_array, clean)
    # ... and the image is the clean one
    np.testing.assert_array_equal(read_image(dirty_path)[0], read_image(clean_path)[0])


def test_signed_pixels_with_garbage_high_bits(tmp_path):
    values = np.array([[-5, 2047], [-2048, 0]])
    raw = (values & 0x0FFF) | np.array([[0xA000, 0x5000], [0xF000, 0x3000]])
    path = tmp_path / "signed.dcm"
    make_cr(path, pixels=raw.astype(np.uint16), PixelRepresentation=1)
    np.testing.assert_array_equal(dcmread(path).pixel_array, values)
    image, _ = read_image(path)  # full range of 12-bit signed: [-2048, 2047]
    np.testing.assert_allclose(image, (values + 2048) / 4095, atol=1e-7)


def test_padding_value_in_a_file(tmp_path):
    stored = np.array([[-2000, 0, 40, 240]], dtype=np.int16)
    path = tmp_path / "padded.dcm"
    make_cr(
        path,
        pixels=stored.view(np.uint16),
        bits_stored=16,
        PixelRepresentation=1,
        PixelPaddingValue=-2000,
        WindowCenter=40,
        WindowWidth=401,
    )
    image, _ = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 0.40125, 0.50125, 1.0], atol=1e-6)  # (x - 39.5) / 400 + 0.5


def test_colour_secondary_captures_become_luminance():
    rgb, _ = read_image(data_file("SC_rgb.dcm"))
    ybr, meta = read_image(data_file("SC_ybr_full_uncompressed.dcm"))
    assert meta["photometric_interpretation"] == "YBR_FULL"
    ds = dcmread(data_file("SC_rgb.dcm"))
    np.testing.assert_allclose(rgb, pixels.rgb_luminance(ds.pixel_array, 8), atol=1e-7)
    assert np.abs(ybr.astype(np.float64) - rgb).max() < 0.01


# ----------------------------------------------------------------------------------------- no preamble


@pytest.mark.parametrize(
    ("source", "syntax"),
    [
        ("MR_small_implicit.dcm", uid.ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", uid.ExplicitVRBigEndian),
    ],
)
def test_file_without_preamble_is_read(tmp_path, source, syntax):
    bare = without_preamble(data_file(source), tmp_path / "bare")
    image, meta = read_image(bare)
    np.testing.assert_array_equal(image, read_image(data_file("MR_small.dcm"))[0])
    assert meta["transfer_syntax_uid"] == syntax


# ------------------------------------------------------------------------------------------ bad input


def assert_reason(path: Path, pattern: str) -> str:
    with pytest.raises(DicomReadError, match=pattern) as err:
        read_image(path)
    assert type(err.value) is DicomReadError and isinstance(err.value, ValueError)
    return str(err.value)


def test_zero_byte_missing_and_folder(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.touch()
    assert_reason(empty, "empty file")
    assert_reason(tmp_path / "missing.dcm", "cannot read file")
    assert_reason(tmp_path, "not a regular file")


def test_not_dicom_at_all(tmp_path):
    text = tmp_path / "a.dcm"
    text.write_text("hello, this is not DICOM\n" * 20)
    assert_reason(text, "not a DICOM file")
    jpeg = tmp_path / "b.dcm"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(jpeg, format="JPEG")
    assert_reason(jpeg, "not a DICOM file")


def test_truncated_native_pixel_data(tmp_path):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data_file("MR_small.dcm").read_bytes()[:-1000])
    assert_reason(cut, r"truncated pixel data: 7330 of the 8192 bytes")
    assert_reason(data_file("MR_truncated.dcm"), "truncated pixel data")


def test_truncated_header(tmp_path):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data_file("MR_small.dcm").read_bytes()[:500])
    assert_reason(cut, "missing required attribute")


def test_truncated_encapsulated_file(tmp_path):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data_file("MR_small_jp2klossless.dcm").read_bytes()[:-1000])
    message = assert_reason(cut, "missing required attribute")
    assert "End of file" in message  # pydicom's warning says why


def test_truncated_codestream(tmp_path):
    ds = dcmread(data_file("MR_small_jp2klossless.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    ds.save_as(tmp_path / "half.dcm")
    assert_reason(
        tmp_path / "half.dcm", r"cannot decode JPEG 2000 Lossless \(1\.2\.840\.10008\.1\.2\.4\.90\)"
    )


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelData"])
def test_missing_required_attribute(tmp_path, keyword):
    ds = dcmread(data_file("MR_small.dcm"))
    delattr(ds, keyword)
    ds.save_as(tmp_path / "missing.dcm")
    assert_reason(tmp_path / "missing.dcm", f"missing required attribute.*{keyword}")


@pytest.mark.parametrize(
    "syntax",
    [
        uid.JPEGBaseline8Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.RLELossless,
    ],
)
def test_garbage_claiming_a_compressed_syntax(tmp_path, syntax):
    ds = dcmread(data_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([bytes(range(256)) * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "garbage.dcm")
    message = assert_reason(tmp_path / "garbage.dcm", "cannot decode")
    assert syntax in message


def test_rle_decoder_panic_is_a_read_error(tmp_path):
    # pylibjpeg-rle panics (pyo3 PanicException, a BaseException) on this one-byte corruption
    ds = dcmread(data_file("MR_small_RLE.dcm"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    frame[64] = 0x81  # first segment: replicate the next byte 128 times, past the segment's end
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(tmp_path / "panic.dcm")
    assert_reason(tmp_path / "panic.dcm", "cannot decode RLE Lossless")


def test_unknown_transfer_syntax(tmp_path):
    ds = dcmread(data_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"
    ds.save_as(tmp_path / "unknown.dcm")
    assert_reason(tmp_path / "unknown.dcm", "unsupported transfer syntax.*1.2.3.4.5")


def test_unsupported_photometric_interpretation(tmp_path):
    assert_reason(data_file("OBXXXX1A.dcm"), "unsupported Photometric Interpretation.*PALETTE COLOR")
    path = tmp_path / "mono3.dcm"
    make_cr(path, SamplesPerPixel=3)
    assert_reason(path, "Samples per Pixel")


def test_no_pixel_data_objects():
    assert_reason(data_file("rtplan.dcm"), "missing required attribute")
    assert_reason(data_file("ExplVR_BigEndNoMeta.dcm"), "missing required attribute")


def test_corrupted_files_only_ever_raise_dicom_read_error(tmp_path):
    rng = random.Random(20240501)
    target = tmp_path / "fuzz.dcm"
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        data = data_file(name).read_bytes()
        for i in range(40):
            blob = bytearray(data)
            if i < 15:
                blob = blob[: rng.randrange(len(blob))]
            else:
                for _ in range(rng.randrange(1, 20)):
                    blob[rng.randrange(len(blob))] = rng.randrange(256)
            target.write_bytes(bytes(blob))
            try:
                image, _ = read_image(target)
            except DicomReadError:
                continue
            assert image.dtype == np.float32 and np.isfinite(image).all()
