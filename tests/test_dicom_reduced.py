"""Reduced-resolution decoding: the level rule, the block average, the JPEG 2000 header, the fallbacks.

Parity of the reduced paths with the full decode (probabilities within 0.01) is in ``test_parity.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame

from pneumonia_monai.dicom.convert import build_dx_dataset, encode_dataset
from pneumonia_monai.dicom.io import read_image
from pneumonia_monai.dicom.reduced import (
    block_average,
    jpeg2000_header,
    min_decoded_side,
    reduction_factor,
)
from pneumonia_monai.transforms.io import load_raster


def test_min_decoded_side_is_twice_the_input_across_the_lung_box() -> None:
    assert min_decoded_side((224, 224)) == 747  # ceil(2 * 224 / 0.6)
    assert min_decoded_side(96) == 320
    with pytest.raises(ValueError, match="positive"):
        min_decoded_side((0, 224))


@pytest.mark.parametrize(
    ("rows", "columns", "expected"),
    [(2048, 2048, 2), (1494, 3000, 2), (1493, 1493, 1), (4300, 4300, 4), (12000, 12000, 8), (400, 400, 1)],
)
def test_reduction_factor_keeps_the_shorter_side_at_least_min_side(
    rows: int, columns: int, expected: int
) -> None:
    factor = reduction_factor(rows, columns, 747)
    assert factor == expected
    assert min(rows, columns) // factor >= 747 or factor == 1


def test_reduction_factor_off_and_bad_values() -> None:
    assert reduction_factor(4096, 4096, None) == 1
    with pytest.raises(ValueError, match="rows and columns"):
        reduction_factor(0, 10, 5)
    with pytest.raises(ValueError, match="min_side"):
        reduction_factor(10, 10, 0)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_block_average_is_the_mean_of_each_block(factor: int) -> None:
    arr = np.random.default_rng(factor).integers(0, 4096, size=(1029, 771), dtype=np.uint16)
    rows, cols = 1029 // factor * factor, 771 // factor * factor
    expected = arr[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))
    got = block_average(arr, factor)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_block_average_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        block_average(np.zeros((2, 3, 4)), 2)
    with pytest.raises(ValueError, match="factor"):
        block_average(np.zeros((4, 4)), 5)


def test_jpeg2000_header_reads_precision_and_decomposition_levels() -> None:
    ds = dcmread(get_testdata_file("RG1_J2KR.dcm", download=False))
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    precision, signed, levels = jpeg2000_header(frame)
    assert (precision, signed) == (int(ds.BitsStored), False)
    assert 1 <= levels <= 32
    assert jpeg2000_header(b"\xff\xd8 not a JPEG 2000 codestream") is None


def _big_dx(tmp_path: Path, compression: str, **attributes: object) -> Path:
    grey = np.tile(np.linspace(0, 255, 1600, dtype=np.float64), (1600, 1)).astype(np.uint8)
    ds = build_dx_dataset(
        grey,
        patient="REDUCED",
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.1",
        sop_uid="1.2.3.4.1.1",
        instance_number=1,
    )
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path = tmp_path / f"{compression}.dcm"
    path.write_bytes(encode_dataset(copy.deepcopy(ds), compression))
    return path


@pytest.mark.parametrize("compression", ["none", "rle", "jpeg2000"])
def test_read_image_reduces_and_says_so(tmp_path: Path, compression: str) -> None:
    path = _big_dx(tmp_path, compression)
    full, full_meta = read_image(path)
    half, meta = read_image(path, min_side=747)
    assert full_meta["reduction"] == 1 and full.shape == (1600, 1600)
    assert meta["reduction"] == 2 and half.shape == (800, 800)
    assert (meta["rows"], meta["columns"], meta["decoded_rows"]) == (1600, 1600, 800)
    # a smooth ramp: the reduced film is the full film's block average within a grey level
    np.testing.assert_allclose(half, block_average(full, 2), atol=1.5 / 255)


def test_pixel_padding_keeps_the_full_decode(tmp_path: Path) -> None:
    """Padding is matched on each stored value, which a block average no longer is."""
    path = _big_dx(tmp_path, "none", PixelPaddingValue=0)
    image, meta = read_image(path, min_side=747)
    assert meta["reduction"] == 1 and image.shape == (1600, 1600)


def test_a_large_jpeg_is_decoded_with_dct_scaling(tmp_path: Path) -> None:
    from PIL import Image

    grey = np.tile(np.linspace(0, 255, 1600, dtype=np.float64), (1600, 1)).astype(np.uint8)
    path = tmp_path / "big.jpeg"
    Image.fromarray(grey).save(path, quality=95)
    full = load_raster(path)
    half = load_raster(path, min_side=747)
    assert full.shape == (1600, 1600) and half.shape == (800, 800)
    np.testing.assert_allclose(half, block_average(full, 2), atol=3 / 255)


def test_infer_full_decode_recomputes_and_agrees(tmp_path: Path, repo_root: Path) -> None:
    """``infer --full-decode`` (and ``--precision``) are accepted; a full-decode run does not reuse the
    reduced run's rows (another fingerprint), and gives its probability within 0.01."""
    from pneumonia_monai.cli.infer import build_parser
    from pneumonia_monai.inference.manifest import read_results_csv
    from pneumonia_monai.inference.runner import run_inference

    args = build_parser().parse_args(["in", "-o", "out", "--full-decode", "--precision", "fp32"])
    assert args.full_decode is True and args.precision == "fp32"
    assert build_parser().parse_args(["in", "-o", "out"]).full_decode is False
    folder = tmp_path / "in"
    folder.mkdir()
    _big_dx(folder, "jpeg2000")
    out = tmp_path / "out"
    reduced = run_inference([folder], out, bundle=repo_root / "bundle", device="cpu", write_sr=False)
    p_reduced = float(read_results_csv(out / "results.csv")[0]["prob_pneumonia"])
    full = run_inference(
        [folder], out, bundle=repo_root / "bundle", device="cpu", write_sr=False, full_decode=True
    )
    p_full = float(read_results_csv(out / "results.csv")[0]["prob_pneumonia"])
    assert reduced.n_inferred == 1 and full.n_inferred == 1 and full.n_reused == 0
    assert abs(p_reduced - p_full) <= 0.01
