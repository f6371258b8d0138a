"""One duplicate SOP Instance UID rule (dicom.duplicates) for select, the local engine and the Ray engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicom_factory import make_cr
from infer_helpers import SMALL_NET, film, write_bundle
from pydicom.uid import generate_uid

from pneumonia_monai.decision import label_at
from pneumonia_monai.dicom.duplicates import FirstOfSop, duplicate_reason
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.inference.film_step import FilmItem, FilmJob
from pneumonia_monai.inference.manifest import ResultRow, read_results_csv
from pneumonia_monai.inference.runner import _Progress, _Run, run_inference
from pneumonia_monai.triage import select_files


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> InferenceBundle:
    root = write_bundle(tmp_path_factory.mktemp("bundle") / "bundle", network_def=SMALL_NET)
    return load_bundle(root, device="cpu")


def two_copies(folder: Path) -> str:
    """``a.dcm`` and its copy ``b.dcm`` (the same SOP Instance UID), and ``c.dcm``; return the UID."""
    sop = generate_uid()
    study = generate_uid()
    for name in ("a.dcm", "b.dcm"):
        make_cr(folder / name, pixels=film(0, 128), SOPInstanceUID=sop, StudyInstanceUID=study)
    make_cr(folder / "c.dcm", pixels=film(1, 128), StudyInstanceUID=study)
    return sop


def test_the_first_holder_wins_and_an_empty_uid_is_nobodys() -> None:
    sops = FirstOfSop()
    assert sops.holder("1.2.3") is None
    assert sops.hold("1.2.3", "a.dcm") is None
    assert sops.hold("1.2.3", "b.dcm") == "a.dcm"
    assert sops.holder("1.2.3") == "a.dcm"
    assert sops.hold("", "x.png") is None and sops.hold("", "y.png") is None
    assert duplicate_reason("a.dcm") == "duplicate SOP Instance UID of a.dcm"


def test_select_skips_a_copy_but_not_pictures_without_a_uid(
    tmp_path: Path, sample_images: list[Path]
) -> None:
    two_copies(tmp_path / "in")
    for source in sample_images[:2]:  # JPEG films have no SOP Instance UID: neither is the other's copy
        (tmp_path / "in" / source.name).write_bytes(source.read_bytes())
    decisions = {d.relative_path: d for d in select_files([tmp_path / "in"]).decisions}
    assert decisions["b.dcm"].status == "skipped"
    assert decisions["b.dcm"].reason == "duplicate SOP Instance UID of a.dcm"
    assert [decisions[source.name].status for source in sample_images[:2]] == ["selected", "selected"]
    assert decisions["a.dcm"].status == decisions["c.dcm"].status == "selected"


def test_local_engine_scores_the_copy_of_a_file_whose_batch_failed(
    tmp_path: Path, loaded: InferenceBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_copies(tmp_path / "in")
    original = InferenceBundle.predict
    calls = []

    def first_forward_fails(self: InferenceBundle, images: object) -> object:
        calls.append(images.shape[0])  # type: ignore[attr-defined]
        if len(calls) == 1:
            raise RuntimeError("out of memory (test)")
        return original(self, images)  # type: ignore[arg-type]

    monkeypatch.setattr(InferenceBundle, "predict", first_forward_fails)
    # batch 2: a.dcm's batch is run before b.dcm is decided, so that a.dcm's failure is known then
    summary = run_inference([tmp_path / "in"], tmp_path / "out", bundle=loaded, batch_size=2, workers=0)
    rows = {row["path"]: row for row in read_results_csv(tmp_path / "out" / "results.csv")}
    assert rows["a.dcm"]["status"] == "error" and rows["a.dcm"]["reason"].startswith("inference failed")
    assert rows["b.dcm"]["status"] == "ok"  # the failed original does not make its copy a duplicate
    assert rows["c.dcm"]["status"] == "ok"
    assert calls == [1, 2] and summary.n_inferred == 2

    monkeypatch.setattr(InferenceBundle, "predict", original)  # the next run: a.dcm is retried and wins
    again = run_inference([tmp_path / "in"], tmp_path / "again", bundle=loaded, batch_size=2, workers=0)
    rows = {row["path"]: row for row in read_results_csv(tmp_path / "again" / "results.csv")}
    assert rows["a.dcm"]["status"] == "ok"
    assert (rows["b.dcm"]["status"], rows["b.dcm"]["reason"]) == (
        "skipped",
        "duplicate SOP Instance UID of a.dcm",
    )
    assert again.n_inferred == 2


def test_rows_scored_elsewhere_follow_the_same_rule(tmp_path: Path, loaded: InferenceBundle) -> None:
    """The Ray engine hands the run finished rows, in input order, to the same ``_Run._consume``."""
    sop = generate_uid()
    run = _Run(loaded, SelectionRules.default(), tmp_path / "out", 1, 0, False, False, False, False)
    jobs = [FilmJob(i, tmp_path / name, tmp_path, name, f"k{i}") for i, name in enumerate("abcd")]
    run.rows, run.entries = [None] * len(jobs), [None] * len(jobs)
    run.progress = _Progress(len(jobs), bar=False)
    prob = 0.9
    rows = [run.context.row(jobs[0], "error", "inference failed (test)", sop_uid=sop)] + [
        ResultRow(
            job.rel,
            "ok",
            "",
            sop_uid=sop,
            prob_pneumonia=prob,
            prediction=label_at(prob, loaded.threshold),
            **run.context.common,
        )
        for job in jobs[1:]
    ]
    for job, row in zip(jobs, rows, strict=True):
        run._consume(FilmItem(job, row=row), [])
    done = [row for row in run.rows if row is not None]
    assert [row.status for row in done] == ["error", "ok", "skipped", "skipped"]
    assert done[2].reason == done[3].reason == "duplicate SOP Instance UID of b"
