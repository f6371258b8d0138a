"""Kaggle JPEG tree -> DICOM studies (valid, deterministic, pixel-exact), and DICOM + labels -> datalist."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_checks import dciodvfy
from dicom_factory import make_cr, make_dx
from PIL import Image
from pydicom import dcmread
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from repo_paths import SAMPLE_TREE

from pneumonia_monai.cli import convert as convert_cli
from pneumonia_monai.data.dicom_datalist import dicom_to_datalist, read_labels
from pneumonia_monai.data.kaggle_dicom import kaggle_to_dicom
from pneumonia_monai.dicom.convert import build_dx_dataset
from pneumonia_monai.dicom.uids import derived_uid, pseudonym, salted_patient_hash
from pneumonia_monai.labels import label_value
from pneumonia_monai.triage import select_files

SAMPLE = SAMPLE_TREE

#: source file in the test tree -> (label, subtype, Kaggle patient id, datalist split)
FILMS: dict[str, tuple[str, str, str, str]] = {
    "train/NORMAL/IM-0429-0001-0001.jpeg": ("normal", "none", "IM-0429", "training"),
    "train/NORMAL/IM-0429-0001-0002.jpeg": ("normal", "none", "IM-0429", "training"),
    "train/NORMAL/NORMAL2-IM-0408-0001.jpeg": ("normal", "none", "NORMAL2-IM-0408", "training"),
    "train/PNEUMONIA/person12_bacteria_46.jpeg": ("pneumonia", "bacterial", "person12", "training"),
    "train/PNEUMONIA/person1015_virus_1701.jpeg": ("pneumonia", "viral", "person1015", "training"),
    "test/PNEUMONIA/person1413_virus_2423.jpeg": ("pneumonia", "viral", "person1413", "test"),
}
#: Warnings dciodvfy may give: Study Date/Time are Type 2 and unknown for these films, left empty.
ALLOWED_WARNINGS = {
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study Date",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study Time",
}


def _make_tree(root: Path, *, broken: bool) -> Path:
    for rel in FILMS:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "train" / Path(rel).parent.name / Path(rel).name, target)
    (root / "train/NORMAL/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "README.txt").write_text("Kermany et al. 2018\n", encoding="utf-8")
    if broken:
        data = (SAMPLE / "train/NORMAL/IM-0236-0001.jpeg").read_bytes()
        (root / "train/NORMAL/IM-0236-0001.jpeg").write_bytes(data[:200])
    return root


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_tree(tmp_path_factory.mktemp("kaggle"), broken=True)


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dicom") / "out"
    kaggle_to_dicom(src, out)
    return out


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {row["source"]: row for row in csv.DictReader((out / "conversion.csv").open(encoding="utf-8"))}


def _dicoms(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.dcm"))}


def test_every_source_file_is_accounted_for(src: Path, converted: Path) -> None:
    rows = _rows(converted)
    sources = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert sorted(rows) == sources
    assert {k: r["status"] for k, r in rows.items()} == {
        **dict.fromkeys(FILMS, "written"),
        "README.txt": "skipped",
        "train/NORMAL/.DS_Store": "skipped",
        "train/NORMAL/IM-0236-0001.jpeg": "error",
    }
    assert rows["README.txt"]["reason"] == "not an image file (suffix .txt)"
    assert rows["train/NORMAL/.DS_Store"]["reason"] == "junk file (macOS/Windows metadata)"
    assert rows["train/NORMAL/IM-0236-0001.jpeg"]["reason"].startswith("cannot decode image (OSError")
    assert len(_dicoms(converted)) == len(FILMS)
    for rel in FILMS:
        assert (converted / rows[rel]["output"]).is_file()


def test_outputs_pass_dciodvfy(converted: Path) -> None:
    for path in sorted(converted.rglob("*.dcm")):
        errors, warnings = dciodvfy(path)
        assert errors == [], f"{path}: {errors}"
        assert set(warnings) <= ALLOWED_WARNINGS, f"{path}: {warnings}"


def test_pixels_equal_the_jpeg_grayscale(src: Path, converted: Path) -> None:
    rows = _rows(converted)
    for rel in FILMS:
        ds = dcmread(converted / rows[rel]["output"])
        expected = np.asarray(Image.open(src / rel).convert("L"))
        assert ds.pixel_array.dtype == np.uint8
        np.testing.assert_array_equal(ds.pixel_array, expected)


def test_header_is_a_chest_ap_dx_for_presentation_under_a_pseudonym(src: Path, converted: Path) -> None:
    rows = _rows(converted)
    datasets = {rel: dcmread(converted / rows[rel]["output"]) for rel in FILMS}
    for rel, ds in datasets.items():
        _, _, kaggle_id, _ = FILMS[rel]
        assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert (ds.Modality, ds.PresentationIntentType, ds.BodyPartExamined) == (
            "DX",
            "FOR PRESENTATION",
            "CHEST",
        )
        assert (ds.ViewPosition, ds.ImageLaterality, ds.PhotometricInterpretation) == (
            "AP",
            "U",
            "MONOCHROME2",
        )
        assert (ds.ViewCodeSequence[0].CodingSchemeDesignator, ds.ViewCodeSequence[0].CodeValue) == (
            "SCT",
            "399348003",
        )
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
        assert ds.LossyImageCompression == "01"
        assert ds.PatientID == pseudonym(kaggle_id, namespace="kermany2018", prefix="ANON")
        assert kaggle_id.lower() not in str(ds.PatientID).lower() + str(ds.PatientName).lower()
        assert ds.StudyDate == "" and ds.StudyTime == ""  # unknown, not invented
        assert (
            rows[rel]["output"]
            == f"{ds.PatientID}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        )
        assert UID(ds.SOPInstanceUID).is_valid and ds.SOPInstanceUID.startswith("2.25.")
    one, two = (datasets[f"train/NORMAL/IM-0429-0001-000{i}.jpeg"] for i in (1, 2))
    assert one.PatientID == two.PatientID and one.StudyInstanceUID == two.StudyInstanceUID
    assert one.SeriesInstanceUID == two.SeriesInstanceUID and one.SOPInstanceUID != two.SOPInstanceUID
    assert (one.InstanceNumber, two.InstanceNumber) == (1, 2)
    assert len({ds.StudyInstanceUID for ds in datasets.values()}) == 5
    assert len({ds.SOPInstanceUID for ds in datasets.values()}) == len(FILMS)


def test_rerun_is_byte_identical_and_idempotent(src: Path, converted: Path, tmp_path: Path) -> None:
    before = _dicoms(converted)
    kaggle_to_dicom(src, converted)
    assert _dicoms(converted) == before
    assert {r["status"] for k, r in _rows(converted).items() if k in FILMS} == {"unchanged"}
    fresh = tmp_path / "fresh"
    kaggle_to_dicom(src, fresh)
    assert _dicoms(fresh) == before
    assert (fresh / "datalist.json").read_bytes() == (converted / "datalist.json").read_bytes()


def test_limit_converts_the_first_films_with_the_same_bytes(
    src: Path, converted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "limited"
    result = kaggle_to_dicom(src, out, limit=3)  # the 3 first films by path; the broken one is 2nd
    rows = _rows(out)
    converted_rows = {k: r["status"] for k, r in rows.items() if r["status"] in ("written", "error")}
    assert converted_rows == {
        "test/PNEUMONIA/person1413_virus_2423.jpeg": "written",
        "train/NORMAL/IM-0236-0001.jpeg": "error",
        "train/NORMAL/IM-0429-0001-0001.jpeg": "written",
    }
    assert rows["train/NORMAL/IM-0429-0001-0002.jpeg"] == {
        "source": "train/NORMAL/IM-0429-0001-0002.jpeg",
        "output": "",
        "status": "skipped",
        "reason": "beyond --limit 3",
    }
    full = _dicoms(converted)
    for name, data in _dicoms(out).items():
        assert full[name] == data  # Instance Number etc. do not depend on --limit
    assert len(result.rows) == len(rows) == len(_rows(converted))


@pytest.mark.parametrize(("compression", "tsyntax"), [("jpeg2000", JPEG2000Lossless), ("rle", RLELossless)])
def test_compressed_outputs_decode_to_the_same_pixels(
    src: Path, converted: Path, tmp_path: Path, compression: str, tsyntax: UID
) -> None:
    out = tmp_path / compression
    kaggle_to_dicom(src, out, compression=compression)
    plain, packed = _rows(converted), _rows(out)
    for rel in FILMS:
        assert packed[rel]["output"] == plain[rel]["output"]  # same UIDs, whatever the compression
        ds = dcmread(out / packed[rel]["output"])
        assert ds.file_meta.TransferSyntaxUID == tsyntax
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(Image.open(src / rel).convert("L")))
    first = out / packed["train/NORMAL/IM-0429-0001-0001.jpeg"]["output"]
    errors, warnings = dciodvfy(first)
    assert errors == [] and set(warnings) <= ALLOWED_WARNINGS
    before = _dicoms(out)
    kaggle_to_dicom(src, tmp_path / f"{compression}-again", compression=compression)
    assert _dicoms(tmp_path / f"{compression}-again") == before


def test_datalist_has_the_right_labels_and_patients(src: Path, converted: Path) -> None:
    datalist = json.loads((converted / "datalist.json").read_text(encoding="utf-8"))
    assert set(datalist) == {"training", "validation", "test"}
    assert datalist["validation"] == []
    rows = _rows(converted)
    by_output = {r["output"]: k for k, r in rows.items() if r["output"]}
    seen = []
    for split in ("training", "test"):
        for entry in datalist[split]:
            assert set(entry) == {"image", "label", "patient_id", "subtype"}
            rel = by_output[entry["image"]]
            label, subtype, kaggle_id, expected_split = FILMS[rel]
            assert split == expected_split
            assert entry["label"] == (0 if label == "normal" else 1)
            assert entry["subtype"] == subtype
            assert entry["patient_id"] == pseudonym(kaggle_id, namespace="kermany2018", prefix="ANON")
            assert (converted / entry["image"]).is_file()
            seen.append(rel)
    assert sorted(seen) == sorted(FILMS)


def test_labels_csv_is_what_dicom_to_datalist_reads(src: Path, converted: Path, tmp_path: Path) -> None:
    with (converted / "labels.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == ("study_uid", "sop_uid", "label", "subtype", "kaggle_split")
        labels = list(reader)
    done = ("written", "unchanged")
    by_output = {r["output"]: k for k, r in _rows(converted).items() if r["status"] in done}
    expected = {}
    for output, rel in by_output.items():
        ds = dcmread(converted / output, stop_before_pixels=True)
        label, subtype, _, _ = FILMS[rel]
        expected[str(ds.SOPInstanceUID)] = (str(ds.StudyInstanceUID), label, subtype, Path(rel).parts[0])
    got = {r["sop_uid"]: (r["study_uid"], r["label"], r["subtype"], r["kaggle_split"]) for r in labels}
    assert got == expected
    assert len(labels) == len(FILMS)  # the broken JPEG (not in FILMS) was not converted: no label row

    for key in ("sop_uid", "study_uid"):
        out = tmp_path / key / "datalist.json"
        argv = ["dicom-to-datalist", str(converted), str(converted / "labels.csv"), str(out), "--key", key]
        assert convert_cli.main([*argv, "--val-fraction", "0.3", "-q"]) == 0
        datalist = json.loads(out.read_text(encoding="utf-8"))
        entries = datalist["training"] + datalist["validation"]
        assert len(entries) == len(expected)
        for entry in entries:
            ds = dcmread(out.parent / entry["image"], stop_before_pixels=True)
            _, label, subtype, _ = expected[str(ds.SOPInstanceUID)]
            assert (entry["label"], entry["subtype"]) == (0 if label == "normal" else 1, subtype)


def test_subtype_mode_labels(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "subtype"
    result = kaggle_to_dicom(src, out, label_mode="subtype")
    labels = {e["subtype"]: e["label"] for e in result.datalist["training"] + result.datalist["test"]}
    assert labels == {"none": 0, "bacterial": 1, "viral": 2}
    assert label_value("pneumonia", "unknown", "subtype") is None
    assert label_value("pneumonia", "unknown", "binary") == 1
    with pytest.raises(ValueError, match="label_mode"):
        label_value("normal", "none", "ternary")


def test_selection_keeps_the_converted_files(converted: Path) -> None:
    result = select_files([converted])
    by_status = {d.relative_path: d.status for d in result.decisions}
    assert sorted(k for k, v in by_status.items() if v == "selected") == sorted(_dicoms(converted))
    assert by_status["datalist.json"] == by_status["conversion.csv"] == "skipped"
    assert len(result.studies()) == 5


def test_convert_cli_exit_codes(src: Path, tmp_path: Path) -> None:
    assert convert_cli.main(["kaggle-to-dicom", str(src), str(tmp_path / "a"), "-q"]) == 1  # broken JPEG
    clean = _make_tree(tmp_path / "clean", broken=False)
    assert convert_cli.main(["kaggle-to-dicom", str(clean), str(tmp_path / "b"), "--limit", "1", "-q"]) == 0
    assert len(_dicoms(tmp_path / "b")) == 1
    assert convert_cli.main(["kaggle-to-dicom", str(clean), str(clean / "inside"), "-q"]) == 2
    assert not (clean / "inside").exists()
    assert convert_cli.main(["kaggle-to-dicom", str(tmp_path / "nowhere"), str(tmp_path / "c"), "-q"]) == 2
    # bad usage: main returns argparse's status rather than raising SystemExit
    assert convert_cli.main(["kaggle-to-dicom", str(clean), str(tmp_path / "d"), "--compression", "zip"]) == 2
    assert convert_cli.main(["--help"]) == 0


def test_build_dx_dataset_validates_inputs() -> None:
    pixels = np.zeros((4, 5), np.uint8)
    kwargs = {"patient": "ANON1", "study_uid": "2.25.1", "series_uid": "2.25.2", "sop_uid": "2.25.3"}
    ds = build_dx_dataset(pixels, instance_number=1, **kwargs)
    assert (ds.Rows, ds.Columns) == (4, 5)
    with pytest.raises(TypeError, match="uint8"):
        build_dx_dataset(pixels.astype(np.uint16), instance_number=1, **kwargs)
    with pytest.raises(ValueError, match="2-D"):
        build_dx_dataset(np.zeros((2, 2, 3), np.uint8), instance_number=1, **kwargs)
    with pytest.raises(ValueError, match="pseudonym"):
        build_dx_dataset(pixels, instance_number=1, **{**kwargs, "patient": "person12 smith"})


def test_uids_are_deterministic_and_valid() -> None:
    uid = derived_uid("kaggle-to-dicom", "study", "x")
    assert uid == derived_uid("kaggle-to-dicom", "study", "x")
    assert uid.is_valid and uid.startswith("2.25.") and len(uid) <= 64
    assert derived_uid("ab", "c") != derived_uid("a", "bc")
    with pytest.raises(ValueError, match="non-empty"):
        derived_uid("a", "")
    assert salted_patient_hash("PID1", "salt") == salted_patient_hash("PID1", "salt")
    assert salted_patient_hash("PID1", "salt") != salted_patient_hash("PID1", "pepper")
    assert "PID1" not in salted_patient_hash("PID1", "salt")


# ------------------------------------------------------------------------------------- dicom-to-datalist


@pytest.fixture()
def archive(tmp_path: Path) -> dict[str, object]:
    """Four patients: A (two PA films and a lateral), B, C (no label row), D (an unknown label)."""
    root = tmp_path / "archive"
    a1 = make_cr(root / "A/1.dcm", PatientID="PAT-A", AccessionNumber="ACC-A")
    make_cr(
        root / "A/2.dcm",
        PatientID="PAT-A",
        AccessionNumber="ACC-A",
        StudyInstanceUID=a1.StudyInstanceUID,
        SeriesInstanceUID=a1.SeriesInstanceUID,
    )
    make_cr(root / "A/3_lateral.dcm", view="LL", PatientID="PAT-A", StudyInstanceUID=a1.StudyInstanceUID)
    b = make_dx(root / "B/1.dcm", PatientID="PAT-B", AccessionNumber="ACC-B")
    c = make_cr(root / "C/1.dcm", PatientID="PAT-C", AccessionNumber="ACC-C")
    d = make_cr(root / "D/1.dcm", PatientID="PAT-D", AccessionNumber="ACC-D")
    (root / "notes.txt").write_text("hello\n", encoding="utf-8")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "study_uid,label,subtype\n"
        f"{a1.StudyInstanceUID},normal,\n"
        f"{b.StudyInstanceUID},Pneumonia,bacterial\n"
        f"{d.StudyInstanceUID},pneumonai,\n"
        "2.25.999,viral,\n",
        encoding="utf-8",
    )
    salt = tmp_path / "salt.txt"
    salt.write_text("s3cret\n", encoding="utf-8")
    return {"root": root, "labels": labels, "salt": salt, "a": a1, "b": b, "c": c, "d": d}


def test_dicom_to_datalist_end_to_end(
    archive: dict[str, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, out, report = archive["root"], tmp_path / "lists/datalist.json", tmp_path / "report.csv"
    argv = ["dicom-to-datalist", str(root), str(archive["labels"]), str(out), "--val-fraction", "0.5"]
    argv += ["--salt-file", str(archive["salt"]), "--report", str(report)]
    with caplog.at_level(logging.INFO, logger="pneumonia_monai"):
        status = convert_cli.main(argv)
    assert status == 1  # the unknown label is an error, but the rest is written
    assert "unknown label 'pneumonai'" in caplog.text
    assert "1 selected study(ies) have no label" in caplog.text
    datalist = json.loads(out.read_text(encoding="utf-8"))
    entries = datalist["training"] + datalist["validation"]
    assert datalist["test"] == []
    assert sorted(
        (Path(e["image"]).parent.name, Path(e["image"]).name, e["label"], e["subtype"]) for e in entries
    ) == [
        ("A", "1.dcm", 0, "none"),
        ("A", "2.dcm", 0, "none"),
        ("B", "1.dcm", 1, "bacterial"),
    ]
    for entry in entries:
        assert (out.parent / entry["image"]).resolve().is_file()
    hashes = {Path(e["image"]).parent.name: e["patient_id"] for e in entries}
    assert hashes == {
        "A": salted_patient_hash("PAT-A", "s3cret"),
        "B": salted_patient_hash("PAT-B", "s3cret"),
    }
    assert len(datalist["validation"]) in (1, 2) and len(datalist["training"]) in (1, 2)
    assert {Path(e["image"]).parent.name for e in datalist["validation"]}.isdisjoint(
        Path(e["image"]).parent.name for e in datalist["training"]
    )  # one patient per split
    text = out.read_text(encoding="utf-8") + report.read_text(encoding="utf-8") + caplog.text
    for phi in ("PAT-A", "PAT-B", "ACC-A", "Factory^Synthetic", "s3cret"):
        assert phi not in text
    rows = {r["path"]: r["outcome"] for r in csv.DictReader(report.open(encoding="utf-8"))}
    assert len(rows) == 7  # every file under the folder
    assert rows["A/3_lateral.dcm"] == "skipped" and rows["notes.txt"] == "skipped"
    assert rows["C/1.dcm"] == "unlabelled" and rows["D/1.dcm"] == "bad label"
    assert {rows["A/1.dcm"], rows["A/2.dcm"], rows["B/1.dcm"]} <= {"training", "validation"}


def test_dicom_to_datalist_split_is_seeded_and_salt_free(archive: dict[str, object], tmp_path: Path) -> None:
    def split(salt: str, seed: int) -> dict[str, str]:
        build = dicom_to_datalist(
            archive["root"],
            archive["labels"],
            tmp_path / f"{salt}{seed}.json",
            val_fraction=0.5,
            seed=seed,
            salt=salt,
        )
        return {
            Path(e["image"]).parent.name: s for s in ("training", "validation") for e in build.datalist[s]
        }

    assert split("x", 0) == split("y", 0)
    assert {tuple(sorted(split("x", s).items())) for s in range(8)} != {tuple(sorted(split("x", 0).items()))}
    build = dicom_to_datalist(archive["root"], archive["labels"], tmp_path / "r.json", val_fraction=0.5)
    assert build.unlabelled_studies == 1 and build.label_errors and build.written


def test_dicom_to_datalist_split_is_the_stratified_patient_split(tmp_path: Path) -> None:
    """The split is data.splits.grouped_split: by patient, stratified (it once shuffled patient ids)."""
    root, rows = tmp_path / "archive", ["study_uid,label"]
    kinds = ["normal"] * 6 + ["bacterial"] * 6 + ["viral"] * 6
    for number, kind in enumerate(kinds):
        first = make_cr(root / f"P{number}/1.dcm", PatientID=f"P{number}")
        make_cr(
            root / f"P{number}/2.dcm",
            PatientID=f"P{number}",
            StudyInstanceUID=first.StudyInstanceUID,
            SeriesInstanceUID=first.SeriesInstanceUID,
        )
        rows.append(f"{first.StudyInstanceUID},{kind}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    for seed in (0, 1):
        build = dicom_to_datalist(
            root, labels, tmp_path / f"{seed}.json", label_mode="subtype", val_fraction=1 / 3, seed=seed
        )
        by_split = {
            s: [Path(e["image"]).parent.name for e in build.datalist[s]] for s in ("training", "validation")
        }
        assert set(by_split["training"]).isdisjoint(
            by_split["validation"]
        )  # both films of a patient together
        counts = sorted(e["label"] for e in build.datalist["validation"])
        assert counts == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]  # 2 patients x 2 films of each class


def test_dicom_to_datalist_says_when_there_are_too_few_patients(
    archive: dict[str, object], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"cannot split 2 patient\(s\) into 5 folds"):
        dicom_to_datalist(archive["root"], archive["labels"], tmp_path / "r.json", val_fraction=0.2)
    with pytest.raises(ValueError, match=r"val_fraction must be 0 or in \(0, 0.5\], got 0.6"):
        dicom_to_datalist(archive["root"], archive["labels"], tmp_path / "r.json", val_fraction=0.6)


def test_dicom_to_datalist_by_sop_uid_and_accession(archive: dict[str, object], tmp_path: Path) -> None:
    sop_labels = tmp_path / "sop.csv"
    sop_labels.write_text(f"sop_uid,finding\n{archive['c'].SOPInstanceUID},viral\n", encoding="utf-8")
    build = dicom_to_datalist(
        archive["root"],
        sop_labels,
        tmp_path / "sop.json",
        key="sop_uid",
        label_column="finding",
        val_fraction=0,
    )
    assert [(Path(e["image"]).parent.name, e["label"], e["subtype"]) for e in build.datalist["training"]] == [
        ("C", 1, "viral")
    ]
    acc_labels = tmp_path / "acc.csv"
    acc_labels.write_text("accession_number,label\nACC-A,normal\nACC-D,bacteria\n", encoding="utf-8")
    build = dicom_to_datalist(
        archive["root"],
        acc_labels,
        tmp_path / "acc.json",
        key="accession",
        val_fraction=0,
        label_mode="subtype",
    )
    got = sorted((Path(e["image"]).parent.name, e["label"]) for e in build.datalist["training"])
    assert got == [("A", 0), ("A", 0), ("D", 1)]
    assert "ACC-" not in (tmp_path / "acc.json").read_text(encoding="utf-8")


def test_read_labels_reports_bad_rows_and_missing_columns(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "study_uid,label,subtype\n1.2.3,normal,\n1.2.4,covid,\n1.2.5,pneumonia,fungal\n,normal,\n1.2.3,viral,\n",
        encoding="utf-8",
    )
    table = read_labels(labels)
    assert table.labels == {}
    assert table.bad_keys == {"1.2.3", "1.2.4", "1.2.5"}
    assert [e.split(": ", 1)[1] for e in table.errors] == [
        "unknown label 'covid' (known: normal, pneumonia, bacterial, bacteria, viral, virus)",
        "unknown subtype 'fungal' (known: bacterial, bacteria, viral, virus, unknown)",
        "empty study_uid",
        "label 'viral' conflicts with line 2",
    ]
    with pytest.raises(ValueError, match="no 'sop_uid' column"):
        read_labels(labels, key="sop_uid")
    with pytest.raises(ValueError, match="key must be one of"):
        read_labels(labels, key="patient")
