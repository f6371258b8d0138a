"""Site operating points: the rule syntax, the choice, the overlay file and its model-version check."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from pneumonia_monai.dicom.uids import BUNDLE_OPERATING_POINT
from pneumonia_monai.evaluation.threshold import choose_threshold
from pneumonia_monai.site_overlay import (
    OVERLAY_FORMAT,
    SiteOverlayError,
    ThresholdRule,
    apply_site,
    check_model_version,
    choose_site_operating_point,
    parse_rule,
    read_site_overlay,
    write_site_overlay,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
P = np.array([0.05, 0.20, 0.40, 0.70, 0.30, 0.60, 0.80, 0.90, 0.95])


def test_rule_syntax():
    assert parse_rule("max-specificity@sensitivity>=0.95") == ThresholdRule(
        "max_specificity_at_sensitivity", 0.95
    )
    assert parse_rule(" Max-Specificity @ Sensitivity >= 1 ") == ThresholdRule(
        "max_specificity_at_sensitivity", 1.0
    )
    assert parse_rule("YOUDEN") == ThresholdRule("youden")
    assert str(parse_rule("max-specificity@sensitivity>=0.950")) == "max-specificity@sensitivity>=0.95"
    for bad in (
        "max-specificity@sensitivity>=0",
        "max-specificity@sensitivity>=1.5",
        "best",
        "max-specificity",
    ):
        with pytest.raises(ValueError, match=r"sensitivity|unknown threshold rule"):
            parse_rule(bad)


def test_choice_is_the_threshold_search_of_evaluation():
    point = choose_site_operating_point(
        Y, P, "max-specificity@sensitivity>=0.8", site="north-wing", model_version="0.3.0",
        chosen_on=dt.date(2026, 12, 1), results="some/folder/results.csv",
    )  # fmt: skip
    expected = choose_threshold(Y, P, rule="max_specificity_at_sensitivity", min_sensitivity=0.8)
    assert point.threshold == expected.threshold == 0.6  # 4 of 5 pneumonia films kept, 3 of 4 normal
    assert (point.sensitivity, point.specificity) == (0.8, 0.75)
    assert (point.n, point.n_pneumonia, point.n_normal) == (9, 5, 4)
    assert point.results == "results.csv"  # no folder: the file names no path of the site
    youden = choose_site_operating_point(Y, P, parse_rule("youden"), site="a", model_version="0.3.0")
    assert youden.threshold == choose_threshold(Y, P, rule="youden").threshold
    assert youden.chosen_on == dt.datetime.now(dt.timezone.utc).date().isoformat()
    with pytest.raises(ValueError, match="needs pneumonia and normal films"):
        choose_site_operating_point(np.ones(3), [0.2, 0.5, 0.9], "youden", site="a", model_version="0.3.0")


def test_overlay_round_trip_and_refusals(tmp_path: Path):
    point = choose_site_operating_point(
        Y, P, "youden", site="north-wing", model_version="0.3.0", chosen_on=dt.date(2026, 12, 1)
    )
    path = write_site_overlay(tmp_path / "site.json", point)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == OVERLAY_FORMAT and data["version"] == 1
    assert set(data) == {
        "format", "version", "site", "model_version", "threshold", "rule", "chosen_on",
        "n", "n_pneumonia", "n_normal", "sensitivity", "specificity", "results",
    }  # fmt: skip
    assert read_site_overlay(path) == point
    assert point.label == "site north-wing: youden on n=9 (2026-12-01)"

    def broken(change: dict, match: str) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**data, **change}), encoding="utf-8")
        with pytest.raises(SiteOverlayError, match=match) as info:
            read_site_overlay(bad)
        assert str(bad) in str(info.value)

    broken({"threshold": 1.5}, r"threshold must be a number in \[0, 1\], got 1\.5")
    broken({"rule": "best"}, "unknown threshold rule")
    broken({"site": "North Wing; DROP"}, "site name")
    broken({"n": 10}, "is not n")
    broken({"extra": 1}, "unknown key")
    broken({"format": "something else"}, "'format'")
    broken({"chosen_on": "yesterday"}, "chosen_on")
    (tmp_path / "nan.json").write_text(
        path.read_text().replace(repr(point.threshold), "NaN"), encoding="utf-8"
    )
    with pytest.raises(SiteOverlayError, match="NaN"):
        read_site_overlay(tmp_path / "nan.json")
    with pytest.raises(SiteOverlayError, match="cannot be read"):
        read_site_overlay(tmp_path / "missing.json")


def test_another_model_version_is_refused():
    point = choose_site_operating_point(Y, P, "youden", site="a", model_version="0.2.1")
    check_model_version(point, "0.2.1")
    with pytest.raises(SiteOverlayError, match=r"model version '0\.2\.1'.*this model is version '0\.3\.0'"):
        check_model_version(point, "0.3.0")
    with pytest.raises(SiteOverlayError, match=r"version '0\.3\.0\+subtype'"):
        check_model_version(dataclasses.replace(point, model_version="0.3.0"), "0.3.0+subtype")


def test_apply_site_replaces_threshold_label_and_fingerprint():
    @dataclasses.dataclass(frozen=True)
    class FakeBundle:  # the fields apply_site reads and replaces
        model_version: str
        threshold: float
        fingerprint: str
        operating_point: str = BUNDLE_OPERATING_POINT

    bundle = FakeBundle("0.3.0", 0.85, "abc")
    assert apply_site(bundle, None) is bundle  # type: ignore[arg-type]
    point = choose_site_operating_point(Y, P, "youden", site="a", model_version="0.3.0")
    sited = apply_site(bundle, point)  # type: ignore[arg-type]
    assert (sited.threshold, sited.operating_point) == (point.threshold, point.label)
    assert sited.fingerprint not in (
        "abc",
        apply_site(bundle, dataclasses.replace(point, site="b")).fingerprint,
    )
    with pytest.raises(SiteOverlayError):
        apply_site(FakeBundle("0.2.1", 0.85, "abc"), point)  # type: ignore[arg-type]


def _results(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["path", "status", "prob_pneumonia", "threshold", "model_version"]
    columns += [c for c in ("prob_normal", "prob_bacterial", "prob_viral") if c in rows[0]]
    lines = [",".join(columns), *(",".join(row.get(c, "") for c in columns) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_evaluate_chooses_on_the_written_probabilities(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from pneumonia_monai.cli import evaluate as evaluate_cli

    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label,subtype\n"
        + "".join(f"f{i}.png,{'normal' if y == 0 else 'pneumonia'},bacterial\n" for i, y in enumerate(Y)),
        encoding="utf-8",
    )
    # Three classes: prob_pneumonia as infer wrote it (1 - p(normal)); the row sums are CSV-rounded.
    rows = [
        {
            "path": f"f{i}.png",
            "status": "ok",
            "prob_pneumonia": repr(float(p)),
            "threshold": "0.5",
            "model_version": "0.3.0+subtype",
            "prob_normal": f"{1 - p:.4f}",
            "prob_bacterial": f"{p / 2:.4f}",
            "prob_viral": f"{p / 2:.4f}",
        }
        for i, p in enumerate(P)
    ]
    results = _results(tmp_path / "results.csv", rows)
    argv = ["--results", str(results), "--labels", str(labels), "--root", str(tmp_path), "--bootstrap", "0"]
    site = tmp_path / "overlay.json"
    code = evaluate_cli.main(
        [
            *argv,
            "--output",
            str(tmp_path / "r"),
            "--choose-threshold",
            "youden",
            "--site-file",
            str(site),
            "-q",
        ]
    )
    assert code == 0
    point = read_site_overlay(site)
    assert point.threshold == choose_threshold(Y, P, rule="youden").threshold  # exactly a written value
    assert point.model_version == "0.3.0+subtype" and point.site == "site"
    assert f"threshold {point.threshold:.6g} by youden on 9 film(s)" in capsys.readouterr().out

    mixed = _results(
        tmp_path / "mixed.csv", [{**row, "model_version": f"0.{i % 2}"} for i, row in enumerate(rows)]
    )
    code = evaluate_cli.main(
        [
            "--results",
            str(mixed),
            *argv[2:],
            "--output",
            str(tmp_path / "m"),
            "--choose-threshold",
            "youden",
            "-q",
        ]
    )
    assert code == 1 and not (tmp_path / "m" / "site_operating_point.json").exists()
    # A rule or a site name that is not one is bad usage, refused by the parser (exit status 2).
    out = ["--output", str(tmp_path / "x")]
    assert evaluate_cli.main([*argv, *out, "--choose-threshold", "best-guess"]) == 2
    assert evaluate_cli.main([*argv, *out, "--choose-threshold", "youden", "--site-name", "a b"]) == 2
    assert not (tmp_path / "x").exists()
