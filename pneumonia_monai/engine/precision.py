"""Numeric precision of the forward pass: bf16 autocast on CPUs that support it, fp32 otherwise.

MONAI's engines autocast only on CUDA (their ``amp`` flag calls ``torch.autocast("cuda")``). On a CPU
with AVX-512 BF16 or AMX, ``torch.autocast("cpu", dtype=torch.bfloat16)`` with channels-last weights
trains DenseNet121 over twice as fast as fp32. :class:`AutocastInferer` brings that to the engines:
it runs the network under autocast and returns fp32 outputs, so the loss, the metrics and the
threshold search all run in fp32.

Precision names (the bundle's ``precision`` key):

- ``"auto"``: ``bf16`` on a CPU that has native bf16 instructions, otherwise ``fp32`` (on CUDA the
  bundle's ``amp`` key governs, as MONAI's engines do);
- ``"bf16"``: bf16 autocast (on a CPU without native bf16 this is emulated and slow; a warning says so);
- ``"fp32"``: no autocast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer

from pneumonia_monai import checks

logger = logging.getLogger(__name__)

#: Accepted values of the ``precision`` key.
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
#: /proc/cpuinfo flags of native bf16 arithmetic (AVX-512 BF16, AMX).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has native bf16 instructions (``avx512_bf16`` or ``amx_bf16``).

    Reads the Linux ``flags`` line; elsewhere (no such file) the answer is ``False``, so ``auto``
    falls back to fp32.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Return the precision that runs: ``"bf16"`` or ``"fp32"``, and log it.

    Args:
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        device: the device of the network.

    Raises:
        ValueError: on an unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device_type = torch.device(device).type
    if device_type != "cpu":
        resolved = "bf16" if precision == "bf16" else "fp32"
        logger.info(
            "precision on %s: %s autocast by this inferer (the 'amp' key governs fp16)", device, resolved
        )
        return resolved
    native = cpu_has_native_bf16()
    if precision == "auto":
        resolved = "bf16" if native else "fp32"
        reason = (
            "this CPU has native bf16" if native else "this CPU has no native bf16 (avx512_bf16/amx_bf16)"
        )
        logger.info("precision auto on cpu: %s (%s)", resolved, reason)
        return resolved
    if precision == "bf16" and not native:
        logger.warning("bf16 requested on a CPU without native bf16: it is emulated and slower than fp32")
    logger.info("precision on cpu: %s", precision)
    return precision


class AutocastInferer(Inferer):
    """Run the network under ``torch.autocast`` in the resolved precision; return fp32 outputs.

    Args:
        device: the network's device (its type is the autocast device type).
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (see :func:`resolve_precision`).
        channels_last: pass 4-D inputs in channels-last memory layout (for channels-last weights).
    """

    def __init__(
        self, device: torch.device | str = "cpu", precision: str = "auto", channels_last: bool = False
    ):
        super().__init__()
        self.device_type = torch.device(device).type
        self.precision = resolve_precision(precision, device)
        self.channels_last = checks.flag("channels_last", channels_last, command_line=True)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """Return ``network(inputs)`` computed in the precision, as fp32."""
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            outputs = network(inputs, *args, **kwargs)
        if isinstance(outputs, torch.Tensor) and outputs.is_floating_point():
            return outputs.float()
        return outputs
