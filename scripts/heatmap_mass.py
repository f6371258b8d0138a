r"""Share of Grad-CAM heat inside the lung box, on validation pneumonia films.

The network sees the lung box plus a margin (:func:`pneumonia_monai.transforms.locate_crop`); its
Grad-CAM (the bundle's ``heatmap_layer``, the class inference explains) lies on that crop. This prints,
over the pneumonia films of a validation list, how much of each map's mass falls on the lung box
proper (the same box found without margin): near 1 means the model looks at the lungs, not at the
margin, labels or shoulders. Films whose lung fields were not found are counted apart.

Usage::

    python scripts/heatmap_mass.py --datalist bundle/runs/datalist.json [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumonia_monai.inference.bundle import load_bundle
from pneumonia_monai.transforms import load_film, locate_crop
from pneumonia_monai.visualize.gradcam import gradcam, heat_inside

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("heatmap_mass")


def _fractions(box: tuple[int, int, int, int], rows: int, cols: int) -> tuple[float, float, float, float]:
    return (box[0] / rows, box[1] / rows, box[2] / cols, box[3] / cols)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the share; return 0, or 2 on bad usage."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundle")
    parser.add_argument("--datalist", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=int, default=0, help="only the first N pneumonia films (0: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = [
        it for it in json.loads(args.datalist.read_text(encoding="utf-8")).get(args.split, []) if it["label"]
    ]
    if not items:
        logger.error("%s has no pneumonia film in %r", args.datalist, args.split)
        return 2
    items = items[: args.limit] if args.limit > 0 else items
    bundle = load_bundle(args.bundle, device="cpu")
    base = args.datalist.parent
    shares, not_found = [], 0
    for item in tqdm(items, desc="heat", unit="film"):
        path = Path(item["image"]) if Path(item["image"]).is_absolute() else base / item["image"]
        film, _ = load_film(path)
        rows, cols = film.shape
        crop, reason = locate_crop(film, 0.05)
        lungs, _ = locate_crop(film, 0.0)
        if reason != "detected":
            not_found += 1
            continue
        image = bundle.preprocessing({"image": str(path)})["image"].as_tensor()[None]
        probs = bundle.predict(image)[0]
        cam = gradcam(
            bundle.network,
            image,
            target_layer=bundle.heatmap_layer,
            class_index=bundle.explained_class(probs),
        )
        share = heat_inside(cam, _fractions(lungs, rows, cols), _fractions(crop, rows, cols))
        if np.isfinite(share):
            shares.append(share)
    values = np.asarray(shares)
    print(
        f"heat mass inside the lung box: mean {values.mean():.3f}, median {np.median(values):.3f}, "
        f"10th percentile {np.percentile(values, 10):.3f} (n={values.size} pneumonia films; "
        f"{not_found} without lung fields found)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
