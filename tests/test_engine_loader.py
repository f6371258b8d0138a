"""The training loader runs its transforms on one torch thread, beside a train step that keeps them all."""

from __future__ import annotations

import threading

import pytest
import torch
from monai.data import Dataset

from pneumonia_monai.engine.loader import AugmentingThreadDataLoader


class _Recording:
    """A transform that records the torch thread count and the thread it ran in."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    def __call__(self, item: int) -> torch.Tensor:
        self.seen.append((torch.get_num_threads(), threading.current_thread() is threading.main_thread()))
        return torch.full((2,), float(item))


def test_transforms_run_on_one_thread_outside_the_main_thread_which_keeps_its_own() -> None:
    before = torch.get_num_threads()
    recording = _Recording()
    loader = AugmentingThreadDataLoader(Dataset(list(range(6)), transform=recording), batch_size=2)
    batches = list(loader)
    assert [b[:, 0].tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert recording.seen == [(1, False)] * 6
    assert torch.get_num_threads() == before  # the train step's threads are untouched
    assert list(loader)  # a second epoch works the same way
    assert recording.seen[6:] == [(1, False)] * 6


def test_the_loader_names_a_bad_thread_count() -> None:
    with pytest.raises(ValueError, match="transform_threads must be a positive int, got 0"):
        AugmentingThreadDataLoader(Dataset([1]), transform_threads=0)
    with pytest.raises(TypeError, match=r"transform_threads must be a positive int, got 1\.5 \(float\)"):
        AugmentingThreadDataLoader(Dataset([1]), transform_threads=1.5)  # type: ignore[arg-type]
