"""Grad-CAM heatmaps of the classifier, their overlays on the film, and montages for reports.

:func:`gradcam` computes a Gradient-weighted Class Activation Map (Selvaraju et al., 2017) with
:class:`monai.visualize.GradCAM`, without leaving any trace on the network: MONAI's
:class:`~monai.visualize.ModelWithHooks` registers hooks it never removes, turns off ``inplace`` on the
target layer and calls ``zero_grad()`` on the model, so here the hooks are registered by this module
through removable handles and every other change (train/eval flags, ``requires_grad``, ``.grad``,
``inplace``) is undone in a ``finally`` block.

The overlay is an 8-bit RGB image *for people* (PNG, DICOM Secondary Capture); the model never sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.visualize import GradCAM, ModelWithHooks

from pneumonia_monai.atomic import atomic_open

logger = logging.getLogger(__name__)

#: Output of the third dense block of :class:`monai.networks.nets.DenseNet121`: 1/16 of the input, so
#: 14 x 14 at the 224-pixel input (the last block, ``class_layers.relu``, is 7 x 7: too coarse to lay
#: over a film). Its 1,024 channels are already class-specific enough for Grad-CAM.
DENSENET_TARGET_LAYER = "features.denseblock3"


def _identity(x: torch.Tensor) -> torch.Tensor:
    """Post-processing that leaves the map as it is (MONAI's default flips max to 0 and min to 1)."""
    return x


def _as_batched_image(image: torch.Tensor) -> torch.Tensor:
    """Validate ``image`` and return it as a ``(1, 1, H, W)`` view without metadata or autograd history."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating point tensor, got dtype {image.dtype}")
    shape = tuple(image.shape)
    if image.ndim == 3 and shape[0] == 1:
        image = image.unsqueeze(0)
    elif not (image.ndim == 4 and shape[0] == 1 and shape[1] == 1):
        raise ValueError(f"image must have shape (1, 1, H, W) or (1, H, W), got {shape}")
    if image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {shape}")
    if isinstance(image, MetaTensor):  # a plain tensor: the metadata is of no use here
        image = image.as_tensor()
    return image.detach()


def gradcam(
    network: torch.nn.Module,
    image: torch.Tensor,
    *,
    target_layer: str = DENSENET_TARGET_LAYER,
    class_index: int = 1,
) -> np.ndarray:
    """Compute the Grad-CAM of ``class_index`` for one image, scaled to [0, 1].

    The map is the ReLU of the gradient-weighted sum of the ``target_layer`` activations, upsampled
    (bilinear, by MONAI) to the input size and min-max scaled; a map with no positive evidence (all
    zero after the ReLU) is returned as zeros.

    The network is left as it was found: no hooks remain, each module's ``training`` flag, each
    parameter's ``requires_grad`` and ``.grad`` and the target layer's ``inplace`` flag are restored.
    The network is run in eval mode (dropout off, batch-norm running statistics untouched).

    Args:
        network: the classifier, e.g. ``DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)``.
        image: the model input, ``(1, 1, H, W)`` or ``(1, H, W)``, preprocessed as for inference; it is
            moved to the network's device.
        target_layer: name (as in ``network.named_modules()``) of the layer whose output is explained.
        class_index: index of the logit explained (1 = pneumonia for the binary model).

    Returns:
        ``(H, W)`` float32 array in [0, 1], row-major as the input.

    Raises:
        TypeError: if ``network`` is not a module or ``image`` not a floating point tensor.
        ValueError: if the shape of ``image``, ``target_layer`` or ``class_index`` is invalid.
    """
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
        raise ValueError(f"class_index must be a non-negative int, got {class_index!r}")
    modules = dict(network.named_modules())
    if target_layer not in modules:
        raise ValueError(f"target_layer {target_layer!r} is not a module of {type(network).__name__}")
    target = modules[target_layer]
    image = _as_batched_image(image)
    first_param = next(network.parameters(), None)

    # Everything gradcam changes, recorded to be put back.
    modes = {module: module.training for module in network.modules()}
    params = list(network.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    has_inplace = "inplace" in vars(target)
    inplace = vars(target).get("inplace")

    # No hooks are registered by MONAI (both flags False at construction): this module registers them
    # with handles and then tells the wrapper to use what they cache.
    wrapper = ModelWithHooks(network, target_layer, register_forward=False, register_backward=False)
    wrapper.register_forward = True
    wrapper.register_backward = True

    def _forward_hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        wrapper.activations[target_layer] = output

    def _backward_hook(_module: torch.nn.Module, _grad_input: object, grad_output: tuple) -> None:
        wrapper.gradients[target_layer] = grad_output[0]

    with ExitStack() as stack:
        try:
            if has_inplace and inplace:
                # A full backward hook cannot be put on a module that modifies its input in place.
                target.inplace = False
            stack.callback(target.register_forward_hook(_forward_hook).remove)
            stack.callback(target.register_full_backward_hook(_backward_hook).remove)
            # Gradients are needed with respect to the activations only: the parameters are frozen
            # and the input requires grad, so that no parameter .grad is written.
            for p in params:
                p.requires_grad_(False)
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            # A fresh copy (a normal tensor even if the caller runs in inference mode) that records grads.
            x = image.clone()
            if first_param is not None:
                x = x.to(device=first_param.device, dtype=first_param.dtype)
            x.requires_grad_(True)
            cam_layer = GradCAM(nn_module=wrapper, target_layers=target_layer, postprocessing=_identity)
            try:
                cam = cam_layer(x, class_idx=class_index)
            except IndexError as exc:  # logits[:, class_index] outside the network's outputs
                raise ValueError(f"class_index {class_index} is out of range for this network") from exc
        finally:
            for module, mode in modes.items():
                module.training = mode
            for p, flag, grad in zip(params, requires_grad, grads, strict=True):
                p.requires_grad_(flag)
                p.grad = grad
            if has_inplace:
                target.inplace = inplace
            wrapper.activations.clear()
            wrapper.gradients.clear()

    cam_np = cam.detach().to("cpu", torch.float32).numpy()[0, 0]
    if cam_np.shape != tuple(image.shape[-2:]):  # MONAI's upsampler returns the input's spatial size
        raise RuntimeError(f"Grad-CAM of shape {cam_np.shape} does not match the input {tuple(image.shape)}")
    low, high = float(cam_np.min()), float(cam_np.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("Grad-CAM is not finite; is the input finite?")
    if high - low <= np.finfo(np.float32).eps * max(1.0, abs(high)):
        logger.debug("Grad-CAM of class %d has no positive evidence: returning zeros", class_index)
        return np.zeros_like(cam_np, dtype=np.float32)
    return ((cam_np - low) / (high - low)).astype(np.float32)


def _check_unit_array(name: str, array: np.ndarray, dtype: type[np.floating] = np.float64) -> np.ndarray:
    """Return ``array`` as ``dtype`` after checking that it is a finite 2-D array in [0, 1]."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    values = array.astype(dtype, copy=False)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} has non-finite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} values must be in [0, 1], got range [{low}, {high}]")
    return values


def _blend_colormap(alpha: float, colormap: str) -> Any:
    """Check a blend weight and return the named matplotlib colormap.

    Raises:
        ValueError: if ``alpha`` is not a number in [0, 1] or ``colormap`` is unknown.
    """
    import matplotlib  # imported when used: matplotlib is heavy and only the drawings need it

    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    try:
        return matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {colormap!r}") from None


def overlay(
    image01: np.ndarray,
    cam: np.ndarray,
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
) -> np.ndarray:
    """Blend a colour-mapped CAM over a grey film, for display.

    ``rgb = (1 - alpha) * grey + alpha * colormap(cam)``, with ``cam`` resized (bilinear) to the
    image when their sizes differ.

    Args:
        image01: ``(H, W)`` film in display intensities [0, 1] (0 = black).
        cam: ``(h, w)`` map in [0, 1], e.g. from :func:`gradcam`.
        alpha: weight of the heatmap, in [0, 1].
        colormap: name of a matplotlib colormap.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.

    Raises:
        TypeError: if an array is not numeric.
        ValueError: if a shape, range, ``alpha`` or ``colormap`` is invalid.
    """
    grey = _check_unit_array("image01", image01)
    heat = _check_unit_array("cam", cam)
    cmap = _blend_colormap(alpha, colormap)
    if heat.shape != grey.shape:
        from skimage.transform import resize

        heat = np.clip(resize(heat, grey.shape, order=1, mode="edge", anti_aliasing=False), 0.0, 1.0)
    heat_rgb = cmap(heat)[..., :3]
    blended = (1.0 - alpha) * grey[..., None] + alpha * heat_rgb
    return np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"rgb must be uint8, got dtype {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"rgb must have shape (rows, columns, 3), got {rgb.shape}")


def save_png_atomic(rgb: np.ndarray, path: str | Path) -> None:
    """Write an RGB image as PNG; readers never see a partial file (temporary file + os.replace).

    Args:
        rgb: ``(rows, columns, 3)`` uint8 array.
        path: destination; its folder must exist.

    Raises:
        TypeError, ValueError: if ``rgb`` is not a ``(rows, columns, 3)`` uint8 array.
    """
    from PIL import Image

    _check_rgb(rgb)
    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(rgb)).save(fh, format="PNG")


def montage(
    tiles: Sequence[tuple[np.ndarray, str]],
    path: str | Path,
    columns: int = 4,
    *,
    tile_inches: float = 3.0,
    dpi: int = 100,
) -> None:
    """Write a grid of titled images as one PNG (for reports).

    The PNG is ``min(columns, n) * tile_inches * dpi`` pixels wide and
    ``ceil(n / columns) * tile_inches * dpi`` pixels high. Drawn with :class:`matplotlib.figure.Figure`
    directly, so no pyplot state or global backend is touched.

    Args:
        tiles: ``(image, title)`` pairs; an image is ``(H, W, 3)`` uint8 RGB or ``(H, W)`` grey in [0, 1].
            Titles are printed as given: they must not carry patient identifiers.
        path: destination PNG; its folder must exist. Written atomically.
        columns: number of columns of the grid.
        tile_inches: size of a (square) tile in inches.
        dpi: resolution of the PNG.

    Raises:
        TypeError, ValueError: if ``tiles`` is empty, a tile is malformed or a size is not positive.
    """
    from matplotlib.figure import Figure

    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise ValueError(f"dpi must be a positive int, got {dpi!r}")
    if not isinstance(tile_inches, int | float) or not tile_inches > 0:
        raise ValueError(f"tile_inches must be positive, got {tile_inches!r}")
    tiles = list(tiles)
    if not tiles:
        raise ValueError("tiles is empty")
    checked: list[tuple[np.ndarray, str]] = []
    for index, tile in enumerate(tiles):
        if not (isinstance(tile, tuple) and len(tile) == 2 and isinstance(tile[1], str)):
            raise TypeError(f"tile {index} must be an (image, title) tuple, got {type(tile).__name__}")
        image, title = tile
        if isinstance(image, np.ndarray) and image.ndim == 3:
            _check_rgb(image)
        else:
            image = _check_unit_array(f"tile {index} image", image)
        checked.append((image, title))

    ncols = min(columns, len(checked))
    nrows = -(-len(checked) // ncols)
    fig = Figure(figsize=(ncols * tile_inches, nrows * tile_inches), dpi=dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (image, title) in zip(axes.ravel(), checked, strict=False):
        if image.ndim == 2:
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
        else:
            ax.imshow(image, interpolation="bilinear")
        ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.15)

    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    logger.debug("wrote montage of %d tiles to %s", len(checked), path)


#: Long side of a film heatmap, in pixels: films outside are resized into this range for display.
FILM_HEATMAP_SIDES: tuple[int, int] = (512, 2048)
#: The caption burned into every heatmap a person may see.
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"


def display_scale(shape: tuple[int, int], sides: tuple[int, int] = FILM_HEATMAP_SIDES) -> float:
    """The factor that brings a film's long side into ``sides`` (1 where it already is)."""
    long_side = max(shape)
    if long_side > sides[1]:
        return sides[1] / long_side
    if long_side < sides[0]:
        return sides[0] / long_side
    return 1.0


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k`` x ``k`` blocks (the last ``rows % k`` rows and ``cols % k`` columns left out)."""
    rows, cols = (image.shape[0] // k) * k, (image.shape[1] // k) * k
    blocks = image[:rows, :cols].reshape(rows // k, k, cols // k, k)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def reduce_for_display(film01: np.ndarray, sides: tuple[int, int] = FILM_HEATMAP_SIDES) -> np.ndarray:
    """Block-average a film whose long side is over ``2 x sides[1]`` to between one and two times it.

    A hospital film may be 8,000 pixels a side and the overlay is drawn at most ``sides[1]``: the caller
    of :func:`film_heatmap` can drop the full-size film (and its share of the film budget) before drawing,
    passing this and the film's shape. A smaller film is returned as it is.
    """
    film = np.asarray(film01)
    k = max(1, max(film.shape) // sides[1]) if film.ndim == 2 and film.size else 1
    return _block_mean(film, k) if k > 1 else film


def _box_fractions(box: Sequence[float]) -> tuple[float, float, float, float]:
    """Check a crop given as film fractions ``(row0, row1, col0, col1)``; return them as floats.

    Raises:
        ValueError: if ``box`` is not four increasing fractions in [0, 1].
    """
    if len(box) != 4:
        raise ValueError(f"box must be (row0, row1, col0, col1) fractions, got {box!r}")
    f_r0, f_r1, f_c0, f_c1 = (float(v) for v in box)
    if not (0.0 <= f_r0 < f_r1 <= 1.0 and 0.0 <= f_c0 < f_c1 <= 1.0):
        raise ValueError(f"box must be increasing fractions in [0, 1], got {box!r}")
    return f_r0, f_r1, f_c0, f_c1


def box_pixels(box: Sequence[float], rows: int, cols: int) -> tuple[int, int, int, int]:
    """The pixels ``(r0, r1, c0, c1)`` of a crop given as film fractions, on a grid of ``rows`` x ``cols``.

    Each edge is ``round(fraction * size)``; the crop keeps at least one pixel each way, inside the grid.
    The heatmap overlays (:func:`film_heatmap`) and the heatmap masks
    (:func:`pneumonia_monai.inference.masks.cam_on_film`) place the Grad-CAM with it.

    Raises:
        ValueError: if ``box`` is not four increasing fractions in [0, 1].
    """
    f_r0, f_r1, f_c0, f_c1 = _box_fractions(box)
    r0 = min(rows - 1, round(f_r0 * rows))
    c0 = min(cols - 1, round(f_c0 * cols))
    return r0, max(r0 + 1, round(f_r1 * rows)), c0, max(c0 + 1, round(f_c1 * cols))


def film_heatmap(
    film01: np.ndarray,
    cam: np.ndarray,
    box: Sequence[float],
    *,
    caption: str,
    alpha: float = 0.4,
    colormap: str = "jet",
    sides: tuple[int, int] = FILM_HEATMAP_SIDES,
    film_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Lay a Grad-CAM of the lung crop over the whole film, at the film's own geometry.

    The map explains the network's input, which is the film's lung box (plus margin) resized to the
    network's size; it is resized back onto that box of the film, so it can be read, and laid over the
    original, in the film's rows and columns. The film keeps its aspect ratio and orientation; only a
    film whose long side is outside ``sides`` is resized (uniformly) into that range. Burned in: the
    box's outline, a colour bar (low to high evidence), ``caption`` (e.g. the probability) and
    :data:`NOT_FOR_DIAGNOSTIC_USE`.

    Args:
        film01: ``(rows, columns)`` film in display intensities [0, 1].
        cam: ``(h, w)`` map in [0, 1] over the network input.
        box: the crop the network saw, as fractions of the film ``(row0, row1, col0, col1)``.
        caption: a line of text burned in at the top (must hold no patient identifier).
        alpha: weight of the heatmap inside the box, in [0, 1].
        colormap: a matplotlib colormap name.
        sides: the range of the long side of the output.
        film_shape: the film's ``(rows, columns)`` when ``film01`` is the film reduced by
            :func:`reduce_for_display` (default: ``film01``'s shape); the output's geometry follows it.

    Returns:
        ``(R, C, 3)`` uint8 RGB with ``R / C`` the film's aspect ratio and ``max(R, C)`` in ``sides``.

    Raises:
        TypeError, ValueError: on a malformed film, map, box or option.
    """
    from PIL import Image, ImageDraw, ImageFont

    heat = _check_unit_array("cam", cam)
    given = np.shape(film01)
    if len(given) != 2 or min(given) < 1:
        raise ValueError(f"film01 must be a non-empty 2-D array, got shape {given}")
    shape = given if film_shape is None else (int(film_shape[0]), int(film_shape[1]))
    if len(shape) != 2 or min(shape) < 1 or shape[0] < given[0] or shape[1] < given[1]:
        raise ValueError(f"film_shape must be the film's (rows, columns), got {film_shape!r} for {given}")
    # A hospital film may be 8,000 pixels a side: block-average it to at most twice the display size
    # first (a view and one small array), so the checks and drawing below stay small (float32).
    grey = _check_unit_array("film01", reduce_for_display(film01, sides), np.float32)
    scale = display_scale(shape, sides)
    fractions = _box_fractions(box)
    cmap = _blend_colormap(alpha, colormap)
    rows, cols = (max(1, round(n * scale)) for n in shape)
    levels = Image.fromarray(np.round(grey * 255.0).astype(np.uint8))
    if (rows, cols) != grey.shape:
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
        levels = levels.resize((cols, rows), resample)
    shown = np.asarray(levels, dtype=np.float32) / np.float32(255.0)
    r0, r1, c0, c1 = box_pixels(fractions, rows, cols)
    cam_img = Image.fromarray(heat.astype(np.float32), mode="F").resize(
        (c1 - c0, r1 - r0), Image.Resampling.BILINEAR
    )
    rgb = np.repeat(shown[..., None], 3, axis=2)
    inside = rgb[r0:r1, c0:c1]
    colours = cmap(np.clip(np.asarray(cam_img), 0.0, 1.0), bytes=True)[..., :3]  # uint8, not float64
    rgb[r0:r1, c0:c1] = np.float32(1.0 - alpha) * inside + np.float32(alpha / 255.0) * colours
    # Colour bar: the right edge, 40% of the height, centred.
    bar_w = max(6, cols // 40)
    bar_h = max(20, int(0.4 * rows))
    b_c0 = cols - bar_w - max(4, cols // 60)
    b_r0 = (rows - bar_h) // 2
    ramp = np.linspace(1.0, 0.0, bar_h)[:, None].repeat(bar_w, axis=1)
    rgb[b_r0 : b_r0 + bar_h, b_c0 : b_c0 + bar_w] = cmap(ramp)[..., :3]
    np.clip(rgb, 0.0, 1.0, out=rgb)  # in place: at display size these are 48 MB each
    rgb *= np.float32(255.0)
    image = Image.fromarray(np.round(rgb, out=rgb).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font_size = max(10, rows // 40)
    font = ImageFont.load_default(size=font_size)
    line = max(1, rows // 400)
    draw.rectangle((c0, r0, c1 - 1, r1 - 1), outline=(255, 255, 255), width=line)
    draw.rectangle((b_c0, b_r0, b_c0 + bar_w - 1, b_r0 + bar_h - 1), outline=(255, 255, 255), width=line)
    small = ImageFont.load_default(size=max(8, font_size * 3 // 4))
    for text, y in (("high", b_r0 - font_size), ("low", b_r0 + bar_h + 2)):
        width = draw.textlength(text, font=small)
        draw.text(
            (max(0, b_c0 + bar_w - width), max(0, y)),
            text,
            fill=(255, 255, 255),
            font=small,
            stroke_width=1,
            stroke_fill=(0, 0, 0),
        )
    pad = max(4, font_size // 3)
    for text, y in ((caption, pad), (NOT_FOR_DIAGNOSTIC_USE, rows - font_size - 2 * pad)):
        draw.text(
            (pad, y),
            text,
            fill=(255, 255, 0),
            font=font,
            stroke_width=max(1, font_size // 12),
            stroke_fill=(0, 0, 0),
        )
    return np.asarray(image, dtype=np.uint8)


def heat_inside(cam: np.ndarray, box: Sequence[float], crop: Sequence[float]) -> float:
    """Share of a map's heat mass inside ``box`` (film fractions), for a map lying on ``crop``.

    For the model card: the Grad-CAM of the network input lies on the crop (the lung box plus its margin);
    this tells how much of its mass is on the lung box proper.
    """
    heat = _check_unit_array("cam", cam)
    total = float(heat.sum())
    if total <= 0.0:
        return float("nan")
    h, w = heat.shape
    cr0, cr1, cc0, cc1 = (float(v) for v in crop)
    br0, br1, bc0, bc1 = (float(v) for v in box)

    def span(b0: float, b1: float, c0: float, c1: float, n: int) -> slice:
        lo = int(np.clip(round((b0 - c0) / (c1 - c0) * n), 0, n))
        hi = int(np.clip(round((b1 - c0) / (c1 - c0) * n), lo, n))
        return slice(lo, hi)

    inside = heat[span(br0, br1, cr0, cr1, h), span(bc0, bc1, cc0, cc1, w)]
    return float(inside.sum()) / total
