"""Grad-CAM maps laid over films, for display, and the PNG writer.

:func:`overlay` blends a map over the network input; :func:`film_heatmap` lays the map of the lung crop
over the whole film at its own geometry, with the crop's outline, a colour bar and captions (what
``infer`` writes as PNG and DICOM Secondary Capture, and the evaluation montage shows).
:func:`box_pixels` places a crop on a film's grid (the NIfTI heatmap masks use it too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumonia_monai import checks
from pneumonia_monai.atomic import atomic_open

logger = logging.getLogger(__name__)


def check_unit_array(name: str, array: np.ndarray, dtype: type[np.floating] = np.float64) -> np.ndarray:
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

    checks.probability("alpha", alpha)
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
        cam: ``(h, w)`` map in [0, 1], e.g. from :func:`~pneumonia_monai.visualize.gradcam.gradcam`.
        alpha: weight of the heatmap, in [0, 1].
        colormap: name of a matplotlib colormap.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.

    Raises:
        TypeError: if an array is not numeric.
        ValueError: if a shape, range, ``alpha`` or ``colormap`` is invalid.
    """
    grey = check_unit_array("image01", image01)
    heat = check_unit_array("cam", cam)
    cmap = _blend_colormap(alpha, colormap)
    if heat.shape != grey.shape:
        from skimage.transform import resize

        heat = np.clip(resize(heat, grey.shape, order=1, mode="edge", anti_aliasing=False), 0.0, 1.0)
    heat_rgb = cmap(heat)[..., :3]
    blended = (1.0 - alpha) * grey[..., None] + alpha * heat_rgb
    return np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png_atomic(rgb: np.ndarray, path: str | Path) -> None:
    """Write an RGB image as PNG; readers never see a partial file (temporary file + os.replace).

    Args:
        rgb: ``(rows, columns, 3)`` uint8 array.
        path: destination; its folder must exist.

    Raises:
        TypeError, ValueError: if ``rgb`` is not a ``(rows, columns, 3)`` uint8 array.
    """
    from PIL import Image

    checks.rgb_image("rgb", rgb)
    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(rgb)).save(fh, format="PNG")


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

    heat = check_unit_array("cam", cam)
    given = np.shape(film01)
    if len(given) != 2 or min(given) < 1:
        raise ValueError(f"film01 must be a non-empty 2-D array, got shape {given}")
    shape = given if film_shape is None else (int(film_shape[0]), int(film_shape[1]))
    if len(shape) != 2 or min(shape) < 1 or shape[0] < given[0] or shape[1] < given[1]:
        raise ValueError(f"film_shape must be the film's (rows, columns), got {film_shape!r} for {given}")
    # A hospital film may be 8,000 pixels a side: block-average it to at most twice the display size
    # first (a view and one small array), so the checks and drawing below stay small (float32).
    grey = check_unit_array("film01", reduce_for_display(film01, sides), np.float32)
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
