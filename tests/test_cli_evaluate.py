"""``pneumonia-monai evaluate`` end to end: joining, accounting, exit codes, threshold sources."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pneumonia_monai.cli import evaluate
from pneumonia_monai.cli.common import EXIT_FAILURES, EXIT_OK, EXIT_USAGE
from pneumonia_monai.cli.main import main as dispatcher
from pneumonia_monai.evaluation import join
from pneumonia_monai.evaluation.metrics import binary_metrics

RESULT_COLUMNS = [
    "path",
    "status",
    "reason",
    "study_uid",
    "series_uid",
    "sop_uid",
    "view",
    "prob_pneumonia",
    "prediction",
    "threshold",
    "model_version",
]
SUBTYPE_COLUMNS = ["prob_normal", "prob_bacterial", "prob_viral"]

# Twelve films scored at threshold 0.5 (prob >= 0.5 -> pneumonia):
#   normal    : 0.10 0.20 0.30 0.40 0.60 0.70  -> FP 2 (0.6, 0.7), TN 4
#   pneumonia : 0.35 0.55 0.65 0.80 0.90 0.95  -> TP 5, FN 1 (0.35)
#   sensitivity 5/6, specificity 4/6, accuracy 9/12
#   ROC AUC: normals below each pneumonia film 3 + 4 + 5 + 6 + 6 + 6 = 30 of 36 pairs
NORMAL = [0.10, 0.20, 0.30, 0.40, 0.60, 0.70]
PNEUMONIA = [0.35, 0.55, 0.65, 0.80, 0.90, 0.95]


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _ok(path: Path, prob: float, threshold: float = 0.5) -> dict:
    return {
        "path": str(path),
        "status": "ok",
        "view": "PA",
        "prob_pneumonia": f"{prob:.6f}",
        "prediction": "pneumonia" if prob >= threshold else "normal",
        "threshold": threshold,
        "model_version": "0.1.0",
    }


def _not_ok(path: Path, status: str, reason: str) -> dict:
    return {"path": str(path), "status": status, "reason": reason, "model_version": "0.1.0"}


@pytest.fixture
def binary_case(tmp_path):
    """results.csv with 12 ok rows (absolute paths), a skipped and an error row; labels.csv for the 12."""
    films = tmp_path / "films"
    results = [_ok(films / "NORMAL" / f"n{i}.jpeg", p) for i, p in enumerate(NORMAL)]
    results += [_ok(films / "PNEUMONIA" / f"p{i}.jpeg", p) for i, p in enumerate(PNEUMONIA)]
    results.append(_not_ok(films / "lateral.dcm", "skipped", "ViewPosition LL is not frontal"))
    results.append(_not_ok(films / "broken.dcm", "error", "cannot decode pixel data"))
    # Labels: 10 by path relative to the labels file's folder, 2 (p4, p5) only by their file name.
    labels = [{"path": f"films/NORMAL/n{i}.jpeg", "label": "normal"} for i in range(6)]
    labels += [{"path": f"films/PNEUMONIA/p{i}.jpeg", "label": "pneumonia"} for i in range(4)]
    labels += [{"path": f"elsewhere/p{i}.jpeg", "label": "1"} for i in (4, 5)]
    return tmp_path, results, labels


def _run(
    tmp_path: Path, results: list[dict], labels: list[dict], *extra: str, columns=None
) -> tuple[int, Path]:
    results_csv = _write_csv(tmp_path / "results.csv", columns or RESULT_COLUMNS, results)
    labels_csv = _write_csv(tmp_path / "labels.csv", list(labels[0]), labels)
    out = tmp_path / "report"
    code = evaluate.main(
        [
            "--results",
            str(results_csv),
            "--labels",
            str(labels_csv),
            "--output",
            str(out),
            "--bootstrap",
            "100",
            *extra,
        ]
    )
    return code, out


def _unmatched(out: Path) -> list[dict]:
    with (out / "unmatched.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_end_to_end_binary(binary_case, capsys):
    tmp_path, results, labels = binary_case
    code, out = _run(tmp_path, results, labels, "--split", "test")
    assert code == EXIT_OK
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    y = np.array([0] * 6 + [1] * 6)
    p = np.array(NORMAL + PNEUMONIA)
    assert report["binary"] == binary_metrics(y, p, 0.5)
    assert report["binary"]["confusion_matrix"] == {"tn": 4, "fp": 2, "fn": 1, "tp": 5}
    assert report["binary"]["roc_auc"] == pytest.approx(30 / 36)
    assert report["binary"]["sensitivity"] == pytest.approx(5 / 6)
    assert report["split"] == "test"
    assert report["threshold"]["value"] == 0.5
    assert report["extra"]["threshold_source"] == "results.csv"
    assert report["extra"]["inputs"] == {"results": "results.csv", "labels": "labels.csv"}
    assert report["extra"]["accounting"] == {
        "results_rows": 14,
        "results_by_status": {"error": 1, "ok": 12, "skipped": 1},
        "labels": 12,
        "evaluated": 12,
        "labelled_without_prediction": 0,
        "labelled_without_prediction_by_cause": {},
        "unusable_labels": 0,
        "results_without_label": 2,
        "results_without_label_by_status": {"error": 1, "skipped": 1},
        "matched_by": {"path": 10, "file_name": 2},
    }
    assert sorted((row["source"], Path(row["path"]).name, row["reason"]) for row in _unmatched(out)) == [
        ("results", "broken.dcm", "no label (error)"),
        ("results", "lateral.dcm", "no label (skipped)"),
    ]
    for name in ("roc.png", "pr.png", "calibration.png", "confusion_matrix.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "12 film(s) evaluated" in capsys.readouterr().out


def test_join_without_the_command_line(binary_case):
    """evaluation.join pairs and accounts on its own: the CLI only parses, calls and reports."""
    tmp_path, results, labels = binary_case
    results_csv = _write_csv(tmp_path / "results.csv", RESULT_COLUMNS, results)
    labels_csv = _write_csv(tmp_path / "labels.csv", list(labels[0]), labels)
    joined = join.join(results_csv, labels_csv, results_root=tmp_path, labels_root=tmp_path)
    assert joined.num_classes == 2
    assert joined.accounting["matched_by"] == {"path": 10, "file_name": 2}
    assert joined.accounting["evaluated"] == 12 and joined.missing == 0
    assert joined.accounting["results_without_label_by_status"] == {"error": 1, "skipped": 1}
    assert sorted(row["path"] for row in joined.unmatched) == sorted(
        str(tmp_path / "films" / name) for name in ("broken.dcm", "lateral.dcm")
    )
    np.testing.assert_array_equal(joined.y_true(), [0] * 6 + [1] * 6)
    np.testing.assert_allclose(joined.probs(), NORMAL + PNEUMONIA)
    assert joined.groups() is None  # no patient ids
    assert joined.written_thresholds() == {0.5}
    assert join.model_version(joined.scored_rows) == "0.1.0"


def test_labelled_images_without_prediction_exit_1(binary_case, caplog):
    tmp_path, results, labels = binary_case
    labels = [
        *labels,
        {"path": "films/lateral.dcm", "label": "normal"},
        {"path": "films/gone.jpeg", "label": "0"},
    ]
    with caplog.at_level(logging.ERROR, logger="pneumonia_monai"):
        code, out = _run(tmp_path, results, labels)
    assert code == EXIT_FAILURES
    assert "2 labelled image(s) have no prediction" in caplog.text
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    accounting = report["extra"]["accounting"]
    assert accounting["evaluated"] == report["n"] == 12
    assert accounting["labelled_without_prediction"] == 2
    assert accounting["labelled_without_prediction_by_cause"] == {"not_in_results": 1, "skipped": 1}
    assert accounting["results_without_label"] == 1  # only the error row is unlabelled now
    reasons = {Path(row["path"]).name: row["reason"] for row in _unmatched(out)}
    assert reasons["gone.jpeg"] == "no prediction: not in the results"
    assert reasons["lateral.dcm"] == "no prediction: skipped (ViewPosition LL is not frontal)"


def test_file_name_match_only_when_unique(tmp_path):
    # Two results named x.jpeg: a label elsewhere/x.jpeg is ambiguous and must not be guessed.
    results = [
        _ok(tmp_path / "a" / "x.jpeg", 0.9),
        _ok(tmp_path / "b" / "x.jpeg", 0.2),
        _ok(tmp_path / "a" / "y.jpeg", 0.1),
        _ok(tmp_path / "a" / "z.jpeg", 0.8),
    ]
    labels = [
        {"path": "elsewhere/x.jpeg", "label": "pneumonia"},
        {"path": "elsewhere/y.jpeg", "label": "normal"},
        {"path": "a/z.jpeg", "label": "pneumonia"},
    ]
    code, out = _run(tmp_path, results, labels, "--bootstrap", "0")
    assert code == EXIT_FAILURES
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["extra"]["accounting"]["matched_by"] == {"path": 1, "file_name": 1}
    assert report["extra"]["accounting"]["labelled_without_prediction_by_cause"] == {"not_in_results": 1}
    assert report["confidence_intervals"] is None


def test_relative_result_paths_with_root(tmp_path):
    root = tmp_path / "input"
    results = [
        {**_ok(Path("NORMAL/n.jpeg"), 0.2)},
        {**_ok(Path("PNEUMONIA/p.jpeg"), 0.7)},
        {**_ok(Path("NORMAL/m.jpeg"), 0.6)},
    ]
    labels = [
        {"path": str(root / "NORMAL" / "n.jpeg"), "label": "normal"},
        {"path": str(root / "PNEUMONIA" / "p.jpeg"), "label": "pneumonia"},
        {"path": str(root / "NORMAL" / "m.jpeg"), "label": "normal"},
    ]
    code, out = _run(tmp_path, results, labels, "--root", str(root), "--bootstrap", "0")
    assert code == EXIT_OK
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["extra"]["accounting"]["matched_by"] == {"path": 3, "file_name": 0}
    assert report["binary"]["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 0, "tp": 1}


def test_threshold_sources(binary_case):
    tmp_path, results, labels = binary_case
    results = [dict(row) for row in results]
    results[0]["threshold"] = 0.4  # now the rows disagree
    code, _ = _run(tmp_path, results, labels)
    assert code == EXIT_USAGE
    code, out = _run(tmp_path, results, labels, "--threshold", "0.62")
    assert code == EXIT_OK
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["threshold"]["value"] == 0.62
    assert report["extra"]["threshold_source"] == "command line"
    # at 0.62: normals >= 0.62: 0.7 -> FP 1; pneumonia >= 0.62: 0.65 0.8 0.9 0.95 -> TP 4
    assert report["binary"]["confusion_matrix"] == {"tn": 5, "fp": 1, "fn": 2, "tp": 4}
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps({"threshold": 0.3}), encoding="utf-8")
    code, out = _run(tmp_path, results, labels, "--bundle", str(bundle))
    assert code == EXIT_OK
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["threshold"]["value"] == 0.3
    assert report["extra"]["threshold_source"] == "bundle configs/inference.json"
    (bundle / "configs" / "inference.json").write_text(json.dumps({"threshold": "$@x"}), encoding="utf-8")
    code, _ = _run(tmp_path, results, labels, "--bundle", str(bundle))
    assert code == EXIT_USAGE


def test_three_class_datalist_with_patients(tmp_path):
    # Datalist items as pneumonia_monai.data.datalist writes them (paths relative to the JSON's folder).
    #   normal (label 0): 3 films of patients A, A, B
    #   bacterial (label 1): 2 films of C; viral (label 2): 2 films of D
    #   one pneumonia film of unknown subtype (label 1, subtype "unknown"): unusable for 3 classes
    items = [
        {"image": "img/a1.png", "label": 0, "patient_id": "A", "subtype": "none"},
        {"image": "img/a2.png", "label": 0, "patient_id": "A", "subtype": "none"},
        {"image": "img/b1.png", "label": 0, "patient_id": "B", "subtype": "none"},
        {"image": "img/c1.png", "label": 1, "patient_id": "C", "subtype": "bacterial"},
        {"image": "img/c2.png", "label": 1, "patient_id": "C", "subtype": "bacterial"},
        {"image": "img/d1.png", "label": 2, "patient_id": "D", "subtype": "viral"},
        {"image": "img/d2.png", "label": 2, "patient_id": "D", "subtype": "viral"},
        {"image": "img/u1.png", "label": 1, "patient_id": "E", "subtype": "unknown"},
    ]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [], "test": items}), encoding="utf-8")
    # predicted (arg-max): a1 normal, a2 normal, b1 bacterial | c1 bacterial, c2 viral | d1 viral, d2 viral
    probs = {
        "a1": (0.8, 0.1, 0.1),
        "a2": (0.7, 0.2, 0.1),
        "b1": (0.3, 0.5, 0.2),
        "c1": (0.1, 0.7, 0.2),
        "c2": (0.2, 0.3, 0.5),
        "d1": (0.1, 0.2, 0.7),
        "d2": (0.05, 0.15, 0.8),
        "u1": (0.1, 0.8, 0.1),
    }
    rows = []
    for name, (pn, pb, pv) in probs.items():
        row = _ok(tmp_path / "img" / f"{name}.png", 1 - pn)
        row.update(prob_normal=f"{pn:.4f}", prob_bacterial=f"{pb:.4f}", prob_viral=f"{pv:.4f}")
        rows.append(row)
    results_csv = _write_csv(tmp_path / "results.csv", RESULT_COLUMNS + SUBTYPE_COLUMNS, rows)
    out = tmp_path / "report"
    code = dispatcher(
        [
            "evaluate",
            "--results",
            str(results_csv),
            "--labels",
            str(tmp_path / "datalist.json"),
            "--split",
            "test",
            "--output",
            str(out),
            "--bootstrap",
            "100",
        ]
    )
    assert code == EXIT_OK
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["task"] == "multiclass"
    assert report["class_names"] == ["normal", "bacterial", "viral"]
    assert report["class_counts"] == {"normal": 3, "bacterial": 2, "viral": 2}
    assert report["n_groups"] == 4 and report["bootstrap"]["unit"] == "patient"
    assert report["multiclass"]["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert report["multiclass"]["accuracy"] == pytest.approx(5 / 7)
    # binary view at 0.5 on 1 - p(normal): b1 (0.7) is the one normal called pneumonia
    assert report["binary"]["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 4}
    assert report["extra"]["accounting"]["unusable_labels"] == 1
    assert report["extra"]["accounting"]["evaluated"] == 7
    # u1 has a prediction and a label, but no usable one: it is listed, and does not fail the run
    assert _unmatched(out) == [
        {"source": "labels", "path": "img/u1.png", "reason": "unusable label: pneumonia of unknown subtype"}
    ]


@pytest.mark.parametrize(
    ("value", "subtype", "num_classes", "expected"),
    [
        ("normal", "", 2, 0),
        ("NORMAL", "", 3, 0),
        (0, "none", 3, 0),
        ("pneumonia", "", 2, 1),
        ("pneumonia", "", 3, None),
        ("pneumonia", "viral", 3, 2),
        ("bacteria", "", 3, 1),
        ("Virus", "", 2, 1),
        ("1", "", 3, 1),
        (2, "", 3, 2),
        (2, "", 2, 1),
        (1, "viral", 3, 2),  # a two-class datalist item: the subtype says which pneumonia
        (1, "unknown", 3, None),
        (1, "unknown", 2, 1),
        (1.0, "", 2, 1),
    ],
)
def test_class_index_table(value, subtype, num_classes, expected):
    assert join.class_index(value, subtype, num_classes) == expected


@pytest.mark.parametrize("value", ["pnuemonia", "3", -1, True, ""])
def test_class_index_rejects(value):
    with pytest.raises(join.InputError):
        join.class_index(value, "", 2)


def test_malformed_inputs_exit_2(binary_case, caplog):
    tmp_path, results, labels = binary_case
    code, _ = _run(tmp_path, results, [*labels[:-1], {"path": "elsewhere/p5.jpeg", "label": "pnuemonia"}])
    assert code == EXIT_USAGE
    assert "unknown label 'pnuemonia'" in caplog.text
    broken = [dict(row) for row in results]
    broken[0]["prob_pneumonia"] = ""
    code, _ = _run(tmp_path, broken, labels)
    assert code == EXIT_USAGE
    code, _ = _run(tmp_path, [*results, results[0]], labels)
    assert code == EXIT_USAGE
    assert "listed twice" in caplog.text
    code, _ = _run(tmp_path, [{"path": "x", "status": "ok"}], labels, columns=["path", "status"])
    assert code == EXIT_USAGE
    assert "lacks column(s) ['prob_pneumonia']" in caplog.text


def test_parser_rejects_bad_options(tmp_path):
    parser = evaluate.build_parser()
    base = ["--results", "r.csv", "--labels", "l.csv", "--output", "out"]
    for bad in (["--threshold", "1.5"], ["--bootstrap", "-1"], ["--threshold", "0.5", "--bundle", "b"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(base + bad)
        assert info.value.code == EXIT_USAGE


def test_too_few_films_for_bootstrap_intervals_are_flagged_not_printed(tmp_path, capsys, caplog):
    """Six well-separated films: every resample has ROC AUC 1, an interval of [1.000, 1.000]."""
    films = tmp_path / "films"
    probs = {"n0": 0.1, "n1": 0.2, "n2": 0.3, "p0": 0.7, "p1": 0.8, "p2": 0.9}
    results = [_ok(films / f"{name}.jpeg", p) for name, p in probs.items()]
    labels = [
        {"path": f"films/{name}.jpeg", "label": "pneumonia" if name[0] == "p" else "normal"} for name in probs
    ]
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        code, out = _run(tmp_path, results, labels)
    assert code == EXIT_OK
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["confidence_intervals"]["binary"]["roc_auc"] == {"estimate": 1.0, "low": 1.0, "high": 1.0}
    warning = report["bootstrap"]["warning"]
    assert warning.startswith(
        "bootstrap intervals on 3 normal and 3 pneumonia film(s): fewer than 10 of a class"
    )
    summary, note = capsys.readouterr().out.splitlines()
    assert "ROC AUC 1.000, sensitivity 1.000, specificity 1.000;" in summary and "[" not in summary
    assert note == f"no intervals shown: {warning}"
    assert warning in caplog.text


def test_enough_films_or_patients_for_bootstrap_give_no_warning(tmp_path, capsys):
    from pneumonia_monai.evaluation.report import bootstrap_sample_warning

    films = tmp_path / "films"
    probs = {f"n{i}": 0.02 * i for i in range(10)} | {f"p{i}": 0.5 + 0.04 * i for i in range(10)}
    results = [_ok(films / f"{name}.jpeg", p) for name, p in probs.items()]
    labels = [
        {"path": f"films/{name}.jpeg", "label": "pneumonia" if name[0] == "p" else "normal"} for name in probs
    ]
    code, out = _run(tmp_path, results, labels)
    assert code == EXIT_OK
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["bootstrap"]["warning"] is None
    assert "no intervals shown" not in capsys.readouterr().out
    # Units are patients when patient ids are given: 20 films of 4 patients are too few.
    y = np.array([0] * 10 + [1] * 10)
    assert bootstrap_sample_warning(y, None) is None
    groups = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5)
    assert bootstrap_sample_warning(y, groups).startswith(
        "bootstrap intervals on 2 normal and 2 pneumonia patient(s)"
    )
