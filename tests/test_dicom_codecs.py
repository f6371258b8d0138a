"""Decoders per transfer syntax, on real third-party files: pydicom's test data and dcmtk encodings.

Fixtures made at test time with dcmtk (``dcmcjpeg``, ``dcmdjpeg``, ``dcmcjpls``, ``dcmcrle``,
``dcmconv``) from a real chest CR (pydicom-data's RG1_UNCR, 15-bit MONOCHROME1) halved in size. dcmtk
is a test requirement (CI installs the ``dcmtk`` apt package): its absence fails these tests.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread, uid
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder

from pneumonia_monai.cli import check_codecs
from pneumonia_monai.dicom import codecs
from pneumonia_monai.dicom.io import DicomReadError, read_image

#: Transfer syntax -> pydicom / pydicom-data files in it (all must decode).
PYDICOM_FILES: dict[str, list[str]] = {
    uid.ImplicitVRLittleEndian: ["MR_small_implicit.dcm", "rtdose_1frame.dcm"],
    uid.ExplicitVRLittleEndian: ["MR_small.dcm", "CT_small.dcm", "RG1_UNCR.dcm", "SC_rgb.dcm"],
    uid.ExplicitVRBigEndian: ["MR_small_bigendian.dcm", "SC_rgb_expb.dcm"],
    uid.DeflatedExplicitVRLittleEndian: ["image_dfl.dcm"],
    uid.JPEGBaseline8Bit: ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm"],
    uid.JPEGLosslessSV1: ["JPGLosslessP14SV1_1s_1f_8b.dcm", "SC_rgb_jpeg_gdcm.dcm", "JPEG-LL.dcm"],
    uid.JPEGLSLossless: ["MR_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"],
    uid.JPEGLSNearLossless: ["JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm"],
    uid.JPEG2000Lossless: ["MR_small_jp2klossless.dcm", "RG1_J2KR.dcm", "US1_J2KR.dcm"],
    uid.JPEG2000: ["JPEG2000.dcm", "RG1_J2KI.dcm", "US1_J2KI.dcm"],
    uid.RLELossless: ["MR_small_RLE.dcm", "SC_rgb_rle.dcm", "emri_small_RLE.dcm"],
}
#: Syntaxes pydicom ships no decodable file for: JPEG Lossless process 14 (no file) and JPEG Extended
#: (its files are 12-bit, see test_jpeg_extended_12_bit_needs_the_gpl_decoder); both made with dcmtk.
DCMTK_ONLY = {uid.JPEGLossless, uid.JPEGExtended12Bit}

#: (reference, same image in another syntax): the outputs must be identical.
LOSSLESS_PAIRS = [
    ("MR_small.dcm", "MR_small_implicit.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
    ("emri_small.dcm", "emri_small_RLE.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
    ("emri_small.dcm", "emri_small_big_endian.dcm"),
    ("693_UNCR.dcm", "693_J2KR.dcm"),
    ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),
    ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),
    ("SC_rgb.dcm", "SC_rgb_rle.dcm"),
    ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm"),  # JPEG Lossless SV1, RGB
    ("SC_rgb.dcm", "SC_rgb_expb.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),  # YBR_RCT, returned as RGB by the decoder
    # a lossy file against its uncompressed decoding by another toolkit: the decoders agree exactly
    ("RG1_UNCI.dcm", "RG1_J2KI.dcm"),
    ("US1_UNCI.dcm", "US1_J2KI.dcm"),  # YBR_ICT
    ("SC_rgb_jpeg_dcmd.dcm", "SC_rgb_jpeg.dcm"),  # JPEG Baseline vs dcmtk's dcmdjpeg output
    ("SC_rgb_dcmtk_ebcys2_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm"),  # YBR_FULL_422
]

#: (original, lossy encoding of it, bound on the mean absolute display difference). Measured with
#: pydicom 3.0 + gdcm/openjpeg/CharLS: 0.00116, 0.00116, 0.00275, 0.00167, 0.00116; each bound is about
#: twice the measurement and far below what a wrong colour conversion or polarity gives (> 0.05).
LOSSY_PAIRS = [
    ("SC_rgb.dcm", "SC_rgb_jpeg_dcmtk.dcm", 0.0025),  # JPEG Baseline, YBR_FULL
    ("SC_rgb.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", 0.0025),  # JPEG Baseline, YBR_FULL_422
    ("SC_rgb.dcm", "SC_rgb_jls_lossy_line.dcm", 0.0055),  # JPEG-LS near-lossless, RGB
    ("RG1_UNCR.dcm", "RG1_J2KI.dcm", 0.0035),  # JPEG 2000 lossy, 15-bit chest CR at ~10:1
    ("SC_rgb.dcm", "SC_ybr_full_uncompressed.dcm", 0.0025),  # native YBR_FULL (made from the JPEG)
]


def data_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} not found: install the test extra (pydicom-data)"
    return Path(path)


def dcmtk(tool: str, *args: str | Path) -> None:
    exe = shutil.which(tool)
    assert exe is not None, f"{tool} not found: the tests need dcmtk (apt-get install dcmtk)"
    subprocess.run([exe, *map(str, args)], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cr(tmp_path_factory) -> dict[str, Path]:
    """A real chest CR (RG1_UNCR at half size) and its dcmtk encodings, by name."""
    folder = tmp_path_factory.mktemp("cr")
    ds = dcmread(data_file("RG1_UNCR.dcm"))
    half = np.ascontiguousarray(ds.pixel_array[::2, ::2])
    ds.Rows, ds.Columns = half.shape
    ds.PixelData = half.tobytes()
    files = {"source": folder / "source.dcm"}
    ds.save_as(files["source"])

    # an 8-bit MONOCHROME2 version for the 8-bit lossy JPEG processes
    ds8 = dcmread(files["source"])
    image, _ = read_image(files["source"])
    ds8.PhotometricInterpretation = "MONOCHROME2"
    ds8.BitsAllocated, ds8.BitsStored, ds8.HighBit = 8, 8, 7
    del ds8.WindowCenter, ds8.WindowWidth
    ds8.PixelData = np.round(image * 255).astype(np.uint8).tobytes()
    files["source8"] = folder / "source8.dcm"
    ds8.save_as(files["source8"])

    recipes = {
        "jpeg_sv1": ("dcmcjpeg", "+e1", files["source"]),  # process 14, selection value 1
        "jpeg_p14": ("dcmcjpeg", "+el", files["source"]),  # process 14, selection value 6
        "jpeg_ext12": ("dcmcjpeg", "+ee", files["source"]),  # process 4, 12-bit
        "jpeg_base8": ("dcmcjpeg", "+eb", files["source8"]),
        "jpeg_ext8": ("dcmcjpeg", "+ee", files["source8"]),
        "jls": ("dcmcjpls", "+el", files["source"]),
        "jls_near2": ("dcmcjpls", "+en", "+md", "2", files["source"]),
        "rle": ("dcmcrle", files["source"]),
        "deflated": ("dcmconv", "+td", files["source"]),
        "big_endian": ("dcmconv", "+tb", files["source"]),
        "implicit": ("dcmconv", "+ti", files["source"]),
    }
    for name, (tool, *args) in recipes.items():
        files[name] = folder / f"{name}.dcm"
        dcmtk(tool, *args, files[name])
    for name in ("jpeg_base8", "jpeg_ext8", "jpeg_ext12"):  # dcmtk's own decoding of its lossy files
        files[f"{name}_dcmd"] = folder / f"{name}_dcmd.dcm"
        dcmtk("dcmdjpeg", files[name], files[f"{name}_dcmd"])
    return files


# ------------------------------------------------------------------------------------ the registry


def test_transfer_syntaxes_of_cr_dx_archives_are_named():
    expected = {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    }
    assert set(codecs.TRANSFER_SYNTAXES) == expected
    assert all(codecs.TRANSFER_SYNTAXES.values())


def test_every_syntax_has_a_licence_safe_decoder_here():
    decoders = codecs.check_decoders()
    assert set(decoders) == set(codecs.TRANSFER_SYNTAXES)
    assert codecs.missing_decoders() == []
    for syntax, plugins in decoders.items():
        assert plugins, syntax
        assert not {(syntax, p) for p in plugins} & codecs.GPL_PLUGINS
    assert decoders[uid.ExplicitVRLittleEndian] == ["pydicom"]
    assert "pylibjpeg" in decoders[uid.JPEG2000Lossless]  # pylibjpeg-openjpeg
    assert "pyjpegls" in decoders[uid.JPEGLSLossless]
    assert "gdcm" in decoders[uid.JPEGLosslessSV1]


def test_gpl_libjpeg_plugin_is_not_counted(monkeypatch):
    decoder = get_decoder(uid.JPEGLosslessSV1)
    monkeypatch.setattr(decoder, "_available", {"pylibjpeg": lambda src, runner: src})
    assert codecs.check_decoders()[uid.JPEGLosslessSV1] == []
    assert codecs.check_decoders(include_gpl=True)[uid.JPEGLosslessSV1] == ["pylibjpeg"]
    assert codecs.missing_decoders() == [uid.JPEGLosslessSV1]


def test_log_missing_decoders(monkeypatch, caplog):
    with caplog.at_level(logging.DEBUG, logger="pneumonia_monai.dicom.codecs"):
        codecs.log_missing_decoders()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    monkeypatch.setattr(get_decoder(uid.JPEGLSLossless), "_available", {})
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.dicom.codecs"):
        codecs.log_missing_decoders()
    assert "1.2.840.10008.1.2.4.80" in caplog.text
    assert "pyjpegls" in caplog.text


def test_read_image_without_a_decoder_names_the_syntax_and_package(monkeypatch):
    monkeypatch.setattr(get_decoder(uid.JPEG2000Lossless), "_available", {})
    with pytest.raises(DicomReadError) as err:
        read_image(data_file("MR_small_jp2klossless.dcm"))
    message = str(err.value)
    assert "JPEG 2000 Lossless" in message and "1.2.840.10008.1.2.4.90" in message
    assert "pylibjpeg-openjpeg" in message


# ------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    ("syntax", "name"), [(syntax, name) for syntax, names in PYDICOM_FILES.items() for name in names]
)
def test_pydicom_test_files_decode(syntax, name):
    image, meta = read_image(data_file(name))
    assert meta["transfer_syntax_uid"] == syntax
    assert image.dtype == np.float32 and image.ndim == 2
    assert image.shape == (meta["rows"], meta["columns"])
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert image.std() > 0


def test_every_syntax_has_a_real_file():
    assert set(PYDICOM_FILES) | DCMTK_ONLY == set(codecs.TRANSFER_SYNTAXES)


@pytest.mark.parametrize(("reference", "other"), LOSSLESS_PAIRS)
def test_lossless_pairs_give_identical_output(reference, other):
    ref, ref_meta = read_image(data_file(reference))
    out, meta = read_image(data_file(other))
    assert meta["transfer_syntax_uid"] != ref_meta["transfer_syntax_uid"]
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(("reference", "lossy", "bound"), LOSSY_PAIRS)
def test_lossy_pairs_give_close_output(reference, lossy, bound):
    ref, _ = read_image(data_file(reference))
    out, _ = read_image(data_file(lossy))
    diff = np.abs(out.astype(np.float64) - ref)
    assert 0 < diff.mean() < bound
    np.testing.assert_allclose(out.mean(), ref.mean(), atol=0.01)


# ----------------------------------------------------------------------------- dcmtk encodings of a CR


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("jpeg_sv1", uid.JPEGLosslessSV1),
        ("jpeg_p14", uid.JPEGLossless),
        ("jls", uid.JPEGLSLossless),
        ("rle", uid.RLELossless),
        ("deflated", uid.DeflatedExplicitVRLittleEndian),
        ("big_endian", uid.ExplicitVRBigEndian),
        ("implicit", uid.ImplicitVRLittleEndian),
    ],
)
def test_dcmtk_lossless_encoding_equals_the_source(cr, name, syntax):
    source, source_meta = read_image(cr["source"])
    image, meta = read_image(cr[name])
    assert meta["transfer_syntax_uid"] == syntax
    assert meta["bits_stored"] == 15 and meta["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_array_equal(image, source)
    assert meta["voi_source"] == source_meta["voi_source"] == "window[0]"


def test_dcmtk_jpeg_ls_near_lossless_stays_within_near(cr):
    source, _ = read_image(cr["source"])
    image, meta = read_image(cr["jls_near2"])
    assert meta["transfer_syntax_uid"] == uid.JPEGLSNearLossless
    # NEAR = 2 bounds each stored value's error by 2; the LINEAR window's slope is 1 / (30000 - 1)
    diff = np.abs(image.astype(np.float64) - source)
    assert 0 < diff.max() <= 2 / 29999 + 1e-6


@pytest.mark.parametrize(
    ("name", "syntax"), [("jpeg_base8", uid.JPEGBaseline8Bit), ("jpeg_ext8", uid.JPEGExtended12Bit)]
)
def test_dcmtk_lossy_jpeg_matches_dcmtk_decoding(cr, name, syntax):
    image, meta = read_image(cr[name])
    reference, reference_meta = read_image(cr[f"{name}_dcmd"])
    assert meta["transfer_syntax_uid"] == syntax
    assert reference_meta["transfer_syntax_uid"] != syntax
    # two IJG-derived decoders may differ by one grey level at most
    assert np.abs(image.astype(np.float64) - reference).max() <= 1 / 255 + 1e-6


def test_jpeg_extended_12_bit_decodes_without_the_gpl_decoder(cr):
    """12-bit process 4 (older CR archives) through the imagecodecs plugin, not GPL libjpeg."""
    assert not codecs.gpl_libjpeg_installed()
    assert "imagecodecs" in codecs.available_plugins(uid.JPEGExtended12Bit)
    image, meta = read_image(cr["jpeg_ext12"])
    reference, reference_meta = read_image(cr["jpeg_ext12_dcmd"])  # dcmtk's own decoding
    assert meta["transfer_syntax_uid"] == uid.JPEGExtended12Bit
    assert reference_meta["transfer_syntax_uid"] != uid.JPEGExtended12Bit
    # two IJG-derived decoders of a 12-bit stream may differ by a few stored values (window 1/29999 each)
    assert np.abs(image.astype(np.float64) - reference).max() <= 4 / 29999 + 1e-6
    source, _ = read_image(cr["source"])
    assert 0 < np.abs(image.astype(np.float64) - source).mean() < 0.01  # lossy, but the same film


# ------------------------------------------------------------------- imagecodecs for JPEG 2000 / JPEG-LS

#: Grayscale JPEG 2000 and JPEG-LS files of pydicom's test data: signed, unsigned, 8 to 16 bits, lossy,
#: a 13-bit codestream stored as signed against Pixel Representation, and the real 15-bit chest CR.
IMAGECODECS_GRAYSCALE = [
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "693_J2KI.dcm",
    "693_J2KR.dcm",
    "RG1_J2KR.dcm",
    "RG1_J2KI.dcm",
    "RG3_J2KI.dcm",
    "MR2_J2KI.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_08.dcm",
    "JPEGLSNearLossless_16.dcm",
]


@pytest.mark.parametrize("name", IMAGECODECS_GRAYSCALE)
def test_imagecodecs_plugin_gives_the_samples_of_the_other_plugins(name):
    ds = dcmread(get_testdata_file(name))
    syntax = ds.file_meta.TransferSyntaxUID
    codecs.register_extra_decoders()
    assert codecs.preferred_plugin(syntax) == "imagecodecs"  # the GIL-free decoder is tried first
    decoder = get_decoder(syntax)
    ours, _ = decoder.as_array(ds, index=0, decoding_plugin="imagecodecs")
    others = [p for p in codecs.available_plugins(syntax) if p != "imagecodecs"]
    assert others, f"no other licence-safe plugin for {syntax.name} to compare with"
    for plugin in others:
        theirs, _ = decoder.as_array(ds, index=0, decoding_plugin=plugin)
        assert ours.dtype == theirs.dtype, plugin
        np.testing.assert_array_equal(ours, theirs, err_msg=plugin)


@pytest.mark.parametrize("name", ["US1_J2KR.dcm", "SC_rgb_jls_lossy_line.dcm"])
def test_colour_data_falls_back_from_imagecodecs_to_the_other_plugins(name):
    ds = dcmread(get_testdata_file(name))
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    codecs.register_extra_decoders()
    with pytest.raises(RuntimeError, match="imagecodecs"):
        decoder.as_array(ds, index=0, decoding_plugin="imagecodecs")
    image, meta = read_image(get_testdata_file(name))  # the preferred plugin fails, another decodes
    assert meta["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID
    assert image.shape == (ds.Rows, ds.Columns) and 0.0 <= image.min() < image.max() <= 1.0


# ----------------------------------------------------------------------------------------------- CLI


def test_check_codecs_cli_ok(capsys):
    assert check_codecs.main([]) == 0
    out = capsys.readouterr().out
    for syntax, name in codecs.TRANSFER_SYNTAXES.items():
        assert syntax in out and name in out
    assert "MISSING" not in out


def test_check_codecs_cli_fails_naming_the_missing_syntax(monkeypatch, capsys):
    monkeypatch.setattr(get_decoder(uid.JPEGLossless), "_available", {})
    assert check_codecs.main(["-q"]) == 1
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if "1.2.840.10008.1.2.4.57" in line)
    assert "MISSING" in row and "python-gdcm" in row
    assert "JPEG Lossless (process 14) (1.2.840.10008.1.2.4.57)" in captured.err


def test_check_codecs_through_the_dispatcher(capsys):
    from pneumonia_monai.cli.main import main

    assert main(["check-codecs"]) == 0
    assert "RLE Lossless" in capsys.readouterr().out
