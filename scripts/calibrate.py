r"""Fit the bundle's temperature and choose its operating point on a validation split, in one pass.

Runs the bundle's network (fp32, its own ``preprocessing``) over the ``validation`` list of the datalist
that the training run wrote (``<output_dir>/datalist.json``), then:

1. fits the temperature on the raw logits (:func:`pneumonia_monai.evaluation.calibration.fit_temperature`);
2. reports the expected calibration error of p(pneumonia) before and after;
3. chooses the threshold on the *calibrated* p(pneumonia) by the stated rule (highest specificity with
   sensitivity >= ``--min-sensitivity``);
4. with ``--write``, stores ``temperature``, ``threshold``, ``threshold_rule`` and ``calibration`` in the
   bundle's config (``inference.json``, or ``inference_<variant>.json``), edited as JSON, not as text.

Refuses any list but a validation split: the official test split is never used to choose anything.

Usage::

    python scripts/calibrate.py --datalist bundle/runs/datalist.json --output /tmp/calib --write
    python scripts/calibrate.py --variant subtype --datalist DATALIST --output /tmp/calib-subtype --write
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pneumonia_monai.atomic import atomic_open
from pneumonia_monai.engine.bundle_config import write_config_values
from pneumonia_monai.evaluation.calibration import fit_temperature_and_bias, softmax_probs
from pneumonia_monai.evaluation.metrics import expected_calibration_error, roc_auc
from pneumonia_monai.evaluation.threshold import choose_threshold
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("calibrate")


def split_logits(bundle: InferenceBundle, items: list[dict[str, Any]], batch_size: int) -> np.ndarray:
    """Raw logits of the bundle's network for ``items`` (``{"image": path}``), float64."""
    out = []
    for start in tqdm(range(0, len(items), batch_size), desc="logits", unit="batch"):
        chunk = items[start : start + batch_size]
        images = torch.stack(
            [bundle.preprocessing({"image": it["image"]})["image"].as_tensor() for it in chunk]
        )
        out.append(bundle.logits(images).double().numpy())
    return np.concatenate(out)


def pneumonia_probs(bundle: InferenceBundle, probs: np.ndarray) -> np.ndarray:
    """p(pneumonia) of each row, by the bundle's decision rule."""
    return np.array([bundle.pneumonia_probability(row) for row in probs])


def main(argv: Sequence[str] | None = None) -> int:
    """Calibrate; return 0, or 2 on bad usage."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundle")
    parser.add_argument("--variant", default=None, help="e.g. 'subtype' (configs/inference_subtype.json)")
    parser.add_argument("--datalist", type=Path, required=True, help="datalist.json written by training")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--min-sensitivity", type=float, default=0.95)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, required=True, help="folder for calibration.json and logits")
    parser.add_argument("--write", action="store_true", help="store temperature and threshold in the bundle")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if "test" in args.split:
        logger.error(
            "refusing split %r: thresholds and temperatures are chosen on validation only", args.split
        )
        return 2
    datalist = json.loads(args.datalist.read_text(encoding="utf-8"))
    items = datalist.get(args.split)
    if not items:
        logger.error("%s has no %r list", args.datalist, args.split)
        return 2
    base = args.datalist.parent
    items = [
        {**it, "image": str(Path(it["image"]) if Path(it["image"]).is_absolute() else base / it["image"])}
        for it in items
    ]
    bundle = load_bundle(args.bundle, device="cpu", variant=args.variant)
    args.output.mkdir(parents=True, exist_ok=True)
    cache = args.output / f"logits_{args.split}.npz"
    labels = np.array([int(it["label"]) for it in items])
    if cache.is_file() and np.load(cache)["labels"].tolist() == labels.tolist():
        logits = np.load(cache)["logits"]
        logger.info("logits read from %s", cache)
    else:
        logits = split_logits(bundle, items, args.batch_size)
        np.savez(cache, logits=logits, labels=labels)
    y = (labels > 0).astype(int)  # pneumonia (two classes) or bacterial/viral (three): not normal
    temperature, bias = fit_temperature_and_bias(logits, labels)
    raw = pneumonia_probs(bundle, softmax_probs(logits, 1.0))
    cal = pneumonia_probs(bundle, softmax_probs(logits, temperature, bias))
    # an honest figure for the fit: 2-fold by patient, each half scored with the other half's fit
    patients = np.array([str(it.get("patient_id", i)) for i, it in enumerate(items)])
    uniq = sorted(set(patients))
    half = set(np.random.default_rng(0).permutation(uniq)[: len(uniq) // 2].tolist())
    fold = np.array([p in half for p in patients])
    crossed = np.empty_like(cal)
    for part in (fold, ~fold):
        t_k, b_k = fit_temperature_and_bias(logits[~part], labels[~part])
        crossed[part] = pneumonia_probs(bundle, softmax_probs(logits[part], t_k, b_k))
    choice = choose_threshold(y, cal, min_sensitivity=args.min_sensitivity)
    # rounded down, so that every film the rule counted as called stays called
    threshold = math.floor(float(choice.threshold) * 1e6) / 1e6
    report = {
        "split": args.split,
        "n": len(items),
        "n_patients": len({it.get("patient_id") for it in items}),
        "temperature": temperature,
        "logit_bias": bias,
        "ece_before": expected_calibration_error(y, raw),
        "ece_after": expected_calibration_error(y, cal),
        "ece_after_cross_fitted": expected_calibration_error(y, crossed),
        "roc_auc": roc_auc(y, cal),
        "operating_point": choice.as_dict(),
    }
    with atomic_open(args.output / "calibration.json", "w") as handle:
        handle.write(json.dumps(report, indent=2) + "\n")
    logger.info(
        "T %.4f, bias %s; ECE %.4f -> %.4f (cross-fitted %.4f); AUC %.4f; threshold %.6f: %.4f / %.4f",
        temperature,
        [round(b, 4) for b in bias],
        report["ece_before"],
        report["ece_after"],
        report["ece_after_cross_fitted"],
        report["roc_auc"],
        threshold,
        choice.sensitivity,
        choice.specificity,
    )
    if args.write:
        config = (
            args.bundle
            / "configs"
            / ("inference.json" if args.variant is None else f"inference_{args.variant}.json")
        )
        n_desc = f"n={len(items)}, {report['n_patients']} patients"
        write_config_values(
            config,
            {
                "temperature": round(temperature, 6),
                "logit_bias": [round(b, 6) for b in bias],
                "threshold": threshold,
                "threshold_rule": (
                    f"highest specificity with sensitivity >= {args.min_sensitivity} on the calibrated "
                    f"probabilities of the {args.split} split ({n_desc}): sensitivity "
                    f"{choice.sensitivity:.4f}, specificity {choice.specificity:.4f}"
                ),
                "calibration": (
                    f"temperature and per-class logit bias fitted on the {args.split} split ({n_desc}): "
                    f"ECE {report['ece_before']:.4f} -> {report['ece_after']:.4f} "
                    f"({report['ece_after_cross_fitted']:.4f} cross-fitted over two halves of the patients)"
                ),
            },
        )
        logger.info("wrote temperature and threshold to %s", config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
