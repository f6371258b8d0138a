"""The network weights inside a checkpoint file, in whichever of the usual forms it was saved."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: Keys under which trainers wrap the network's state dict (MONAI's ``CheckpointSaver`` uses ``model``).
WRAPPER_KEYS = ("model", "network", "state_dict")


def network_state(raw: Any, source: str | Path) -> dict[str, torch.Tensor]:
    """Return the network state dict inside a loaded checkpoint.

    Accepts a bare state dict or one wrapped under one of :data:`WRAPPER_KEYS`, and strips the
    ``module.`` prefix of a checkpoint saved from ``DistributedDataParallel``.

    Args:
        raw: what ``torch.load`` returned.
        source: where it came from, for the message.

    Raises:
        ValueError: if ``raw`` holds no non-empty mapping of names to tensors.
    """
    if isinstance(raw, Mapping):
        for key in WRAPPER_KEYS:
            if key in raw and isinstance(raw[key], Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"checkpoint {source} does not hold a state dict of tensors")
    state = dict(raw)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_network_state(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load`` a checkpoint file (tensors only, onto the CPU) and return :func:`network_state`."""
    return network_state(torch.load(path, map_location="cpu", weights_only=True), path)
