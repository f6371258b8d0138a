"""What the DICOM node tests share: the node's AE title, dcmtk, the processor and destination doubles,
and a bounded wait on a condition.

The node fixture itself is conftest's ``start_node`` (its defaults per module: ``node_defaults``).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from dicom_factory import referenced_sop_uids
from pydicom import dcmread

from pneumonia_monai.dicom.sr import ImageFinding, build_pneumonia_sr
from pneumonia_monai.dicom.writer import write_dataset_atomic
from pneumonia_monai.node.destinations import SendError

#: The AE title of the nodes the tests start.
NODE_AET = "PNEUMONIA"
DCMTK_HINT = "dcmtk's storescu/echoscu/dcmcjpeg are needed: apt-get install dcmtk"


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, state: Callable[[], object] = str
) -> None:
    """Poll until ``condition()`` holds; after ``timeout`` s fail, naming ``what`` and ``state()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} ({state()})")
        time.sleep(0.02)


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found; {DCMTK_HINT}")
    return path


class SrProcessor:
    """Builds a real pneumonia SR for the study; records the calls and the thread they ran in."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[str], str]] = []
        self.gate = gate
        self.fail = fail
        self.started = threading.Event()

    def _sr(self, study_dir: Path, out_dir: Path) -> Path:
        headers = [dcmread(p, stop_before_pixels=True) for p in sorted(study_dir.glob("*.dcm"))]
        findings = [
            ImageFinding(str(h.SOPInstanceUID), str(h.SOPClassUID), prob_pneumonia=0.75, present=True)
            for h in headers
        ]
        sr = build_pneumonia_sr(
            headers, findings, algorithm_name="test", algorithm_version="1", threshold=0.5
        )
        path = out_dir / "sr" / f"{study_dir.name}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dataset_atomic(sr, path)
        return path

    def process(self, study_dir: Path, out_dir: Path) -> list[Path]:
        self.calls.append(
            (study_dir.name, sorted(p.name for p in study_dir.glob("*.dcm")), threading.current_thread().name)
        )
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("model exploded")
        return [self._sr(study_dir, out_dir)]


class RecordingDestination:
    """Records (study UID, referenced SOP UIDs, SOP class) of each file sent; fails the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.sent: list[tuple[str, set[str], str]] = []
        self.lock = threading.Lock()

    def send(self, paths: Sequence[Path]) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise SendError(f"destination down (attempt {self.attempts})")
            for path in paths:
                ds = dcmread(path)
                self.sent.append((str(ds.StudyInstanceUID), referenced_sop_uids(ds), str(ds.SOPClassUID)))

    def __str__(self) -> str:
        return "recording destination"
