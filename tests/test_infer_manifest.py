"""The results manifest: row contract, atomic CSV/JSON writers, study aggregation and the resume journal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pneumonia_monai.inference.journal import StateEntry, StateJournal, file_key
from pneumonia_monai.inference.manifest import (
    RESULT_COLUMNS,
    STUDY_COLUMNS,
    SUBTYPE_COLUMNS,
    ResultRow,
    aggregate_studies,
    read_results_csv,
    result_columns,
    write_results,
    write_studies,
)

COMMON = {"threshold": 0.5, "model_version": "1.2.3"}


def ok_row(path: str, prob: float, study: str = "", sop: str = "", **extra: object) -> ResultRow:
    prediction = "pneumonia" if prob >= 0.5 else "normal"
    return ResultRow(
        path,
        "ok",
        "chest frontal",
        study,
        "",
        sop,
        "PA",
        prob_pneumonia=prob,
        prediction=prediction,
        **COMMON,
        **extra,
    )


def test_columns_are_the_published_contract():
    assert RESULT_COLUMNS == (
        "path",
        "status",
        "reason",
        "study_uid",
        "series_uid",
        "sop_uid",
        "view",
        "prob_pneumonia",
        "prediction",
        "intended_use",
        "threshold",
        "model_version",
        "operating_point",
    )
    assert result_columns(True) == (*RESULT_COLUMNS, "prob_normal", "prob_bacterial", "prob_viral", "subtype")
    assert STUDY_COLUMNS == (
        "study_uid",
        "n_images",
        "prob_pneumonia",
        "prediction",
        "threshold",
        "model_version",
        "operating_point",
        "sr_path",
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"status": "done"}, ValueError, "status must be one of"),
        ({"prob_pneumonia": None}, ValueError, "prob_pneumonia is required"),
        ({"prob_pneumonia": 1.5}, ValueError, r"prob_pneumonia must be a number in \[0, 1\], got 1\.5"),
        ({"prob_pneumonia": float("nan")}, ValueError, r"must be a number in \[0, 1\], got nan"),
        ({"prob_pneumonia": "0.7"}, TypeError, "must be a number"),
        ({"prediction": "normal"}, ValueError, "contradicts prob_pneumonia 0.7"),
        ({"prediction": "maybe"}, ValueError, "contradicts"),
        ({"threshold": None}, ValueError, "threshold is required"),
        ({"prob_normal": 0.3}, ValueError, "must be given together"),
        ({"path": ""}, ValueError, "path must be a non-empty string"),
    ],
)
def test_ok_row_validation_names_the_bad_value(kwargs, error, match):
    base = {
        "path": "a.dcm",
        "status": "ok",
        "reason": "r",
        "prob_pneumonia": 0.7,
        "prediction": "pneumonia",
        **COMMON,
    }
    base.update(kwargs)
    with pytest.raises(error, match=match):
        ResultRow(**base)


def test_non_ok_rows_carry_no_probability_or_prediction():
    with pytest.raises(ValueError, match="only given for ok rows"):
        ResultRow("a.dcm", "skipped", "lateral", prob_pneumonia=0.2, **COMMON)
    with pytest.raises(ValueError, match="prediction is only given for ok rows"):
        ResultRow("a.dcm", "error", "broken", prediction="normal", **COMMON)
    row = ResultRow("a.dcm", "error", "broken", **COMMON)
    cells = row.as_csv_row()
    assert cells["prob_pneumonia"] == "" and cells["prediction"] == "" and cells["threshold"] == "0.5"


def test_threshold_is_inclusive():
    assert ok_row("x.png", 0.5).prediction == "pneumonia"
    with pytest.raises(ValueError, match="expected 'pneumonia'"):
        ResultRow("x.png", "ok", "r", prob_pneumonia=0.5, prediction="normal", **COMMON)


def test_csv_cells_keep_full_float_precision_so_the_prediction_can_be_rechecked():
    prob = 0.49999999999999994
    row = ok_row("x.png", prob)
    cells = row.as_csv_row()
    assert list(cells) == list(RESULT_COLUMNS)
    assert float(cells["prob_pneumonia"]) == prob
    assert cells["prediction"] == "normal"


def test_results_csv_and_json_hold_the_same_rows_in_order(tmp_path):
    rows = [
        ok_row("b/one.dcm", 0.8, study="1.2.3", sop="1.2.3.1"),
        ResultRow(
            "b/lat.dcm",
            "skipped",
            "lateral view (ViewPosition=LL)",
            "1.2.3",
            "1.2.3.9",
            "1.2.3.2",
            "LL",
            **COMMON,
        ),
        ResultRow("a.png", "error", "not a readable image", **COMMON),
    ]
    csv_path, json_path = write_results(tmp_path, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json"]  # no temp files left
    header = csv_path.read_text(encoding="utf-8").splitlines()[0]
    assert header == ",".join(RESULT_COLUMNS)
    csv_rows = read_results_csv(csv_path)
    json_rows = json.loads(json_path.read_text(encoding="utf-8"))
    assert [r["path"] for r in csv_rows] == ["b/one.dcm", "b/lat.dcm", "a.png"]
    assert len(json_rows) == 3
    for csv_row, json_row in zip(csv_rows, json_rows, strict=True):
        assert list(json_row) == list(RESULT_COLUMNS)
        as_text = {
            k: "" if v is None else (repr(v) if isinstance(v, float) else str(v)) for k, v in json_row.items()
        }
        assert as_text == csv_row
    assert json_rows[1]["prob_pneumonia"] is None and json_rows[0]["prob_pneumonia"] == 0.8


def test_three_class_rows_add_the_subtype_columns(tmp_path):
    row = ok_row("a.dcm", 0.75, prob_normal=0.25, prob_bacterial=0.5, prob_viral=0.25)
    csv_path, json_path = write_results(tmp_path, [row], three_class=True)
    (cells,) = read_results_csv(csv_path)
    assert list(cells) == [*RESULT_COLUMNS, *SUBTYPE_COLUMNS, "subtype"]
    assert (cells["prob_normal"], cells["prob_bacterial"], cells["prob_viral"]) == ("0.25", "0.5", "0.25")
    assert cells["subtype"] == "bacterial"
    assert json.loads(json_path.read_text())[0]["prob_viral"] == 0.25


def test_studies_take_the_maximum_and_list_studies_without_an_ok_image(tmp_path):
    rows = [
        ok_row("s1/a.dcm", 0.2, study="1.1", sop="1.1.1"),
        ok_row("s1/b.dcm", 0.6, study="1.1", sop="1.1.2"),
        ResultRow("s1/lat.dcm", "skipped", "lateral", "1.1", "", "1.1.3", "LL", **COMMON),
        ResultRow("s2/lat.dcm", "skipped", "lateral", "2.2", "", "2.2.1", "LL", **COMMON),
        ok_row("s3/a.dcm", 0.1, study="3.3", sop="3.3.1"),
        ok_row("film.png", 0.9),  # raster: no study
    ]
    studies = aggregate_studies(rows, threshold=0.5, model_version="1.2.3", operating_point="bundle")
    assert [s.study_uid for s in studies] == ["1.1", "2.2", "3.3"]
    one, two, three = studies
    assert (one.n_images, one.prob_pneumonia, one.prediction) == (2, 0.6, "pneumonia")
    assert (two.n_images, two.prob_pneumonia, two.prediction) == (0, None, "")
    assert (three.n_images, three.prob_pneumonia, three.prediction) == (1, 0.1, "normal")
    path = write_studies(tmp_path, studies)
    cells = read_results_csv(path)
    assert list(cells[0]) == list(STUDY_COLUMNS)
    assert cells[1] == {
        "study_uid": "2.2",
        "n_images": "0",
        "prob_pneumonia": "",
        "prediction": "",
        "threshold": "0.5",
        "model_version": "1.2.3",
        "operating_point": "bundle",
        "sr_path": "",
    }


def test_journal_round_trip_last_line_wins_and_other_fingerprints_are_ignored(tmp_path):
    path = tmp_path / ".state" / "journal.jsonl"
    journal = StateJournal(path, "fp-1")
    first = StateEntry(ResultRow("a.dcm", "error", "broken", **COMMON))
    second = StateEntry(ok_row("a.dcm", 0.7), heatmaps=True)
    with journal:
        journal.record("k1", first)
        journal.record("k1", second)
        journal.record("k2", StateEntry(ok_row("b.png", 0.1)))
    StateJournal(path, "fp-other").record("k3", StateEntry(ok_row("c.png", 0.3)))
    loaded = StateJournal(path, "fp-1").load()
    assert set(loaded) == {"k1", "k2"}
    assert loaded["k1"] == second
    assert StateJournal(path, "fp-other").load().keys() == {"k3"}


def test_journal_tolerates_a_torn_last_line_and_appends_after_it(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    journal = StateJournal(path, "fp")
    with journal:
        journal.record("k1", StateEntry(ok_row("a.png", 0.2)))
        journal.record("k2", StateEntry(ok_row("b.png", 0.4)))
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # a kill in the middle of writing the second line
    assert StateJournal(path, "fp").load().keys() == {"k1"}
    with StateJournal(path, "fp") as again:
        again.record("k3", StateEntry(ok_row("c.png", 0.6)))
    with caplog.at_level("WARNING"):
        loaded = StateJournal(path, "fp").load()
    assert loaded.keys() == {"k1", "k3"}  # the torn line did not swallow the next one
    assert "1 unreadable line(s)" in caplog.text


def test_journal_compact_keeps_exactly_the_given_entries(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = StateJournal(path, "fp")
    for i in range(5):
        journal.record(f"k{i}", StateEntry(ok_row(f"{i}.png", 0.1 * i)))
    journal.compact([("k4", StateEntry(ok_row("4.png", 0.4))), ("k1", StateEntry(ok_row("1.png", 0.1)))])
    assert path.read_text().count("\n") == 2
    assert list(StateJournal(path, "fp").load()) == ["k4", "k1"]
    assert [p.name for p in tmp_path.iterdir()] == ["journal.jsonl"]


def test_file_key_changes_when_the_file_changes(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"1234")
    key = file_key(path)
    assert file_key(path) == key
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    touched = file_key(path)
    assert touched != key
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert file_key(path) != touched
    assert file_key(tmp_path / "." / "a.dcm") == file_key(path)  # the resolved path counts
    with pytest.raises(OSError):
        file_key(tmp_path / "missing.dcm")


def test_from_state_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown result row field"):
        ResultRow.from_state({**ok_row("a.png", 0.2).to_state(), "patient_name": "x"})
    assert ResultRow.from_state(ok_row("a.png", 0.2).to_state()) == ok_row("a.png", 0.2)


def test_writers_leave_the_old_file_when_a_row_cannot_be_written(tmp_path):
    write_results(tmp_path, [ok_row("a.png", 0.2)])
    before = (tmp_path / "results.csv").read_bytes()

    class Broken(ResultRow):
        def as_csv_row(self, columns=RESULT_COLUMNS):
            raise RuntimeError("disk full")

    broken = Broken("b.png", "ok", "r", prob_pneumonia=0.9, prediction="pneumonia", **COMMON)
    with pytest.raises(RuntimeError, match="disk full"):
        write_results(tmp_path, [ok_row("a.png", 0.2), broken])
    assert (tmp_path / "results.csv").read_bytes() == before
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["results.csv", "results.json"]


def test_intended_use_column_values():
    """``intended_use``: yes / no / unknown; an ok row given none is unknown; the age is never a column."""
    assert "intended_use" in RESULT_COLUMNS
    assert not {"age", "patient_age", "birth_date"} & set(RESULT_COLUMNS)
    assert ok_row("x.png", 0.2).intended_use == "unknown"
    flagged = ok_row("siim.dcm", 0.7, intended_use="no")
    assert flagged.as_csv_row()["intended_use"] == "no"
    assert flagged.as_json()["intended_use"] == "no"
    assert ResultRow.from_state(flagged.to_state()) == flagged
    assert ResultRow("lat.dcm", "skipped", "lateral", **COMMON).intended_use == ""
    skipped = ResultRow("old.dcm", "skipped", "outside the intended use", intended_use="no", **COMMON)
    assert skipped.as_csv_row()["intended_use"] == "no"
    with pytest.raises(ValueError, match="intended_use must be one of"):
        ok_row("x.png", 0.2, intended_use="62")
