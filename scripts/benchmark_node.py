"""Benchmark the DICOM node: study latency, from the last instance received to the SR stored in Orthanc.

Usage (root: Orthanc runs in a network namespace of its own, see
:mod:`pneumonia_monai.devtools.orthanc`; Debian's ``orthanc`` and ``orthanc-dicomweb``)::

    .venv/bin/python scripts/benchmark_node.py --studies 3 --stable-seconds 2 --workdir /tmp/bench-node

It starts a private Orthanc (127.0.0.1 only) and ``pneumonia-monai serve`` (the shipped bundle, or
``--bundle``; ``--port 0 --port-file``, sending to that Orthanc), waits for the node to answer C-ECHO,
then, ``--studies`` times, one after the other: sends a study of four films (the four frontal sample
films of ``bundle/sample_data/dicom``: DX, a 12-bit MONOCHROME1 JPEG 2000 film, RLE; given new UIDs,
sent in their own transfer syntaxes over one association) and measures the time from the answer to its
last C-STORE to the moment Orthanc lists the study's SR (polled every 50 ms).

It prints each study's latency, the median and the maximum, and the bound the node is held to:
``--stable-seconds`` (the quiet time a study must have before it is processed) plus 3 s. Exit status 0
when every study is within the bound, 1 otherwise, 2 when the node or Orthanc could not be started.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from pneumonia_monai.devtools.netns import NamespaceUnavailableError
from pneumonia_monai.devtools.orthanc import OrthancError, OrthancServer, wait_for
from pneumonia_monai.engine.paths import default_bundle

logger = logging.getLogger("benchmark_node")

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DICOM = REPO / "bundle" / "sample_data" / "dicom"
NODE_AET = "PNEUMONIA"
SENDER_AET = "MODALITY"
#: Seconds on top of --stable-seconds a study may take, end to end.
BUDGET_SECONDS = 3.0


def sample_films() -> list[Dataset]:
    """The four frontal sample films (the lateral one would be skipped by the selection rules)."""
    paths = sorted(SAMPLE_DICOM.glob("*/frontal.dcm"))
    if len(paths) != 4:
        raise FileNotFoundError(f"expected 4 frontal sample films under {SAMPLE_DICOM}, found {len(paths)}")
    return [dcmread(path) for path in paths]


def new_study(films: list[Dataset]) -> tuple[str, list[Dataset]]:
    """Copies of ``films`` as one new study (new Study, Series and SOP Instance UIDs)."""
    study_uid, series_uid = generate_uid(), generate_uid()
    out = []
    for number, film in enumerate(films, start=1):
        ds = film.copy()
        ds.file_meta = FileMetaDataset(film.file_meta)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        out.append(ds)
    return study_uid, out


def send_study(port: int, datasets: list[Dataset]) -> float:
    """C-STORE ``datasets`` over one association; return ``time.monotonic()`` at the last answer."""
    ae = AE(ae_title=SENDER_AET)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        raise RuntimeError(f"the node at 127.0.0.1:{port} refused the association")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if int(getattr(status, "Status", -1)) != 0:
                raise RuntimeError(f"C-STORE of instance {ds.InstanceNumber} failed: {status}")
        last = time.monotonic()
    finally:
        assoc.release()
    return last


def start_node(work: Path, bundle: Path, orthanc: OrthancServer, stable_seconds: float) -> subprocess.Popen:
    """Start ``pneumonia-monai serve`` sending to ``orthanc``; return once its port file is written.

    Raises:
        RuntimeError: if it exits or writes no port file within 120 s (the end of its log is quoted).
    """
    port_file = work / "node.port"
    command = [
        sys.executable,
        "-m",
        "pneumonia_monai",
        "serve",
        "--work-dir",
        str(work / "node"),
        "--ae-title",
        NODE_AET,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--dest-ae",
        f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
        "--bundle",
        str(bundle),
        "--device",
        "cpu",
        "--stable-seconds",
        str(stable_seconds),
        "--keep-days",
        "0",
    ]
    log = (work / "node.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    log.close()
    if not wait_for(lambda: port_file.exists() or process.poll() is not None, 120, 0.05) or (
        process.poll() is not None
    ):
        process.kill()
        tail = (work / "node.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the node did not start (exit {process.poll()}):\n{tail}")
    return process


def node_port(work: Path) -> int:
    """The port the node listens on (from its port file)."""
    return int((work / "node.port").read_text())


def sr_stored(orthanc: OrthancServer, study_uid: str) -> bool:
    """Whether Orthanc holds an SR series in the study."""
    return bool(orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SR"}, expand=False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=3, help="4-film studies to send, one after the other")
    parser.add_argument("--stable-seconds", type=float, default=2.0, help="the node's --stable-seconds")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the shipped one)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pneumonia-monai-benchmark-node"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one study's SR")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.studies < 1 or not args.stable_seconds > 0:
        parser.error("--studies must be >= 1 and --stable-seconds > 0")
    bundle = args.bundle or default_bundle()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    films = sample_films()
    orthanc = OrthancServer(work / "orthanc", modalities={"node": (NODE_AET, "127.0.0.1", 104)})
    try:
        orthanc.start()
    except (NamespaceUnavailableError, OrthancError) as exc:
        print(f"cannot start Orthanc: {exc}", file=sys.stderr)
        return 2
    latencies: list[float] = []
    try:
        try:
            node = start_node(work, bundle, orthanc, args.stable_seconds)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        try:
            port = node_port(work)
            for index in range(args.studies):
                study_uid, datasets = new_study(films)
                last = send_study(port, datasets)
                if not wait_for(lambda uid=study_uid: sr_stored(orthanc, uid), args.timeout, 0.05):
                    print(f"study {index + 1}: no SR in Orthanc after {args.timeout} s", file=sys.stderr)
                    return 1
                latencies.append(time.monotonic() - last)
                print(f"study {index + 1}: {len(datasets)} films, latency {latencies[-1]:.2f} s")
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(120)
            except subprocess.TimeoutExpired:
                node.kill()
    finally:
        orthanc.stop()
    bound = args.stable_seconds + BUDGET_SECONDS
    print(
        f"study latency (last instance received -> SR stored in Orthanc), {len(latencies)} studies of "
        f"4 films: "
        f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s; "
        f"bound stable-seconds + {BUDGET_SECONDS:.0f} s = {bound:.2f} s: "
        f"{'met' if max(latencies) <= bound else 'NOT met'}"
    )
    return 0 if max(latencies) <= bound else 1


if __name__ == "__main__":
    sys.exit(main())
