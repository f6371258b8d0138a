"""Route augmentations, border stripping and the jittered lung box of training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from PIL import Image

from pneumonia_monai.transforms import (
    ChestXRayPreprocessd,
    LungFieldCrop,
    RandBorderd,
    RandJpegd,
    RandLungFieldCropd,
    RandRescaled,
    RandWindowd,
    load_film,
    locate_crop,
    strip_uniform_border,
    training_chain,
)
from pneumonia_monai.transforms.lung_crop import lacks_content


def _film(path: Path) -> MetaTensor:
    image, _ = load_film(path)
    return MetaTensor(torch.from_numpy(image)[None])


def _route() -> list:
    return [
        RandRescaled("image", prob=1.0),
        RandWindowd("image", prob=1.0),
        RandBorderd("image", prob=1.0),
        RandJpegd("image", prob=1.0),
    ]


def test_route_augmentations_are_reproducible_under_a_seed(sample_images: list[Path]) -> None:
    outputs = []
    for seed in (5, 5, 6):
        chain = training_chain("image", 64, route_augmentation=_route())
        chain.set_random_state(seed=seed)
        outputs.append([chain({"image": str(p)})["image"].as_tensor() for p in sample_images[:3]])
    for a, b in zip(outputs[0], outputs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, c) for a, c in zip(outputs[0], outputs[2], strict=True))
    for image in outputs[0]:
        assert image.shape == (1, 64, 64) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_each_augmentation_does_what_it_says(sample_images: list[Path]) -> None:
    film = _film(sample_images[0])
    rows, cols = film.shape[-2:]
    # rescale: both sides by the same factor, within the range
    rescaled = RandRescaled("image", prob=1.0, scale_range=(0.5, 0.5))({"image": film})["image"]
    assert rescaled.shape[-2:] == (round(rows * 0.5), round(cols * 0.5))
    # border, padded: the film grows, its edges are the border value, the film is inside unchanged
    border = RandBorderd("image", prob=1.0, fraction_range=(0.05, 0.05), values=(1.0,), pad_prob=1.0)
    padded = border({"image": film})["image"]
    top = round(0.05 * rows)
    assert padded.shape[-2] == rows + 2 * top
    assert float(padded[0, 0].min()) == 1.0 and float(padded[0, -1].min()) == 1.0
    torch.testing.assert_close(
        padded[0, top : top + rows, round(0.05 * cols) : round(0.05 * cols) + cols], film[0]
    )
    # border, burned in: same size, edges overwritten
    burned = RandBorderd("image", prob=1.0, fraction_range=(0.05, 0.05), values=(0.0,), pad_prob=0.0)
    out = burned({"image": film})["image"]
    assert out.shape == film.shape and float(out[0, :top].max()) == 0.0
    # window: a narrower window clips the ends
    window = RandWindowd("image", prob=1.0, low_range=(0.2, 0.2), high_range=(0.8, 0.8))({"image": film})[
        "image"
    ]
    expected = ((film - 0.2) / 0.6).clamp(0, 1)
    torch.testing.assert_close(window.as_tensor(), expected.as_tensor())
    # JPEG: 8-bit levels, close to the film but not equal
    jpeg = RandJpegd("image", prob=1.0, quality_range=(50, 50))({"image": film})["image"]
    assert jpeg.shape == film.shape
    assert torch.allclose(jpeg * 255, (jpeg * 255).round(), atol=1e-3)
    assert 0 < float((jpeg - film).abs().mean()) < 0.05
    with pytest.raises(ValueError, match="scale_range"):
        RandRescaled("image", scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="prob"):
        RandJpegd("image", prob=1.5)


@pytest.mark.parametrize("value", [0, 255])
def test_a_uniform_border_does_not_change_the_crop_or_the_tensor(
    sample_images: list[Path], tmp_path: Path, value: int
) -> None:
    preprocess = ChestXRayPreprocessd("image", spatial_size=96)
    for i, path in enumerate(sample_images[::8]):
        levels = np.asarray(Image.open(path).convert("L"))
        bordered = np.pad(levels, ((9, 14), (11, 6)), constant_values=value)
        target = tmp_path / f"{i}.png"
        Image.fromarray(bordered).save(target)
        plain = preprocess({"image": str(path)})["image"]
        framed = preprocess({"image": str(target)})["image"]
        torch.testing.assert_close(plain.as_tensor(), framed.as_tensor(), rtol=0, atol=0)
        assert framed.meta["film_shape"] == list(bordered.shape)


def test_strip_uniform_border() -> None:
    film = np.random.default_rng(0).random((50, 40))
    framed = np.pad(film, ((3, 4), (5, 2)), constant_values=0.0)
    assert strip_uniform_border(framed) == (3, 53, 5, 45)
    assert strip_uniform_border(film) == (0, 50, 0, 40)
    # a uniform film is not all border: it has no content and keeps its whole extent
    box, reason = locate_crop(np.full((64, 64), 0.4, dtype=np.float32))
    assert box == (0, 64, 0, 64) and lacks_content(reason)
    with pytest.raises(ValueError, match="2-D"):
        strip_uniform_border(np.zeros((2, 2, 2)))


def test_blank_films_lack_content_and_real_films_do_not(sample_images: list[Path]) -> None:
    for value in (0.0, 0.5, 1.0):
        noisy = np.clip(value + np.random.default_rng(1).normal(0, 0.004, (300, 260)), 0, 1).astype(
            np.float32
        )
        out = LungFieldCrop()(MetaTensor(torch.from_numpy(noisy)[None]))
        assert lacks_content(out.meta["lung_crop"]), out.meta["lung_crop"]
    for path in sample_images:
        assert not lacks_content(LungFieldCrop()(_film(path)).meta["lung_crop"])


def test_jittered_lung_box_moves_around_the_deterministic_one(sample_images: list[Path]) -> None:
    film = _film(sample_images[2])
    fixed = LungFieldCrop()(film.clone()).meta["lung_box"]
    jitter = RandLungFieldCropd("image", jitter=0.05)
    jitter.set_random_state(seed=0)
    boxes = [jitter({"image": film.clone()})["image"].meta["lung_box"] for _ in range(20)]
    height, width = fixed[1] - fixed[0], fixed[3] - fixed[2]
    for box in boxes:
        for edge, ref, size in zip(box, fixed, (height, height, width, width), strict=True):
            assert abs(edge - ref) <= 0.05 * size + 1
    assert len({tuple(b) for b in boxes}) > 10
    still = RandLungFieldCropd("image", jitter=0.0)({"image": film.clone()})["image"]
    assert still.meta["lung_box"] == fixed
    with pytest.raises(ValueError, match="jitter"):
        RandLungFieldCropd("image", jitter=0.9)
    assert isinstance(training_chain("image", 64, lung_crop=False), Compose)
