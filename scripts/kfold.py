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

The fold folder keeps the settings it was made with (``run.json``: fold, folds, data set, bundle, recipe,
``--set`` overrides) and refuses to go on with others. Every stage is skipped when its outputs exist and
agree with what it was built from: an interrupted training stage resumes from its last per-epoch state
(``<stage>/resume/checkpoint_epoch=N.pt``); a bundle copy whose model is not stage 2's checkpoint byte for
byte is built again, with its calibration and evaluation; an evaluation that did not score the copy's
stored threshold runs again. So the command can be rerun until it is done. (A resumed stage keeps the best
validation ROC AUC of the epochs run since the resume as its ``model.pt``: MONAI's ``CheckpointSaver``
does not carry its best score through ``--resume_checkpoint``.) With ``--record DIR`` the fold's figures
are written to ``DIR/fold<k>.json``.

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
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pneumonia_monai.atomic import write_json_atomic
from pneumonia_monai.engine.bundle_config import read_operating_point
from pneumonia_monai.evaluation.report import METRICS_FILE
from pneumonia_monai.inference.bundle import file_sha256

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("kfold")

#: The figures a fold record holds, in the order the summary prints them.
METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "sensitivity", "specificity")
RECORD_SCHEMA = 1
_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_#]*")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")


#: ``train.json`` keys the driver sets itself: a ``--set`` of one would contradict the recipe or the fold.
DRIVER_KEYS = frozenset(
    {
        "max_epochs", "schedule_epochs", "learning_rate", "init_checkpoint", "resume_checkpoint",
        "ckpt_dir", "output_dir", "dataset_dir", "datalist", "split_mode", "num_folds", "fold", "bundle_root",
    }
)  # fmt: skip
#: Keys that change what the network sees or which films are scored: calibration and evaluation read the
#: bundle copy's own configs, so a training-only override of one would make them disagree with training.
MODEL_KEYS = frozenset(
    {"spatial_size", "lung_crop", "num_classes", "label_mode", "seed", "val_fraction", "preprocessing"}
)
STAGES: tuple[str, ...] = ("a", "b")
SETTINGS_FILE = "run.json"
TIMING_FILE = "timing.json"
CALIBRATED_MARK = ".calibrated"


class UsageError(ValueError):
    """A bad argument, or a fold folder made with other settings: exit status 2."""


@dataclass(frozen=True)
class Recipe:
    """The training recipe, as ``monai.bundle`` overrides (errors name the command-line flags)."""

    stage_a_epochs: int = 4
    schedule_epochs: int = 9
    stage_b_epochs: int = 2
    stage_b_learning_rate: float = 3e-4

    def __post_init__(self) -> None:
        for name in ("stage_a_epochs", "schedule_epochs", "stage_b_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{_flag(name)} must be a positive int, got {value!r}")
        if self.stage_a_epochs > self.schedule_epochs:
            raise UsageError(
                f"--stage-a-epochs ({self.stage_a_epochs}) must not exceed "
                f"--schedule-epochs ({self.schedule_epochs})"
            )
        if not self.stage_b_learning_rate > 0:
            raise UsageError(f"--stage-b-learning-rate must be > 0, got {self.stage_b_learning_rate!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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


def set_overrides(pairs: Sequence[Sequence[str]]) -> list[str]:
    """``--KEY VALUE`` for each ``--set KEY VALUE``.

    Raises:
        UsageError: on a key that is not a ``train.json`` key name, that the driver sets itself
            (:data:`DRIVER_KEYS`), or that would make calibration and evaluation disagree with training
            (:data:`MODEL_KEYS`).
    """
    out: list[str] = []
    for key, value in pairs:
        if not _KEY.fullmatch(key):
            raise UsageError(f"--set key must be a train.json key (letters, digits, _ and #), got {key!r}")
        if key in DRIVER_KEYS:
            raise UsageError(f"--set {key}: the driver sets {key!r} itself")
        if key.split("#")[0] in MODEL_KEYS:
            raise UsageError(
                f"--set {key}: {key!r} changes what the network sees or which films are scored, and the "
                "calibration and evaluation read the bundle's own configs; edit the bundle instead"
            )
        out += [f"--{key}", value]
    return out


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


def run_logged(cmd: Sequence[str], log: Path) -> float:
    """Run ``cmd`` with its output appended to ``log``; return its wall-clock seconds.

    Raises:
        RuntimeError: naming the log, if the command fails.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s (log: %s)", log.stem, log)
    logger.debug("command: %s", " ".join(cmd))
    start = time.monotonic()
    with log.open("a", encoding="utf-8") as handle:
        code = subprocess.run(list(cmd), stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise RuntimeError(f"{log.stem} exited with {code}; see {log}")
    return time.monotonic() - start


def _add_time(fold_dir: Path, stage: str, seconds: float) -> None:
    """Add ``seconds`` to the stage's running total in ``timing.json`` (a resumed stage counts once each)."""
    path = fold_dir / TIMING_FILE
    timing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    timing[stage] = round(float(timing.get(stage, 0.0)) + seconds, 1)
    write_json_atomic(path, timing)


def train_stage(bundle: Path, fold_dir: Path, stage: str, overrides: Sequence[str], epochs: int) -> Path:
    """Train one stage to exactly ``epochs`` epochs (resuming where it stopped); return that epoch's state.

    Raises:
        RuntimeError: if the stage holds a later epoch than asked, or training stops short.
    """
    stage_dir = fold_dir / stage
    target = stage_dir / "resume" / f"checkpoint_epoch={epochs}.pt"
    last = last_checkpoint(stage_dir / "resume")
    if last is not None and last[0] > epochs:
        raise RuntimeError(f"stage {stage} holds epoch {last[0]}, the recipe asks for {epochs}")
    if last is not None and last[0] == epochs:
        logger.info("stage %s: done (epoch %d)", stage, epochs)
        return target
    if last is not None:
        logger.info("stage %s: resuming after epoch %d", stage, last[0])
    seconds = run_logged(
        training_command(bundle, stage_dir, overrides, epochs, None if last is None else last[1]),
        stage_dir / "train.log",
    )
    _add_time(fold_dir, stage, seconds)
    if not target.is_file() or not (stage_dir / "model.pt").is_file():
        raise RuntimeError(
            f"stage {stage}: training ended before epoch {epochs}; see {stage_dir / 'train.log'}"
        )
    return target


def bundle_copy(source: Path, target: Path, checkpoint: Path, stale: Sequence[Path] = ()) -> Path:
    """A copy of the bundle's configs and docs at ``target``, holding ``checkpoint`` as its model.

    An existing copy is kept only when its model is ``checkpoint`` byte for byte; otherwise it is built
    again (in a ``.partial`` folder renamed into place) and the folders in ``stale`` (the calibration and
    the evaluation of the old model) are removed first.
    """
    current = target / "models" / "model.pt"
    if current.is_file() and file_sha256(current) == file_sha256(checkpoint):
        return target
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
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
    """Minutes between the first and the last time-stamped line of a training log (None if it has none).

    The fallback for a stage trained outside the driver, which has no ``timing.json`` entry; it counts
    the time between an interruption and its resume too.
    """
    stamps = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else ():
        match = _LOG_TIME.match(line)
        if match:
            stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
    return round((stamps[-1] - stamps[0]).total_seconds() / 60.0, 1) if len(stamps) > 1 else None


def training_minutes(fold_dir: Path) -> dict[str, float | None]:
    """Per stage, the minutes the driver timed (``timing.json``), else the span of the stage's log."""
    path = fold_dir / TIMING_FILE
    timing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {
        stage: round(float(timing[stage]) / 60.0, 1)
        if stage in timing
        else log_minutes(fold_dir / stage / "train.log")
        for stage in STAGES
    }


def check_settings(fold_dir: Path, settings: Mapping[str, Any]) -> None:
    """Write the fold folder's settings, or check that an existing folder was made with the same ones.

    Raises:
        UsageError: naming the first setting that differs.
    """
    path = fold_dir / SETTINGS_FILE
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        for key in sorted(set(stored) | set(settings)):
            if stored.get(key) != settings.get(key):
                raise UsageError(
                    f"{fold_dir} was made with {key} {stored.get(key)!r}, not {settings.get(key)!r}: "
                    "use another --work folder"
                )
        return
    write_json_atomic(path, dict(settings))


def fold_record(
    fold: int,
    num_folds: int,
    metrics: Mapping[str, Any],
    calibration: Mapping[str, Any],
    minutes: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
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
        "recipe": None if settings is None else settings.get("recipe"),
        "set": None if settings is None else settings.get("set"),
        "pneumonia_monai_version": metrics.get("pneumonia_monai_version"),
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _evaluation_agrees(eval_dir: Path, bundle: Path, calibration: Mapping[str, Any]) -> bool:
    """Whether ``metrics.json`` scored the calibrated copy: its stored threshold, the calibrated films."""
    path = eval_dir / METRICS_FILE
    if not path.is_file():
        return False
    metrics = _read_json(path)
    stored = read_operating_point(bundle).threshold
    return bool(metrics["threshold"]["value"] == stored and metrics["n"] == calibration["n"])


def check_usage(args: argparse.Namespace) -> tuple[Recipe, list[str]]:
    """The recipe and the ``--set`` overrides, once every argument has been checked.

    Raises:
        UsageError: naming the bad flag and value.
    """
    recipe = Recipe(
        args.stage_a_epochs, args.schedule_epochs, args.stage_b_epochs, args.stage_b_learning_rate
    )
    if args.num_folds < 2:
        raise UsageError(f"--num-folds must be at least 2, got {args.num_folds}")
    if not 0 <= args.fold < args.num_folds:
        raise UsageError(f"--fold must be in [0, {args.num_folds}), got {args.fold}")
    if not args.dataset_dir.is_dir():
        raise UsageError(f"--dataset-dir {str(args.dataset_dir)!r} is not a folder")
    if not (args.bundle / "configs" / "train.json").is_file():
        raise UsageError(f"--bundle {str(args.bundle)!r} has no configs/train.json")
    return recipe, set_overrides(args.set)


def run_fold(args: argparse.Namespace) -> int:
    """Train, calibrate and score one fold; write its record."""
    recipe, extra = check_usage(args)
    fold_dir = args.work / f"fold{args.fold}"
    settings = {
        "fold": args.fold,
        "num_folds": args.num_folds,
        "dataset_dir": str(args.dataset_dir.resolve()),
        "bundle": str(args.bundle.resolve()),
        "recipe": asdict(recipe),
        "set": {key: value for key, value in args.set},
    }
    fold_dir.mkdir(parents=True, exist_ok=True)
    check_settings(fold_dir, settings)
    split = split_overrides(args.dataset_dir, args.num_folds, args.fold)
    a_state = train_stage(
        args.bundle,
        fold_dir,
        "a",
        [*split, *extra, "--schedule_epochs", str(recipe.schedule_epochs)],
        recipe.stage_a_epochs,
    )
    stage_b = [
        *extra,
        "--learning_rate",
        str(recipe.stage_b_learning_rate),
        "--init_checkpoint",
        str(a_state),
    ]
    train_stage(args.bundle, fold_dir, "b", [*split, *stage_b], recipe.stage_b_epochs)
    calib_dir, eval_dir = fold_dir / "calib", fold_dir / "eval"
    bundle = bundle_copy(
        args.bundle, fold_dir / "bundle", fold_dir / "b" / "model.pt", stale=(calib_dir, eval_dir)
    )
    # the films stage b validated on, the ones calibration reads: the datalist it wrote, not a new scan
    datalist = fold_dir / "b" / "tb" / "datalist.json"
    if not (bundle / CALIBRATED_MARK).is_file() or not (calib_dir / "calibration.json").is_file():
        shutil.rmtree(eval_dir, ignore_errors=True)
        run_logged(
            [
                sys.executable,
                str(REPO / "scripts" / "calibrate.py"),
                "--bundle",
                str(bundle),
                "--datalist",
                str(datalist),
                "--output",
                str(calib_dir),
                "--write",
            ],
            fold_dir / "calibrate.log",
        )
        (bundle / CALIBRATED_MARK).write_text(
            file_sha256(calib_dir / "calibration.json") + "\n", encoding="utf-8"
        )
    calibration = _read_json(calib_dir / "calibration.json")
    if not _evaluation_agrees(eval_dir, bundle, calibration):
        shutil.rmtree(eval_dir, ignore_errors=True)
        configs = bundle / "configs"
        run_logged(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "evaluating",
                "--config_file",
                json.dumps([str(configs / "train.json"), str(configs / "evaluate.json")]),
                "--bundle_root",
                str(bundle),
                "--dataset_dir",
                str(datalist),
                "--ckpt_dir",
                str(bundle / "models"),
                "--output_dir",
                str(eval_dir),
            ],
            fold_dir / "evaluate.log",
        )
        if not _evaluation_agrees(eval_dir, bundle, calibration):
            raise RuntimeError(f"{eval_dir / METRICS_FILE} does not score the calibrated copy {bundle}")
    record = fold_record(
        args.fold,
        args.num_folds,
        _read_json(eval_dir / METRICS_FILE),
        calibration,
        training_minutes(fold_dir),
        settings,
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


def _checked_record(path: Path) -> dict[str, Any]:
    """One fold record, its name, schema and figures checked.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        got = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path}: schema must be {RECORD_SCHEMA}, got {got!r}")
    fold, num_folds = record.get("fold"), record.get("num_folds")
    if not (
        isinstance(num_folds, int) and num_folds >= 2 and isinstance(fold, int) and 0 <= fold < num_folds
    ):
        raise ValueError(f"{path}: fold {fold!r} of num_folds {num_folds!r} is not a fold")
    if path.name != f"fold{fold}.json":
        raise ValueError(f"{path}: holds fold {fold}, so it must be named fold{fold}.json")
    for name in METRICS:
        estimate = (record.get("metrics") or {}).get(name, {}).get("estimate")
        if isinstance(estimate, bool) or not isinstance(estimate, int | float) or not 0 <= estimate <= 1:
            raise ValueError(f"{path}: {name} must be a number in [0, 1], got {estimate!r}")
    ece = (record.get("calibration") or {}).get("ece_after")
    if isinstance(ece, bool) or not isinstance(ece, int | float):
        raise ValueError(f"{path}: calibration.ece_after must be a number, got {ece!r}")
    for key in ("split", "threshold"):
        if key not in record:
            raise ValueError(f"{path}: no {key!r}")
    return record


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The fold records in ``folder`` (``fold<k>.json``), by fold.

    Raises:
        ValueError: if a record is malformed (see :func:`_checked_record`) or the records disagree on
            the number of folds.
    """
    records = [_checked_record(path) for path in sorted(folder.glob("fold*.json"))]
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
    # in the figure's corner, where no fold's interval can run under it
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
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
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log the commands too")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[verbosity], help="train, calibrate and score one fold")
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
    summary = sub.add_parser("summary", parents=[verbosity], help="summarize the fold records of a folder")
    summary.add_argument("records", type=Path)
    summary.add_argument(
        "--output", type=Path, default=None, help="folder for kfold_summary.json and kfold.png"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 1 when a stage failed, 2 on bad usage."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run_fold(args) if args.command == "run" else run_summary(args)
    except UsageError as exc:
        logger.error("%s", exc)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
