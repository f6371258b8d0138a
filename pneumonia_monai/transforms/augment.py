"""Training augmentations that model the route a film takes before it reaches the model.

A chest film reaches the classifier after acquisition, collimation, export and transfer, each of
which can change it without changing the diagnosis. The independent evaluation found the model
fragile to exactly these changes (a 4% black border flipped 5.4% of decisions), so training sees them:

- :class:`RandRescaled`: the film at another size (0.5-2x), resampled (area down, bicubic up), as a
  film scanned at another resolution or resized by an export;
- :class:`RandJpegd`: the film re-encoded as 8-bit JPEG at quality 50-95 (a lossy export or viewer);
- :class:`RandBorderd`: uniform black or white borders, padded around the film or burned over its
  edges (collimation, export padding), 0-8% of each side;
- :class:`RandWindowd`: another window (the VOI chosen by the modality or the exporter).

They act on the whole film (``(1, rows, columns)`` in [0, 1]), before the lung crop, so the crop sees
what it would see at inference. Each is a MONAI :class:`~monai.transforms.RandomizableTransform`, so
:class:`~monai.data.CacheDataset` caches the loading before them and ``set_determinism`` /
``set_random_state`` make them reproducible.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from PIL import Image

from pneumonia_monai import checks


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """Return ``value`` as ``(a, b)`` with ``low <= a <= b <= high``, or raise naming it."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be two numbers, got {value!r}") from None
    if not low <= a <= b <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return a, b


def _check_prob(prob: float) -> float:
    return checks.probability("prob", prob)


def _like(img: torch.Tensor, array: torch.Tensor) -> torch.Tensor:
    """``array`` with ``img``'s meta (spatial shape updated), as float32."""
    out = array.to(torch.float32).contiguous()
    if isinstance(img, MetaTensor):
        meta = dict(img.meta)
        meta["spatial_shape"] = np.asarray(out.shape[1:])
        return MetaTensor(out, meta=meta)
    return out


class _RandFilmd(RandomizableTransform, MapTransform):
    """Base: draw once per call (:meth:`draw`), apply to every key (:meth:`apply`)."""

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, _check_prob(prob))

    def draw(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, img: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the films under ``keys`` changed (with probability ``prob``)."""
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        params = self.draw()
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 3:
                raise ValueError(f"{key!r}: expected a (C, rows, columns) film, got shape {tuple(img.shape)}")
            d[key] = self.apply(img, params)
        return d


class RandRescaled(_RandFilmd):
    """Resample the film by a log-uniform factor in ``scale_range`` (area down, bicubic up, clipped).

    Args:
        keys: keys of the films.
        prob: probability of rescaling.
        scale_range: ``(min, max)`` factor of both sides, within [0.1, 4].
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        scale_range: Sequence[float] = (0.5, 2.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.scale_range = _check_range("scale_range", scale_range, 0.1, 4.0)

    def draw(self) -> dict[str, Any]:
        """Draw the factor."""
        low, high = np.log(self.scale_range[0]), np.log(self.scale_range[1])
        return {"scale": float(np.exp(self.R.uniform(low, high)))}

    def apply(self, img: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Resample ``img``."""
        rows, cols = img.shape[-2:]
        size = (max(16, round(rows * params["scale"])), max(16, round(cols * params["scale"])))
        x = torch.as_tensor(img, dtype=torch.float32).as_subclass(torch.Tensor)[None]
        if params["scale"] < 1.0:
            out = F.interpolate(x, size=size, mode="area")
        else:
            out = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
        return _like(img, out[0])


class RandJpegd(_RandFilmd):
    """Re-encode the film as an 8-bit greyscale JPEG of a uniform quality in ``quality_range``.

    This models a lossy 8-bit export (a JPEG film is 8-bit by nature), so the 8-bit quantisation is
    the point of it; it is a training augmentation, never applied to a film being scored.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        quality_range: Sequence[int] = (50, 95),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        low, high = _check_range("quality_range", quality_range, 1, 100)
        self.quality_range = (int(low), int(high))

    def draw(self) -> dict[str, Any]:
        """Draw the quality."""
        return {"quality": int(self.R.randint(self.quality_range[0], self.quality_range[1] + 1))}

    def apply(self, img: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Encode and decode ``img``, channel by channel."""
        channels = []
        for channel in torch.as_tensor(img).detach().cpu().numpy():
            levels = np.rint(np.clip(channel, 0.0, 1.0) * 255.0).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(levels, mode="L").save(buffer, format="JPEG", quality=params["quality"])
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                channels.append(np.asarray(decoded.convert("L"), dtype=np.float32) / 255.0)
        return _like(img, torch.from_numpy(np.stack(channels)))


class RandBorderd(_RandFilmd):
    """Add uniform black or white borders: padded around the film, or burned over its edges.

    Each side gets its own width, uniform in ``fraction_range`` of the film's size on that axis.

    Args:
        keys: keys of the films.
        prob: probability of adding borders.
        fraction_range: ``(min, max)`` width of each border as a fraction of the side, within [0, 0.3].
        values: border intensities to choose from (0 black, 1 white).
        pad_prob: probability that the borders are padded around the film (it grows) rather than
            burned over its edges (it keeps its size).
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        fraction_range: Sequence[float] = (0.0, 0.08),
        values: Sequence[float] = (0.0, 1.0),
        pad_prob: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.fraction_range = _check_range("fraction_range", fraction_range, 0.0, 0.3)
        self.values = tuple(float(v) for v in values)
        if not self.values or any(not 0.0 <= v <= 1.0 for v in self.values):
            raise ValueError(f"values must be intensities in [0, 1], got {values!r}")
        self.pad_prob = _check_prob(pad_prob)

    def draw(self) -> dict[str, Any]:
        """Draw the four widths, the value and pad-or-burn."""
        return {
            "fractions": [float(self.R.uniform(*self.fraction_range)) for _ in range(4)],
            "value": float(self.values[self.R.randint(len(self.values))]),
            "pad": bool(self.R.rand() < self.pad_prob),
        }

    def apply(self, img: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Add the borders to ``img``."""
        rows, cols = img.shape[-2:]
        top, bottom = (round(f * rows) for f in params["fractions"][:2])
        left, right = (round(f * cols) for f in params["fractions"][2:])
        x = torch.as_tensor(img, dtype=torch.float32).as_subclass(torch.Tensor)
        if params["pad"]:
            out = F.pad(x, (left, right, top, bottom), mode="constant", value=params["value"])
        else:
            out = x.clone()
            out[:, :top, :] = params["value"]
            out[:, rows - bottom :, :] = params["value"]
            out[:, :, :left] = params["value"]
            out[:, :, cols - right :] = params["value"]
        return _like(img, out)


class RandWindowd(_RandFilmd):
    """Re-window the film: ``(x - low) / (high - low)``, clipped to [0, 1].

    ``low`` is uniform in ``low_range`` and ``high`` in ``high_range`` (display intensities): a low
    above 0 or a high below 1 narrows the window (contrast up, ends clipped), the other way widens it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        low_range: Sequence[float] = (-0.1, 0.1),
        high_range: Sequence[float] = (0.9, 1.1),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.low_range = _check_range("low_range", low_range, -0.5, 0.5)
        self.high_range = _check_range("high_range", high_range, 0.5, 1.5)

    def draw(self) -> dict[str, Any]:
        """Draw the window's ends."""
        return {
            "low": float(self.R.uniform(*self.low_range)),
            "high": float(self.R.uniform(*self.high_range)),
        }

    def apply(self, img: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Re-window ``img``."""
        x = torch.as_tensor(img, dtype=torch.float32).as_subclass(torch.Tensor)
        out = ((x - params["low"]) / (params["high"] - params["low"])).clamp_(0.0, 1.0)
        return _like(img, out)
