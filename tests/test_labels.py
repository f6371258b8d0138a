"""One label vocabulary: every path reads label words and writes label values through labels.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pneumonia_monai import labels
from pneumonia_monai.data.datalist import build_datalist
from pneumonia_monai.data.kaggle import ImageRecord
from pneumonia_monai.evaluation.join import class_index

PACKAGE = Path(labels.__file__).resolve().parent


def test_every_label_word_means_the_same_to_the_csv_reader_and_to_evaluation() -> None:
    for word in labels.LABEL_NAMES:
        for text in (word, word.upper(), word.title()):
            parsed = labels.parse_label(text)
            assert isinstance(parsed, tuple), text
            label, subtype = parsed
            for mode, num_classes in (("binary", 2), ("subtype", 3)):
                assert class_index(text, "", num_classes) == labels.label_value(label, subtype, mode), (
                    text,
                    mode,
                )
        assert labels.LABEL_STRINGS[word][1] in labels.SUBTYPES


def test_label_values_index_the_class_names() -> None:
    assert labels.label_value("pneumonia", "viral", "subtype") == labels.CLASS_NAMES[3].index("viral")
    assert labels.label_value("pneumonia", "viral", "binary") == labels.CLASS_NAMES[2].index("pneumonia")
    assert labels.label_value("normal", "none", "subtype") == 0
    assert labels.label_value("pneumonia", "unknown", "subtype") is None
    with pytest.raises(ValueError, match="label_mode must be one of"):
        labels.check_label_mode("ternary")


def test_parse_label_names_the_bad_value() -> None:
    assert labels.parse_label("pneumonia", "virus") == ("pneumonia", "viral")
    assert labels.parse_label("bacteria", "") == ("pneumonia", "bacterial")
    assert "unknown label 'pneumonai'" in str(labels.parse_label("pneumonai"))
    assert "contradicts" in str(labels.parse_label("viral", "bacterial"))
    assert "normal label" in str(labels.parse_label("normal", "viral"))


def test_the_datalist_builder_labels_kaggle_records_by_the_same_rule() -> None:
    records = [
        ImageRecord(f"/films/{i}.jpeg", label, subtype, f"p{i}", "test")
        for i, (label, subtype) in enumerate(
            [("normal", "none"), ("pneumonia", "bacterial"), ("pneumonia", "viral"), ("pneumonia", "unknown")]
        )
    ]
    records.append(ImageRecord("/films/pool.jpeg", "normal", "none", "pool", "train"))
    records.append(ImageRecord("/films/pool2.jpeg", "normal", "none", "pool2", "train"))
    for mode in labels.LABEL_MODES:
        test = build_datalist(records, label_mode=mode, val_fraction=0.5)["test"]
        expected = [labels.label_value(r.label, r.subtype, mode) for r in records if r.source_split == "test"]
        assert [item["label"] for item in test] == [v for v in expected if v is not None]


def test_label_modes_and_words_are_defined_only_in_labels() -> None:
    defined: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
            for target in targets:
                if isinstance(target, ast.Name) and target.id in (
                    "LABEL_MODES",
                    "LABEL_NAMES",
                    "LABEL_STRINGS",
                    "SUBTYPE_STRINGS",
                    "CLASS_NAMES",
                ):
                    defined.setdefault(target.id, []).append(path.relative_to(PACKAGE).as_posix())
    assert defined == {
        name: ["labels.py"]
        for name in ("LABEL_MODES", "LABEL_NAMES", "LABEL_STRINGS", "SUBTYPE_STRINGS", "CLASS_NAMES")
    }
