"""Patient-grouped, stratified, seeded splits.

Kermany's patients often have several films. A validation split that puts one film of a patient in
training and another in validation measures memory, not generalisation, so every split here is made
on patients: all films of a patient land on the same side.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from pneumonia_monai import checks

logger = logging.getLogger(__name__)


def grouped_split(
    strata: Sequence[str] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split items into training and validation indices, grouped by patient and stratified.

    The split is the first fold of a shuffled ``StratifiedGroupKFold`` with ``round(1 / val_fraction)``
    folds, which keeps the class mix of both sides close to the whole while never splitting a group.
    Where a class has fewer items than folds (a tiny data set), the split is grouped but not
    stratified, and a warning says so.

    Args:
        strata: per item, the class to stratify on (e.g. ``"normal"``, ``"bacterial"``, ``"viral"``).
        groups: per item, the patient id.
        val_fraction: fraction of items (approximately) that go to validation, in (0, 0.5].
        seed: seed of the shuffle; the same seed and items give the same split.

    Returns:
        ``(train_indices, val_indices)``, sorted.

    Raises:
        ValueError: if the lengths differ, ``val_fraction`` is out of range, or there are fewer
            patients than folds.
    """
    if len(strata) != len(groups):
        raise ValueError(f"strata and groups differ in length: {len(strata)} != {len(groups)}")
    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction!r}")
    n_splits = max(2, round(1.0 / val_fraction))
    return _fold(strata, groups, n_splits=n_splits, fold=0, seed=seed)


def _fold(
    strata: Sequence[str] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    n_splits: int,
    fold: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` of a shuffled (stratified where possible) group K-fold over the items."""
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise ValueError(f"cannot split {n_groups} patient(s) into {n_splits} folds")
    y = np.asarray(strata)
    g = np.asarray(groups)
    smallest = min(np.unique(y, return_counts=True)[1])
    splitter: StratifiedGroupKFold | GroupKFold
    if smallest >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        logger.warning(
            "a class has only %d item(s), fewer than the %d folds: the split is grouped but not stratified",
            smallest,
            n_splits,
        )
        splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = splitter.split(np.zeros(len(y)), y, g)
    train_idx, val_idx = next(f for i, f in enumerate(folds) if i == fold)
    _check_no_leak(g, train_idx, val_idx)
    logger.debug("split %d items into %d train / %d validation", len(y), len(train_idx), len(val_idx))
    return np.sort(train_idx), np.sort(val_idx)


def _check_no_leak(groups: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
    """Raise if a patient is on both sides (a leak would invalidate every number)."""
    overlap = set(groups[train_idx]) & set(groups[val_idx])
    if overlap:
        raise RuntimeError(f"{len(overlap)} patient(s) on both sides of the split")


#: Split modes of :func:`split_pool`.
SPLIT_MODES: tuple[str, ...] = ("random", "temporal", "kfold")

#: Normal-patient id schemes whose numbers follow acquisition order: ``IM-0115``, ``NORMAL2-IM-0383``,
#: and Mendeley's bare numbers (``1003233``). The scheme is the id without its number.
_NUMBERED_ID = re.compile(r"^(?P<scheme>.*?)(?P<number>\d+)$")


def _scheme_and_number(patient_id: str) -> tuple[str, int]:
    """``("IM-", 115)`` for ``IM-0115``; an id without a trailing number is its own scheme, number 0."""
    match = _NUMBERED_ID.match(patient_id)
    if match is None:
        return patient_id, 0
    return match["scheme"].upper(), int(match["number"])


def temporal_split(
    strata: Sequence[str],
    groups: Sequence[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    shifted_stratum: str = "normal",
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the earliest patients of the shifted class, and a matched draw of the others.

    Kermany's official test normals are the lowest patient numbers of each naming scheme (an earlier
    acquisition period), so a random split cannot see that shift. This split holds out, for each
    naming scheme of the ``shifted_stratum`` patients (``IM-``, ``NORMAL2-IM-``, Mendeley numbers), the
    ``val_fraction`` of its patients with the lowest numbers; the other patients (pneumonia) are split
    by :func:`grouped_split` (patient-grouped, stratified on their strata, seeded) with the same
    fraction. No patient is on both sides.

    Args:
        strata: per item, its class (``"normal"``, ``"bacterial"``, ``"viral"``).
        groups: per item, the patient id.
        val_fraction: fraction of patients of each side that go to validation, in (0, 0.5].
        seed: seed of the draw of the other patients.
        shifted_stratum: the class whose earliest patients are held out.

    Returns:
        ``(train_indices, val_indices)``, sorted.

    Raises:
        ValueError: if the lengths differ, ``val_fraction`` is out of range, a patient has items of
            the shifted class and of another, or either side has too few patients.
    """
    if len(strata) != len(groups):
        raise ValueError(f"strata and groups differ in length: {len(strata)} != {len(groups)}")
    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction!r}")
    y, g = np.asarray(strata), np.asarray(groups)
    shifted = y == shifted_stratum
    mixed = set(g[shifted]) & set(g[~shifted])
    if mixed:
        raise ValueError(
            f"{len(mixed)} patient(s) have films of {shifted_stratum!r} and of another class, "
            f"e.g. {sorted(mixed)[:3]}: a temporal split needs one class per patient"
        )
    by_scheme: dict[str, list[tuple[int, str]]] = {}
    for patient in sorted(set(g[shifted])):
        scheme, number = _scheme_and_number(str(patient))
        by_scheme.setdefault(scheme, []).append((number, str(patient)))
    held: set[str] = set()
    for scheme, patients in sorted(by_scheme.items()):
        patients.sort()
        n_held = round(val_fraction * len(patients))
        held.update(p for _, p in patients[:n_held])
        if n_held:
            logger.info(
                "temporal split: %d of %d %s patients of scheme %r held out (numbers %d-%d)",
                n_held,
                len(patients),
                shifted_stratum,
                scheme,
                patients[0][0],
                patients[n_held - 1][0],
            )
    if not held:
        raise ValueError(f"too few {shifted_stratum!r} patients to hold out {val_fraction:.0%} of them")
    others = np.flatnonzero(~shifted)
    if len(set(g[others])) >= max(2, round(1.0 / val_fraction)):
        _, o_val = grouped_split(y[others], g[others], val_fraction=val_fraction, seed=seed)
    else:  # too few patients for the folds (a tiny sample): a seeded draw of whole patients
        patients = sorted(set(g[others]))
        order = np.random.default_rng(seed).permutation(len(patients))
        drawn = {patients[i] for i in order[: max(1, round(val_fraction * len(patients)))]}
        logger.warning("only %d other patient(s): drawn without stratification", len(patients))
        o_val = np.flatnonzero(np.isin(g[others], sorted(drawn)))
    val_mask = np.isin(g, sorted(held)) & shifted
    val_mask[others[o_val]] = True
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    _check_no_leak(g, train_idx, val_idx)
    return train_idx, val_idx


def kfold_split(
    strata: Sequence[str],
    groups: Sequence[str],
    *,
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` of a patient-grouped, stratified, seeded K-fold: ``(train_indices, val_indices)``.

    The folds partition the patients: over ``fold = 0 .. num_folds - 1`` every patient is in
    validation exactly once. With ``num_folds = round(1 / val_fraction)`` and ``fold = 0`` this is the
    ``random`` split.

    Raises:
        ValueError: if ``num_folds`` < 2, ``fold`` is not in ``[0, num_folds)``, or there are fewer
            patients than folds.
    """
    checks.integer("num_folds", num_folds, minimum=2)
    checks.integer("fold", fold, minimum=0, maximum=num_folds - 1, what=f"an int in [0, {num_folds})")
    return _fold(strata, groups, n_splits=num_folds, fold=fold, seed=seed)


def split_pool(
    strata: Sequence[str],
    groups: Sequence[str],
    *,
    mode: str = "random",
    val_fraction: float = 0.2,
    seed: int = 0,
    num_folds: int = 5,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split by ``mode``: ``random`` (:func:`grouped_split`), ``temporal`` or ``kfold``.

    Raises:
        ValueError: on an unknown ``mode`` or bad arguments for it.
    """
    if mode == "random":
        return grouped_split(strata, groups, val_fraction=val_fraction, seed=seed)
    if mode == "temporal":
        return temporal_split(strata, groups, val_fraction=val_fraction, seed=seed)
    if mode == "kfold":
        return kfold_split(strata, groups, num_folds=num_folds, fold=fold, seed=seed)
    raise ValueError(f"split mode must be one of {SPLIT_MODES}, got {mode!r}")
