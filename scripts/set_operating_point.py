r"""Store the operating threshold chosen on validation in ``bundle/configs/inference.json``.

Reads the ``metrics.json`` that the bundle's ``evaluating`` run wrote for the **validation** split
(its ``extra.operating_point_on_this_split``: the threshold with the highest specificity among those
keeping sensitivity >= the rule's minimum) and writes ``threshold`` and ``threshold_rule`` into the
inference config, where ``pneumonia-monai infer``, the DICOM node, MONAI Deploy and the evaluation
read it. Refuses a report of any split other than validation: the official test split is never used to
choose anything.

Usage::

    python -m monai.bundle run evaluating \\
        --config_file "['bundle/configs/train.json','bundle/configs/evaluate.json']" \\
        --dataset_dir ../shared/data/kermany-cxr-224
    python scripts/set_operating_point.py bundle/eval/metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pneumonia_monai.engine.bundle_config import BundleError, write_config_values

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the threshold; return 0, or 2 when the report cannot be used."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=Path, help="metrics.json of the evaluating run on validation")
    parser.add_argument("--config", type=Path, default=REPO / "bundle/configs/inference.json")
    args = parser.parse_args(argv)
    report = json.loads(args.metrics.read_text(encoding="utf-8"))
    if report.get("split") != "validation":
        print(f"{args.metrics} reports split {report.get('split')!r}, not 'validation'", file=sys.stderr)
        return 2
    point = report.get("extra", {}).get("operating_point_on_this_split")
    if not point:
        print(f"{args.metrics} holds no operating point (a split with one class?)", file=sys.stderr)
        return 2
    threshold = round(float(point["threshold"]), 6)
    rule = (
        f"highest specificity with sensitivity >= {point['min_sensitivity']} on the patient-grouped "
        f"validation split (n={report['n']}): sensitivity {point['sensitivity']:.4f}, "
        f"specificity {point['specificity']:.4f}"
    )
    # Edited as JSON (key order and every other key kept: the calibration and its provenance),
    # validated before writing, atomically.
    try:
        config = write_config_values(args.config, {"threshold": threshold, "threshold_rule": rule})
    except BundleError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"threshold {config['threshold']} -> {args.config}")
    print(config["threshold_rule"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
