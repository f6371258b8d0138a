"""Unit tests of the pixel pipeline steps against hand-computed values (PS3.3 C.11, PS3.4 N.2)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut as pydicom_modality_lut
from pydicom.pixels import apply_voi as pydicom_voi
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence

from pneumonia_monai.dicom import pixels
from pneumonia_monai.dicom.pixels import (
    apply_modality_lut,
    apply_voi,
    apply_window,
    mask_unused_bits,
    output_inverted,
    padding_mask,
    rgb_luminance,
    stored_value_range,
    to_display,
    window_linear,
    window_linear_exact,
    window_sigmoid,
)


def make_ds(
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    bits_allocated: int = 16,
    pixel_representation: int = 0,
    **attrs: object,
) -> Dataset:
    """A data set with the Image Pixel attributes the pipeline reads, plus ``attrs``."""
    ds = Dataset()
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1 if photometric.startswith("MONOCHROME") else 3
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixel_representation
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def lut_item(descriptor: list[int], data: list[int]) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.LUTData = data
    return item


def data_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} not found: install the test extra (pydicom-data)"
    return str(path)


# ---------------------------------------------------------------------------------------------- bits


def test_stored_value_range_unsigned_and_signed():
    assert stored_value_range(12, 0) == (0, 4095)
    assert stored_value_range(16, 1) == (-32768, 32767)
    assert stored_value_range(15, 0) == (0, 32767)
    with pytest.raises(ValueError):
        stored_value_range(0, 0)
    with pytest.raises(ValueError):
        stored_value_range(12, 2)


def test_mask_unused_bits_clears_garbage_high_bits_unsigned():
    raw = np.array([0xF123, 0x0123, 0xFFFF, 0x1000], dtype=np.uint16)
    np.testing.assert_array_equal(mask_unused_bits(raw, 12, 0), [0x123, 0x123, 0xFFF, 0])


def test_mask_unused_bits_sign_extends_signed():
    # 12-bit two's complement in 16-bit containers, junk in the top nibble
    raw = np.array([0xAFFB, 0x07FF, 0x0800, 0xF800, 0x5001], dtype=np.uint16)
    np.testing.assert_array_equal(mask_unused_bits(raw, 12, 1), [-5, 2047, -2048, -2048, 1])
    # already sign-extended int16 input is left as it is (idempotent)
    values = np.array([-2048, -1, 0, 2047], dtype=np.int16)
    np.testing.assert_array_equal(mask_unused_bits(values, 12, 1), values)
    assert mask_unused_bits(values, 12, 1).dtype == np.int64


# ---------------------------------------------------------------------------------------- modality


def test_rescale_slope_intercept_and_output_range():
    ds = make_ds(RescaleSlope=2, RescaleIntercept=-100)
    values, value_range, source = apply_modality_lut(ds, np.array([0, 1, 4095]))
    np.testing.assert_array_equal(values, [-100, -98, 8090])
    assert value_range == (-100, 8090)
    assert source == "rescale"


def test_negative_slope_output_range_is_ordered():
    ds = make_ds(bits_stored=8, bits_allocated=8, RescaleSlope=-1, RescaleIntercept=10)
    values, value_range, _ = apply_modality_lut(ds, np.array([0, 255]))
    np.testing.assert_array_equal(values, [10, -245])
    assert value_range == (-245, 10)


def test_no_modality_lut_passes_stored_values():
    ds = make_ds(bits_stored=16, pixel_representation=1)
    values, value_range, source = apply_modality_lut(ds, np.array([-5, 7]))
    np.testing.assert_array_equal(values, [-5, 7])
    assert value_range == (-32768, 32767)
    assert source == "none"


def test_rescale_slope_zero_is_refused():
    with pytest.raises(ValueError, match="Rescale Slope"):
        apply_modality_lut(make_ds(RescaleSlope=0, RescaleIntercept=0), np.array([1]))


def test_modality_lut_sequence_wins_over_rescale():
    ds = make_ds(RescaleSlope=10, RescaleIntercept=5)
    ds.ModalityLUTSequence = Sequence([lut_item([4, 10, 16], [100, 200, 300, 400])])
    # below the first mapped value -> first entry; past the end -> last entry (PS3.3 C.11.1.1)
    values, value_range, source = apply_modality_lut(ds, np.array([5, 10, 11, 13, 20]))
    np.testing.assert_array_equal(values, [100, 100, 200, 400, 400])
    assert value_range == (0, 65535)
    assert source == "modality_lut_sequence"


def test_modality_lut_sequence_matches_pydicom_on_real_file():
    from pydicom import dcmread

    ds = dcmread(data_file("mlut_18.dcm"))
    stored = ds.pixel_array
    ours, value_range, source = apply_modality_lut(ds, stored)
    assert source == "modality_lut_sequence"
    np.testing.assert_array_equal(ours, pydicom_modality_lut(stored, ds))
    assert value_range == (0, 65535)


# --------------------------------------------------------------------------------------------- windows


def test_window_linear_hand_computed():
    # c = 100, w = 51: bottom threshold 99.5 - 25 = 74.5, top 99.5 + 25 = 124.5, slope 1/50
    x = np.array([0, 74.5, 75, 99.5, 100, 124, 124.5, 125, 1e6])
    expected = [0, 0, 0.01, 0.5, 0.51, 0.99, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(window_linear(x, 100, 51), expected, atol=1e-12)


def test_window_linear_width_one_is_a_threshold():
    np.testing.assert_array_equal(window_linear(np.array([9, 9.5, 9.6, 10]), 10, 1), [0, 0, 1, 1])
    with pytest.raises(ValueError):
        window_linear(np.array([1.0]), 10, 0.5)


def test_window_linear_exact_hand_computed():
    # c = 100, w = 50: bottom 75, top 125, slope 1/50
    x = np.array([0, 75, 80, 100, 120, 125, 126])
    expected = [0, 0, 0.1, 0.5, 0.9, 1.0, 1.0]
    np.testing.assert_allclose(window_linear_exact(x, 100, 50), expected, atol=1e-12)
    with pytest.raises(ValueError):
        window_linear_exact(x, 100, 0)


def test_linear_and_linear_exact_differ_as_the_standard_says():
    x = np.array([80.0])
    # LINEAR: (80 - 99.5) / 49 + 0.5 ; LINEAR_EXACT: (80 - 100) / 50 + 0.5
    assert window_linear(x, 100, 50)[0] == pytest.approx((80 - 99.5) / 49 + 0.5)
    assert window_linear_exact(x, 100, 50)[0] == pytest.approx(0.1)


def test_window_sigmoid_hand_computed():
    x = np.array([75.0, 100.0, 125.0, -1e6, 1e6])
    expected = [1 / (1 + math.exp(2)), 0.5, 1 / (1 + math.exp(-2)), 0.0, 1.0]
    np.testing.assert_allclose(window_sigmoid(x, 100, 50), expected, atol=1e-15)
    assert window_sigmoid(np.array([125.0]), 100, 50)[0] == pytest.approx(0.8807970779778823)
    with pytest.raises(ValueError):
        window_sigmoid(x, 100, 0)


def test_apply_window_dispatches_and_refuses_unknown_functions():
    x = np.array([80.0])
    assert apply_window(x, 100, 50, "linear_exact")[0] == pytest.approx(0.1)
    assert apply_window(x, 100, 50, "SIGMOID")[0] == pytest.approx(1 / (1 + math.exp(0.4 * 4)))
    with pytest.raises(ValueError, match="VOI LUT Function"):
        apply_window(x, 100, 50, "LOG")


def test_window_after_rescale_through_to_display():
    ds = make_ds(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=401)
    image, info = to_display(ds, np.array([[500, 0], [4095, 550]], dtype=np.uint16))
    # stored 500 -> 0: ((0 + 0.5) / 400 + 0.5); stored 550 -> 100: ((100.5) / 400 + 0.5)
    np.testing.assert_allclose(image, [[0.50125, 0.0], [1.0, 0.75125]], atol=1e-6)
    assert image.dtype == np.float32
    assert info["voi_source"] == "window[0]"
    assert info["voi_function"] == "LINEAR"
    assert info["modality_lut"] == "rescale"


def test_multi_valued_window_uses_the_first_pair():
    ds = make_ds(WindowCenter=[100, 300], WindowWidth=[51, 10])
    image, info = to_display(ds, np.array([[75, 100, 124]], dtype=np.uint16))
    np.testing.assert_allclose(image, [[0.01, 0.51, 0.99]], atol=1e-6)
    assert info["voi_source"] == "window[0]"
    assert info["window"] == (100.0, 51.0)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("LINEAR", [0.0, (80 - 99.5) / 49 + 0.5, 0.5 + 0.5 / 49, 1.0]),
        ("LINEAR_EXACT", [0.0, 0.1, 0.5, 1.0]),
        ("SIGMOID", [1 / (1 + math.exp(4)), 1 / (1 + math.exp(1.6)), 0.5, 1 / (1 + math.exp(-4))]),
    ],
)
def test_voi_lut_function_through_to_display(function, expected):
    ds = make_ds(WindowCenter=100, WindowWidth=50, VOILUTFunction=function)
    image, info = to_display(ds, np.array([[50, 80, 100, 150]], dtype=np.uint16))
    np.testing.assert_allclose(image[0], expected, atol=1e-6)
    assert info["voi_function"] == function


def test_unusable_first_window_falls_back_to_full_range(caplog):
    ds = make_ds(WindowCenter=100, WindowWidth=0)
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.dicom.pixels"):
        image, info = to_display(ds, np.array([[0, 4095]], dtype=np.uint16))
    np.testing.assert_allclose(image, [[0.0, 1.0]])
    assert info["voi_source"] == "none(full range)"
    assert "full range" in caplog.text


def test_unknown_voi_lut_function_is_read_as_linear(caplog):
    ds = make_ds(WindowCenter=100, WindowWidth=51, VOILUTFunction="LOG")
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.dicom.pixels"):
        image, info = to_display(ds, np.array([[75]], dtype=np.uint16))
    assert image[0, 0] == pytest.approx(0.01)
    assert info["voi_function"] == "LINEAR"
    assert "LOG" in caplog.text


# ----------------------------------------------------------------------------------------- VOI LUT


def test_voi_lut_sequence_wins_over_window():
    ds = make_ds(bits_stored=8, bits_allocated=8, WindowCenter=1, WindowWidth=2)
    ds.VOILUTSequence = Sequence([lut_item([4, 0, 8], [0, 51, 102, 255])])
    image, info = to_display(ds, np.array([[0, 1, 2, 3, 7]], dtype=np.uint8))
    np.testing.assert_allclose(image, [[0.0, 0.2, 0.4, 1.0, 1.0]], atol=1e-7)
    assert info["voi_source"] == "voi_lut_sequence"


def test_voi_lut_output_is_scaled_by_descriptor_bits_not_entry_max():
    ds = make_ds()
    ds.VOILUTSequence = Sequence([lut_item([2, 0, 16], [0, 4095])])
    out, info = apply_voi(ds, np.array([0.0, 1.0]), (0, 4095))
    np.testing.assert_allclose(out, [0.0, 4095 / 65535])
    assert info["voi_source"] == "voi_lut_sequence"


def test_voi_lut_first_mapped_value_is_signed_for_signed_modality_output():
    # First Mapped value -10 stored as US 65526; the rescaled input can be negative -> read as SS
    ds = make_ds(RescaleSlope=1, RescaleIntercept=-1024)
    ds.VOILUTSequence = Sequence([lut_item([3, 65526, 8], [10, 20, 30])])
    out, _ = apply_voi(ds, np.array([-11.0, -10.0, -9.0, -8.0, 50.0]), (-1024, 3071))
    np.testing.assert_allclose(out, np.array([10, 10, 20, 30, 30]) / 255)


def test_voi_lut_matches_pydicom_on_real_file():
    from pydicom import dcmread

    ds = dcmread(data_file("vlut_04.dcm"))
    stored = ds.pixel_array
    image, info = to_display(ds, stored)
    assert info["voi_source"] == "voi_lut_sequence"
    bits = ds.VOILUTSequence[0].LUTDescriptor[2]
    expected = pydicom_voi(stored, ds).astype(np.float64) / (2**bits - 1)
    np.testing.assert_allclose(image, expected, atol=1e-7)


# ----------------------------------------------------------------------------------------- full range


def test_full_range_default_12_bit_unsigned_is_not_min_max():
    ds = make_ds()
    image, info = to_display(ds, np.array([[1000, 1100], [0, 4095]], dtype=np.uint16))
    np.testing.assert_allclose(image, [[1000 / 4095, 1100 / 4095], [0.0, 1.0]], atol=1e-7)
    assert info["voi_source"] == "none(full range)"
    narrow, _ = to_display(ds, np.array([[1000, 1100]], dtype=np.uint16))
    np.testing.assert_allclose(narrow, [[1000 / 4095, 1100 / 4095]], atol=1e-7)  # not stretched


def test_full_range_default_16_bit_signed():
    ds = make_ds(bits_stored=16, pixel_representation=1)
    image, _ = to_display(ds, np.array([[-32768, 0, 32767]], dtype=np.int16))
    np.testing.assert_allclose(image, [[0.0, 32768 / 65535, 1.0]], atol=1e-7)


def test_full_range_default_follows_the_rescale():
    ds = make_ds(RescaleSlope=1, RescaleIntercept=-1024)  # output range [-1024, 3071]
    image, _ = to_display(ds, np.array([[1024, 0, 4095]], dtype=np.uint16))
    np.testing.assert_allclose(image, [[1024 / 4095, 0.0, 1.0]], atol=1e-7)


def test_full_range_default_follows_a_modality_lut_sequence():
    ds = make_ds(bits_stored=8, bits_allocated=8)
    ds.ModalityLUTSequence = Sequence([lut_item([2, 0, 10], [0, 1023])])
    image, _ = to_display(ds, np.array([[0, 1]], dtype=np.uint8))
    np.testing.assert_allclose(image, [[0.0, 1.0]])


def test_garbage_high_bits_do_not_reach_the_output():
    ds = make_ds(WindowCenter=2048, WindowWidth=4096)
    clean, _ = to_display(ds, np.array([[0x0123, 0x0FFF]], dtype=np.uint16))
    dirty, _ = to_display(ds, np.array([[0xF123, 0xAFFF]], dtype=np.uint16))
    np.testing.assert_array_equal(clean, dirty)


def test_signed_pixels_with_junk_high_bits():
    ds = make_ds(pixel_representation=1)  # 12-bit signed, full range [-2048, 2047]
    image, _ = to_display(ds, np.array([[0xAFFB, 0x07FF, 0x0800]], dtype=np.uint16))
    np.testing.assert_allclose(image, [[(-5 + 2048) / 4095, 1.0, 0.0]], atol=1e-7)


# -------------------------------------------------------------------------------------------- polarity


def test_monochrome1_is_inverted_after_the_voi_step():
    ds = make_ds("MONOCHROME1", WindowCenter=100, WindowWidth=51)
    image, info = to_display(ds, np.array([[75, 50, 200]], dtype=np.uint16))
    # windowed first (75 -> 0.01), then inverted -> 0.99; inverting stored values first would give
    # 4095 - 75 = 4020 -> 1.0 -> no detail at all
    np.testing.assert_allclose(image, [[0.99, 1.0, 0.0]], atol=1e-6)
    assert info["inverted"] is True
    assert info["polarity"] == "MONOCHROME1"


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME1", None, True),
        ("MONOCHROME2", None, False),
        ("MONOCHROME1", "INVERSE", True),  # counted once, not twice
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME1", "IDENTITY", False),  # the shape decides; logged as non-conformant
    ],
)
def test_presentation_lut_shape_rule(photometric, shape, inverted):
    attrs = {"PresentationLUTShape": shape} if shape else {}
    ds = make_ds(photometric, **attrs)
    image, info = to_display(ds, np.array([[0, 4095, 1000]], dtype=np.uint16))
    expected = np.array([0.0, 1.0, 1000 / 4095])
    np.testing.assert_allclose(image[0], 1 - expected if inverted else expected, atol=1e-7)
    assert info["inverted"] is inverted
    assert output_inverted(ds)[0] is inverted


def test_monochrome1_with_identity_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.dicom.pixels"):
        output_inverted(make_ds("MONOCHROME1", PresentationLUTShape="IDENTITY"))
    assert "non-conformant" in caplog.text


# --------------------------------------------------------------------------------------------- padding


def test_padding_masked_on_stored_values_and_black():
    ds = make_ds(bits_stored=16, pixel_representation=1, RescaleSlope=1, RescaleIntercept=-1024)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    stored = np.array([[1000, 1064, 1300, -2000]], dtype=np.int16)
    without, _ = to_display(ds, stored[:, :3])
    ds.PixelPaddingValue = -2000
    with_padding, info = to_display(ds, stored)
    np.testing.assert_array_equal(with_padding[:, :3], without)  # scaling of the others unchanged
    assert with_padding[0, 3] == 0.0
    assert info["padded_pixels"] == 1


def test_padding_far_outside_range_does_not_change_full_range_scaling():
    ds = make_ds(bits_stored=16, pixel_representation=1)
    stored = np.array([[100, 200, 300, -32768]], dtype=np.int16)
    without, _ = to_display(ds, stored[:, :3])
    ds.PixelPaddingValue = -32768
    padded, _ = to_display(ds, stored)
    np.testing.assert_array_equal(padded[:, :3], without)
    assert padded[0, 3] == 0.0


def test_padding_is_black_in_monochrome1_too():
    ds = make_ds("MONOCHROME1", PixelPaddingValue=4095)
    image, _ = to_display(ds, np.array([[0, 4095, 4000]], dtype=np.uint16))
    np.testing.assert_allclose(image, [[1.0, 0.0, 1 - 4000 / 4095]], atol=1e-7)


def test_padding_range_limit_is_inclusive_either_order():
    stored = np.arange(0, 15).reshape(1, -1)
    for value, limit in ((0, 10), (10, 0)):
        mask = padding_mask(make_ds(PixelPaddingValue=value, PixelPaddingRangeLimit=limit), stored)
        np.testing.assert_array_equal(mask[0], [True] * 11 + [False] * 4)
    assert padding_mask(make_ds(), stored) is None


def test_padding_value_read_in_the_stored_domain():
    # SS -2000 written as US 63536 (ambiguous VR decoded unsigned) still matches the signed pixel
    ds = make_ds(bits_stored=16, pixel_representation=1, PixelPaddingValue=63536)
    mask = padding_mask(ds, mask_unused_bits(np.array([-2000, 2000], dtype=np.int16), 16, 1))
    np.testing.assert_array_equal(mask, [True, False])


# ---------------------------------------------------------------------------------------------- colour


def test_rgb_luminance_bt601():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    ds = make_ds("RGB", bits_stored=8, bits_allocated=8)
    image, info = to_display(ds, rgb)
    expected = [0.299, 0.587, 0.114, (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255]
    np.testing.assert_allclose(image[0], expected, atol=1e-6)
    assert info["voi_source"] == "none(BT.601 luminance)"


def test_rgb_16_bit_divided_by_its_bit_range():
    rgb = np.array([[[65535, 65535, 65535], [65535, 0, 0]]], dtype=np.uint16)
    np.testing.assert_allclose(rgb_luminance(rgb, 16)[0], [1.0, 0.299])


def test_ybr_full_converted_to_rgb_before_luminance():
    rgb = np.array([[[128, 128, 128], [200, 30, 90], [0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    for photometric in ("YBR_FULL", "YBR_FULL_422"):
        ds = make_ds(photometric, bits_stored=8, bits_allocated=8)
        image, _ = to_display(ds, ybr)
        np.testing.assert_allclose(image[0], rgb_luminance(rgb, 8)[0], atol=1.5 / 255)
        assert image[0, 0] == pytest.approx(128 / 255)


def test_decoder_reported_rgb_is_not_converted_again():
    rgb = np.array([[[200, 30, 90]]], dtype=np.uint8)
    ds = make_ds("YBR_FULL", bits_stored=8, bits_allocated=8)  # data set says YBR, decoder gave RGB
    image, _ = to_display(ds, rgb, photometric="RGB")
    np.testing.assert_allclose(image, rgb_luminance(rgb, 8), atol=1e-7)


# ---------------------------------------------------------------------------------------------- errors


def test_to_display_refuses_what_it_cannot_show():
    with pytest.raises(ValueError, match="PALETTE COLOR"):
        to_display(make_ds("PALETTE COLOR"), np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_display(make_ds(), np.zeros((2, 2, 2), dtype=np.uint16))
    with pytest.raises(ValueError, match="shape"):
        to_display(make_ds("RGB", bits_stored=8, bits_allocated=8), np.zeros((2, 2), dtype=np.uint8))
    ds = make_ds()
    ds.VOILUTSequence = Sequence([lut_item([4, 0, 16], [1, 2])])
    with pytest.raises(ValueError, match="LUT Data"):
        to_display(ds, np.zeros((2, 2), dtype=np.uint16))


def test_public_steps_are_exposed():
    for name in (
        "mask_unused_bits",
        "padding_mask",
        "apply_modality_lut",
        "apply_voi",
        "apply_window",
        "output_inverted",
        "rgb_luminance",
        "to_rgb",
        "to_display",
    ):
        assert callable(getattr(pixels, name))
