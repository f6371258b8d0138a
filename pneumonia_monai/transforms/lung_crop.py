"""Crop a chest film to its lung fields (scikit-image threshold and morphology).

Kermany's films come with shoulders, neck, arms, labels and wide borders of air around the child. The
network should spend its pixels on the lungs, so the films are cropped to the bounding box of the two
lung fields with a margin before they are resized.

The detection is classical and cheap, on a thumbnail of at most :data:`THUMBNAIL_SIZE` pixels a side:

1. grey levels are quantised to 256 steps first, so that two encodings of the same film (a JPEG and
   its DICOM conversion, MONOCHROME1 or windowed 12-bit) give the very same crop;
2. Gaussian smoothing, then Otsu's threshold splits air (dark) from tissue and bone (bright); rows
   and columns with almost no tissue (wide air or padding borders) are cut off: what is left is the
   body, where the lungs are looked for;
3. the threshold is taken inside a central band (the outer :data:`_BAND` of each side, where air,
   labels and collimation sit, is ignored), and dark regions are opened and separated from thin
   bridges by an erosion;
4. the largest one or two remaining regions lying in the central part of the film are the lung fields;
5. their bounding box is made symmetric about the spine (the brightest column of the central third),
   so that a lung field that was missed still lies inside it, is stretched down to at least
   :data:`MIN_BOX_HEIGHT` of the body (a consolidated, bright lung base is not dark and must not be
   cut off), and grown by ``margin`` (a fraction of the film's size): that is the crop.

Before any of this, uniform borders (rows and columns of one grey level at the film's edges: export
padding, collimation burned in black or white) are stripped (:func:`strip_uniform_border`): they carry
no information, and left in they would move the body box, the threshold and so the crop. The same film
with and without such a border then gives the same crop.

Where the result is implausible (no region, a box smaller than :data:`MIN_BOX_FRACTION` of the film,
narrower than :data:`MIN_BOX_WIDTH`, or starting below :data:`MAX_APEX_ROW`), the whole film is kept;
the reason is logged and stored in the image's meta dictionary under ``"lung_crop"``; where borders
were stripped, the fallback is the film without them.

:class:`RandLungFieldCropd` is the training version: the same box, each edge moved by a random
fraction of the box (jitter), so the model does not depend on the box's exact edges.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from scipy import ndimage
from skimage import filters, measure, morphology, transform

from pneumonia_monai import checks

logger = logging.getLogger(__name__)

#: Longest side of the thumbnail on which the lungs are found.
THUMBNAIL_SIZE = 128
#: A lung-field box smaller than this fraction of the film's area is not believed.
MIN_BOX_FRACTION = 0.15
#: A lung-field box narrower than this fraction of the film's width is not believed (one lung only).
MIN_BOX_WIDTH = 0.35
#: The box reaches at least this fraction of the body's height below its top (bright, consolidated
#: lung bases are not dark and would otherwise be cut off).
MIN_BOX_HEIGHT = 0.8
#: The lung apices lie in the upper part of a frontal film: a box starting lower is not believed.
MAX_APEX_ROW = 0.3
#: A region is a lung candidate if its centroid lies within this central band (fractions of the size).
_CENTRAL_ROWS = (0.12, 0.85)
_CENTRAL_COLS = (0.08, 0.92)
#: Smallest lung candidate, as a fraction of the thumbnail's area.
_MIN_REGION_FRACTION = 0.01
#: A row or column of the thumbnail belongs to the body when this fraction of it is tissue.
_TISSUE_FRACTION = 0.05
#: Width of the outer band ignored when thresholding, as a fraction of the size.
_BAND = 0.04
#: A border row or column is uniform when its grey levels span at most this much (display scale):
#: a little over one 8-bit step, so that a border re-encoded as JPEG still counts.
BORDER_TOLERANCE = 3.0 / 255.0
#: At most this fraction of each side is stripped as border.
MAX_BORDER_FRACTION = 0.3
#: Start of the crop status of a film with nothing to look at (uniform or near-uniform): such a film
#: is never scored (:func:`lacks_content`).
NO_CONTENT = "no usable image content"


def lacks_content(status: str) -> bool:
    """Whether a crop status (``meta["lung_crop"]``) says the film has no usable content.

    A uniform or near-uniform film (blank, black, grey: an exposure or export failure) gives a status
    holding :data:`NO_CONTENT`; inference turns such a film into an error row instead of a score.
    """
    return NO_CONTENT in status


def strip_uniform_border(image: np.ndarray, tolerance: float = BORDER_TOLERANCE) -> tuple[int, int, int, int]:
    """Return the part of a film inside its uniform borders: ``(row_start, row_stop, col_start, col_stop)``.

    From each edge inwards, rows (columns) whose values span at most ``tolerance`` and lie within
    ``tolerance`` of that edge's first row (column) are border; at most :data:`MAX_BORDER_FRACTION`
    of a side is stripped. A film without borders gives ``(0, rows, 0, cols)``.

    Raises:
        ValueError: if ``image`` is not 2-D.
    """
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got shape {image.shape}")
    rows, cols = image.shape

    def run(lows: np.ndarray, highs: np.ndarray, limit: int) -> int:
        """Length of the uniform run at the start of (lows, highs), the per-line minima and maxima."""
        ref = (float(lows[0]) + float(highs[0])) / 2.0
        ok = (
            ((highs - lows) <= tolerance)
            & (np.abs(highs - ref) <= tolerance)
            & (np.abs(lows - ref) <= tolerance)
        )
        bad = np.flatnonzero(~ok[:limit])
        return int(bad[0]) if bad.size else limit

    row_lo, row_hi = image.min(axis=1), image.max(axis=1)
    col_lo, col_hi = image.min(axis=0), image.max(axis=0)
    r_limit, c_limit = int(MAX_BORDER_FRACTION * rows), int(MAX_BORDER_FRACTION * cols)
    top = run(row_lo, row_hi, r_limit)
    bottom = run(row_lo[::-1], row_hi[::-1], r_limit)
    left = run(col_lo, col_hi, c_limit)
    right = run(col_lo[::-1], col_hi[::-1], c_limit)
    return top, rows - bottom, left, cols - right


def _body_box(thumb: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns of a thumbnail that hold tissue: ``(row_start, row_stop, col_start, col_stop)``."""
    tissue = thumb > filters.threshold_otsu(thumb)
    rows = np.flatnonzero(tissue.mean(axis=1) >= _TISSUE_FRACTION)
    cols = np.flatnonzero(tissue.mean(axis=0) >= _TISSUE_FRACTION)
    if rows.size < 8 or cols.size < 8:
        return 0, thumb.shape[0], 0, thumb.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _thumbnail(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Quantise ``image`` to 256 grey levels and shrink it to at most :data:`THUMBNAIL_SIZE` a side.

    A film more than twice the thumbnail's size is first averaged over ``k`` x ``k`` blocks (``k`` the
    largest power of two that keeps it at least twice the thumbnail's size; the last ``rows % k`` rows
    and ``cols % k`` columns are left out), then resized with anti-aliasing as smaller films are. ``k``
    is a power of two so that a film decoded at half or a quarter of its size
    (:mod:`pneumonia_monai.dicom.reduced`) is averaged into the same thumbnail blocks, and gets the
    same crop as when it is decoded whole. The block
    average is exact area down-sampling and costs one pass over the film, where anti-aliasing a 2,000-pixel
    film with a Gaussian costs over ten times more. The two thumbnails differ by about one grey level
    (median; the block average is sharper at edges), and the lung boxes found on them agree with the box
    of the same film at training size (``tests/test_transforms.py``).

    Returns:
        ``(thumbnail, (rows_used, cols_used))``: the float64 thumbnail and the part of the film it
        shows (rows and columns from 0).
    """
    from pneumonia_monai.dicom.reduced import block_sums  # the DICOM stack is imported when used

    rows, cols = image.shape
    k = 1 << (max(1, max(rows, cols) // (2 * THUMBNAIL_SIZE)).bit_length() - 1)  # a power of two
    if k >= 2:
        rows, cols = rows - rows % k, cols - cols % k
        levels = np.empty((rows // k, cols // k), dtype=np.float64)
        # In bands of whole blocks, so that a hospital-size film never has a full-size copy (memory
        # stays bounded); each block is summed exactly as it would be in one piece.
        band = k * max(1, 512 // k)
        for r in range(0, rows, band):
            chunk = np.clip(image[r : min(r + band, rows), :cols], 0.0, 1.0)  # a copy of the band
            chunk *= 255.0
            np.rint(chunk, out=chunk)
            # grey levels are integers <= 255, so float32 sums of up to 65,793 of them are exact
            sums = block_sums(chunk, k)
            levels[r // k : r // k + sums.shape[0]] = sums.astype(np.float64) / (k * k)
    else:
        levels = np.clip(image, 0.0, 1.0)  # a new array, then in place
        levels *= 255.0
        np.rint(levels, out=levels)
    scale = THUMBNAIL_SIZE / max(levels.shape)
    if scale < 1.0:
        shape = (max(8, round(levels.shape[0] * scale)), max(8, round(levels.shape[1] * scale)))
        levels = transform.resize(levels, shape, order=1, anti_aliasing=True, preserve_range=True)
    return levels.astype(np.float64, copy=False), (rows, cols)


def find_lung_box(image: np.ndarray, margin: float = 0.05) -> tuple[tuple[int, int, int, int] | None, str]:
    """Find the lung fields of a film.

    Args:
        image: ``(rows, columns)`` display intensities in [0, 1] (air dark).
        margin: margin added on each side, as a fraction of the film's height and width.

    Returns:
        ``((row_start, row_stop, col_start, col_stop), "detected")`` in the film's pixels, or
        ``(None, reason)`` where no plausible lung fields were found.

    Raises:
        ValueError: if ``image`` is not 2-D or ``margin`` is negative.
    """
    box, reason, _ = _find_lungs(image, margin)
    return box, reason


def _find_lungs(
    image: np.ndarray, margin: float
) -> tuple[tuple[int, int, int, int] | None, str, tuple[np.ndarray, tuple[int, int]] | None]:
    """:func:`find_lung_box`, and where the lungs were found, the thumbnail mask of the lung regions.

    Returns:
        ``(box, reason, fields)``: ``fields`` is ``(mask, (rows_used, cols_used))``, a boolean mask of the
        thumbnail and the part of the film it shows, or None where no plausible lung fields were found.
    """
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got shape {image.shape}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    rows, cols = image.shape
    thumb, (rows_used, cols_used) = _thumbnail(image)
    thumb = filters.gaussian(thumb, sigma=1.0, preserve_range=True)
    if float(thumb.max() - thumb.min()) < 8.0:
        return None, f"{NO_CONTENT} (the film is uniform: under 8 of 255 grey levels of contrast)", None
    # Stage 1: the body. Rows and columns without tissue (wide air or padding borders) are cut off,
    # so that the air around the patient cannot merge with the lung fields.
    b_r0, b_r1, b_c0, b_c1 = _body_box(thumb)
    body = thumb[b_r0:b_r1, b_c0:b_c1]
    t_rows, t_cols = thumb.shape
    s_rows, s_cols = body.shape
    # Stage 2: the lung fields, dark regions inside the body. The threshold is taken on a central
    # band only: the edges (air, labels, collimation) would skew it.
    band = np.zeros_like(body, dtype=bool)
    band[
        round(_BAND * s_rows) : round((1 - _BAND) * s_rows),
        round(_BAND * s_cols) : round((1 - _BAND) * s_cols),
    ] = True
    inner = body[band]
    if inner.size == 0 or float(inner.max() - inner.min()) < 8.0:
        return None, f"{NO_CONTENT} (the body has under 8 of 255 grey levels of contrast)", None
    dark = (body < filters.threshold_otsu(inner)) & band
    dark = ndimage.binary_opening(dark, structure=morphology.disk(2))
    dark = ndimage.binary_erosion(dark, structure=morphology.disk(1))
    labels = measure.label(dark, connectivity=1)
    candidates = []
    for region in measure.regionprops(labels):
        if region.area < _MIN_REGION_FRACTION * s_rows * s_cols:
            continue
        r, c = region.centroid
        if (
            _CENTRAL_ROWS[0] <= r / s_rows <= _CENTRAL_ROWS[1]
            and _CENTRAL_COLS[0] <= c / s_cols <= _CENTRAL_COLS[1]
        ):
            candidates.append(region)
    if not candidates:
        return None, "no dark region inside the body", None
    lungs = sorted(candidates, key=lambda reg: reg.area, reverse=True)[:2]
    r0 = (b_r0 + min(reg.bbox[0] for reg in lungs)) / t_rows
    c0 = (b_c0 + min(reg.bbox[1] for reg in lungs)) / t_cols
    r1 = (b_r0 + max(reg.bbox[2] for reg in lungs)) / t_rows
    c1 = (b_c0 + max(reg.bbox[3] for reg in lungs)) / t_cols
    # Never cut a lung off: make the box symmetric about the spine, the brightest column of the
    # central third (a missed or merged lung field then still lies inside the box).
    third = body[:, s_cols // 3 : 2 * s_cols // 3]
    spine = (b_c0 + s_cols // 3 + float(np.argmax(third.mean(axis=0)))) / t_cols
    c0, c1 = max(0.0, min(c0, 2 * spine - c1)), min(1.0, max(c1, 2 * spine - c0))
    b_top, b_height = b_r0 / t_rows, (b_r1 - b_r0) / t_rows
    b_width = (b_c1 - b_c0) / t_cols
    if r0 - b_top > MAX_APEX_ROW * b_height:
        return None, f"lung box starts {(r0 - b_top) / b_height:.0%} down the body (apices missed)", None
    # Consolidated lung is bright, not dark: a pneumonic base can be missed. Never stop the box short
    # of MIN_BOX_HEIGHT of the body below its top, so the bases stay in.
    r1 = min(b_top + b_height, max(r1, r0 + MIN_BOX_HEIGHT * b_height))
    area = (r1 - r0) * (c1 - c0) / (b_height * b_width)
    if area < MIN_BOX_FRACTION:
        return None, f"lung box covers only {area:.0%} of the body", None
    if (c1 - c0) / b_width < MIN_BOX_WIDTH:
        width = (c1 - c0) / b_width
        return None, f"lung box spans only {width:.0%} of the body's width (one lung found)", None
    # Fractions of the thumbnail are fractions of the part of the film it was made of.
    box = (
        max(0, int(np.floor(r0 * rows_used - margin * rows))),
        min(rows, int(np.ceil(r1 * rows_used + margin * rows))),
        max(0, int(np.floor(c0 * cols_used - margin * cols))),
        min(cols, int(np.ceil(c1 * cols_used + margin * cols))),
    )
    # The regions themselves, grown back by the erosion that separated them, on the thumbnail.
    fields = np.zeros(thumb.shape, dtype=bool)
    fields[b_r0:b_r1, b_c0:b_c1] = ndimage.binary_dilation(
        np.isin(labels, [reg.label for reg in lungs]), structure=morphology.disk(1)
    )
    return box, "detected", (fields, (rows_used, cols_used))


def locate_crop(image: np.ndarray, margin: float = 0.05) -> tuple[tuple[int, int, int, int], str]:
    """The crop of a film: its lung box, else the film inside its uniform borders.

    Borders are stripped first (:func:`strip_uniform_border`), the lungs are found inside
    (:func:`find_lung_box`), and the box is returned in the whole film's pixels.

    Returns:
        ``(box, reason)``: ``reason`` is ``"detected"``, or why the lung fields were not found (the
        box is then the film inside its borders).
    """
    inside = _inside_borders(image)
    if inside is None:
        return (0, image.shape[0], 0, image.shape[1]), f"{NO_CONTENT} (the film is uniform)"
    b_r0, b_r1, b_c0, b_c1 = inside
    box, reason = find_lung_box(image[b_r0:b_r1, b_c0:b_c1], margin)
    if box is None:
        return (b_r0, b_r1, b_c0, b_c1), reason
    r0, r1, c0, c1 = box
    return (b_r0 + r0, b_r0 + r1, b_c0 + c0, b_c0 + c1), reason


def _inside_borders(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """The film inside its uniform borders (:func:`strip_uniform_border`); None where nothing is left."""
    b_r0, b_r1, b_c0, b_c1 = strip_uniform_border(image)
    inner = image[b_r0:b_r1, b_c0:b_c1]
    if b_r1 - b_r0 < 16 or b_c1 - b_c0 < 16 or float(inner.max() - inner.min()) <= BORDER_TOLERANCE:
        return None
    return b_r0, b_r1, b_c0, b_c1


def lung_field_mask(image: np.ndarray) -> np.ndarray | None:
    """The lung fields the crop is built on, as a boolean mask of the film's shape.

    The regions :func:`locate_crop` finds the lungs from (dark regions of the body, inside the film's
    uniform borders, on the thumbnail) are laid back onto the film (bilinear, at one half): a research
    overlay of what the crop saw, not a delineation of the lungs' edges. The box itself is grown and
    made symmetric; the mask is not.

    Args:
        image: ``(rows, columns)`` display intensities in [0, 1] (air dark).

    Returns:
        The mask, or None where no plausible lung fields were found (the crop fell back).

    Raises:
        ValueError: if ``image`` is not 2-D.
    """
    from PIL import Image

    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got shape {image.shape}")
    inside = _inside_borders(image)
    if inside is None:
        return None
    b_r0, b_r1, b_c0, b_c1 = inside
    _, reason, fields = _find_lungs(image[b_r0:b_r1, b_c0:b_c1], 0.0)
    if fields is None:
        logger.debug("no lung fields to mask (%s)", reason)
        return None
    thumb, (rows_used, cols_used) = fields
    shown = Image.fromarray(thumb.astype(np.float32), mode="F").resize(
        (cols_used, rows_used), Image.Resampling.BILINEAR
    )
    mask = np.zeros(image.shape, dtype=bool)
    mask[b_r0 : b_r0 + rows_used, b_c0 : b_c0 + cols_used] = np.asarray(shown) >= 0.5
    return mask


def crop_fractions(meta: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """The crop a preprocessed film's meta records (``lung_box`` over ``film_shape``), as film fractions.

    Returns:
        ``(row0, row1, col0, col1)`` fractions of the film, or None where the meta does not say.
    """
    box, shape = meta.get("lung_box"), meta.get("film_shape")
    if box is None or shape is None or len(box) != 4 or len(shape) != 2 or min(shape) < 1:
        return None
    rows, cols = float(shape[0]), float(shape[1])
    return (float(box[0]) / rows, float(box[1]) / rows, float(box[2]) / cols, float(box[3]) / cols)


def _with_film_shape(cropped: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
    """Record the film's ``(rows, columns)`` before the crop as ``film_shape`` in the meta."""
    if isinstance(cropped, MetaTensor):
        cropped.meta["film_shape"] = [int(film.shape[-2]), int(film.shape[-1])]
    return cropped


class LungFieldCrop(Transform):
    """Crop a ``(C, rows, columns)`` image to its lung fields, or keep it whole and say why.

    Args:
        margin: margin around the lung box, as a fraction of the film's height and width.
        enabled: ``False`` switches cropping off (the image passes through, noted in its meta).
    """

    def __init__(self, margin: float = 0.05, enabled: bool = True) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        self.margin = float(margin)
        self.enabled = checks.flag("lung_crop", enabled, command_line=True)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Return the cropped image; ``img.meta["lung_crop"]`` says what was done."""
        if img.ndim != 3:
            raise ValueError(f"expected a (C, rows, columns) image, got shape {tuple(img.shape)}")
        if not self.enabled:
            return _with_film_shape(self._note(img, "disabled", None), img)
        box, reason = locate_crop(img[0].detach().cpu().numpy(), self.margin)
        if reason != "detected":
            name = getattr(img, "meta", {}).get("filename_or_obj", "image")
            logger.debug(
                "lung fields not found in %s (%s): keeping the film inside its borders", name, reason
            )
            reason = f"fallback: {reason}"
        r0, r1, c0, c1 = box
        return _with_film_shape(self._note(img[:, r0:r1, c0:c1], reason, box), img)

    @staticmethod
    def _note(img: torch.Tensor, status: str, box: tuple[int, int, int, int] | None) -> torch.Tensor:
        """Record ``status``, the box and the film's shape in the meta (the whole film when ``box`` is None).

        ``lung_box`` is in the pixels of the film before the crop, whose ``(rows, columns)`` are
        ``film_shape``: a heatmap of the crop is laid back onto the film with them.
        """
        if isinstance(img, MetaTensor):
            # Same keys and shapes whatever happened, so that batches collate.
            rows, cols = img.shape[-2:]
            img.meta["lung_crop"] = status
            img.meta["lung_box"] = list(box) if box is not None else [0, int(rows), 0, int(cols)]
        return img


class LungFieldCropd(MapTransform):
    """Dictionary version of :class:`LungFieldCrop`."""

    def __init__(
        self,
        keys: KeysCollection,
        margin: float = 0.05,
        enabled: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cropper = LungFieldCrop(margin=margin, enabled=enabled)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Crop every image under ``keys``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key])
        return d


class RandLungFieldCropd(RandomizableTransform, MapTransform):
    """Training version of :class:`LungFieldCropd`: the same box, each edge moved at random.

    Each of the four edges moves by a uniform fraction in ``[-jitter, jitter]`` of the box's height
    (rows) or width (columns), kept inside the film.

    Args:
        keys: keys of the films.
        margin: margin around the lung box, as for :class:`LungFieldCrop`.
        jitter: largest move of an edge, as a fraction of the box's size, in [0, 0.5].
        prob: probability of moving the edges (the box is used as found otherwise).
    """

    def __init__(
        self,
        keys: KeysCollection,
        margin: float = 0.05,
        jitter: float = 0.05,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= jitter <= 0.5:
            raise ValueError(f"jitter must be in [0, 0.5], got {jitter!r}")
        self.jitter = float(jitter)
        self.cropper = LungFieldCrop(margin=margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Crop every film under ``keys`` to its (jittered) lung box."""
        d = dict(data)
        self.randomize(None)
        moves = self.R.uniform(-self.jitter, self.jitter, size=4) if self._do_transform else np.zeros(4)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 3:
                raise ValueError(f"expected a (C, rows, columns) image, got shape {tuple(img.shape)}")
            rows, cols = img.shape[-2:]
            (r0, r1, c0, c1), reason = locate_crop(img[0].detach().cpu().numpy(), self.cropper.margin)
            h, w = r1 - r0, c1 - c0
            r0 = int(np.clip(round(r0 + moves[0] * h), 0, rows - 16))
            r1 = int(np.clip(round(r1 + moves[1] * h), r0 + 16, rows))
            c0 = int(np.clip(round(c0 + moves[2] * w), 0, cols - 16))
            c1 = int(np.clip(round(c1 + moves[3] * w), c0 + 16, cols))
            status = reason if reason == "detected" else f"fallback: {reason}"
            d[key] = _with_film_shape(self.cropper._note(img[:, r0:r1, c0:c1], status, (r0, r1, c0, c1)), img)
        return d
