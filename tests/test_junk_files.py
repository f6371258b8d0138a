"""One junk-file rule (names.is_junk): every walker of input folders skips the same files, with one reason."""

from __future__ import annotations

import shutil
from pathlib import Path

from dicom_factory import make_cr

from pneumonia_monai.data.films import list_films
from pneumonia_monai.data.kaggle import iter_image_files
from pneumonia_monai.names import JUNK_REASON, is_junk
from pneumonia_monai.triage import select_files

JUNK = (
    "__MACOSX/NORMAL/film.dcm",
    "NORMAL/._film.dcm",
    "NORMAL/.DS_Store",
    "NORMAL/Thumbs.db",
    "desktop.ini",
)


def _tree(root: Path) -> Path:
    film = make_cr(root / "NORMAL/film.dcm")
    assert film.SOPInstanceUID
    for rel in JUNK:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "NORMAL/film.dcm", root / rel)  # a real DICOM under a junk name is junk still
    (root / "NORMAL/.hidden.dcm").write_bytes((root / "NORMAL/film.dcm").read_bytes())
    return root


def test_the_rule() -> None:
    for rel in JUNK:
        assert is_junk(rel) and is_junk(Path(rel)), rel
    for rel in ("NORMAL/film.dcm", "NORMAL/.hidden.dcm", ".config/film.dcm", "MACOSX/film.dcm"):
        assert not is_junk(rel), rel


def test_select_skips_junk_with_the_one_reason(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in")
    decisions = {d.relative_path: d for d in select_files([root]).decisions}
    for rel in JUNK:
        assert (decisions[rel].status, decisions[rel].reason) == ("skipped", JUNK_REASON), rel
    # a hidden file that is not operating-system metadata is decided by its content
    assert decisions["NORMAL/.hidden.dcm"].status == "selected"  # sorted first: the copy is the duplicate
    assert decisions["NORMAL/film.dcm"].reason == "duplicate SOP Instance UID of NORMAL/.hidden.dcm"


def test_every_walker_skips_the_same_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in")
    listed = {Path(item["image"]).relative_to(root).as_posix() for item in list_films(root)}
    assert listed == {"NORMAL/film.dcm", "NORMAL/.hidden.dcm"}
    for picture in ("NORMAL/IM-0001-0001.jpeg", "NORMAL/._IM-0001-0001.jpeg", "__MACOSX/NORMAL/IM-1.jpeg"):
        (root / picture).parent.mkdir(parents=True, exist_ok=True)
        (root / picture).write_bytes(b"\xff\xd8\xff")
    assert [p.relative_to(root).as_posix() for p in iter_image_files(root)] == ["NORMAL/IM-0001-0001.jpeg"]
