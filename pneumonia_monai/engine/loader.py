"""A training data loader whose augmentations do not compete with the train step for the CPU's cores.

MONAI's :class:`~monai.data.ThreadDataLoader` (``num_workers=0``) runs the random transforms in one
background thread while the main thread runs the train step. Every small tensor operation in that thread
(an affine resampling, a gamma, a lung-box crop of a 224-pixel film) starts an OpenMP team as wide as
torch's intra-op thread count, and on a CPU with few cores those threads spin against the train step's:
measured on 2 cores, ``RandAdjustContrast`` of a 224 x 224 film cost 28 CPU-ms with 2 threads and 0.8
with 1, ``RandAffine`` 30 and 4. torch's intra-op thread count is per calling thread (OpenMP's
``nthreads-var``), so the loader's thread can run on one while the train step keeps them all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch
from monai.data import DataLoader, ThreadDataLoader
from monai.data.thread_buffer import buffer_iterator

from pneumonia_monai import checks

__all__ = ["AugmentingThreadDataLoader"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _in_threads(source: Iterable[T], threads: int) -> Iterator[T]:
    """Yield ``source``'s items, setting torch's intra-op threads of the thread that iterates it first."""
    torch.set_num_threads(threads)  # runs at the first next(): in the buffer's thread, not the caller's
    yield from source


class AugmentingThreadDataLoader(ThreadDataLoader):
    """A :class:`~monai.data.ThreadDataLoader` whose buffer thread runs torch on ``transform_threads``.

    With ``num_workers=0`` (the bundle's setting) the dataset's transforms run in the buffer thread; with
    worker processes, PyTorch already gives each worker one thread.

    Args:
        dataset: the dataset.
        transform_threads: torch intra-op threads of the thread that runs the transforms (default 1).
        kwargs: the arguments of :class:`~monai.data.ThreadDataLoader` (``batch_size``, ``shuffle`` ...).

    Raises:
        TypeError, ValueError: if ``transform_threads`` is not a positive integer.
    """

    def __init__(self, dataset: Any, *, transform_threads: int = 1, **kwargs: Any) -> None:
        checks.positive_int("transform_threads", transform_threads)
        super().__init__(dataset, **kwargs)
        self.transform_threads = transform_threads

    # torch annotates DataLoader.__iter__ as returning its own _BaseDataLoaderIter; like MONAI's
    # ThreadDataLoader this one yields from a generator (the same iteration protocol, another class).
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        source = DataLoader.__iter__(self)
        yield from buffer_iterator(
            _in_threads(source, self.transform_threads), self.buffer_size, self.buffer_timeout, self.repeats
        )
