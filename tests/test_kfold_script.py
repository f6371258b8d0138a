"""scripts/kfold.py: the K-fold driver of the training recipe and its summary."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from monai.bundle import ConfigParser
from repo_paths import REPO

from pneumonia_monai.engine.bundle_config import read_operating_point, write_config_values


def _kfold() -> ModuleType:
    spec = importlib.util.spec_from_file_location("script_kfold", REPO / "scripts" / "kfold.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass looks its module up while it is built
    spec.loader.exec_module(module)
    return module


kfold = _kfold()


def _record(fold: int, auc: float, spec: float, ece: float, num_folds: int = 5) -> dict[str, Any]:
    metrics = {
        name: {"estimate": value, "low": value - 0.01, "high": min(1.0, value + 0.01)}
        for name, value in zip(kfold.METRICS, (auc, 0.95, 0.95, spec), strict=True)
    }
    return {
        "schema": kfold.RECORD_SCHEMA,
        "fold": fold,
        "num_folds": num_folds,
        "split": {
            "n": 1000 + fold,
            "n_patients": 500 + fold,
            "class_counts": {"normal": 250, "pneumonia": 750},
        },
        "threshold": 0.5 + fold / 100,
        "calibration": {"ece_before": 0.05, "ece_after": ece},
        "metrics": metrics,
        "confusion_matrix": {"tn": 1, "fp": 1, "fn": 1, "tp": 1},
        "training_minutes": {"a": 30.0, "b": 15.0},
    }


def test_schedule_epochs_sets_the_cosine_period_and_defaults_to_max_epochs(repo_root: Path) -> None:
    """``--max_epochs 4 --schedule_epochs 9`` runs the first 4 epochs of a 9-epoch cosine schedule."""

    def t_max(**overrides: Any) -> Any:
        parser = ConfigParser()
        parser.read_config(repo_root / "bundle" / "configs" / "train.json")
        parser.update(overrides)
        return parser.get_parsed_content("schedule_epochs")

    assert t_max() == t_max(max_epochs=10) == 10
    assert t_max(max_epochs=4, schedule_epochs=9) == 9
    config = json.loads((repo_root / "bundle" / "configs" / "train.json").read_text(encoding="utf-8"))
    assert config["lr_scheduler"]["T_max"] == "@schedule_epochs"


def test_last_checkpoint_is_the_highest_epoch_not_the_newest_name(tmp_path: Path) -> None:
    assert kfold.last_checkpoint(tmp_path / "missing") is None
    for name in ("checkpoint_epoch=2.pt", "checkpoint_epoch=10.pt", "checkpoint_epoch=9.pt", "model.pt"):
        (tmp_path / name).write_bytes(b"")
    assert kfold.last_checkpoint(tmp_path) == (10, tmp_path / "checkpoint_epoch=10.pt")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"stage_a_epochs": 0}, "--stage-a-epochs must be a positive int, got 0"),
        ({"stage_b_epochs": True}, "--stage-b-epochs must be a positive int, got True"),
        ({"stage_a_epochs": 10}, r"--stage-a-epochs \(10\) must not exceed --schedule-epochs \(9\)"),
        ({"stage_b_learning_rate": 0.0}, "--stage-b-learning-rate must be > 0, got 0.0"),
    ],
)
def test_recipe_refuses_bad_values(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kfold.Recipe(**fields)


def test_training_command_selects_the_fold_and_resumes(tmp_path: Path) -> None:
    split = kfold.split_overrides(tmp_path / "data", 5, 3)
    cmd = kfold.training_command(tmp_path / "bundle", tmp_path / "a", split, 4, tmp_path / "c.pt")
    args = dict(zip(cmd[5::2], cmd[6::2], strict=False))
    assert cmd[2:5] == ["monai.bundle", "run", "training"]
    assert args["--config_file"] == str(tmp_path / "bundle" / "configs" / "train.json")
    assert (args["--split_mode"], args["--num_folds"], args["--fold"]) == ("kfold", "5", "3")
    assert (args["--max_epochs"], args["--resume_checkpoint"]) == ("4", str(tmp_path / "c.pt"))
    assert "--resume_checkpoint" not in kfold.training_command(tmp_path, tmp_path / "a", split, 4, None)


def test_summary_mean_sd_and_range_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [_record(2, 0.99, 0.90, 0.02), _record(0, 0.98, 0.96, 0.04), _record(1, 0.97, 0.93, 0.03)]
    for record in records:
        (tmp_path / f"fold{record['fold']}.json").write_text(json.dumps(record), encoding="utf-8")
    read = kfold.read_records(tmp_path)
    assert [r["fold"] for r in read] == [0, 1, 2]
    summary = kfold.summarize(read)
    auc = summary["metrics"]["roc_auc"]
    assert auc["per_fold"] == [0.98, 0.97, 0.99]
    assert math.isclose(auc["mean"], 0.98) and math.isclose(auc["sd"], 0.01)
    spec = summary["metrics"]["specificity"]
    assert math.isclose(spec["sd"], statistics.stdev([0.96, 0.93, 0.90]))
    assert (spec["min"], spec["max"]) == (0.90, 0.96)
    assert summary["metrics"]["ece_calibrated"]["per_fold"] == [0.04, 0.03, 0.02]
    assert summary["n_films"] == 1000 + 1001 + 1002

    out = tmp_path / "out"
    assert kfold.main(["summary", str(tmp_path), "--output", str(out), "-q"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| 0 | 1000 (500) | 0.500000 | 0.9800 |")
    assert table[-2].startswith("| mean ± SD | | | 0.9800 ± 0.0100 |")
    assert "0.9000 to 0.9600" in table[-1]
    written = json.loads((out / "kfold_summary.json").read_text(encoding="utf-8"))
    assert written["missing_folds"] == [3, 4]
    assert (out / "kfold.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_records_refuses_misnamed_mixed_and_malformed_records(tmp_path: Path) -> None:
    def write(name: str, record: Any) -> None:
        (tmp_path / name).write_text(json.dumps(record), encoding="utf-8")

    write("fold1.json", _record(1, 0.9, 0.9, 0.02))
    assert [r["fold"] for r in kfold.read_records(tmp_path)] == [1]
    write("fold3.json", _record(1, 0.9, 0.9, 0.02))
    with pytest.raises(ValueError, match=r"fold3.json: holds fold 1, so it must be named fold1.json"):
        kfold.read_records(tmp_path)
    write("fold3.json", _record(3, 0.9, 0.9, 0.02, num_folds=10))
    with pytest.raises(ValueError, match="disagree on num_folds"):
        kfold.read_records(tmp_path)
    write("fold3.json", {**_record(3, 0.9, 0.9, 0.02), "schema": 99})
    with pytest.raises(ValueError, match=r"fold3\.json: schema must be 1, got 99"):
        kfold.read_records(tmp_path)
    write("fold3.json", _record(7, 0.9, 0.9, 0.02))
    with pytest.raises(ValueError, match="fold 7 of num_folds 5 is not a fold"):
        kfold.read_records(tmp_path)
    unscored = _record(3, 0.9, 0.9, 0.02)
    unscored["metrics"]["roc_auc"]["estimate"] = None  # a fold whose validation side has one class
    write("fold3.json", unscored)
    with pytest.raises(ValueError, match=r"fold3\.json: roc_auc must be a number in \[0, 1\], got None"):
        kfold.read_records(tmp_path)
    (tmp_path / "fold3.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"fold3\.json: not JSON"):
        kfold.read_records(tmp_path)
    assert kfold.main(["summary", str(tmp_path)]) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fold", "5"], r"--fold must be in \[0, 5\), got 5"),
        (["--fold", "0", "--num-folds", "1"], "--num-folds must be at least 2, got 1"),
        (
            ["--fold", "0", "--stage-a-epochs", "12"],
            r"--stage-a-epochs \(12\) must not exceed --schedule-epochs",
        ),
        (["--fold", "0", "--stage-b-epochs", "0"], "--stage-b-epochs must be a positive int, got 0"),
        (["--fold", "0", "--set", "max_epochs; rm", "1"], "--set key must be a train.json key"),
        (["--fold", "0", "--set", "learning_rate", "1"], "the driver sets 'learning_rate' itself"),
        (["--fold", "0", "--set", "spatial_size", "[32,32]"], "'spatial_size' changes what the network sees"),
        (["--fold", "0", "--bundle", "/nonexistent"], "--bundle '/nonexistent' has no configs/train.json"),
    ],
)
def test_run_refuses_bad_usage_before_training(
    tmp_path: Path, extra: list[str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data").mkdir()
    base = ["run", "--dataset-dir", str(tmp_path / "data"), "--work", str(tmp_path / "w")]
    assert kfold.main([*base, *extra]) == 2
    assert re.search(message, caplog.text), caplog.text
    assert not (tmp_path / "w").exists()


def test_run_refuses_a_missing_dataset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    argv = ["run", "--fold", "0", "--dataset-dir", str(tmp_path / "no"), "--work", str(tmp_path / "w")]
    assert kfold.main(argv) == 2
    assert f"--dataset-dir {str(tmp_path / 'no')!r} is not a folder" in caplog.text


class FakeStages:
    """Stands in for the monai.bundle and calibrate.py subprocesses: writes what each would, logs the call."""

    def __init__(self, n_validation: int = 6) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.n = n_validation

    def __call__(self, cmd: list[str], log: Path) -> float:
        args = dict(zip(cmd[1::2], cmd[2::2], strict=False)) | dict(zip(cmd[2::2], cmd[3::2], strict=False))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as handle:
            handle.write("2026-12-02 02:00:00,000 - INFO - fake\n")
        if "training" in cmd:
            stage = Path(args["--ckpt_dir"])
            self.calls.append((stage.name, cmd))
            (stage / "resume").mkdir(parents=True, exist_ok=True)
            for old in (stage / "resume").glob("*.pt"):
                old.unlink()
            (stage / "resume" / f"checkpoint_epoch={args['--max_epochs']}.pt").write_bytes(b"state")
            (stage / "model.pt").write_bytes(f"weights of {stage} {len(self.calls)}".encode())
            (stage / "tb").mkdir(exist_ok=True)
            items = [{"image": f"/x/{i}.jpeg", "label": i % 2, "patient_id": str(i)} for i in range(self.n)]
            (stage / "tb" / "datalist.json").write_text(json.dumps({"training": [], "validation": items}))
        elif "evaluating" in cmd:
            self.calls.append(("evaluate", cmd))
            out = Path(args["--output_dir"])
            out.mkdir(parents=True)
            threshold = read_operating_point(Path(args["--bundle_root"])).threshold
            binary = {name: 0.9 for name in kfold.METRICS} | {
                "confusion_matrix": {"tn": 3, "fp": 0, "fn": 0, "tp": 3}
            }
            (out / "metrics.json").write_text(
                json.dumps(
                    {
                        "n": self.n,
                        "n_groups": self.n,
                        "class_counts": {"normal": 3, "pneumonia": 3},
                        "threshold": {"value": threshold},
                        "binary": binary,
                        "confidence_intervals": None,
                    }
                )
            )
        else:
            self.calls.append(("calibrate", cmd))
            out = Path(args["--output"])
            out.mkdir(parents=True, exist_ok=True)
            calibration = {
                "n": self.n, "temperature": 0.9, "logit_bias": [0.0, 1.0],
                "ece_before": 0.05, "ece_after": 0.01, "ece_after_cross_fitted": 0.02,
            }  # fmt: skip
            (out / "calibration.json").write_text(json.dumps(calibration))
            write_config_values(Path(args["--bundle"]) / "configs" / "inference.json", {"threshold": 0.4321})
        return 60.0


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> FakeStages:
    fake = FakeStages()
    monkeypatch.setattr(kfold, "run_logged", fake)
    return fake


def _argv(tmp_path: Path, bundle: Path, *extra: str) -> list[str]:
    (tmp_path / "data").mkdir(exist_ok=True)
    return [
        "run", "--bundle", str(bundle), "--fold", "2", "--dataset-dir", str(tmp_path / "data"),
        "--work", str(tmp_path / "work"), "--record", str(tmp_path / "records"), *extra,
    ]  # fmt: skip


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_run_chains_the_recipe_and_a_rerun_does_nothing(
    tmp_path: Path, bundle_copy: Path, fake_stages: FakeStages
) -> None:
    argv = _argv(tmp_path, bundle_copy, "--set", "bn_films", "8")
    assert kfold.main(argv) == 0
    assert [name for name, _ in fake_stages.calls] == ["a", "b", "calibrate", "evaluate"]
    (_, a), (_, b), (_, calibrate), (_, evaluate) = fake_stages.calls
    fold = tmp_path / "work" / "fold2"
    assert (_value(a, "--max_epochs"), _value(a, "--schedule_epochs")) == ("4", "9")
    assert (_value(a, "--split_mode"), _value(a, "--num_folds"), _value(a, "--fold")) == ("kfold", "5", "2")
    assert "--init_checkpoint" not in a and "--resume_checkpoint" not in a
    assert _value(b, "--max_epochs") == "2" and "--schedule_epochs" not in b
    assert _value(b, "--learning_rate") == "0.0003"
    assert _value(b, "--init_checkpoint") == str(fold / "a" / "resume" / "checkpoint_epoch=4.pt")
    assert _value(a, "--bn_films") == _value(b, "--bn_films") == "8"
    assert _value(calibrate, "--datalist") == str(fold / "b" / "tb" / "datalist.json")
    assert _value(evaluate, "--dataset_dir") == str(fold / "b" / "tb" / "datalist.json")
    assert (fold / "bundle" / "models" / "model.pt").read_bytes() == (fold / "b" / "model.pt").read_bytes()
    record = json.loads((tmp_path / "records" / "fold2.json").read_text(encoding="utf-8"))
    assert record["threshold"] == 0.4321 == read_operating_point(fold / "bundle").threshold
    assert read_operating_point(bundle_copy).threshold != 0.4321  # the source bundle is never edited
    assert record["training_minutes"] == {"a": 1.0, "b": 1.0}
    assert record["recipe"]["schedule_epochs"] == 9 and record["set"] == {"bn_films": "8"}

    fake_stages.calls.clear()
    assert kfold.main(argv) == 0
    assert fake_stages.calls == []


def test_run_resumes_an_interrupted_stage_and_redoes_what_follows_a_retrained_one(
    tmp_path: Path, bundle_copy: Path, fake_stages: FakeStages
) -> None:
    argv = _argv(tmp_path, bundle_copy)
    fold = tmp_path / "work" / "fold2"
    (fold / "a" / "resume").mkdir(parents=True)
    (fold / "a" / "resume" / "checkpoint_epoch=2.pt").write_bytes(b"state")
    assert kfold.main(argv) == 0
    assert _value(fake_stages.calls[0][1], "--resume_checkpoint") == str(
        fold / "a" / "resume" / "checkpoint_epoch=2.pt"
    )

    fake_stages.calls.clear()
    (fold / "b" / "model.pt").write_bytes(b"other weights")  # stage b trained again, by hand
    assert kfold.main(argv) == 0
    assert [name for name, _ in fake_stages.calls] == ["calibrate", "evaluate"]
    assert (fold / "bundle" / "models" / "model.pt").read_bytes() == b"other weights"

    fake_stages.calls.clear()
    (fold / "bundle" / kfold.CALIBRATED_MARK).unlink()  # calibrate.py died before --write finished
    assert kfold.main(argv) == 0
    assert [name for name, _ in fake_stages.calls] == ["calibrate", "evaluate"]


def test_run_refuses_a_fold_folder_made_with_other_settings(
    tmp_path: Path, bundle_copy: Path, fake_stages: FakeStages, caplog: pytest.LogCaptureFixture
) -> None:
    assert kfold.main(_argv(tmp_path, bundle_copy)) == 0
    fake_stages.calls.clear()
    assert kfold.main(_argv(tmp_path, bundle_copy, "--num-folds", "10")) == 2
    assert "was made with num_folds 5, not 10" in caplog.text
    assert kfold.main(_argv(tmp_path, bundle_copy, "--stage-b-learning-rate", "0.001")) == 2
    assert "was made with recipe" in caplog.text
    assert fake_stages.calls == []


def test_run_refuses_a_stage_past_the_recipe(
    tmp_path: Path, bundle_copy: Path, fake_stages: FakeStages, caplog: pytest.LogCaptureFixture
) -> None:
    resume = tmp_path / "work" / "fold2" / "a" / "resume"
    resume.mkdir(parents=True)
    (resume / "checkpoint_epoch=5.pt").write_bytes(b"state")
    assert kfold.main(_argv(tmp_path, bundle_copy)) == 1
    assert "stage a holds epoch 5, the recipe asks for 4" in caplog.text
    assert fake_stages.calls == []


def test_log_minutes_spans_the_first_and_last_stamped_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(
        "warming up\n"
        "2026-12-02 02:21:00,100 - INFO - Epoch: 1/4, Iter: 1/131\n"
        "Traceback-free noise\n"
        "2026-12-02 02:51:30,900 - INFO - Epoch: 4/4 done\n",
        encoding="utf-8",
    )
    assert kfold.log_minutes(log) == 30.5
    assert kfold.log_minutes(tmp_path / "none.log") is None


def _small_tree(src: Path, dest: Path, per_class: int) -> Path:
    for cls in ("NORMAL", "PNEUMONIA"):
        (dest / "train" / cls).mkdir(parents=True)
        for path in sorted((src / "train" / cls).glob("*.jpeg"))[:per_class]:
            shutil.copy(path, dest / "train" / cls / path.name)
    return dest


@pytest.mark.slow
def test_a_fold_end_to_end_then_a_rerun_does_nothing(
    tmp_path: Path, sample_tree: Path, bundle_copy: Path
) -> None:
    """Both training stages, the calibration and the evaluation of one fold of a small tree, for real."""
    tree = _small_tree(sample_tree, tmp_path / "tree", per_class=8)
    work, record_dir = tmp_path / "work", tmp_path / "records"
    argv = [
        "run", "--bundle", str(bundle_copy), "--fold", "1", "--num-folds", "2",
        "--dataset-dir", str(tree), "--work", str(work), "--record", str(record_dir),
        "--stage-a-epochs", "1", "--schedule-epochs", "2", "--stage-b-epochs", "1",
        "--set", "bn_films", "8", "--set", "batch_size", "4",
    ]  # fmt: skip
    assert kfold.main(argv) == 0
    fold = work / "fold1"
    assert kfold.last_checkpoint(fold / "a" / "resume") == (
        1,
        fold / "a" / "resume" / "checkpoint_epoch=1.pt",
    )
    record = json.loads((record_dir / "fold1.json").read_text(encoding="utf-8"))
    datalist = json.loads((fold / "b" / "tb" / "datalist.json").read_text(encoding="utf-8"))
    assert record["split"]["n"] == len(datalist["validation"])
    assert sum(record["split"]["class_counts"].values()) == record["split"]["n"]
    stored = json.loads((fold / "bundle" / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert record["threshold"] == stored["threshold"]
    assert record["calibration"]["temperature"] == pytest.approx(stored["temperature"], abs=1e-6)
    for name in kfold.METRICS:
        figure = record["metrics"][name]
        assert 0.0 <= figure["estimate"] <= 1.0
    matrix = record["confusion_matrix"]
    assert sum(matrix.values()) == record["split"]["n"]
    # the fold's validation patients are the other fold's training patients, and no one is on both sides
    train_patients = {it["patient_id"] for it in datalist["training"]}
    assert train_patients.isdisjoint({it["patient_id"] for it in datalist["validation"]})

    logs = {path: path.stat().st_size for path in fold.rglob("*.log")}
    assert kfold.main(argv) == 0  # every stage is done: nothing runs again
    assert {path: path.stat().st_size for path in fold.rglob("*.log")} == logs
    assert json.loads((record_dir / "fold1.json").read_text(encoding="utf-8")) == record


@pytest.mark.parametrize(
    "path", sorted((REPO / "bundle" / "docs" / "kfold").glob("fold*.json")), ids=lambda p: p.name
)
def test_committed_fold_records_agree_with_themselves(path: Path) -> None:
    """Each shipped fold record: counts, confusion matrix and rates tell one story."""
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["schema"] == kfold.RECORD_SCHEMA and record["num_folds"] == 5
    assert path.name == f"fold{record['fold']}.json"
    counts, matrix = record["split"]["class_counts"], record["confusion_matrix"]
    assert matrix["tn"] + matrix["fp"] == counts["normal"]
    assert matrix["fn"] + matrix["tp"] == counts["pneumonia"] == record["split"]["n"] - counts["normal"]
    rates = {
        "sensitivity": matrix["tp"] / (matrix["tp"] + matrix["fn"]),
        "specificity": matrix["tn"] / (matrix["tn"] + matrix["fp"]),
        "accuracy": (matrix["tp"] + matrix["tn"]) / record["split"]["n"],
    }
    for name, rate in rates.items():
        figure = record["metrics"][name]
        assert figure["estimate"] == pytest.approx(rate, abs=5e-4), name
        assert figure["low"] <= figure["estimate"] <= figure["high"], name
    assert 0.0 < record["threshold"] < 1.0
    assert record["calibration"]["ece_after"] <= record["calibration"]["ece_before"]
