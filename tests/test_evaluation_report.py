"""The evaluation report: metrics.json contract, agreement with the metric functions, figures."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pneumonia_monai.evaluation.metrics import (
    binary_metrics,
    bootstrap_ci,
    macro_f1,
    multiclass_metrics,
    roc_auc,
    threshold_metric,
)
from pneumonia_monai.evaluation.report import (
    REPORT_KEYS,
    select_montage_cases,
    to_json_ready,
    write_report,
)
from pneumonia_monai.evaluation.threshold import choose_threshold

# The contract of metrics.json: consumers (the bundle's metadata, the model card, CI checks) read
# these keys. Changing them is a schema change.
CONTRACT_KEYS = [
    "schema_version",
    "pneumonia_monai_version",
    "split",
    "task",
    "class_names",
    "n",
    "class_counts",
    "n_groups",
    "threshold",
    "bootstrap",
    "binary",
    "multiclass",
    "confidence_intervals",
    "figures",
    "extra",
]
BINARY_KEYS = {
    "n",
    "n_positive",
    "n_negative",
    "threshold",
    "roc_auc",
    "average_precision",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "brier",
    "ece",
    "ece_bins",
    "confusion_matrix",
}
FIGURES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "calibration": "calibration.png",
    "confusion_matrix": "confusion_matrix.png",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _binary_set(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], [n // 2, n - n // 2])
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0.0, 1.0)
    groups = np.array([f"patient{i // 2}" for i in range(n)])  # two films per patient, same class
    return y, p, groups


def _three_class_set(n: int = 90, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits)
    return y, probs / probs.sum(axis=1, keepdims=True)


def _load(path: Path) -> dict:
    def reject(constant: str) -> None:
        raise AssertionError(f"metrics.json holds {constant}, which is not strict JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def test_binary_report_contract_and_values(tmp_path):
    y, p, groups = _binary_set()
    out = tmp_path / "report"
    returned = write_report(
        out,
        y,
        p,
        class_names=["normal", "pneumonia"],
        threshold=0.5,
        groups=groups,
        split_name="test",
        extra={"model": "densenet121", "counts": np.array([1, 2])},
        n_resamples=300,
        seed=3,
    )
    saved = _load(out / "metrics.json")
    assert saved == returned
    assert list(saved) == CONTRACT_KEYS
    assert list(REPORT_KEYS) == CONTRACT_KEYS
    assert set(saved["binary"]) == BINARY_KEYS
    assert saved["binary"] == binary_metrics(y, p, 0.5)
    assert saved["task"] == "binary" and saved["multiclass"] is None
    assert saved["split"] == "test"
    assert saved["n"] == 80 and saved["class_counts"] == {"normal": 40, "pneumonia": 40}
    assert saved["n_groups"] == 40
    assert saved["threshold"] == {
        "value": 0.5,
        "rule": "fixed",
        "params": {},
        "applied_as": "prob_pneumonia >= value -> pneumonia",
    }
    assert saved["bootstrap"] == {
        "n_resamples": 300,
        "confidence": 0.95,
        "seed": 3,
        "method": "percentile",
        "stratified_by": "class",
        "unit": "patient",
        "warning": None,
    }
    assert saved["extra"] == {"model": "densenet121", "counts": [1, 2]}
    cis = saved["confidence_intervals"]
    assert cis["multiclass"] is None
    assert list(cis["binary"]) == ["roc_auc", "accuracy", "sensitivity", "specificity"]
    for name, fn in [
        ("roc_auc", roc_auc),
        ("accuracy", threshold_metric("accuracy", 0.5)),
        ("sensitivity", threshold_metric("sensitivity", 0.5)),
        ("specificity", threshold_metric("specificity", 0.5)),
    ]:
        low, high = bootstrap_ci(y, p, fn, n_resamples=300, seed=3, groups=groups)
        assert cis["binary"][name] == {"estimate": saved["binary"][name], "low": low, "high": high}
        assert low <= saved["binary"][name] <= high
    assert saved["figures"] == FIGURES
    for name in FIGURES.values():
        width, height = _png_size(out / name)
        assert width >= 400 and height >= 400, (name, width, height)
        assert (out / name).stat().st_size > 10_000
    assert not list(out.glob(".*")), "temporary files left behind"


def test_report_is_reproducible(tmp_path):
    y, p, groups = _binary_set()
    for name in ("a", "b"):
        write_report(
            tmp_path / name,
            y,
            p,
            class_names=["normal", "pneumonia"],
            threshold=0.4,
            n_resamples=200,
            groups=groups,
        )
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_two_column_probs_equal_one_column(tmp_path):
    y, p, _ = _binary_set()
    one = write_report(
        tmp_path / "one", y, p, class_names=["normal", "pneumonia"], threshold=0.5, n_resamples=0
    )
    two = write_report(
        tmp_path / "two",
        y,
        np.stack([1 - p, p], axis=1),
        class_names=["normal", "pneumonia"],
        threshold=0.5,
        n_resamples=0,
    )
    assert one == two
    assert one["confidence_intervals"] is None
    assert one["bootstrap"]["n_resamples"] == 0 and one["bootstrap"]["unit"] == "film"


def test_threshold_choice_is_recorded(tmp_path):
    y, p, _ = _binary_set()
    choice = choose_threshold(y, p, min_sensitivity=0.9)
    saved = write_report(tmp_path, y, p, class_names=["normal", "pneumonia"], threshold=choice, n_resamples=0)
    assert saved["threshold"]["value"] == choice.threshold
    assert saved["threshold"]["rule"] == "max_specificity_at_sensitivity"
    assert saved["threshold"]["params"] == {"min_sensitivity": 0.9}
    assert saved["binary"]["sensitivity"] >= 0.9
    assert saved["binary"]["sensitivity"] == pytest.approx(choice.sensitivity)


def test_three_class_report(tmp_path):
    y, probs = _three_class_set()
    names = ["normal", "bacterial", "viral"]
    saved = write_report(tmp_path, y, probs, class_names=names, threshold=0.5, n_resamples=200, seed=1)
    expected = multiclass_metrics(y, probs, names, threshold=0.5)
    binary = expected.pop("binary")
    assert saved["task"] == "multiclass"
    assert saved["multiclass"] == expected
    assert saved["binary"] == binary == binary_metrics(y > 0, 1 - probs[:, 0], 0.5)
    assert saved["class_counts"] == {"normal": 30, "bacterial": 30, "viral": 30}
    cis = saved["confidence_intervals"]["multiclass"]
    assert list(cis) == ["accuracy", "macro_f1"]
    low, high = bootstrap_ci(y, probs, macro_f1, n_resamples=200, seed=1)
    assert cis["macro_f1"] == {"estimate": expected["macro_f1"], "low": low, "high": high}
    # the confusion-matrix figure is the 3 x 3 arg-max one: wider than the 2 x 2
    width, _ = _png_size(tmp_path / "confusion_matrix.png")
    assert width > 550


def test_single_class_writes_null_not_nan(tmp_path):
    saved = write_report(
        tmp_path,
        [0, 0, 0, 0],
        [0.1, 0.2, 0.7, 0.3],
        class_names=["normal", "pneumonia"],
        threshold=0.5,
        n_resamples=50,
    )
    on_disk = _load(tmp_path / "metrics.json")  # raises on NaN
    assert on_disk == saved
    assert saved["binary"]["roc_auc"] is None and saved["binary"]["sensitivity"] is None
    assert saved["binary"]["specificity"] == pytest.approx(3 / 4)
    assert saved["confidence_intervals"]["binary"]["roc_auc"] == {"estimate": None, "low": None, "high": None}
    for name in FIGURES.values():
        _png_size(tmp_path / name)


def test_montage_case_selection():
    # called pneumonia at 0.5: TP 0 (.9), 1 (.7), 6 (.95); FP 3 (.8), 7 (.6)
    # called normal: TN 4 (.1), 5 (.3); FN 2 (.2)
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.7, 0.2, 0.8, 0.1, 0.3, 0.95, 0.6])
    assert select_montage_cases(y, p, 0.5, per_category=2) == [
        ("TP", 6),
        ("TP", 0),
        ("FP", 3),
        ("FP", 7),
        ("TN", 4),
        ("TN", 5),
        ("FN", 2),
    ]


def test_gradcam_montage(tmp_path):
    y, p, _ = _binary_set(40)
    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 32, 32)) * 1000.0  # any intensity range
    cams = rng.random((40, 32, 32))
    saved = write_report(
        tmp_path,
        y,
        p,
        class_names=["normal", "pneumonia"],
        threshold=0.5,
        images=images,
        cams=cams,
        n_resamples=0,
    )
    assert saved["figures"]["gradcam_montage"] == "gradcam_montage.png"
    width, height = _png_size(tmp_path / "gradcam_montage.png")
    assert width > height / 2 and width >= 600


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"images": np.zeros((80, 8, 8))}, ValueError, "together"),
        ({"class_names": ["normal", "bacterial", "viral"]}, ValueError, "1-D probs"),
        ({"class_names": ["normal"]}, ValueError, "at least 2"),
        ({"threshold": 2.0}, ValueError, "threshold"),
        ({"groups": ["a", "b"]}, ValueError, "groups"),
        ({"n_resamples": -1}, ValueError, "n_resamples"),
        ({"extra": {"when": object()}}, TypeError, "extra"),
    ],
)
def test_write_report_rejects_bad_input(tmp_path, kwargs, error, match):
    y, p, _ = _binary_set()
    arguments = {"class_names": ["normal", "pneumonia"], "threshold": 0.5, "n_resamples": 0, **kwargs}
    with pytest.raises(error, match=match):
        write_report(tmp_path / "r", y, p, **arguments)


def test_to_json_ready():
    assert to_json_ready({"a": np.float32(0.5), "b": [np.int64(2), float("nan")], "c": (True, None)}) == {
        "a": 0.5,
        "b": [2, None],
        "c": [True, None],
    }
    with pytest.raises(TypeError, match=r"value\['x'\]"):
        to_json_ready({"x": {1, 2}})
