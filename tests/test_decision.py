"""The decision rule of :mod:`pneumonia_monai.decision`, and that every path takes it from there."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumonia_monai import decision
from pneumonia_monai.decision import (
    BINARY_CLASSES,
    SUBTYPE_CLASSES,
    called_pneumonia,
    explained_class,
    is_pneumonia,
    label_at,
    pneumonia_probability,
)
from pneumonia_monai.engine import handlers


def test_pneumonia_probability_of_both_layouts() -> None:
    assert pneumonia_probability([0.3, 0.7], BINARY_CLASSES) == pytest.approx(0.7)
    # three classes: bacterial + viral = 1 - p(normal)
    assert pneumonia_probability([0.5, 0.3, 0.2], SUBTYPE_CLASSES) == pytest.approx(0.5)
    # clipped: a rounding above 1 does not leave [0, 1]
    assert pneumonia_probability([-1e-9, 0.6, 0.4], SUBTYPE_CLASSES) == 1.0
    with pytest.raises(ValueError, match="class_names must be"):
        pneumonia_probability([0.5, 0.5], ("healthy", "pneumonia"))
    with pytest.raises(ValueError, match="3 probabilities"):
        pneumonia_probability([0.2, 0.3, 0.5], BINARY_CLASSES)


def test_the_call_at_the_threshold_is_inclusive() -> None:
    assert is_pneumonia(0.7, 0.7) is True
    assert is_pneumonia(0.69, 0.7) is False
    assert label_at(0.7, 0.7) == decision.PNEUMONIA == "pneumonia"
    assert label_at(0.69, 0.7) == decision.NORMAL == "normal"
    np.testing.assert_array_equal(called_pneumonia(np.array([0.1, 0.7, 0.9]), 0.7), [False, True, True])


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        ([0.6, 0.1, 0.3], 2),  # arg-max "normal": the map still explains the likelier subtype, viral
        ([0.8, 0.15, 0.05], 1),  # arg-max "normal", bacterial likelier
        ([0.2, 0.5, 0.3], 1),
        ([0.2, 0.3, 0.5], 2),
        ([0.4, 0.3, 0.3], 1),  # a tie goes to bacterial
    ],
)
def test_a_three_class_heatmap_explains_the_likelier_subtype_never_normal(probs, expected) -> None:
    assert explained_class(probs, SUBTYPE_CLASSES) == expected


def test_a_two_class_heatmap_explains_pneumonia() -> None:
    assert explained_class([0.9, 0.1], BINARY_CLASSES) == 1


def test_the_bundle_evaluation_explains_the_class_inference_explains(tmp_path, monkeypatch) -> None:
    """The evaluation handler's Grad-CAM (its montage) explains decision.explained_class, as inference does.

    For a three-class film called normal it explains a subtype, not the arg-max "normal".
    """
    report = handlers.MetricsReportHandler(tmp_path, num_classes=3, threshold=0.5, n_resamples=0)
    report.probs = [np.array(p) for p in ([0.6, 0.1, 0.3], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1])]
    report.labels = [np.array(label) for label in (0, 1, 0)]
    report.images = [np.zeros((16, 16), dtype=np.float32) for _ in range(3)]
    report.groups = ["", "", ""]
    report.films = [None, None, None]
    explained: list[int] = []

    def fake_gradcam(network, image, *, class_index: int, **_: object) -> np.ndarray:
        explained.append(class_index)
        return np.zeros((16, 16), dtype=np.float32)

    def fake_write_report(out_dir, y_true, probs, *, cams, **_: object) -> dict:
        return {"cams": [cams(i) for i in range(len(y_true))]}

    monkeypatch.setattr(handlers, "gradcam", fake_gradcam)
    monkeypatch.setattr("pneumonia_monai.evaluation.report.write_report", fake_write_report)

    class _Engine:
        network = torch.nn.Linear(1, 1)

    report._report(_Engine())  # type: ignore[arg-type]
    assert explained == [2, 1, 1]  # arg-max would be [0, 1, 0]


_COPIES = ("1.0 - prob", "1 - prob", ">= threshold", ">= self.threshold", ">= bundle.threshold")


@pytest.mark.parametrize(
    "path",
    [
        "pneumonia_monai/inference/bundle.py",
        "pneumonia_monai/inference/film_step.py",
        "pneumonia_monai/inference/manifest.py",
        "pneumonia_monai/evaluation/report.py",
        "pneumonia_monai/evaluation/metrics.py",
        "pneumonia_monai/evaluation/threshold.py",
        "pneumonia_monai/engine/handlers.py",
        "deploy/chest_classifier.py",
        "monailabel_app/lib/decision.py",
    ],
)
def test_no_path_writes_the_rule_again(repo_root: Path, path: str) -> None:
    """Every path's code (docstrings and comments left out) calls decision.py rather than restating it."""
    tree = ast.parse((repo_root / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # drop docstrings: they may state the rule
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            body.pop(0)  # type: ignore[union-attr]
    code = ast.unparse(tree)
    assert [copy for copy in _COPIES if copy in code] == []
    assert "pneumonia_monai.decision" in code or "from pneumonia_monai import decision" in code
