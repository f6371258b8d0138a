"""The shared preprocessing: loading, lung-field cropping and the chain every config uses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from PIL import Image

from pneumonia_monai.checks import ValueTypeError
from pneumonia_monai.engine.components import memory_format
from pneumonia_monai.engine.precision import AutocastInferer
from pneumonia_monai.transforms import (
    ChestXRayPreprocessd,
    ImageLoadError,
    LoadChestXRay,
    LungFieldCrop,
    find_lung_box,
    load_film,
    training_chain,
)


def test_load_jpeg_matches_pil_luma(sample_images: list[Path]) -> None:
    path = sample_images[0]
    expected = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    image, meta = load_film(path)
    assert meta["format"] == "raster"
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, expected)
    tensor = LoadChestXRay()(path)
    assert isinstance(tensor, MetaTensor)
    assert tuple(tensor.shape) == (1, *expected.shape)  # channel first, rows x columns, no transpose
    assert tensor.meta["filename_or_obj"] == str(path)


def test_load_sixteen_bit_png(tmp_path: Path) -> None:
    values = (np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 100).astype(np.uint16)
    path = tmp_path / "film.png"
    Image.fromarray(values).save(path)
    image, _ = load_film(path)
    np.testing.assert_allclose(image, values / 65535.0, atol=1e-6)


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_film(tmp_path / "notes.png")
    with pytest.raises(ImageLoadError, match="not found"):
        load_film(tmp_path / "missing.jpeg")
    Image.new("F", (8, 8)).save(tmp_path / "float.tiff")
    with pytest.raises(ImageLoadError, match="unsupported image mode"):
        load_film(tmp_path / "float.tiff")


def test_lung_crop_on_real_films(sample_images: list[Path]) -> None:
    detected = 0
    for path in sample_images:
        image, _ = load_film(path)
        box, reason = find_lung_box(image)
        if box is None:
            assert reason != "detected"
            continue
        detected += 1
        r0, r1, c0, c1 = box
        rows, cols = image.shape
        assert reason == "detected"
        # the lung box is a sensible part of a frontal film: it holds the centre, starts in the upper
        # part and spans both lungs
        assert r0 < rows / 2 < r1 and c0 < cols / 2 < c1
        assert r0 <= 0.3 * rows + 0.05 * rows
        assert (c1 - c0) >= 0.35 * cols
    assert detected >= 0.9 * len(sample_images), (
        f"lung fields found in only {detected}/{len(sample_images)} films"
    )


def test_lung_box_of_a_hospital_size_film_is_the_box_of_the_224_pixel_film(sample_images: list[Path]) -> None:
    """Films of 2,000 pixels take the block-average thumbnail path; the box, as fractions of the film,
    must be the one found on the 224-pixel training size, or DICOM and JPEG would see different crops."""
    deviations = []
    for path in sample_images[:16]:
        small, _ = load_film(path)
        box, _ = find_lung_box(small)
        big_pil = Image.fromarray(np.round(small * 255).astype(np.uint8)).resize((2000, 2000), Image.BICUBIC)
        big = np.asarray(big_pil, dtype=np.float32) / 255.0
        big_box, _ = find_lung_box(big)
        if box is None or big_box is None:
            deviations.append(1.0 if (box is None) != (big_box is None) else 0.0)
            continue
        scale = np.array([small.shape[0]] * 2 + [small.shape[1]] * 2, dtype=float)
        deviations.append(float(np.abs(np.array(big_box) / 2000.0 - np.array(box) / scale).max()))
    deviations_array = np.array(deviations)
    assert np.median(deviations_array) <= 0.01, deviations
    assert (deviations_array > 0.05).mean() <= 0.125, deviations


def test_lung_crop_crops_a_wide_film(sample_images: list[Path]) -> None:
    # a film padded with wide dark borders (as hospital CR often is) is cropped back to the chest
    image, _ = load_film(sample_images[3])
    rows, cols = image.shape
    padded = np.zeros((rows * 2, cols * 2), dtype=np.float32)
    padded[rows // 2 : rows // 2 + rows, cols // 2 : cols // 2 + cols] = image
    out = LungFieldCrop()(MetaTensor(torch.from_numpy(padded)[None]))
    assert out.meta["lung_crop"] == "detected"
    assert out.shape[1] * out.shape[2] < 0.5 * padded.size


def test_lung_crop_falls_back_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    blank = MetaTensor(torch.full((1, 64, 64), 0.5))
    with caplog.at_level(logging.DEBUG, logger="pneumonia_monai"):
        out = LungFieldCrop()(blank)
    assert out.shape == blank.shape
    assert out.meta["lung_crop"].startswith("fallback: ")
    assert out.meta["lung_box"] == [0, 64, 0, 64]
    assert "keeping the film inside its borders" in caplog.text
    off = LungFieldCrop(enabled=False)(MetaTensor(torch.rand(1, 40, 50)))
    assert off.meta["lung_crop"] == "disabled" and off.shape == (1, 40, 50)
    with pytest.raises(ValueError, match="margin"):
        LungFieldCrop(margin=-0.1)
    with pytest.raises(ValueError, match="2-D"):
        find_lung_box(np.zeros((2, 3, 4)))


def test_preprocessing_chain(sample_images: list[Path]) -> None:
    out = ChestXRayPreprocessd("image", spatial_size=(96, 80))({"image": str(sample_images[0]), "label": 1})
    image = out["image"]
    assert out["label"] == 1
    assert image.dtype == torch.float32 and tuple(image.shape) == (1, 96, 80)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    with pytest.raises(ValueError, match="spatial_size"):
        ChestXRayPreprocessd("image", spatial_size=(8, 8))


def test_train_validation_and_inference_preprocess_alike(repo_root: Path, sample_images: list[Path]) -> None:
    """The validation chain of train.json and the chain of inference.json give the same tensor."""
    tensors = []
    for name, key in (("train.json", "validate#preprocessing"), ("inference.json", "preprocessing")):
        parser = ConfigParser()
        parser.read_config(repo_root / "bundle" / "configs" / name)
        parser["bundle_root"] = str(repo_root / "bundle")
        transform = parser.get_parsed_content(key)
        tensors.append(transform({"image": str(sample_images[5])})["image"])
    assert tensors[0].shape == tensors[1].shape
    torch.testing.assert_close(tensors[0].as_tensor(), tensors[1].as_tensor(), rtol=0, atol=0)


@pytest.mark.parametrize("value", ["false", "False", 0, None])
def test_the_crop_switches_refuse_what_is_not_a_bool(value: object) -> None:
    with pytest.raises(ValueTypeError, match="lung_crop must be true or false"):
        ChestXRayPreprocessd("image", 32, lung_crop=value)  # type: ignore[arg-type]
    with pytest.raises(ValueTypeError, match="lung_crop must be true or false"):
        training_chain("image", 32, lung_crop=value)  # type: ignore[arg-type]
    with pytest.raises(ValueTypeError, match="reduced_decode must be true or false"):
        ChestXRayPreprocessd("image", 32, reduced_decode=value)  # type: ignore[arg-type]
    with pytest.raises(ValueTypeError, match="channels_last must be true or false"):
        AutocastInferer("cpu", channels_last=value)  # type: ignore[arg-type]
    with pytest.raises(ValueTypeError, match="channels_last must be true or false"):
        memory_format(value)
    assert memory_format(False) == torch.contiguous_format and memory_format(True) == torch.channels_last
