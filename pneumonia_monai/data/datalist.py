"""MONAI datalists for the bundle: ``training`` / ``validation`` / ``test`` lists of image records.

Each item is ``{"image": path, "label": int, "patient_id": str, "subtype": str}``. Labels depend on the
label mode: ``binary`` (0 normal, 1 pneumonia) or ``subtype`` (0 normal, 1 bacterial, 2 viral).

Kaggle's official ``val/`` folder (16 films) is too small to select models on, so it is folded into the
pool with ``train/``; validation is carved from that pool by patient. The official ``test/`` split is
kept as ``test`` and never used to make a choice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumonia_monai.atomic import write_json_atomic
from pneumonia_monai.data.kaggle import ImageRecord, count_by, scan_kaggle_tree
from pneumonia_monai.data.splits import split_pool
from pneumonia_monai.labels import check_label_mode, label_value, stratum

logger = logging.getLogger(__name__)

DATALIST_KEYS: tuple[str, ...] = ("training", "validation", "test")


def _item(record: ImageRecord, label: int, base: Path | None) -> dict[str, Any]:
    image = Path(record.image)
    if base is not None:
        image = image.resolve()
        with contextlib.suppress(ValueError):  # on another drive (Windows): keep the absolute path
            image = Path(os.path.relpath(image, base))
    return {"image": str(image), "label": label, "patient_id": record.patient_id, "subtype": record.subtype}


def build_datalist(
    records: Sequence[ImageRecord],
    *,
    label_mode: str = "binary",
    val_fraction: float = 0.2,
    seed: int = 0,
    relative_to: str | Path | None = None,
    split_mode: str = "random",
    num_folds: int = 5,
    fold: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Split records into a datalist, by patient, stratified on normal / bacterial / viral.

    The split does not depend on ``label_mode``: the same seed gives the same patients in validation
    for the two-class and the three-class model, so their numbers can be compared.

    Args:
        records: films from :func:`~pneumonia_monai.data.kaggle.scan_kaggle_tree`.
        label_mode: ``"binary"`` or ``"subtype"``.
        val_fraction: fraction of the train+val pool that goes to validation.
        seed: split seed.
        relative_to: write image paths relative to this folder (the datalist's own folder).
        split_mode: ``"random"`` (patient-grouped, stratified), ``"temporal"`` (the earliest normal
            patients of each naming scheme plus a matched draw of pneumonia patients; it sees the
            acquisition-period shift of Kaggle's test normals) or ``"kfold"`` (fold ``fold`` of
            ``num_folds``); see :mod:`pneumonia_monai.data.splits`.
        num_folds: folds of the ``kfold`` mode.
        fold: the fold held out in the ``kfold`` mode.

    Raises:
        ValueError: on an unknown ``label_mode`` or ``split_mode``, or when the pool is too small to split.
    """
    check_label_mode(label_mode)
    base = Path(relative_to).resolve() if relative_to is not None else None
    pool = [r for r in records if r.source_split != "test"]
    test = [r for r in records if r.source_split == "test"]
    if not pool:
        raise ValueError("no training films: every record is from the official test split")
    train_idx, val_idx = split_pool(
        [stratum(r.label, r.subtype) for r in pool],
        [r.patient_id for r in pool],
        mode=split_mode,
        val_fraction=val_fraction,
        seed=seed,
        num_folds=num_folds,
        fold=fold,
    )
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in DATALIST_KEYS}
    unlabelled = 0
    for key, chosen in (
        ("training", [pool[i] for i in train_idx]),
        ("validation", [pool[i] for i in val_idx]),
        ("test", test),
    ):
        for record in chosen:
            label = label_value(record.label, record.subtype, label_mode)
            if label is None:
                unlabelled += 1
                continue
            out[key].append(_item(record, label, base))
    if unlabelled:
        logger.warning(
            "%d pneumonia film(s) have no bacterial/viral subtype and are left out in %s mode",
            unlabelled,
            label_mode,
        )
    for key in DATALIST_KEYS:
        logger.info("%s: %d films, labels %s", key, len(out[key]), _label_counts(out[key]))
    return out


def _label_counts(items: Sequence[dict[str, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item in items:
        counts[item["label"]] = counts.get(item["label"], 0) + 1
    return dict(sorted(counts.items()))


def resolve_items(datalist: dict[str, Any], key: str, base: str | Path) -> list[dict[str, Any]]:
    """Return the ``key`` list of a datalist with image paths made absolute against ``base``.

    Raises:
        KeyError: if the datalist has no ``key`` list.
    """
    if key not in datalist:
        raise KeyError(f"datalist has no {key!r} list (it has {sorted(datalist)})")
    items = []
    for item in datalist[key]:
        image = Path(item["image"])
        items.append({**item, "image": str(image if image.is_absolute() else Path(base) / image)})
    return items


def prepare_datalist(
    dataset_dir: str | Path,
    *,
    label_mode: str = "binary",
    val_fraction: float = 0.2,
    seed: int = 0,
    output: str | Path | None = None,
    split_mode: str = "random",
    num_folds: int = 5,
    fold: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Return the bundle's datalist for ``dataset_dir``, with absolute image paths.

    ``dataset_dir`` is either a Kaggle/Mendeley image tree, which is scanned and split here, or a
    datalist JSON file (for example one written by ``pneumonia-monai convert dicom-to-datalist``),
    whose relative image paths are taken relative to the file's folder.

    Args:
        dataset_dir: image tree or datalist JSON.
        label_mode: ``"binary"`` or ``"subtype"`` (ignored for a datalist file, whose labels are used).
        val_fraction: validation fraction for a tree.
        seed: split seed for a tree.
        output: if given, the datalist is also written there (for provenance).
        split_mode: ``"random"``, ``"temporal"`` or ``"kfold"`` for a tree (see :func:`build_datalist`).
        num_folds: folds of the ``kfold`` mode.
        fold: the fold held out in the ``kfold`` mode.

    Raises:
        FileNotFoundError: if ``dataset_dir`` does not exist.
    """
    # Absolute, as the docstring says: the loaders run in threads (CacheDataset, ThreadDataLoader), and
    # ITK's lazy module loader changes the process's working directory while it loads a module for a
    # MetaImage or NRRD film, so a relative path opened by another thread meanwhile would not be found.
    source = Path(dataset_dir).absolute()
    if source.is_file():
        with source.open(encoding="utf-8") as fh:
            raw = json.load(fh)
        datalist = {
            key: resolve_items(raw, key, source.parent) if key in raw else [] for key in DATALIST_KEYS
        }
        logger.info("datalist %s: %s", source, {k: len(v) for k, v in datalist.items()})
    else:
        records = scan_kaggle_tree(source)
        logger.info(
            "labels: %s; official splits: %s", count_by(records, "subtype"), count_by(records, "source_split")
        )
        datalist = build_datalist(
            records,
            label_mode=label_mode,
            val_fraction=val_fraction,
            seed=seed,
            split_mode=split_mode,
            num_folds=num_folds,
            fold=fold,
        )
    if output is not None:
        # a datalist file's relative paths are relative to its own folder (as resolve_items reads them)
        base = Path(output).resolve().parent
        write_json_atomic(
            output, {key: [_relative_to(item, base) for item in items] for key, items in datalist.items()}
        )
    return datalist


def _relative_to(item: dict[str, Any], base: Path) -> dict[str, Any]:
    image = Path(item["image"]).resolve()
    with contextlib.suppress(ValueError):  # on another drive (Windows): keep the absolute path
        image = Path(os.path.relpath(image, base))
    return {**item, "image": str(image)}
