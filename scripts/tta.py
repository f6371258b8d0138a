r"""Whether test-time augmentation earns its cost: the bundle alone against the mean of a few views.

Each validation film goes through the bundle's ``preprocessing`` once; the network then sees it as it
is and in small, benign variations of the same input (zoomed in and out 5%, rotated +-4 degrees, the
geometry of the lung-box jitter and the affine augmentation it was trained with). The logits of the
views are averaged and post-processed as the bundle post-processes one (temperature, logit bias).

Printed for the single view and for the mean: ROC AUC with a film-level paired bootstrap interval of the
difference, the expected calibration error, sensitivity and specificity at the stored threshold, and the
forward passes per film (the cost). Only a gain worth that cost would justify turning it on.

Usage::

    python scripts/tta.py --datalist bundle/runs/datalist.json [--limit 0] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional
from tqdm import tqdm

from pneumonia_monai.data.datalist import resolve_items
from pneumonia_monai.evaluation.metrics import binary_metrics, expected_calibration_error, roc_auc
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("tta")

#: name -> (zoom, rotation in degrees): zoom > 1 shows less of the crop, larger.
VIEWS: dict[str, tuple[float, float]] = {
    "as is": (1.0, 0.0),
    "zoom in 5%": (1.05, 0.0),
    "zoom out 5%": (0.95, 0.0),
    "rotate +4": (1.0, 4.0),
    "rotate -4": (1.0, -4.0),
}


def view(images: torch.Tensor, zoom: float, degrees: float) -> torch.Tensor:
    """The batch resampled by ``zoom`` and ``degrees`` about its centre (border values outside)."""
    if zoom == 1.0 and degrees == 0.0:
        return images
    angle = math.radians(degrees)
    c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=images.dtype).expand(len(images), 2, 3)
    grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
    return functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def logits_of_views(bundle: InferenceBundle, paths: list[str], batch_size: int) -> np.ndarray:
    """``(views, films, classes)`` logits."""
    out: list[list[np.ndarray]] = [[] for _ in VIEWS]
    for start in tqdm(range(0, len(paths), batch_size), desc="films", unit="batch"):
        chunk = paths[start : start + batch_size]
        images = torch.stack([bundle.preprocessing({"image": p})["image"].as_tensor() for p in chunk])
        for index, (zoom, degrees) in enumerate(VIEWS.values()):
            out[index].append(bundle.logits(view(images, zoom, degrees)).float().numpy())
    return np.stack([np.concatenate(chunks) for chunks in out])


def summary(
    bundle: InferenceBundle, y: np.ndarray, logits: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """p(pneumonia) and the figures of one set of ``(films, classes)`` logits."""
    probs = bundle.postprocess(torch.from_numpy(logits))
    p = np.asarray([bundle.pneumonia_probability(row) for row in probs])
    rates = binary_metrics(y, p, threshold=bundle.threshold)
    return p, {
        "auc": roc_auc(y, p),
        "ece": expected_calibration_error(y, p),
        "sensitivity": float(rates["sensitivity"]),
        "specificity": float(rates["specificity"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison; return 0, or 2 on bad usage."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundle")
    parser.add_argument("--datalist", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=int, default=0, help="only the first N films (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
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
    y = np.asarray([1 if int(it["label"]) > 0 else 0 for it in items])
    bundle = load_bundle(args.bundle, device="cpu")
    logits = logits_of_views(bundle, paths, args.batch_size)
    single_p, single = summary(bundle, y, logits[0])
    mean_p, mean = summary(bundle, y, logits.mean(axis=0))
    rng = np.random.default_rng(args.seed)
    deltas = []
    for _ in range(args.bootstrap):
        pick = rng.integers(0, len(y), len(y))
        if y[pick].min() == y[pick].max():
            continue
        deltas.append(roc_auc(y[pick], mean_p[pick]) - roc_auc(y[pick], single_p[pick]))
    low, high = np.percentile(deltas, [2.5, 97.5])
    print(f"n={len(y)} films ({int(y.sum())} pneumonia), threshold {bundle.threshold:.6f}")
    print(f"{'':<22} {'AUC':>7} {'ECE':>7} {'sens':>7} {'spec':>7} {'passes':>7}")
    rows = (("single view", single, 1), (f"mean of {len(VIEWS)} views", mean, len(VIEWS)))
    for name, figures, passes in rows:
        print(
            f"{name:<22} {figures['auc']:>7.4f} {figures['ece']:>7.4f} {figures['sensitivity']:>7.3f} "
            f"{figures['specificity']:>7.3f} {passes:>7d}"
        )
    print(f"AUC gain {mean['auc'] - single['auc']:+.4f} (95% paired bootstrap {low:+.4f} to {high:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
