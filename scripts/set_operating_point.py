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
import re
import sys
from pathlib import Path

from pneumonia_monai.atomic import atomic_open

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
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
    text = args.config.read_text(encoding="utf-8")
    # Edit the two values in place, so the rest of the hand-formatted config stays as it is.
    text, n_threshold = re.subn(
        r'^(\s*"threshold": )[^,\n]+,', rf"\g<1>{threshold},", text, count=1, flags=re.M
    )
    text, n_rule = re.subn(
        r'^(\s*"threshold_rule": )"[^"\n]*",',
        lambda m: f"{m.group(1)}{json.dumps(rule)},",
        text,
        count=1,
        flags=re.M,
    )
    config = json.loads(text)
    if (
        (n_threshold, n_rule) != (1, 1)
        or config["threshold"] != threshold
        or config["threshold_rule"] != rule
    ):
        print(f"{args.config}: no single-line 'threshold' and 'threshold_rule' to replace", file=sys.stderr)
        return 2
    with atomic_open(args.config) as fh:
        fh.write(text)
    print(f"threshold {config['threshold']} -> {args.config}")
    print(config["threshold_rule"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
