"""What the DICOM node tests share: the node's AE title and a bounded wait on a condition.

The node fixture itself is conftest's ``start_node`` (its defaults per module: ``node_defaults``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

#: The AE title of the nodes the tests start.
NODE_AET = "PNEUMONIA"


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, state: Callable[[], object] = str
) -> None:
    """Poll until ``condition()`` holds; after ``timeout`` s fail, naming ``what`` and ``state()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} ({state()})")
        time.sleep(0.02)
