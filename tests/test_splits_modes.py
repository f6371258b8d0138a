"""The temporal and K-fold split modes: which patients go where, and that none is on both sides."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pneumonia_monai.data.datalist import build_datalist
from pneumonia_monai.data.kaggle import ImageRecord
from pneumonia_monai.data.splits import kfold_split, split_pool, temporal_split


def _records() -> list[ImageRecord]:
    """Kaggle-like names: normals IM-0100..IM-0199 and NORMAL2-IM-0300..0349 (two films each for some),
    pneumonia person1..person200 (bacterial / viral)."""
    records = []
    for n in range(100, 200):
        for k in range(1 + n % 2):
            records.append(ImageRecord(f"/x/IM-{n:04d}-{k + 1:04d}.jpeg", "normal", "none", f"IM-{n:04d}"))
    for n in range(300, 350):
        pid = f"NORMAL2-IM-{n:04d}"
        records.append(ImageRecord(f"/x/{pid}-0001.jpeg", "normal", "none", pid))
    for p in range(1, 201):
        kind = "bacterial" if p % 3 else "viral"
        for k in range(1 + p % 3):
            records.append(ImageRecord(f"/x/person{p}_{kind}_{k}.jpeg", "pneumonia", kind, f"person{p}"))
    return records


def test_temporal_split_holds_out_the_lowest_numbered_normals_of_each_scheme() -> None:
    records = _records()
    datalist = build_datalist(records, split_mode="temporal", val_fraction=0.2, seed=0)
    val_normals = {i["patient_id"] for i in datalist["validation"] if i["subtype"] == "none"}
    train_normals = {i["patient_id"] for i in datalist["training"] if i["subtype"] == "none"}
    # 20% of each scheme, its lowest numbers: IM-0100..IM-0119 and NORMAL2-IM-0300..0309
    assert val_normals == {f"IM-{n:04d}" for n in range(100, 120)} | {
        f"NORMAL2-IM-{n:04d}" for n in range(300, 310)
    }
    # ordering: every held-out number is below every training number of its scheme
    for scheme in ("IM-", "NORMAL2-IM-"):
        held = [
            int(p.rsplit("-", 1)[1])
            for p in val_normals
            if p.startswith(scheme) and p.count("-") == scheme.count("-")
        ]
        kept = [
            int(p.rsplit("-", 1)[1])
            for p in train_normals
            if p.startswith(scheme) and p.count("-") == scheme.count("-")
        ]
        assert max(held) < min(kept)
    # pneumonia patients: the same share, grouped, stratified on bacterial / viral
    val_pneu = {i["patient_id"] for i in datalist["validation"] if i["subtype"] != "none"}
    assert 0.15 < len(val_pneu) / 200 < 0.25
    counts = Counter(i["subtype"] for i in datalist["validation"] if i["subtype"] != "none")
    assert counts["viral"] > 0 and counts["bacterial"] > counts["viral"]
    # no leak, nothing lost
    train_patients = {i["patient_id"] for i in datalist["training"]}
    assert not train_patients & {i["patient_id"] for i in datalist["validation"]}
    assert len(datalist["training"]) + len(datalist["validation"]) == len(records)


def test_temporal_split_is_seeded_on_the_pneumonia_side_only() -> None:
    records = _records()
    a = build_datalist(records, split_mode="temporal", seed=1)
    b = build_datalist(records, split_mode="temporal", seed=1)
    c = build_datalist(records, split_mode="temporal", seed=2)
    assert a == b
    normals = lambda d: {i["patient_id"] for i in d["validation"] if i["subtype"] == "none"}  # noqa: E731
    pneumonia = lambda d: {i["patient_id"] for i in d["validation"] if i["subtype"] != "none"}  # noqa: E731
    assert normals(a) == normals(c)  # the held-out period does not depend on the seed
    assert pneumonia(a) != pneumonia(c)


def test_temporal_split_refuses_a_patient_in_two_classes() -> None:
    with pytest.raises(ValueError, match="one class per patient"):
        temporal_split(["normal", "bacterial", "normal"], ["p1", "p1", "p2"])
    with pytest.raises(ValueError, match="val_fraction"):
        temporal_split(["normal"], ["p1"], val_fraction=0.7)


def test_kfold_partitions_the_patients() -> None:
    records = _records()
    strata = [r.subtype if r.label == "pneumonia" else "normal" for r in records]
    groups = np.array([r.patient_id for r in records])
    seen: list[str] = []
    for fold in range(5):
        train, val = kfold_split(strata, groups, num_folds=5, fold=fold, seed=0)
        assert not set(groups[train]) & set(groups[val])
        assert len(train) + len(val) == len(records)
        seen.extend(sorted(set(groups[val])))
    assert sorted(seen) == sorted(set(groups))  # every patient in validation exactly once
    # fold 0 of 5 is the random split of val_fraction 0.2
    assert [a.tolist() for a in split_pool(strata, groups, mode="kfold", num_folds=5, fold=0)] == [
        a.tolist() for a in split_pool(strata, groups, mode="random", val_fraction=0.2)
    ]
    with pytest.raises(ValueError, match="fold must be"):
        kfold_split(strata, groups, num_folds=5, fold=5)
    with pytest.raises(ValueError, match="num_folds"):
        kfold_split(strata, groups, num_folds=1)
    with pytest.raises(ValueError, match="split mode"):
        split_pool(strata, groups, mode="chronological")
