"""Patient-grouped, stratified, seeded splits.

Kermany's patients often have several films. A validation split that puts one film of a patient in
training and another in validation measures memory, not generalisation, so every split here is made
on patients: all films of a patient land on the same side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

logger = logging.getLogger(__name__)


def grouped_split(
    strata: Sequence[str],
    groups: Sequence[str],
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
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise ValueError(
            f"cannot split {n_groups} patient(s) into {n_splits} folds (val_fraction={val_fraction})"
        )
    y = np.asarray(strata)
    g = np.asarray(groups)
    smallest = min(np.unique(y, return_counts=True)[1])
    if smallest >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(y)), y, g))
    else:
        logger.warning(
            "a class has only %d item(s), fewer than the %d folds: the split is grouped but not stratified",
            smallest,
            n_splits,
        )
        splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(y)), y, g))
    overlap = set(g[train_idx]) & set(g[val_idx])
    if overlap:  # guaranteed by StratifiedGroupKFold; checked because a leak would invalidate every number
        raise RuntimeError(f"{len(overlap)} patient(s) on both sides of the split")
    logger.debug("split %d items into %d train / %d validation", len(y), len(train_idx), len(val_idx))
    return np.sort(train_idx), np.sort(val_idx)
