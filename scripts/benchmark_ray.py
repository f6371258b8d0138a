"""Benchmark the Ray Data engine against the local engine on the same films, and its memory on a big manifest.

Usage::

    python scripts/benchmark_ray.py --workdir /tmp/bench-ray                      # throughput
    python scripts/benchmark_ray.py --workdir /tmp/bench-ray --memory-entries 100000  # bounded memory

**Throughput.** The real films of ``bundle/sample_data/chest_xray/train`` (40 Kermany JPEGs), copied
``--repeat`` times into ``WORKDIR/films``, are scored with the shipped bundle by
:func:`~pneumonia_monai.inference.runner.run_inference`: the local engine (``--workers`` decoding threads),
then the Ray engine on a local Ray of ``--cpus`` CPUs with an actor pool of 1 and of 2 actors (one CPU
each). For each it prints the films per second over the whole call (Ray's actor start and model loading
included: what a user waits for) and over the run proper (the local engine's model loading excluded),
and checks that every engine gave the same rows (probabilities within 1e-4).

**Memory.** With ``--memory-entries N``, a manifest of ``N`` entries is written: hard links to one small
lateral CR (triaged from its header and skipped, as most of an archive's non-chest or lateral films are)
and, for ``--frontal-share`` of them, to a small frontal JPEG film (scored). It runs the Ray engine (or,
with ``--engine local``, the local one) on it and prints the driver's peak resident set (``VmHWM`` of
this process, read from ``/proc/self/status``) and the largest peak of the Ray actors (``VmHWM`` of each
``ray::`` worker process, polled while they run).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pneumonia_monai.inference.manifest import read_results_csv
from pneumonia_monai.inference.runner import run_inference

logger = logging.getLogger("benchmark_ray")

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "bundle" / "sample_data" / "chest_xray" / "train"
LATERAL = REPO / "bundle" / "sample_data" / "dicom" / "pneumonia_dx" / "lateral.dcm"


def vm_hwm_kb(pid: int | str = "self") -> int:
    """Peak resident set of a process in kB (``VmHWM`` of ``/proc/<pid>/status``); 0 if it is gone."""
    try:
        with Path(f"/proc/{pid}/status").open(encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ActorMemory(threading.Thread):
    """Polls the peak resident set of every ``ray::`` worker process while the run goes."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        """Poll until :attr:`stop` is set."""
        while not self.stop.wait(self.interval):
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with Path(f"/proc/{entry.name}/cmdline").open("rb") as handle:
                        command = handle.read(64)
                except OSError:
                    continue
                if command.startswith(b"ray::"):
                    pid = int(entry.name)
                    self.peaks[pid] = max(self.peaks.get(pid, 0), vm_hwm_kb(pid))


def make_films(dest: Path, repeat: int) -> Path:
    """Copy the sample films ``repeat`` times under ``dest`` (kept for the next run)."""
    if dest.is_dir() and sum(1 for _ in dest.rglob("*.jpeg")) == repeat * len(list(TRAIN.rglob("*.jpeg"))):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for copy in range(repeat):
        for film in sorted(TRAIN.rglob("*.jpeg")):
            target = dest / f"copy{copy}" / film.relative_to(TRAIN)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(film, target)
    return dest


def same_rows(a: list[dict[str, str]], b: list[dict[str, str]]) -> bool:
    """The same paths, statuses and reasons, and probabilities within 1e-4."""

    def key(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
        return [(r["path"], r["status"], r["reason"]) for r in rows]

    if key(a) != key(b):
        return False
    return all(
        (x["prob_pneumonia"] == y["prob_pneumonia"] == "")
        or math.isclose(float(x["prob_pneumonia"]), float(y["prob_pneumonia"]), abs_tol=1e-4)
        for x, y in zip(a, b, strict=True)
    )


def throughput(args: argparse.Namespace) -> int:
    """The throughput table; non-zero when an engine's rows differ from the local engine's."""
    import ray

    films = make_films(args.workdir / "films", args.repeat)
    n = sum(1 for _ in films.rglob("*.jpeg"))
    results: list[tuple[str, float, float, list[dict[str, str]]]] = []
    out = args.workdir / "local"
    start = time.perf_counter()
    summary = run_inference(
        [films],
        out,
        batch_size=args.batch_size,
        workers=args.workers,
        write_sr=False,
        force=True,
        progress=False,
    )
    results.append(
        (
            f"local, {args.workers} decoding threads",
            n / (time.perf_counter() - start),
            summary.images_per_second,
            read_results_csv(out / "results.csv"),
        )
    )
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        for actors in (1, 2):
            out = args.workdir / f"ray{actors}"
            start = time.perf_counter()
            summary = run_inference(
                [films],
                out,
                batch_size=args.batch_size,
                write_sr=False,
                force=True,
                progress=False,
                engine="ray",
                ray_actors=actors,
            )
            results.append(
                (
                    f"ray, {actors} actor(s) of 1 CPU",
                    n / (time.perf_counter() - start),
                    summary.images_per_second,
                    read_results_csv(out / "results.csv"),
                )
            )
    finally:
        ray.shutdown()
    print(
        f"{n} films ({args.repeat} x the 40 sample JPEGs), shipped bundle, batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs"
    )
    print("| engine | films/s, whole call | films/s, run | same rows as local |")
    print("|---|---|---|---|")
    for label, whole, run, rows in results:
        print(f"| {label} | {whole:.2f} | {run:.2f} | {same_rows(rows, results[0][3])} |")
    return 0 if all(same_rows(rows, results[0][3]) for *_, rows in results) else 1


def memory(args: argparse.Namespace) -> int:
    """The memory test; non-zero when the results lack a row of the manifest."""
    import ray

    folder = args.workdir / "links"
    originals = args.workdir / "originals"  # hard links need the same file system
    originals.mkdir(exist_ok=True)
    frontal = Path(shutil.copy(sorted(TRAIN.rglob("*.jpeg"))[0], originals / "frontal.jpeg"))
    every = max(1, round(1 / args.frontal_share)) if args.frontal_share > 0 else 0
    manifest = args.workdir / "manifest.csv"
    if not manifest.is_file() or sum(1 for _ in manifest.open()) != args.memory_entries + 1:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with manifest.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["uri"])
            for i in range(args.memory_entries):
                sub = folder / f"{i // 1000:04d}"
                if not sub.is_dir():  # a copy per folder: a file has at most 65,000 links on ext4
                    sub.mkdir()
                    lateral = Path(shutil.copy(LATERAL, originals / f"lateral-{sub.name}.dcm"))
                scored = every and i % every == 0
                link = sub / (f"{i:06d}.jpeg" if scored else f"{i:06d}.dcm")
                os.link(frontal if scored else lateral, link)
                writer.writerow([str(link)])
    out = args.workdir / "memory-out"
    monitor = ActorMemory()
    if args.engine == "ray":
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    monitor.start()
    try:
        start = time.perf_counter()
        summary = run_inference(
            [],
            out,
            manifest=manifest,
            batch_size=args.batch_size,
            force=True,
            progress=False,
            engine=args.engine,
            ray_actors=args.cpus if args.engine == "ray" else None,
            workers=args.workers,
        )
        elapsed = time.perf_counter() - start
    finally:
        monitor.stop.set()
        monitor.join()
        if args.engine == "ray":
            ray.shutdown()
    rows = sum(1 for _ in (out / "results.csv").open()) - 1
    print(
        f"engine {args.engine}: {args.memory_entries} manifest entries ({summary.counts}) "
        f"in {elapsed:.0f} s; rows written: {rows}; "
        f"driver peak RSS (VmHWM) {vm_hwm_kb():,} kB; largest Ray worker peak RSS "
        f"{max(monitor.peaks.values(), default=0):,} kB over {len(monitor.peaks)} ray:: process(es)"
    )
    return 0 if rows == args.memory_entries else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where films and outputs go")
    parser.add_argument("--repeat", type=int, default=2, help="copies of the 40 sample films (default 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="the local engine's decoding threads")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--memory-entries", type=int, default=0, help="run the memory test on N entries")
    parser.add_argument("--engine", choices=("ray", "local"), default="ray", help="engine of the memory test")
    parser.add_argument(
        "--frontal-share", type=float, default=0.01, help="share of scored films (memory test)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    return memory(args) if args.memory_entries else throughput(args)


if __name__ == "__main__":
    sys.exit(main())
