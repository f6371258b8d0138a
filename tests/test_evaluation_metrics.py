"""Metrics, bootstrap intervals and the threshold rules, checked against hand-computed values."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumonia_monai.evaluation.metrics import (
    binary_metrics,
    bootstrap_ci,
    expected_calibration_error,
    macro_f1,
    multiclass_metrics,
    reliability_table,
    roc_auc,
    threshold_metric,
)
from pneumonia_monai.evaluation.threshold import RULES, ThresholdChoice, choose_threshold, operating_points

# --------------------------------------------------------------------------------------------------
# A 10-film set: 6 normal, 4 pneumonia. One normal and one pneumonia film tie at 0.45.
#
#   normal    : 0.05 0.15 0.25 0.45 0.55 0.65
#   pneumonia : 0.45 0.75 0.85 0.95
#
# At threshold 0.5 (prob >= 0.5 -> pneumonia):
#   normal called pneumonia: 0.55, 0.65         -> FP = 2, TN = 4
#   pneumonia called pneumonia: 0.75 0.85 0.95  -> TP = 3, FN = 1 (the 0.45)
#   sensitivity = 3/4, specificity = 4/6, PPV = 3/5, NPV = 4/5, accuracy = 7/10,
#   F1 = 2*3 / (2*3 + 2 + 1) = 6/9.
# ROC AUC (Mann-Whitney): 4 * 6 = 24 pairs. Normals below each pneumonia film:
#   0.45 -> 0.05, 0.15, 0.25 strictly below (3) + the 0.45 tie (1/2) = 3.5
#   0.75, 0.85, 0.95 -> all 6 each = 18                               -> AUC = 21.5 / 24
# Average precision (descending scores; sklearn: sum (R_k - R_{k-1}) P_k):
#   0.95, 0.85, 0.75 are pneumonia: recall 1/4, 2/4, 3/4 at precision 1 each;
#   0.65, 0.55 are normal: recall unchanged; the 0.45 tie adds recall 1/4 at precision 4/7.
#   AP = 3/4 + (1/4)(4/7) = 3/4 + 1/7.
# Brier: normals 0.0025 + 0.0225 + 0.0625 + 0.2025 + 0.3025 + 0.4225 = 1.015,
#   pneumonia (1-p)^2 = 0.3025 + 0.0625 + 0.0225 + 0.0025 = 0.39 -> (1.015 + 0.39) / 10 = 0.1405.
# ECE, 2 bins [0, .5) [.5, 1]:
#   bin 0: 0.05 0.15 0.25 0.45 0.45 -> conf 1.35/5 = 0.27, observed 1/5 = 0.2, gap 0.07
#   bin 1: 0.55 0.65 0.75 0.85 0.95 -> conf 3.75/5 = 0.75, observed 3/5 = 0.6, gap 0.15
#   ECE = 0.5 * 0.07 + 0.5 * 0.15 = 0.11
# ECE, 3 bins [0, 1/3) [1/3, 2/3) [2/3, 1]:
#   bin 0: 0.05 0.15 0.25 (all normal)      -> conf 0.15, observed 0, gap 0.15, weight 3
#   bin 1: 0.45 0.45 0.55 0.65 (1 positive)  -> conf 0.525, observed 0.25, gap 0.275, weight 4
#   bin 2: 0.75 0.85 0.95 (all positive)     -> conf 0.85, observed 1, gap 0.15, weight 3
#   ECE = (0.45 + 1.1 + 0.45) / 10 = 0.2
# ECE, 10 bins (default): every film is alone in its bin but the two 0.45s (bin 4, observed 1/2):
#   gaps 0.05 0.15 0.25 | 2 x 0.05 | 0.55 0.65 | 0.25 0.15 0.05  -> sum 2.2 -> ECE = 0.22
Y10 = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P10 = np.array([0.05, 0.15, 0.25, 0.45, 0.55, 0.65, 0.45, 0.75, 0.85, 0.95])


def test_binary_metrics_hand_computed():
    m = binary_metrics(Y10, P10, 0.5)
    assert m["confusion_matrix"] == {"tn": 4, "fp": 2, "fn": 1, "tp": 3}
    assert (m["n"], m["n_positive"], m["n_negative"], m["threshold"]) == (10, 4, 6, 0.5)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["ppv"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(6 / 9)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["roc_auc"] == pytest.approx(21.5 / 24)
    assert m["average_precision"] == pytest.approx(3 / 4 + 1 / 7)
    assert m["brier"] == pytest.approx(0.1405)
    assert m["ece"] == pytest.approx(0.22)
    assert m["ece_bins"] == 10


def test_threshold_is_inclusive():
    # At 0.45 both tied films are called pneumonia: TP 4, FP 3 (0.45, 0.55, 0.65).
    m = binary_metrics(Y10, P10, 0.45)
    assert m["confusion_matrix"] == {"tn": 3, "fp": 3, "fn": 0, "tp": 4}


@pytest.mark.parametrize(("n_bins", "expected"), [(2, 0.11), (3, 0.2), (10, 0.22)])
def test_ece_hand_computed(n_bins, expected):
    assert expected_calibration_error(Y10, P10, n_bins) == pytest.approx(expected)


def test_reliability_table_bins():
    table = reliability_table(Y10, P10, 2)
    np.testing.assert_array_equal(table["count"], [5, 5])
    np.testing.assert_allclose(table["confidence"], [0.27, 0.75])
    np.testing.assert_allclose(table["observed"], [0.2, 0.6])
    np.testing.assert_allclose(table["edges"], [0.0, 0.5, 1.0])
    # prob == 1 falls in the last bin, empty bins are nan
    table = reliability_table([1, 0], [1.0, 0.0], 4)
    np.testing.assert_array_equal(table["count"], [1, 0, 0, 1])
    assert np.isnan(table["confidence"][1]) and np.isnan(table["observed"][2])


def test_fast_auc_matches_sklearn_with_ties():
    assert roc_auc(Y10, P10) == pytest.approx(21.5 / 24)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert math.isnan(roc_auc(np.zeros(4, dtype=int), np.linspace(0, 1, 4)))


@pytest.mark.parametrize("name", ["accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"])
def test_threshold_metric_agrees_with_binary_metrics(name):
    assert threshold_metric(name, 0.5)(Y10, P10) == pytest.approx(binary_metrics(Y10, P10, 0.5)[name])


def test_zero_division_is_nan_not_zero():
    # Threshold 1.0: nothing is called pneumonia -> PPV is 0/0, F1 is 0 (2*0 / (0 + 0 + 4)).
    m = binary_metrics(Y10, P10, 1.0)
    assert m["confusion_matrix"] == {"tn": 6, "fp": 0, "fn": 4, "tp": 0}
    assert math.isnan(m["ppv"])
    assert m["f1"] == 0.0
    assert m["sensitivity"] == 0.0


def test_degenerate_single_class_logs_and_returns_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        m = binary_metrics([0, 0, 0], [0.1, 0.6, 0.2], 0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["average_precision"])
    assert math.isnan(m["sensitivity"])  # no pneumonia film: 0 / 0
    assert m["specificity"] == pytest.approx(2 / 3)
    assert "ROC AUC is undefined" in caplog.text
    m = binary_metrics([1, 1], [0.9, 0.2], 0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["specificity"])
    assert m["average_precision"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y", "p", "t", "error"),
    [
        ([], [], 0.5, ValueError),
        ([0, 1], [0.5], 0.5, ValueError),
        ([0, 2], [0.1, 0.9], 0.5, ValueError),
        ([0, 1], [0.1, 1.2], 0.5, ValueError),
        ([0, 1], [0.1, float("nan")], 0.5, ValueError),
        ([0, 1], [0.1, 0.9], 1.5, ValueError),
        ([0, 1], [0.1, 0.9], "0.5", TypeError),
        (["a", "b"], [0.1, 0.9], 0.5, TypeError),
        ([0, 0.5], [0.1, 0.9], 0.5, ValueError),
    ],
)
def test_binary_metrics_rejects_bad_input(y, p, t, error):
    with pytest.raises(error):
        binary_metrics(y, p, t)


# --------------------------------------------------------------------------------------------------
# Multi-class: 9 films, classes normal / bacterial / viral.
#   true normal (4):    predicted normal, normal, normal, bacterial
#   true bacterial (3): predicted bacterial, viral, viral
#   true viral (2):     predicted viral, normal
# Confusion (rows true, columns predicted): [[3, 1, 0], [0, 1, 2], [1, 0, 1]]
#   normal:    TP 3, FP 1, FN 1 -> precision 3/4, recall 3/4, F1 3/4
#   bacterial: TP 1, FP 1, FN 2 -> precision 1/2, recall 1/3, F1 2/(2+1+2) = 2/5
#   viral:     TP 1, FP 2, FN 1 -> precision 1/3, recall 1/2, F1 2/(2+2+1) = 2/5
#   macro F1 = (3/4 + 2/5 + 2/5) / 3 = 1.55 / 3; accuracy = 5/9
Y9 = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
PRED9 = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0])


def _probs_for(pred: np.ndarray, k: int = 3) -> np.ndarray:
    """Rows with 0.6 on the predicted class and 0.4 spread over the others, plus small jitter."""
    rng = np.random.default_rng(0)
    probs = np.full((pred.size, k), 0.4 / (k - 1))
    probs[np.arange(pred.size), pred] = 0.6
    probs += rng.uniform(0, 0.02, probs.shape)
    return probs / probs.sum(axis=1, keepdims=True)


def test_multiclass_hand_computed():
    probs = _probs_for(PRED9)
    m = multiclass_metrics(Y9, probs, ["normal", "bacterial", "viral"], threshold=0.5)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 1, 2], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(5 / 9)
    assert m["macro_f1"] == pytest.approx(1.55 / 3)
    assert m["class_counts"] == {"normal": 4, "bacterial": 3, "viral": 2}
    per = m["per_class"]
    assert [per[c]["recall"] for c in ("normal", "bacterial", "viral")] == pytest.approx(
        [3 / 4, 1 / 3, 1 / 2]
    )
    assert [per[c]["precision"] for c in ("normal", "bacterial", "viral")] == pytest.approx(
        [3 / 4, 1 / 2, 1 / 3]
    )
    assert [per[c]["f1"] for c in ("normal", "bacterial", "viral")] == pytest.approx([3 / 4, 2 / 5, 2 / 5])
    assert [per[c]["support"] for c in ("normal", "bacterial", "viral")] == [4, 3, 2]
    # one-vs-rest AUCs against the reference implementation
    assert m["macro_roc_auc_ovr"] == pytest.approx(
        roc_auc_score(Y9, probs, multi_class="ovr", average="macro")
    )
    assert per["viral"]["roc_auc"] == pytest.approx(roc_auc_score(Y9 == 2, probs[:, 2]))
    # binary view: pneumonia = bacterial or viral, prob_pneumonia = 1 - p(normal)
    assert m["binary"] == binary_metrics(Y9 > 0, 1 - probs[:, 0], 0.5)
    # The binary view at 0.5 calls pneumonia exactly the films not predicted normal (1 - p0 ~ 0.8):
    # normal films predicted bacterial: 1 FP; viral film predicted normal: 1 FN.
    assert m["binary"]["confusion_matrix"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 4}
    assert macro_f1(Y9, probs) == pytest.approx(1.55 / 3)


def test_multiclass_missing_class(caplog):
    probs = _probs_for(np.array([0, 1, 0, 1]))
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        m = multiclass_metrics([0, 1, 0, 1], probs, ["normal", "bacterial", "viral"])
    assert math.isnan(m["macro_roc_auc_ovr"])
    assert math.isnan(m["per_class"]["viral"]["recall"])
    assert math.isnan(m["per_class"]["viral"]["f1"])  # absent and never predicted: 0 / 0
    assert m["macro_f1"] == pytest.approx(1.0)  # mean over the classes where F1 is defined
    assert "viral" in caplog.text


def test_multiclass_rejects_bad_input():
    probs = _probs_for(PRED9)
    with pytest.raises(ValueError, match="class_names"):
        multiclass_metrics(Y9, probs, ["normal", "pneumonia"])
    with pytest.raises(ValueError, match="normal"):
        multiclass_metrics(Y9, probs, ["bacterial", "normal", "viral"])
    with pytest.raises(ValueError, match="sum to 1"):
        multiclass_metrics(Y9, probs * 0.5, ["normal", "bacterial", "viral"])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        multiclass_metrics(Y9 + 1, probs, ["normal", "bacterial", "viral"])


# --------------------------------------------------------------------------------------------------
# Threshold rules. 4 normal, 5 pneumonia; a normal and a pneumonia film tie at 0.3.
#   normal    : 0.1 0.2 0.3 0.6
#   pneumonia : 0.3 0.4 0.5 0.7 0.9
#   t    : 0.1  0.2  0.3  0.4  0.5  0.6  0.7  0.9
#   sens : 5/5  5/5  5/5  4/5  3/5  2/5  2/5  1/5     (pneumonia with prob >= t)
#   spec : 0/4  1/4  2/4  3/4  3/4  3/4  4/4  4/4     (normal with prob < t)
#   J    : 0    .25  .5   .55  .35  .15  .4   .2
YT = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
PT = np.array([0.1, 0.2, 0.3, 0.6, 0.3, 0.4, 0.5, 0.7, 0.9])


def test_operating_points_table():
    thresholds, tp, tn = operating_points(YT, PT)
    np.testing.assert_allclose(thresholds, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9])
    np.testing.assert_array_equal(tp, [5, 5, 5, 4, 3, 2, 2, 1])
    np.testing.assert_array_equal(tn, [0, 1, 2, 3, 3, 3, 4, 4])


@pytest.mark.parametrize(
    ("min_sensitivity", "threshold", "sens", "spec"),
    [
        (0.95, 0.3, 1.0, 0.5),  # only t <= 0.3 keep sensitivity 1; 0.3 has the best specificity
        (1.0, 0.3, 1.0, 0.5),
        (0.8, 0.4, 0.8, 0.75),
        # t = 0.4 and t = 0.5 both reach sensitivity >= 0.6 with specificity 3/4: tie -> the higher
        (0.6, 0.5, 0.6, 0.75),
        (0.4, 0.7, 0.4, 1.0),  # 0.6 and 0.7 both give sens 2/5; 0.7 has specificity 1
    ],
)
def test_max_specificity_at_sensitivity(min_sensitivity, threshold, sens, spec):
    choice = choose_threshold(YT, PT, min_sensitivity=min_sensitivity)
    assert choice == ThresholdChoice(
        threshold, sens, spec, "max_specificity_at_sensitivity", {"min_sensitivity": min_sensitivity}
    )
    # applied as prob >= threshold, the choice reproduces its own sensitivity
    assert binary_metrics(YT, PT, choice.threshold)["sensitivity"] == pytest.approx(sens)


def test_youden_and_its_ties():
    choice = choose_threshold(YT, PT, rule="youden")
    assert (choice.threshold, choice.sensitivity, choice.specificity) == (0.4, 0.8, 0.75)
    # y = 0 1 0 1 at 0.2 0.4 0.6 0.8: J = 0, 0.5, 0, 0.5 -> tie between 0.4 and 0.8 -> 0.8
    choice = choose_threshold([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8], rule="youden")
    assert (choice.threshold, choice.sensitivity, choice.specificity) == (0.8, 0.5, 1.0)


def test_fixed_rule_and_errors():
    choice = choose_threshold(YT, PT, rule="fixed", threshold=0.45)
    assert (choice.threshold, choice.sensitivity, choice.specificity) == (0.45, 0.6, 0.75)
    assert choice.as_dict() == {
        "threshold": 0.45,
        "sensitivity": 0.6,
        "specificity": 0.75,
        "rule": "fixed",
        "params": {"threshold": 0.45},
    }
    assert set(RULES) == {"max_specificity_at_sensitivity", "youden", "fixed"}
    with pytest.raises(ValueError, match="needs a threshold"):
        choose_threshold(YT, PT, rule="fixed")
    with pytest.raises(ValueError, match="only used by rule 'fixed'"):
        choose_threshold(YT, PT, threshold=0.5)
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_threshold(YT, PT, rule="f1")
    with pytest.raises(ValueError, match="min_sensitivity"):
        choose_threshold(YT, PT, min_sensitivity=0.0)
    with pytest.raises(ValueError, match="0 pneumonia and 3 normal"):
        choose_threshold([0, 0, 0], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------------------------------
# Bootstrap


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], [n - n // 3, n // 3])
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, p


def test_bootstrap_is_deterministic_and_covers_the_estimate():
    y, p = _scores(300, 1)
    first = bootstrap_ci(y, p, roc_auc, n_resamples=500, seed=7)
    assert first == bootstrap_ci(y, p, roc_auc, n_resamples=500, seed=7)
    assert first != bootstrap_ci(y, p, roc_auc, n_resamples=500, seed=8)
    low, high = first
    assert low < roc_auc(y, p) < high
    low, high = bootstrap_ci(y, p, threshold_metric("sensitivity", 0.5), n_resamples=500)
    assert low <= threshold_metric("sensitivity", 0.5)(y, p) <= high


def test_bootstrap_is_narrower_with_more_data():
    small = bootstrap_ci(*_scores(100, 2), roc_auc, n_resamples=400)
    large = bootstrap_ci(*_scores(1600, 2), roc_auc, n_resamples=400)
    # 16 times the data: the width shrinks about 4-fold; ask for at least 2-fold.
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])


def test_bootstrap_is_stratified():
    # Stratified resampling keeps 1 pneumonia film in every resample of 1 + 19 films, so the AUC is
    # defined in all of them; unstratified resampling would miss it in (19/20)^20 ~ 36% of resamples.
    y = np.array([1] + [0] * 19)
    p = np.linspace(0.0, 1.0, 20)
    samples = []

    def recording(yy, pp):
        samples.append(int(yy.sum()))
        return roc_auc(yy, pp)

    low, high = bootstrap_ci(y, p, recording, n_resamples=200)
    assert set(samples) == {1}
    assert not math.isnan(low) and not math.isnan(high)


def test_grouped_bootstrap_resamples_whole_patients():
    # Each of 200 patients contributes 5 identical films. Resampling films treats them as 1000
    # independent films and gives a too narrow interval; resampling patients is the same as
    # resampling the 200 distinct films once each (AUC and accuracy are unchanged when every film is
    # repeated 5 times), and by construction the two draw the same unit indices.
    y, p = _scores(200, 4)
    patients = np.arange(200)
    y5, p5, g5 = np.repeat(y, 5), np.repeat(p, 5), np.repeat(patients, 5)
    # shuffle so that a patient's films are not adjacent
    perm = np.random.default_rng(0).permutation(y5.size)
    y5, p5, g5 = y5[perm], p5[perm], g5[perm]
    for metric in (roc_auc, threshold_metric("accuracy", 0.5)):
        per_patient = bootstrap_ci(y, p, metric, n_resamples=300, seed=3)
        grouped = bootstrap_ci(y5, p5, metric, n_resamples=300, seed=3, groups=g5)
        naive = bootstrap_ci(y5, p5, metric, n_resamples=300, seed=3)
        np.testing.assert_allclose(grouped, per_patient, rtol=1e-12)
        # the naive interval is about sqrt(5) ~ 2.2 times too narrow
        assert (naive[1] - naive[0]) < 0.7 * (grouped[1] - grouped[0])


def test_grouped_bootstrap_keeps_patients_whole():
    y = np.array([0, 0, 1, 1, 1, 0, 0, 1])
    p = np.linspace(0.1, 0.8, 8)
    groups = np.array(["a", "a", "b", "b", "c", "d", "d", "c"])
    seen = []

    def recording(yy, pp):
        seen.append(np.sort(pp))
        return roc_auc(yy, pp)

    bootstrap_ci(y, p, recording, n_resamples=50, groups=groups)
    members = {g: set(np.round(p[groups == g], 6)) for g in set(groups)}
    for sample in seen:
        values, counts = np.unique(np.round(sample, 6), return_counts=True)
        multiplicity = dict(zip(values.tolist(), counts.tolist(), strict=True))
        for films in members.values():
            # the films of a patient appear the same number of times (0 when it was not drawn)
            assert len({multiplicity.get(v, 0) for v in films}) == 1
        # stratified: 2 all-normal patients (a, d) and 2 all-pneumonia ones (b, c) -> 4 patients, 8 films
        assert sample.size == 8


def test_bootstrap_speed():
    y, p = _scores(1000, 5)
    start = time.perf_counter()
    bootstrap_ci(y, p, roc_auc, n_resamples=2000)
    # 2 s on a quiet machine per the contract; generous here because the CPUs are shared.
    assert time.perf_counter() - start < 6.0


def test_bootstrap_rejects_bad_arguments():
    y, p = _scores(30, 0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(y, p, roc_auc, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(y, p, roc_auc, confidence=1.0)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(y, p, roc_auc, groups=np.arange(5))
    with pytest.raises(ValueError, match="prob"):
        bootstrap_ci(y, p[:-1], roc_auc)
    with pytest.raises(TypeError, match="callable"):
        bootstrap_ci(y, p, "roc_auc")
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([], [], roc_auc)


def test_bootstrap_all_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        low, high = bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3], roc_auc, n_resamples=20)
    assert math.isnan(low) and math.isnan(high)
    assert "nan in all 20" in caplog.text
