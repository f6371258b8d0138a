r"""Patient-grouped K-fold figures of the shipped training recipe: train, calibrate and score one fold.

``run`` trains fold ``k`` of ``--num-folds`` (``split_mode`` ``kfold``; fold 0 of 5 is the ``random``
split) by the recipe the model card states, each stage a ``python -m monai.bundle`` command:

1. ``training`` for ``--stage-a-epochs`` epochs of a ``--schedule-epochs`` cosine schedule at lr 1e-3
   (``--max_epochs 4 --schedule_epochs 9``, the same learning rates as stopping a 9-epoch run after 4);
2. ``training`` for ``--stage-b-epochs`` epochs at lr 3e-4 from stage 1's last weights;
3. ``scripts/calibrate.py --write`` on a copy of the bundle holding stage 2's checkpoint (temperature,
   logit bias and the threshold, chosen on the fold's validation side);
4. ``evaluating`` of that copy on the fold's validation side (``metrics.json``, patient-bootstrap
   intervals).

Every stage is skipped when its outputs exist, and an interrupted training stage resumes from its last
per-epoch state (``<stage>/resume/checkpoint_epoch=N.pt``), so the command can be rerun until it is done.
With ``--record DIR`` the fold's figures are written to ``DIR/fold<k>.json``.

``summary`` reads the fold records and prints each metric per fold with its mean, standard deviation and
range; with ``--output`` it also writes ``kfold_summary.json`` and a plot, ``kfold.png``.

Usage::

    python scripts/kfold.py run --fold 1 --dataset-dir ../shared/data/kermany-cxr-224 \
        --work runs/kfold --record bundle/docs/kfold
    python scripts/kfold.py summary bundle/docs/kfold --output runs/kfold/summary
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pneumonia_monai.atomic import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("kfold")

#: The figures a fold record holds, in the order the summary prints them.
METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "sensitivity", "specificity")
RECORD_SCHEMA = 1
_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_#]*")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")


@dataclass(frozen=True)
class Recipe:
    """The training recipe, as ``monai.bundle`` overrides."""

    stage_a_epochs: int = 4
    schedule_epochs: int = 9
    stage_b_epochs: int = 2
    stage_b_learning_rate: float = 3e-4

    def __post_init__(self) -> None:
        for name in ("stage_a_epochs", "schedule_epochs", "stage_b_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.stage_a_epochs > self.schedule_epochs:
            raise ValueError(
                f"stage_a_epochs ({self.stage_a_epochs}) must not exceed "
                f"schedule_epochs ({self.schedule_epochs})"
            )
        if not self.stage_b_learning_rate > 0:
            raise ValueError(f"stage_b_learning_rate must be > 0, got {self.stage_b_learning_rate!r}")


def last_checkpoint(resume_dir: Path) -> tuple[int, Path] | None:
    """The highest ``checkpoint_epoch=N.pt`` in ``resume_dir`` as ``(N, path)``, or None."""
    found = []
    for path in resume_dir.glob("checkpoint_epoch=*.pt") if resume_dir.is_dir() else ():
        match = _CHECKPOINT.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found) if found else None


def split_overrides(dataset_dir: Path, num_folds: int, fold: int) -> list[str]:
    """The overrides that select fold ``fold`` of the data set."""
    return [
        "--dataset_dir", str(dataset_dir),
        "--split_mode", "kfold",
        "--num_folds", str(num_folds),
        "--fold", str(fold),
    ]  # fmt: skip


def training_command(
    bundle: Path, stage_dir: Path, overrides: Sequence[str], epochs: int, resume: Path | None
) -> list[str]:
    """``monai.bundle run training`` for one stage, resuming from ``resume`` when given."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(bundle / "configs" / "train.json"),
        *overrides,
        "--max_epochs", str(epochs),
        "--ckpt_dir", str(stage_dir),
        "--output_dir", str(stage_dir / "tb"),
    ]  # fmt: skip
    if resume is not None:
        cmd += ["--resume_checkpoint", str(resume)]
    return cmd


def run_logged(cmd: Sequence[str], log: Path) -> None:
    """Run ``cmd`` with its output appended to ``log``; raise ``RuntimeError`` naming the log on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("running %s (log: %s)", " ".join(cmd[1:4]), log)
    with log.open("a", encoding="utf-8") as handle:
        code = subprocess.run(list(cmd), stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[1:5])} exited with {code}; see {log}")


def train_stage(bundle: Path, stage_dir: Path, overrides: Sequence[str], epochs: int) -> Path:
    """Train one stage to ``epochs`` epochs (resuming where it stopped); return its last per-epoch state."""
    last = last_checkpoint(stage_dir / "resume")
    if last is not None and last[0] >= epochs:
        logger.info("%s: done (epoch %d)", stage_dir.name, last[0])
        return last[1]
    if last is not None:
        logger.info("%s: resuming after epoch %d", stage_dir.name, last[0])
    run_logged(
        training_command(bundle, stage_dir, overrides, epochs, None if last is None else last[1]),
        stage_dir / "train.log",
    )
    done = last_checkpoint(stage_dir / "resume")
    if done is None or done[0] < epochs:
        raise RuntimeError(
            f"{stage_dir}: training ended before epoch {epochs}; see {stage_dir / 'train.log'}"
        )
    return done[1]


def bundle_copy(source: Path, target: Path, checkpoint: Path) -> Path:
    """A copy of the bundle's configs and docs at ``target``, holding ``checkpoint`` as its model."""
    if not (target / "models" / "model.pt").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for name in ("configs", "docs"):
            shutil.copytree(source / name, partial / name)
        (partial / "models").mkdir(parents=True)
        shutil.copy2(checkpoint, partial / "models" / "model.pt")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def log_minutes(log: Path) -> float | None:
    """Minutes between the first and the last time-stamped line of a training log (None if it has none)."""
    stamps = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else ():
        match = _LOG_TIME.match(line)
        if match:
            stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
    return round((stamps[-1] - stamps[0]).total_seconds() / 60.0, 1) if len(stamps) > 1 else None


def fold_record(
    fold: int,
    num_folds: int,
    metrics: Mapping[str, Any],
    calibration: Mapping[str, Any],
    minutes: Mapping[str, Any],
) -> dict[str, Any]:
    """The fold's figures: counts, the threshold, the calibration and the metrics with their intervals."""
    intervals = metrics.get("confidence_intervals") or {}
    binary = metrics["binary"]
    return {
        "schema": RECORD_SCHEMA,
        "fold": fold,
        "num_folds": num_folds,
        "split": {
            "n": metrics["n"],
            "n_patients": metrics["n_groups"],
            "class_counts": metrics["class_counts"],
        },
        "threshold": metrics["threshold"]["value"],
        "calibration": {
            key: calibration[key]
            for key in ("temperature", "logit_bias", "ece_before", "ece_after", "ece_after_cross_fitted")
        },
        "metrics": {
            name: intervals.get("binary", {}).get(name)
            or {"estimate": binary[name], "low": None, "high": None}
            for name in METRICS
        },
        "confusion_matrix": binary["confusion_matrix"],
        "training_minutes": dict(minutes),
        "pneumonia_monai_version": metrics.get("pneumonia_monai_version"),
    }


def run_fold(args: argparse.Namespace) -> int:
    """Train, calibrate and score one fold; write its record."""
    try:
        recipe = Recipe(
            args.stage_a_epochs, args.schedule_epochs, args.stage_b_epochs, args.stage_b_learning_rate
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    if not 0 <= args.fold < args.num_folds:
        logger.error("--fold must be in [0, %d), got %d", args.num_folds, args.fold)
        return 2
    bad_keys = [key for key, _ in args.set if not _KEY.fullmatch(key)]
    if bad_keys:
        logger.error("--set keys must be train.json keys (letters, digits, _ and #), got %s", bad_keys)
        return 2
    if not args.dataset_dir.is_dir():
        logger.error("--dataset-dir %s is not a folder", args.dataset_dir)
        return 2
    fold_dir = args.work / f"fold{args.fold}"
    split = split_overrides(args.dataset_dir, args.num_folds, args.fold)
    a_state = train_stage(
        args.bundle,
        fold_dir / "a",
        [*split, "--schedule_epochs", str(recipe.schedule_epochs)],
        recipe.stage_a_epochs,
    )
    stage_b = [
        *split,
        "--learning_rate",
        str(recipe.stage_b_learning_rate),
        "--init_checkpoint",
        str(a_state),
    ]
    train_stage(args.bundle, fold_dir / "b", stage_b, recipe.stage_b_epochs)
    bundle = bundle_copy(args.bundle, fold_dir / "bundle", fold_dir / "b" / "model.pt")
    calib_dir = fold_dir / "calib"
    if not (calib_dir / "calibration.json").is_file():
        run_logged(
            [
                sys.executable,
                str(REPO / "scripts" / "calibrate.py"),
                "--bundle",
                str(bundle),
                "--datalist",
                str(fold_dir / "b" / "tb" / "datalist.json"),
                "--output",
                str(calib_dir),
                "--write",
            ],
            fold_dir / "calibrate.log",
        )
    eval_dir = fold_dir / "eval"
    if not (eval_dir / "metrics.json").is_file():
        configs = bundle / "configs"
        run_logged(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "evaluating",
                "--config_file",
                f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']",
                "--bundle_root",
                str(bundle),
                *split,
                "--ckpt_dir",
                str(bundle / "models"),
                "--output_dir",
                str(eval_dir),
            ],
            fold_dir / "evaluate.log",
        )
    record = fold_record(
        args.fold,
        args.num_folds,
        json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8")),
        json.loads((calib_dir / "calibration.json").read_text(encoding="utf-8")),
        {stage: log_minutes(fold_dir / stage / "train.log") for stage in ("a", "b")},
    )
    _log_fold(record)
    if args.record is not None:
        write_json_atomic(args.record / f"fold{args.fold}.json", record)
        logger.info("wrote %s", args.record / f"fold{args.fold}.json")
    return 0


def _log_fold(record: Mapping[str, Any]) -> None:
    figures = ", ".join(f"{name} {record['metrics'][name]['estimate']:.4f}" for name in METRICS)
    logger.info(
        "fold %d: %s at threshold %.6f; ECE %.4f -> %.4f",
        record["fold"],
        figures,
        record["threshold"],
        record["calibration"]["ece_before"],
        record["calibration"]["ece_after"],
    )


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The fold records in ``folder`` (``fold<k>.json``), by fold.

    Raises:
        ValueError: if a record has another schema, or two records are for the same fold or disagree on
            the number of folds.
    """
    records = []
    for path in sorted(folder.glob("fold*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"{path}: schema must be {RECORD_SCHEMA}, got {record.get('schema')!r}")
        records.append(record)
    folds = [r["fold"] for r in records]
    if len(set(folds)) != len(folds):
        raise ValueError(f"{folder}: more than one record for a fold: {sorted(folds)}")
    if len({r["num_folds"] for r in records}) > 1:
        raise ValueError(f"{folder}: the records disagree on num_folds")
    return sorted(records, key=lambda r: r["fold"])


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per metric (and the calibrated ECE): the fold estimates, their mean, sample SD, min and max."""
    columns: dict[str, list[float]] = {
        name: [float(r["metrics"][name]["estimate"]) for r in records] for name in METRICS
    }
    columns["ece_calibrated"] = [float(r["calibration"]["ece_after"]) for r in records]
    summary: dict[str, Any] = {
        "folds": [r["fold"] for r in records],
        "num_folds": records[0]["num_folds"] if records else None,
        "n_films": sum(int(r["split"]["n"]) for r in records),
        "metrics": {},
    }
    for name, values in columns.items():
        summary["metrics"][name] = {
            "per_fold": values,
            "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        }
    return summary


def format_table(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """A Markdown table: one row per fold, then mean ± SD and the range."""
    names = [*METRICS, "ece_calibrated"]
    lines = [
        "| fold | films (patients) | threshold | " + " | ".join(names) + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for record in records:
        values = [record["metrics"][n]["estimate"] for n in METRICS] + [record["calibration"]["ece_after"]]
        lines.append(
            f"| {record['fold']} | {record['split']['n']} ({record['split']['n_patients']}) | "
            f"{record['threshold']:.6f} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
        )
    stats = summary["metrics"]
    if len(records) > 1:
        lines.append(
            "| mean ± SD | | | "
            + " | ".join(f"{stats[n]['mean']:.4f} ± {stats[n]['sd']:.4f}" for n in names)
            + " |"
        )
        lines.append(
            "| range | | | "
            + " | ".join(f"{stats[n]['min']:.4f} to {stats[n]['max']:.4f}" for n in names)
            + " |"
        )
    return "\n".join(lines)


def plot_folds(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Each fold's estimate and 95% interval per metric, with the mean across folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.2), sharey=False)
    for ax, name in zip(axes, METRICS, strict=True):
        folds = [r["fold"] for r in records]
        est = [r["metrics"][name]["estimate"] for r in records]
        low = [
            r["metrics"][name]["low"] if r["metrics"][name]["low"] is not None else e
            for r, e in zip(records, est, strict=True)
        ]
        high = [
            r["metrics"][name]["high"] if r["metrics"][name]["high"] is not None else e
            for r, e in zip(records, est, strict=True)
        ]
        ax.errorbar(
            folds,
            est,
            yerr=[
                [e - lo for e, lo in zip(est, low, strict=True)],
                [hi - e for e, hi in zip(est, high, strict=True)],
            ],
            fmt="o",
            capsize=3,
        )
        ax.axhline(statistics.fmean(est), color="grey", linestyle="--", linewidth=1, label="mean")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("fold")
        ax.set_xticks(folds)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Patient-grouped K-fold validation, 95% patient-bootstrap intervals", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_summary(args: argparse.Namespace) -> int:
    """Print (and optionally write) the summary of the fold records in ``args.records``."""
    if not args.records.is_dir():
        logger.error("%s is not a folder", args.records)
        return 2
    records = read_records(args.records)
    if not records:
        logger.error("%s holds no fold<k>.json record", args.records)
        return 2
    summary = summarize(records)
    missing = sorted(set(range(int(summary["num_folds"]))) - set(summary["folds"]))
    if missing:
        logger.warning("folds without a record: %s; the summary covers %s", missing, summary["folds"])
    sys.stdout.write(format_table(records, summary) + "\n")
    if args.output is not None:
        write_json_atomic(args.output / "kfold_summary.json", {**summary, "missing_folds": missing})
        plot_folds(records, args.output / "kfold.png")
        logger.info("wrote %s and %s", args.output / "kfold_summary.json", args.output / "kfold.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``run`` and ``summary``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train, calibrate and score one fold")
    run.add_argument("--fold", type=int, required=True)
    run.add_argument("--bundle", type=Path, default=REPO / "bundle", help="the bundle whose recipe runs")
    run.add_argument("--num-folds", type=int, default=5)
    run.add_argument("--dataset-dir", type=Path, required=True)
    run.add_argument("--work", type=Path, required=True, help="folder for the fold's runs (outside the repo)")
    run.add_argument("--record", type=Path, default=None, help="folder for fold<k>.json")
    run.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a train.json override for both training stages (e.g. bn_films 64); calibration and "
        "evaluation read the bundle copy's own configs",
    )
    run.add_argument("--stage-a-epochs", type=int, default=Recipe.stage_a_epochs)
    run.add_argument("--schedule-epochs", type=int, default=Recipe.schedule_epochs)
    run.add_argument("--stage-b-epochs", type=int, default=Recipe.stage_b_epochs)
    run.add_argument("--stage-b-learning-rate", type=float, default=Recipe.stage_b_learning_rate)
    summary = sub.add_parser("summary", help="summarize the fold records of a folder")
    summary.add_argument("records", type=Path)
    summary.add_argument(
        "--output", type=Path, default=None, help="folder for kfold_summary.json and kfold.png"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 1 when a stage failed, 2 on bad usage."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    try:
        return run_fold(args) if args.command == "run" else run_summary(args)
    except (RuntimeError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
