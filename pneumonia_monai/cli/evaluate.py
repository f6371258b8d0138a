r"""``pneumonia-monai evaluate``: score the predictions of ``infer`` against labels and write the report.

Examples::

    pneumonia-monai evaluate --results OUT/results.csv --labels labels.csv --output report/
    pneumonia-monai evaluate --results OUT/results.csv --labels datalist.json --split test \
        --bundle bundle --root /data/chest_xray/test --output report/

The join of results and labels (inputs, the label table, the matching rule and the accounting of
every row) is :mod:`pneumonia_monai.evaluation.join`. The counts go to ``metrics.json`` under
``extra.accounting`` and every row not evaluated to ``unmatched.csv`` with its reason. The command
exits with status 1 when any labelled film has no prediction: its metrics would silently describe a
different set than the one labelled.

The threshold is ``--threshold``, else the ``threshold`` of ``--bundle``'s ``configs/inference.json``,
else the ``threshold`` column of the results, which must then hold a single value.

Site operating point: ``--choose-threshold RULE`` (``"max-specificity@sensitivity>=0.95"`` or
``"youden"``) chooses a threshold on the evaluated films (their ``prob_pneumonia``, by
:func:`pneumonia_monai.evaluation.threshold.choose_threshold`) and writes it, with the rule, the counts,
the sensitivity and specificity it was chosen on, the date and the results' ``model_version``, as a site
overlay (``--site-file``, default ``OUTPUT/site_operating_point.json``) for ``infer --site`` and
``serve --site`` (:mod:`pneumonia_monai.site_overlay`); ``metrics.json`` holds it under
``extra.site_operating_point``. The report's metrics stay at the threshold above.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumonia_monai.atomic import write_csv_atomic
from pneumonia_monai.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    add_verbosity_args,
    configure_logging,
    non_negative_int,
    returns_exit_status,
    unit_interval,
)
from pneumonia_monai.engine import bundle_config
from pneumonia_monai.engine.bundle_config import BundleError
from pneumonia_monai.evaluation.join import (
    DEFAULT_DATALIST_SPLIT,
    UNMATCHED_COLUMNS,
    UNMATCHED_FILE,
    InputError,
    Joined,
    ResultRow,
    join,
    log_accounting,
    model_version,
    threshold_from_results,
)
from pneumonia_monai.labels import class_names as model_class_names
from pneumonia_monai.site_overlay import (
    OVERLAY_FILE,
    SiteOperatingPoint,
    ThresholdRule,
    check_site_name,
    choose_site_operating_point,
    parse_rule,
    write_site_overlay,
)

logger = logging.getLogger(__name__)


def threshold_from_bundle(bundle: Path) -> float:
    """Return the ``threshold`` of ``bundle/configs/inference.json``.

    Raises:
        InputError: if the file is missing or its ``threshold`` is not a number in [0, 1].
    """
    config = bundle / "configs" / "inference.json"
    try:  # the bundle's one threshold reader and check
        return bundle_config.check_threshold(bundle_config.read_json(config).get("threshold"), config)
    except BundleError as exc:
        raise InputError(f"cannot read the threshold of bundle {bundle}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """Return the ``evaluate`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai evaluate",
        description="Join the predictions of 'infer' to labels, then write metrics.json (with bootstrap "
        "95% intervals), the ROC, precision-recall, reliability and confusion-matrix figures, and "
        "unmatched.csv. Exits 1 when a labelled film has no prediction.",
    )
    parser.add_argument(
        "--results", type=Path, required=True, metavar="CSV", help="results.csv written by infer"
    )
    parser.add_argument(
        "--labels", type=Path, required=True, metavar="FILE", help="labels CSV (path,label) or datalist JSON"
    )
    parser.add_argument(
        "--split",
        default=None,
        help=f"datalist list to score (default {DEFAULT_DATALIST_SPLIT}); for a CSV, keep rows of that split",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--threshold",
        type=unit_interval,
        default=None,
        metavar="T",
        help="call a film pneumonia when prob_pneumonia >= T (default: --bundle's, else the results' one)",
    )
    source.add_argument(
        "--bundle", type=Path, default=None, help="take the threshold from BUNDLE/configs/inference.json"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder that relative paths of the results are relative to (default: the current folder)",
    )
    parser.add_argument(
        "--labels-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder that relative paths of the labels are relative to (default: the labels file's folder)",
    )
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="report folder")
    parser.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=2000,
        metavar="N",
        help="bootstrap resamples (0: no intervals)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    site = parser.add_argument_group(
        "site operating point",
        "choose a threshold on these labelled results and write it as a site overlay for "
        "'infer --site' and 'serve --site' (see pneumonia_monai.site_overlay)",
    )
    site.add_argument(
        "--choose-threshold",
        type=_rule,
        default=None,
        metavar="RULE",
        help="'max-specificity@sensitivity>=X' (highest specificity keeping sensitivity >= X) or 'youden'",
    )
    site.add_argument(
        "--site-name",
        type=_site_name,
        default="site",
        metavar="NAME",
        help="the site's name in the overlay, the results rows and the SRs (letters, digits, . _ -; "
        "default 'site')",
    )
    site.add_argument(
        "--site-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"where to write the overlay (default OUTPUT/{OVERLAY_FILE})",
    )
    add_verbosity_args(parser)
    return parser


def _rule(text: str) -> ThresholdRule:
    try:
        return parse_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _site_name(text: str) -> str:
    try:
        return check_site_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threshold(args: argparse.Namespace, results: Sequence[ResultRow]) -> tuple[float, str]:
    """The threshold to score at and where it came from (see the module documentation).

    Raises:
        InputError: if the bundle's or the results' threshold cannot be used.
    """
    if args.threshold is not None:
        return args.threshold, "command line"
    if args.bundle is not None:
        return threshold_from_bundle(args.bundle), "bundle configs/inference.json"
    return threshold_from_results(results), "results.csv"


def _site_point(args: argparse.Namespace, joined: Joined) -> SiteOperatingPoint:
    """Choose the site operating point on the evaluated films (``--choose-threshold``).

    Raises:
        ValueError: (:class:`InputError` included) one class only, no or mixed model versions.
    """
    # The written prob_pneumonia: the very value infer compares with a threshold.
    return choose_site_operating_point(
        (joined.y_true() > 0).astype(np.int64),
        joined.written_prob_pneumonia(),
        args.choose_threshold,
        site=args.site_name,
        model_version=model_version(joined.scored_rows),
        results=args.results.name,
    )


def _report_site_point(point: SiteOperatingPoint, overlay: Path) -> None:
    sys.stdout.write(
        f"site {point.site}: threshold {point.threshold:.6g} by {point.rule} on {point.n} film(s) "
        f"({point.n_pneumonia} pneumonia, {point.n_normal} normal): sensitivity {point.sensitivity:.3f}, "
        f"specificity {point.specificity:.3f} on these films (optimistic: chosen on them); "
        f"overlay {overlay}\n"
    )


def _report_summary(report: Mapping[str, Any], n: int, threshold: float, output: Path) -> None:
    binary = report["binary"]
    ci = (report["confidence_intervals"] or {}).get("binary") or {}
    too_few = report["bootstrap"].get("warning")
    if too_few:
        ci = {}  # not printed as if they meant something; metrics.json keeps them, with the warning
    sys.stdout.write(
        f"{report['split']}: {n} film(s) evaluated at threshold {threshold:g}; "
        f"ROC AUC {_with_ci(binary['roc_auc'], ci.get('roc_auc'))}, "
        f"sensitivity {_with_ci(binary['sensitivity'], ci.get('sensitivity'))}, "
        f"specificity {_with_ci(binary['specificity'], ci.get('specificity'))}; report in {output}\n"
    )
    if too_few:
        sys.stdout.write(f"no intervals shown: {too_few}\n")


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pneumonia-monai evaluate``; return the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args)
    from pneumonia_monai.evaluation.report import write_report  # matplotlib: only once the arguments are good

    try:
        joined = join(
            args.results,
            args.labels,
            split=args.split,
            results_root=args.root or Path.cwd(),
            labels_root=args.labels_root or args.labels.parent,
        )
        threshold, threshold_source = _threshold(args, joined.results)
    except (InputError, OSError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    written = joined.written_thresholds()
    if written and written != {threshold}:
        logger.warning(
            "scoring at threshold %g (%s); the results were written at %s",
            threshold,
            threshold_source,
            ", ".join(f"{t:g}" for t in sorted(written)),
        )
    unmatched_path = args.output / UNMATCHED_FILE
    try:
        write_csv_atomic(unmatched_path, UNMATCHED_COLUMNS, joined.unmatched)
    except OSError as exc:
        logger.error("cannot write %s: %s", unmatched_path, exc)
        return EXIT_FAILURES
    log_accounting(joined, unmatched_path)
    if not joined.evaluated:
        logger.error("no labelled film has a prediction: nothing to evaluate")
        return EXIT_FAILURES

    extra: dict[str, Any] = {
        "accounting": joined.accounting,
        "threshold_source": threshold_source,
        "inputs": {"results": args.results.name, "labels": args.labels.name},
    }
    point = None
    if args.choose_threshold is not None:
        try:
            point = _site_point(args, joined)
        except ValueError as exc:
            logger.error("cannot choose a site threshold: %s", exc)
            return EXIT_FAILURES
        extra["site_operating_point"] = point.as_dict()
    try:
        report = write_report(
            args.output,
            joined.y_true(),
            joined.probs(),
            class_names=model_class_names(joined.num_classes),
            threshold=threshold,
            groups=joined.groups(),
            split_name=joined.split_name,
            extra=extra,
            n_resamples=args.bootstrap,
            seed=args.seed,
        )
    except (ValueError, TypeError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except OSError as exc:
        logger.error("cannot write the report to %s: %s", args.output, exc)
        return EXIT_FAILURES
    if point is not None:
        overlay = args.site_file or args.output / OVERLAY_FILE
        try:
            write_site_overlay(overlay, point)
        except OSError as exc:
            logger.error("cannot write the site overlay %s: %s", overlay, exc)
            return EXIT_FAILURES
        _report_site_point(point, overlay)
    _report_summary(report, len(joined.evaluated), threshold, args.output)
    return EXIT_FAILURES if joined.missing else EXIT_OK


def _with_ci(value: float | None, interval: Mapping[str, float | None] | None) -> str:
    if value is None:
        return "n/a"
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
