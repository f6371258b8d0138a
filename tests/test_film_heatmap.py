"""Heatmaps a radiologist can read: the Grad-CAM of the lung crop laid over the whole film."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121
from pydicom.data import get_testdata_file

from pneumonia_monai.transforms import ChestXRayPreprocessd, load_film
from pneumonia_monai.visualize.gradcam import DENSENET_TARGET_LAYER, gradcam, heat_inside
from pneumonia_monai.visualize.overlay import (
    NOT_FOR_DIAGNOSTIC_USE,
    display_scale,
    film_heatmap,
    reduce_for_display,
)


def test_the_target_layer_is_14_by_14_at_the_224_pixel_input() -> None:
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    shapes = []
    handle = dict(net.named_modules())[DENSENET_TARGET_LAYER].register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape[-2:]))
    )
    try:
        with torch.no_grad():
            net(torch.zeros(1, 1, 224, 224))
    finally:
        handle.remove()
    assert shapes == [(14, 14)]


def test_heatmap_of_a_real_non_square_film_keeps_its_geometry() -> None:
    """RG1 (pydicom-data): a real 1955 x 1841 MONOCHROME1 chest CR."""
    path = get_testdata_file("RG1_UNCR.dcm")
    film, _ = load_film(path)
    assert film.shape == (1955, 1841)
    data = ChestXRayPreprocessd("image", spatial_size=64)({"image": path})
    meta = data["image"].meta
    assert meta["film_shape"] == [1955, 1841]
    r0, r1, c0, c1 = meta["lung_box"]
    box = (r0 / 1955, r1 / 1955, c0 / 1841, c1 / 1841)
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    cam = gradcam(net, data["image"].as_tensor()[None], class_index=1)
    rgb = film_heatmap(film, cam, box, caption="p(pneumonia) 0.50")
    assert rgb.shape == (1955, 1841, 3) and rgb.dtype == np.uint8  # the film's own rows and columns
    # outside the crop the film is shown as it is (grey), inside it is coloured (away from the burn-ins)
    grey_patch = rgb[5:40, c0 // 2 : c0 // 2 + 10] if c0 > 40 else rgb[r1 + 5 : r1 + 15, 900:910]
    if grey_patch.size:
        assert np.all(grey_patch[..., 0] == grey_patch[..., 1])
    centre = rgb[(r0 + r1) // 2 - 20 : (r0 + r1) // 2 + 20, (c0 + c1) // 2 - 20 : (c0 + c1) // 2 + 20]
    assert np.any(centre[..., 0] != centre[..., 2])
    # the colour bar sits at the right edge, in colour
    bar = rgb[1955 // 2, 1841 - 50 : 1841 - 5]
    assert np.any(bar[:, 0] != bar[:, 2])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((4000, 3000), (2048, 1536)), ((224, 180), (512, 411)), ((1000, 800), (1000, 800))],
)
def test_films_outside_the_display_range_are_resized_uniformly(shape, expected) -> None:
    film = np.random.default_rng(0).random(shape).astype(np.float32)
    scale = display_scale(shape)
    assert (round(shape[0] * scale), round(shape[1] * scale)) == expected
    rgb = film_heatmap(film, np.ones((14, 14), np.float32) * 0.5, (0.1, 0.9, 0.1, 0.9), caption="x")
    assert rgb.shape[:2] == expected


def test_the_caption_and_the_warning_are_burned_in() -> None:
    film = np.full((600, 500), 0.3, np.float32)
    plain = film_heatmap(film, np.zeros((14, 14), np.float32), (0.2, 0.8, 0.2, 0.8), caption="")
    text = film_heatmap(film, np.zeros((14, 14), np.float32), (0.2, 0.8, 0.2, 0.8), caption="p 0.9")
    # the bottom line (the warning) is drawn on both; the caption changes the top only
    bottom = plain[-60:]
    assert np.any((bottom[..., 0] > 200) & (bottom[..., 1] > 200) & (bottom[..., 2] < 60))  # yellow text
    diff = np.any(plain != text, axis=2)
    assert diff[:60].any() and not diff[100:].any()
    assert NOT_FOR_DIAGNOSTIC_USE == "NOT FOR DIAGNOSTIC USE"
    with pytest.raises(ValueError, match="box"):
        film_heatmap(film, np.zeros((4, 4)), (0.5, 0.2, 0.0, 1.0), caption="")


def test_heat_inside_the_lung_box() -> None:
    cam = np.zeros((10, 10))
    cam[2:8, 2:8] = 1.0
    # the map lies on the crop [0, 1] of the film; the lung box is its central 60%
    assert heat_inside(cam, (0.2, 0.8, 0.2, 0.8), (0.0, 1.0, 0.0, 1.0)) == pytest.approx(1.0)
    assert heat_inside(cam, (0.0, 0.5, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0)) == pytest.approx(0.5)


def test_a_film_reduced_for_display_draws_the_same_overlay_at_the_film_s_geometry() -> None:
    """The runner drops a hospital-size film before drawing: the reduced film plus its shape is the same."""
    rng = np.random.default_rng(1)
    film = rng.random((5000, 3001)).astype(np.float32)
    cam = rng.random((224, 224))
    box = (0.1, 0.9, 0.15, 0.85)
    reduced = reduce_for_display(film)
    assert reduced.shape == (2500, 1500)  # 2 x 2 blocks: between one and two times the display side
    whole = film_heatmap(film, cam, box, caption="p 0.5")
    assert whole.shape == (2048, 1229, 3)
    assert np.array_equal(film_heatmap(reduced, cam, box, caption="p 0.5", film_shape=film.shape), whole)
    small = np.zeros((600, 400), np.float32)
    assert reduce_for_display(small) is small
    with pytest.raises(ValueError, match="film_shape"):
        film_heatmap(reduced, cam, box, caption="x", film_shape=(100, 100))


def test_the_overlay_of_an_8192_pixel_film_allocates_little_beside_it() -> None:
    """Drawing stays at display size in float32: it once took 461 MiB of arrays beside an 8192^2 film."""
    film = np.full((8192, 8192), 0.5, np.float32)
    cam = np.random.default_rng(0).random((224, 224))
    tracemalloc.start()
    try:
        out = film_heatmap(film, cam, (0.1, 0.9, 0.1, 0.9), caption="p 0.5")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (2048, 2048, 3)
    assert peak < 200 * 1024**2, f"{peak / 1024**2:.0f} MiB"
