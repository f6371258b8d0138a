"""A grid of titled images as one PNG, for reports (the evaluation's Grad-CAM montage)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pneumonia_monai import checks
from pneumonia_monai.atomic import atomic_open
from pneumonia_monai.visualize.overlay import check_unit_array

logger = logging.getLogger(__name__)


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

    checks.positive_int("columns", columns)
    checks.positive_int("dpi", dpi)
    checks.positive_number("tile_inches", tile_inches)
    tiles = list(tiles)
    if not tiles:
        raise ValueError("tiles is empty")
    checked: list[tuple[np.ndarray, str]] = []
    for index, tile in enumerate(tiles):
        if not (isinstance(tile, tuple) and len(tile) == 2 and isinstance(tile[1], str)):
            raise TypeError(f"tile {index} must be an (image, title) tuple, got {type(tile).__name__}")
        image, title = tile
        if isinstance(image, np.ndarray) and image.ndim == 3:
            checks.rgb_image("rgb", image)
        else:
            image = check_unit_array(f"tile {index} image", image)
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
