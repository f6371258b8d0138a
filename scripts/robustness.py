r"""How much the bundle's result moves when a validation film takes another route here.

Each validation film is scored as it is, then after each benign change a film meets on its way (the
changed film is written to a file and goes through the bundle's whole ``preprocessing``, as a file
sent by a site would):

- ``border_black`` / ``border_white``: a uniform 4% border around the film (export padding);
- ``upscale_2x``: the film twice as large, bicubic (scanned at a higher resolution);
- ``downscale_half``: the film half as large, area-averaged;
- ``jpeg_70``: re-encoded as JPEG quality 70;
- ``window``: a narrower window (display levels 0.05-0.95 stretched to 0-1).

Printed per change: mean and largest ``|delta p|`` of the calibrated p(pneumonia), and the share of
decisions (at the stored threshold) that flip. The table is also written as JSON.

Usage::

    python scripts/robustness.py --datalist bundle/runs/datalist.json --output /tmp/robustness [--limit 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pneumonia_monai.atomic import atomic_open
from pneumonia_monai.data.datalist import resolve_items
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.transforms.io import load_raster

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("robustness")


def _levels(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _border(value: int) -> Callable[[np.ndarray], Image.Image]:
    def change(image: np.ndarray) -> Image.Image:
        rows, cols = image.shape
        pad = ((round(0.04 * rows),) * 2, (round(0.04 * cols),) * 2)
        return Image.fromarray(np.pad(_levels(image), pad, constant_values=value))

    return change


def _resize(factor: float, resample: Image.Resampling) -> Callable[[np.ndarray], Image.Image]:
    def change(image: np.ndarray) -> Image.Image:
        film = Image.fromarray(_levels(image))
        return film.resize((round(film.width * factor), round(film.height * factor)), resample)

    return change


def _window(image: np.ndarray) -> Image.Image:
    return Image.fromarray(_levels((image - 0.05) / 0.9))


#: name -> (change, file suffix, save options)
PERTURBATIONS: dict[str, tuple[Callable[[np.ndarray], Image.Image], str, dict[str, Any]]] = {
    "border_black": (_border(0), ".png", {}),
    "border_white": (_border(255), ".png", {}),
    "upscale_2x": (_resize(2.0, Image.Resampling.BICUBIC), ".png", {}),
    "downscale_half": (_resize(0.5, Image.Resampling.BOX), ".png", {}),
    "jpeg_70": (lambda image: Image.fromarray(_levels(image)), ".jpg", {"quality": 70}),
    "window": (_window, ".png", {}),
}


def score(bundle: InferenceBundle, paths: list[str], batch_size: int = 16) -> np.ndarray:
    """Calibrated p(pneumonia) of each film file, through the bundle's preprocessing and post-processing."""
    out: list[float] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images = torch.stack([bundle.preprocessing({"image": p})["image"].as_tensor() for p in chunk])
        out.extend(bundle.pneumonia_probability(row) for row in bundle.predict(images))
    return np.asarray(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the robustness table; return 0, or 2 on bad usage."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundle")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--datalist", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N films (0: all)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        items = resolve_items(
            json.loads(args.datalist.read_text(encoding="utf-8")), args.split, args.datalist.parent
        )
    except KeyError:
        items = []
    if not items:
        logger.error("%s has no %r list", args.datalist, args.split)
        return 2
    items = items[: args.limit] if args.limit > 0 else items
    paths = [item["image"] for item in items]
    bundle = load_bundle(args.bundle, device="cpu", variant=args.variant)
    reference = score(bundle, paths)
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (change, suffix, options) in PERTURBATIONS.items():
            changed = []
            for i, path in enumerate(tqdm(paths, desc=name, unit="film")):
                target = Path(tmp) / f"{i}{suffix}"
                change(load_raster(path)).save(target, **options)
                changed.append(str(target))
            p = score(bundle, changed)
            delta = np.abs(p - reference)
            flips = (p >= bundle.threshold) != (reference >= bundle.threshold)
            table[name] = {
                "mean_abs_delta": float(delta.mean()),
                "max_abs_delta": float(delta.max()),
                "flipped": float(flips.mean()),
                "n": len(paths),
            }
    args.output.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.output / "robustness.json", "w") as handle:
        handle.write(json.dumps({"threshold": bundle.threshold, "perturbations": table}, indent=2) + "\n")
    print(f"{'perturbation':<16} {'mean |dp|':>10} {'max |dp|':>10} {'flipped':>8}   (n={len(paths)})")
    for name, row in table.items():
        print(
            f"{name:<16} {row['mean_abs_delta']:>10.4f} {row['max_abs_delta']:>10.4f} {row['flipped']:>8.2%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
