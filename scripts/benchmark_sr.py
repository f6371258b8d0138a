"""Time building and writing one study's SR: item by item (what infer uses) and with highdicom.

The target (issue 14): the SR of a one-image study in at most 20 ms on one CPU core, build and write
together. The sources are real headers: pydicom-data's RG1 chest CR (one image), and RG1 with three
synthetic second films of its study (four images, as the infer benchmark's studies). Each variant is
run ``--repeat`` times after one warm-up; the median wall time and the median CPU time of the thread
(which a busy machine's other processes do not inflate) are printed, with the ratio to 20 ms.

    python scripts/benchmark_sr.py --repeat 50
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from pneumonia_monai.dicom.sr import (
    ImageFinding,
    build_pneumonia_sr,
    build_pneumonia_sr_highdicom,
)
from pneumonia_monai.dicom.writer import write_dataset_atomic

#: The issue's target for a one-image study, build and write, in milliseconds.
TARGET_MS = 20.0


def study(n_images: int) -> list[pydicom.Dataset]:
    """RG1's header and ``n_images - 1`` copies of it as further films of its study (new UIDs)."""
    path = get_testdata_file("RG1_UNCI.dcm")
    if path is None:
        raise FileNotFoundError("pydicom-data (RG1_UNCI.dcm) is needed: pip install pydicom-data")
    first = pydicom.dcmread(path, stop_before_pixels=True)
    headers: list[pydicom.Dataset] = [first]
    for _ in range(n_images - 1):
        other = copy.deepcopy(first)
        other.SeriesInstanceUID = generate_uid()
        other.SOPInstanceUID = generate_uid()
        headers.append(other)
    return headers


def build_and_write(
    build: Callable[..., pydicom.Dataset],
    headers: list[pydicom.Dataset],
    findings: list[ImageFinding],
    target: Path,
) -> None:
    """Build the study's SR with ``build`` and write it (atomically, as infer does) to ``target``."""
    sr = build(headers, findings, algorithm_name="benchmark", algorithm_version="0", threshold=0.5)
    write_dataset_atomic(sr, target)


def timed(run: Callable[[], None], repeat: int) -> tuple[float, float]:
    """Median wall and thread CPU milliseconds of ``run`` over ``repeat`` runs (after one warm-up)."""
    run()
    wall, cpu = [], []
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        run()
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the timings; exit 0 when the one-image study meets the target in CPU time, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs per variant (default 30)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the builders' messages")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    builders = {"item by item": build_pneumonia_sr, "highdicom": build_pneumonia_sr_highdicom}
    one_image_cpu = float("inf")
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "sr.dcm"
        print(f"{'study':<10} {'builder':<13} {'wall ms':>8} {'CPU ms':>8} {'CPU / 20 ms':>12}")
        for n_images in (1, 4):
            headers = study(n_images)
            findings = [ImageFinding(str(h.SOPInstanceUID), str(h.SOPClassUID), 0.5, True) for h in headers]
            for name, build in builders.items():
                run = functools.partial(build_and_write, build, headers, findings, target)
                wall, cpu = timed(run, args.repeat if name == "item by item" else max(3, args.repeat // 5))
                if n_images == 1 and name == "item by item":
                    one_image_cpu = cpu
                print(f"{n_images} image(s) {name:<13} {wall:8.1f} {cpu:8.1f} {cpu / TARGET_MS:12.2f}")
    return 0 if one_image_cpu <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
