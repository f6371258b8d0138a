"""Grad-CAM, overlays and montages of :mod:`pneumonia_monai.visualize`."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121
from PIL import Image

from pneumonia_monai.visualize.gradcam import gradcam
from pneumonia_monai.visualize.montage import montage
from pneumonia_monai.visualize.overlay import overlay, save_png_atomic


class _BlobNet(torch.nn.Module):
    """A hand-made network whose class-1 logit is the mean brightness it sees.

    ``features`` keeps the input's positive part (identity convolution + ReLU) at full resolution; the
    class-1 logit is its global mean, the class-0 logit its negation. ``mask`` optionally zeroes the right
    half of the features, so that the network sees only the left half of the image.
    """

    def __init__(self, see_right_half: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1, 1] = 1.0
        self.relu = torch.nn.ReLU()
        self.see_right_half = see_right_half
        self.mask = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu(self.conv(x))
        if not self.see_right_half:
            keep = torch.ones_like(features)
            keep[..., features.shape[-1] // 2 :] = 0.0
            features = features * keep
        features = self.mask(features)
        score = features.mean(dim=(1, 2, 3))
        return torch.stack([-score, score], dim=1)


def _image_with_blobs(shape: tuple[int, int], boxes: list[tuple[slice, slice]]) -> torch.Tensor:
    image = torch.zeros((1, 1, *shape))
    for rows, cols in boxes:
        image[0, 0, rows, cols] = 1.0
    return image


@pytest.fixture(scope="module")
def densenet() -> DenseNet121:
    torch.manual_seed(0)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)


def test_gradcam_densenet_shape_range_and_not_constant(densenet: DenseNet121) -> None:
    torch.manual_seed(1)
    image = torch.rand(1, 1, 96, 80)
    cam = gradcam(densenet, image)
    assert cam.shape == (96, 80)
    assert cam.dtype == np.float32
    assert cam.min() >= 0.0
    assert cam.max() <= 1.0
    assert cam.max() == pytest.approx(1.0)
    assert float(cam.std()) > 0.01
    # (1, H, W) is accepted and gives the same map.
    np.testing.assert_allclose(gradcam(densenet, image[0]), cam, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_gradcam_leaves_the_network_unchanged(densenet: DenseNet121, training: bool) -> None:
    densenet.train(training)
    densenet.features.norm5.train(not training)  # a mixed state must come back as it was
    densenet.features.conv0.weight.requires_grad_(False)
    marker = torch.full_like(densenet.class_layers.out.weight, 7.0)
    densenet.class_layers.out.weight.grad = marker
    before = {k: v.clone() for k, v in densenet.state_dict().items()}
    modes = {name: m.training for name, m in densenet.named_modules()}
    flags = {name: p.requires_grad for name, p in densenet.named_parameters()}
    try:
        gradcam(densenet, torch.rand(1, 1, 64, 64), class_index=1)

        after = densenet.state_dict()
        assert before.keys() == after.keys()
        for key, value in before.items():
            assert torch.equal(value, after[key]), key  # also batch-norm running statistics
        assert {name: m.training for name, m in densenet.named_modules()} == modes
        assert {name: p.requires_grad for name, p in densenet.named_parameters()} == flags
        assert densenet.class_layers.out.weight.grad is marker
        assert all(
            p.grad is None for name, p in densenet.named_parameters() if name != "class_layers.out.weight"
        )
        relu = densenet.class_layers.relu
        assert relu.inplace is True
        for module in densenet.modules():
            assert not module._forward_hooks
            assert not module._backward_hooks
    finally:
        densenet.features.conv0.weight.requires_grad_(True)
        densenet.class_layers.out.weight.grad = None
        densenet.eval()


def test_gradcam_in_inference_mode(densenet: DenseNet121) -> None:
    image = torch.rand(1, 1, 64, 64)
    expected = gradcam(densenet, image)
    with torch.inference_mode():
        inside = gradcam(densenet, image.clone())
    np.testing.assert_allclose(inside, expected, atol=1e-6)


@pytest.mark.parametrize(
    "box",
    [(slice(4, 16), slice(6, 20)), (slice(30, 44), slice(60, 74))],
    ids=["top-left", "bottom-right"],
)
def test_gradcam_follows_the_evidence(box: tuple[slice, slice]) -> None:
    """A non-square image with one bright box: the class-1 CAM must sit on the box, wherever it is."""
    net = _BlobNet()
    image = _image_with_blobs((48, 80), [box])
    cam = gradcam(net, image, target_layer="relu", class_index=1)
    inside = np.zeros(cam.shape, dtype=bool)
    inside[box] = True
    assert cam[inside].sum() / cam.sum() > 0.95
    assert cam[inside].min() == pytest.approx(1.0)
    # Class 0 (negative weights everywhere) has no positive evidence at all.
    assert not gradcam(net, image, target_layer="relu", class_index=0).any()


def test_gradcam_mass_on_the_half_the_network_looks_at() -> None:
    """Bright boxes in both halves, a network that sees only the left half: CAM mass on the left."""
    net = _BlobNet(see_right_half=False)
    image = _image_with_blobs((64, 64), [(slice(20, 40), slice(5, 25)), (slice(20, 40), slice(40, 60))])
    cam = gradcam(net, image, target_layer="mask", class_index=1)
    assert cam[:, :32].sum() / cam.sum() > 0.99
    # The same image through a network that sees everything lights both boxes.
    both = gradcam(_BlobNet(), image, target_layer="mask", class_index=1)
    assert both[:, 32:].sum() / both.sum() == pytest.approx(0.5, abs=0.05)


def test_gradcam_rejects_bad_inputs(densenet: DenseNet121) -> None:
    image = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="no_such_layer"):
        gradcam(densenet, image, target_layer="no_such_layer")
    with pytest.raises(ValueError, match=r"\(2, 1, 32, 32\)"):
        gradcam(densenet, torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="class_index 2"):
        gradcam(densenet, image, class_index=2)
    with pytest.raises(ValueError, match="-1"):
        gradcam(densenet, image, class_index=-1)
    with pytest.raises(TypeError, match="uint8"):
        gradcam(densenet, torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_overlay_shape_dtype_and_blend() -> None:
    grey = np.linspace(0.0, 1.0, 30 * 40).reshape(30, 40)
    cam = np.zeros((6, 8))
    cam[:3, :4] = 1.0
    rgb = overlay(grey, cam, alpha=0.5, colormap="gray")
    assert rgb.shape == (30, 40, 3)
    assert rgb.dtype == np.uint8
    # With a grey colormap, a zero cam halves the film and a one cam adds half of white.
    assert rgb[-1, -1, 0] == round(0.5 * 255)
    assert rgb[0, 0, 0] == round(0.5 * 255)
    assert (rgb[..., 0] == rgb[..., 1]).all()
    # alpha 0 gives back the film itself.
    film = overlay(grey, cam, alpha=0.0)
    np.testing.assert_array_equal(film[..., 0], np.round(grey * 255).astype(np.uint8))
    # The jet colormap makes the hot corner red, the cold one blue.
    jet = overlay(np.zeros((30, 40)), cam, alpha=1.0)
    assert jet[0, 0, 0] > 100 and jet[0, 0, 2] < 50
    assert jet[-1, -1, 2] > 100 and jet[-1, -1, 0] < 50


def test_overlay_rejects_bad_inputs() -> None:
    grey = np.zeros((8, 8))
    with pytest.raises(ValueError, match=r"image01 values must be in \[0, 1\]"):
        overlay(grey + 2.0, grey)
    with pytest.raises(ValueError, match="cam must be a non-empty 2-D array"):
        overlay(grey, np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="alpha"):
        overlay(grey, grey, alpha=1.5)
    with pytest.raises(ValueError, match="no_such_map"):
        overlay(grey, grey, colormap="no_such_map")


def test_save_png_atomic_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
    path = tmp_path / "overlay.png"
    save_png_atomic(rgb, path)
    with Image.open(path) as img:
        assert img.format == "PNG"
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png"]
    with pytest.raises(TypeError, match="uint8"):
        save_png_atomic(rgb.astype(np.float32), path)


def test_montage_writes_png_of_expected_size(tmp_path) -> None:
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    grey = np.full((25, 25), 0.5)
    tiles = [(rgb, "p=0.91"), (grey, "p=0.12"), (rgb, "p=0.50"), (grey, "p=0.07"), (rgb, "p=0.66")]
    path = tmp_path / "montage.png"
    montage(tiles, path, columns=3, tile_inches=2.0, dpi=50)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (3 * 100, 2 * 100)
    single = tmp_path / "single.png"
    montage(tiles[:1], single)
    with Image.open(single) as img:
        assert img.size == (300, 300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["montage.png", "single.png"]
    with pytest.raises(ValueError, match="tiles is empty"):
        montage([], tmp_path / "empty.png")
    with pytest.raises(ValueError, match="columns"):
        montage(tiles, tmp_path / "bad.png", columns=0)


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["visualize", "evaluation", "engine"])
def test_drawing_lies_below_inference(repo_root, package: str) -> None:
    """Training and evaluation draw with pneumonia_monai.visualize: no module of theirs imports inference."""
    offenders = {
        str(path.relative_to(repo_root)): sorted(m for m in _imported_modules(path) if "inference" in m)
        for path in sorted((repo_root / "pneumonia_monai" / package).glob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}
