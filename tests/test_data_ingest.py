"""Kaggle/Mendeley ingest: naming rules, junk, duplicates, label modes and patient-grouped splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumonia_monai.cli.datalist import main as datalist_main
from pneumonia_monai.data.datalist import build_datalist, prepare_datalist
from pneumonia_monai.data.kaggle import ImageRecord, parse_name, scan_kaggle_tree
from pneumonia_monai.data.splits import grouped_split


@pytest.mark.parametrize(
    ("stem", "label", "subtype", "patient"),
    [
        ("person123_bacteria_456", "pneumonia", "bacterial", "person123"),
        ("person1_virus_6", "pneumonia", "viral", "person1"),
        ("person1497_virus_2607_2", "pneumonia", "viral", "person1497"),
        ("IM-0115-0001", "normal", "none", "IM-0115"),
        ("IM-0135-0001-0002", "normal", "none", "IM-0135"),
        ("NORMAL2-IM-0336-0001", "normal", "none", "NORMAL2-IM-0336"),
        ("NORMAL2-IM-1345-0001-0002", "normal", "none", "NORMAL2-IM-1345"),
        ("BACTERIA-1008087-0001", "pneumonia", "bacterial", "1008087"),
        ("VIRUS-1014768-0003", "pneumonia", "viral", "1014768"),
        ("NORMAL-1003233-0001", "normal", "none", "1003233"),
        ("odd_name", "pneumonia", "unknown", "odd_name"),
    ],
)
def test_parse_name(stem: str, label: str, subtype: str, patient: str) -> None:
    assert parse_name(stem, label) == (subtype, patient)


def test_parse_name_folder_wins_over_name() -> None:
    # a bacterial name in a NORMAL folder keeps the folder's label (and is not a pneumonia subtype)
    assert parse_name("person5_bacteria_1", "normal") == ("none", "person5")
    assert parse_name("NORMAL-1003233-0001", "pneumonia") == ("unknown", "1003233")
    with pytest.raises(ValueError, match="label must be one of"):
        parse_name("IM-0001-0001", "covid")


def _img(path: Path, mode: str = "L", size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128 if mode == "L" else (120, 130, 140)).save(path)


def make_messy_kaggle_tree(root: Path) -> None:
    """A Kaggle archive as it arrives: Mac junk, a nested duplicate, val/ and test/, RGB and grey files."""
    base = root / "chest_xray"
    _img(base / "train/NORMAL/IM-0115-0001.jpeg")
    _img(base / "train/NORMAL/IM-0115-0002.jpeg", "RGB", (64, 50))
    _img(base / "train/NORMAL/NORMAL2-IM-0336-0001.jpeg")
    _img(base / "train/PNEUMONIA/person1_bacteria_1.jpeg", "RGB")
    _img(base / "train/PNEUMONIA/person1_bacteria_2.jpeg")
    _img(base / "train/PNEUMONIA/person2_virus_3.jpeg", size=(300, 200))
    _img(base / "val/NORMAL/NORMAL2-IM-1427-0001.jpeg")
    _img(base / "val/PNEUMONIA/person1946_bacteria_4874.jpeg")
    _img(base / "test/NORMAL/IM-0001-0001.jpeg")
    _img(base / "test/PNEUMONIA/person100_virus_184.jpeg")
    # the nested duplicate copy of the whole archive
    _img(base / "chest_xray/train/NORMAL/IM-0115-0001.jpeg")
    _img(base / "chest_xray/test/PNEUMONIA/person100_virus_184.jpeg")
    # Mac and Windows junk
    (root / "__MACOSX/chest_xray/train/NORMAL").mkdir(parents=True)
    (root / "__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.jpeg").write_bytes(b"\x00\x05\x16\x07junk")
    (base / "train/NORMAL/._IM-0115-0002.jpeg").write_bytes(b"\x00\x05\x16\x07junk")
    (base / "train/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (base / "train/PNEUMONIA/Thumbs.db").write_bytes(b"junk")
    _img(base / "stray.jpeg")  # not under a class folder


def test_scan_messy_tree(tmp_path: Path) -> None:
    make_messy_kaggle_tree(tmp_path)
    records = scan_kaggle_tree(tmp_path)
    names = sorted(Path(r.image).name for r in records)
    assert names == sorted(
        [
            "IM-0115-0001.jpeg",
            "IM-0115-0002.jpeg",
            "NORMAL2-IM-0336-0001.jpeg",
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpeg",
            "person2_virus_3.jpeg",
            "NORMAL2-IM-1427-0001.jpeg",
            "person1946_bacteria_4874.jpeg",
            "IM-0001-0001.jpeg",
            "person100_virus_184.jpeg",
        ]
    )
    assert not any("__MACOSX" in r.image or "/chest_xray/chest_xray/" in r.image for r in records)
    by_name = {Path(r.image).name: r for r in records}
    assert by_name["person2_virus_3.jpeg"] == ImageRecord(
        by_name["person2_virus_3.jpeg"].image, "pneumonia", "viral", "person2", "train"
    )
    assert by_name["NORMAL2-IM-1427-0001.jpeg"].source_split == "val"
    assert by_name["IM-0001-0001.jpeg"].source_split == "test"


def test_scan_mendeley_tree(tmp_path: Path) -> None:
    _img(tmp_path / "CellData/chest_xray/train/NORMAL/NORMAL-1003233-0001.jpeg")
    _img(tmp_path / "CellData/chest_xray/train/PNEUMONIA/BACTERIA-1003233-0002.jpeg")
    _img(tmp_path / "CellData/chest_xray/test/PNEUMONIA/VIRUS-1014768-0001.jpeg")
    records = {Path(r.image).name: r for r in scan_kaggle_tree(tmp_path)}
    assert records["NORMAL-1003233-0001.jpeg"].patient_id == records["BACTERIA-1003233-0002.jpeg"].patient_id
    assert records["VIRUS-1014768-0001.jpeg"].subtype == "viral"


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_kaggle_tree(tmp_path / "missing")
    _img(tmp_path / "misc/a.jpeg")
    with pytest.raises(ValueError, match="no images under NORMAL"):
        scan_kaggle_tree(tmp_path)


def test_val_folder_folded_into_pool_and_test_kept(tmp_path: Path) -> None:
    make_messy_kaggle_tree(tmp_path)
    datalist = build_datalist(scan_kaggle_tree(tmp_path), val_fraction=0.5, seed=0)
    pool = {Path(i["image"]).name for i in datalist["training"] + datalist["validation"]}
    assert {"NORMAL2-IM-1427-0001.jpeg", "person1946_bacteria_4874.jpeg"} <= pool
    assert {Path(i["image"]).name for i in datalist["test"]} == {
        "IM-0001-0001.jpeg",
        "person100_virus_184.jpeg",
    }
    assert set(datalist["training"][0]) == {"image", "label", "patient_id", "subtype"}


def _synthetic_records(n_patients: int = 400, seed: int = 1) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_patients):
        kind = rng.choice(["normal", "bacterial", "viral"], p=[0.26, 0.49, 0.25])
        for k in range(int(rng.integers(1, 5))):  # 1-4 films per patient
            label = "normal" if kind == "normal" else "pneumonia"
            records.append(
                ImageRecord(f"/x/p{p}_{k}.jpeg", label, "none" if kind == "normal" else kind, f"p{p}")
            )
    return records


def test_split_groups_patients_and_stratifies() -> None:
    records = _synthetic_records()
    datalist = build_datalist(records, val_fraction=0.2, seed=7)
    train_patients = {i["patient_id"] for i in datalist["training"]}
    val_patients = {i["patient_id"] for i in datalist["validation"]}
    assert not train_patients & val_patients, "a patient appears in two splits"
    assert len(datalist["training"]) + len(datalist["validation"]) == len(records)
    frac = len(datalist["validation"]) / len(records)
    assert 0.15 < frac < 0.25
    # stratified on normal / bacterial / viral: the class mix of validation is close to the whole
    whole = Counter(r.subtype for r in records)
    val = Counter(i["subtype"] for i in datalist["validation"])
    for subtype, count in whole.items():
        assert abs(val[subtype] / len(datalist["validation"]) - count / len(records)) < 0.05


def test_split_is_seeded() -> None:
    records = _synthetic_records()
    a = build_datalist(records, seed=3)
    b = build_datalist(records, seed=3)
    c = build_datalist(records, seed=4)
    assert a == b
    assert {i["patient_id"] for i in a["validation"]} != {i["patient_id"] for i in c["validation"]}
    # the same patients are in validation for the two- and the three-class model
    s = build_datalist(records, seed=3, label_mode="subtype")
    assert [i["image"] for i in s["validation"]] == [i["image"] for i in a["validation"]]


def test_label_modes() -> None:
    records = [*_synthetic_records(60), ImageRecord("/x/odd.jpeg", "pneumonia", "unknown", "odd")]
    binary = build_datalist(records, label_mode="binary")
    subtype = build_datalist(records, label_mode="subtype")
    items = binary["training"] + binary["validation"]
    assert {(i["subtype"], i["label"]) for i in items} == {
        ("none", 0),
        ("bacterial", 1),
        ("viral", 1),
        ("unknown", 1),
    }
    items = subtype["training"] + subtype["validation"]
    assert {(i["subtype"], i["label"]) for i in items} == {("none", 0), ("bacterial", 1), ("viral", 2)}
    assert len(items) == len(records) - 1  # the film of unknown subtype has no three-class label
    with pytest.raises(ValueError, match="label_mode"):
        build_datalist(records, label_mode="covid")


def test_grouped_split_validation() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        grouped_split(["a"], ["p1", "p2"])
    with pytest.raises(ValueError, match="val_fraction"):
        grouped_split(["a", "b"], ["p1", "p2"], val_fraction=0.9)
    with pytest.raises(ValueError, match="cannot split 2 patient"):
        grouped_split(["a", "b", "a"], ["p1", "p2", "p1"], val_fraction=0.2)


def test_sample_tree_split_has_no_leak(sample_tree: Path) -> None:
    datalist = prepare_datalist(sample_tree, seed=0)
    assert len(datalist["training"]) + len(datalist["validation"]) == 40
    assert not {i["patient_id"] for i in datalist["training"]} & {
        i["patient_id"] for i in datalist["validation"]
    }
    # the sample holds a patient with three films: they stay together
    sides = {
        ("training" if any(i["patient_id"] == "person12" for i in datalist["training"]) else "validation")
    }
    assert len(sides) == 1
    assert all(Path(i["image"]).is_file() for i in datalist["training"])


def test_datalist_file_round_trip(tmp_path: Path, sample_tree: Path) -> None:
    out = tmp_path / "lists" / "datalist.json"
    rc = datalist_main([str(sample_tree), "--output", str(out), "--num-classes", "3", "--seed", "5", "-q"])
    assert rc == 0
    raw = json.loads(out.read_text())
    assert not Path(raw["training"][0]["image"]).is_absolute()  # relative to the datalist's folder
    assert {i["label"] for i in raw["training"]} == {0, 1, 2}
    loaded = prepare_datalist(out)  # a datalist file is read as is, paths made absolute
    assert [Path(i["image"]).resolve() for i in loaded["validation"]] == [
        (out.parent / i["image"]).resolve() for i in raw["validation"]
    ]
    assert datalist_main([str(tmp_path / "nope"), "--output", str(out), "-q"]) == 2


def test_tiny_set_is_split_by_patient_without_stratification(caplog: pytest.LogCaptureFixture) -> None:
    strata = ["normal"] * 6 + ["viral"] * 2 + ["bacterial"] * 4
    groups = [f"p{i}" for i in range(12)]
    train, val = grouped_split(strata, groups, val_fraction=0.2, seed=0)
    assert len(train) + len(val) == 12 and not set(train) & set(val)
    assert "not stratified" in caplog.text
