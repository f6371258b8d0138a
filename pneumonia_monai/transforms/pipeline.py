"""The one deterministic preprocessing chain shared by training, evaluation and inference.

Every bundle config uses :class:`ChestXRayPreprocessd` for the deterministic part of its
preprocessing, so the chain is written once and cannot drift between the configs:

1. :class:`~pneumonia_monai.transforms.io.LoadChestXRayd`: JPEG/PNG or DICOM to ``(1, rows, cols)``
   display intensities in [0, 1];
2. :class:`~pneumonia_monai.transforms.lung_crop.LungFieldCropd`: crop to the lung fields (optional);
3. :class:`monai.transforms.Resized` to ``spatial_size`` with area interpolation (anti-aliased
   down-sampling of 2,000-pixel DICOM films);
4. :class:`monai.transforms.EnsureTyped` to float32.

It is a plain (non-random) transform, so :class:`monai.data.CacheDataset` caches its output.

Training uses :func:`training_chain`: the same steps in the same order, with the route augmentations
of :mod:`pneumonia_monai.transforms.augment` between loading and cropping (they act on the whole film,
as the route does) and the lung box jittered (:class:`~.lung_crop.RandLungFieldCropd`).
Loading is deterministic and first, so a ``CacheDataset`` caches the loaded films and draws the rest
anew each epoch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform, Resized, Transform

from pneumonia_monai import checks
from pneumonia_monai.transforms.io import LoadChestXRayd
from pneumonia_monai.transforms.lung_crop import LungFieldCropd, RandLungFieldCropd


def _size(spatial_size: Sequence[int] | int) -> tuple[int, int]:
    size = (int(spatial_size),) * 2 if isinstance(spatial_size, int) else tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"spatial_size must be two sizes of at least 16 pixels, got {spatial_size!r}")
    return size[0], size[1]


def _chain(
    keys: KeysCollection,
    size: tuple[int, int],
    cropper: Transform,
    route: Sequence[Transform] = (),
    allow_missing_keys: bool = False,
    min_side: int | None = None,
) -> list[Transform]:
    """The steps, in their one order: load, (route augmentations), crop, resize, float32."""
    return [
        LoadChestXRayd(keys, allow_missing_keys=allow_missing_keys, min_side=min_side),
        *route,
        cropper,
        Resized(keys, spatial_size=size, mode="area", allow_missing_keys=allow_missing_keys),
        EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=allow_missing_keys),
    ]


def training_chain(
    keys: KeysCollection,
    spatial_size: Sequence[int] | int = (224, 224),
    lung_crop: bool = True,
    crop_margin: float = 0.05,
    route_augmentation: Sequence[Transform] = (),
    box_jitter: float = 0.05,
) -> Compose:
    """The preprocessing chain of training: :class:`ChestXRayPreprocessd`'s steps, augmented.

    Args:
        keys: keys of the film paths.
        spatial_size: output ``(rows, columns)``.
        lung_crop: crop to the lung fields (``False``: resize the whole film, no jitter).
        crop_margin: margin around the lung fields.
        route_augmentation: random transforms applied to the whole loaded film, before the crop.
        box_jitter: largest move of each lung-box edge, as a fraction of the box.
    """
    size = _size(spatial_size)
    cropper: Transform = (
        RandLungFieldCropd(keys, margin=crop_margin, jitter=box_jitter)
        if checks.flag("lung_crop", lung_crop, command_line=True)
        else LungFieldCropd(keys, margin=crop_margin, enabled=False)
    )
    return Compose(_chain(keys, size, cropper, list(route_augmentation)))


class ChestXRayPreprocessd(MapTransform):
    """Load, crop to the lungs and resize the films under ``keys``.

    Args:
        keys: keys of the film paths (usually ``"image"``).
        spatial_size: output ``(rows, columns)``.
        lung_crop: crop to the lung fields (``False``: resize the whole film).
        crop_margin: margin around the lung fields, as a fraction of the film's size.
        reduced_decode: decode large films only as finely as ``spatial_size`` needs (shorter side at
            least :func:`~pneumonia_monai.dicom.reduced.min_decoded_side`; see
            :mod:`pneumonia_monai.dicom.reduced`). ``False`` (the default) decodes every pixel.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int = (224, 224),
        lung_crop: bool = True,
        crop_margin: float = 0.05,
        allow_missing_keys: bool = False,
        reduced_decode: bool = False,
    ) -> None:
        from pneumonia_monai.dicom.reduced import min_decoded_side

        super().__init__(keys, allow_missing_keys)
        self.spatial_size = _size(spatial_size)
        reduced = checks.flag("reduced_decode", reduced_decode, command_line=True)
        self.min_side = min_decoded_side(self.spatial_size) if reduced else None
        cropper = LungFieldCropd(
            keys, margin=crop_margin, enabled=lung_crop, allow_missing_keys=allow_missing_keys
        )
        self.chain = Compose(
            _chain(
                keys,
                self.spatial_size,
                cropper,
                allow_missing_keys=allow_missing_keys,
                min_side=self.min_side,
            )
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each film replaced by its preprocessed tensor."""
        return self.chain(dict(data))
