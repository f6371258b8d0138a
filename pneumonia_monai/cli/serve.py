r"""``pneumonia-monai serve``: a DICOM node that receives studies, runs the model, sends the results back.

Examples::

    pneumonia-monai serve --work-dir /var/lib/pneumonia --ae-title PNEUMONIA --port 11112 \
        --allow-ae PACS --dest-ae PACS@pacs.example.org:104
    pneumonia-monai serve --config node.yaml --dest-stow https://pacs.example.org/dicom-web

The node is a Storage SCP (C-ECHO, C-STORE of every storage SOP class, uncompressed and compressed).
Each received instance is written durably to ``WORK/inbox/<StudyInstanceUID>/`` before its C-STORE is
answered. Once no instance of a study arrived for ``--stable-seconds``, a worker runs the bundle on it
and sends the study's SR (plus heatmap Secondary Captures with ``--heatmaps``, and a lung-field DICOM
Segmentation per scored film with ``--masks``) to the destination,
retrying ``--send-attempts`` times with exponential backoff; the study then moves to ``WORK/done/``,
or to ``WORK/failed/`` with a ``reason.txt``. One result per study: instances arriving after their study
was processed are kept in ``WORK/late/`` and logged, not processed again. Retention: the images and
results of a processed study are deleted ``--keep-days`` (default 7) after it finished, 0 deleting them
as soon as the results were sent; ``--keep-failed-days`` (default 30) for failed studies. See
:mod:`pneumonia_monai.node.inbox` for the layout and the recovery rules.

``--site FILE`` calls films at a site's own operating point (``evaluate --choose-threshold``; an overlay
of another model version stops the start with exit status 2) and records it in every SR;
``--fhir-dir DIR`` also writes each study's FHIR R5 Bundle there (:mod:`pneumonia_monai.fhir`).

Options given on the command line win over those of ``--config`` (YAML or JSON, keys as in
:class:`pneumonia_monai.node.config.NodeConfig`, ``dest_ae``/``dest_stow`` for the destination).

``--port 0`` lets the operating system pick a free port; ``--port-file FILE`` reports the port listened
on: FILE is removed at start (a stale one is never this run's), written atomically (a line with the
number) once the port is bound, so whoever waits for it can connect at once, and removed again when the
node stops. This is how a supervisor or a test starts a node without guessing a free port.

SIGTERM or SIGINT: stop accepting associations, let the open ones end (``--association-grace``),
finish the study being processed (``--drain-timeout``), exit 0. Whatever is still in the inbox is
resumed at the next start. Exit status 2: bad configuration, an unusable bundle (it is loaded once
at start: no folder, a bad config, a missing or mismatched checkpoint) or work folder, the port cannot
be bound, or the port file cannot be written.

Hostile senders: a connection must deliver its A-ASSOCIATE-RQ within ``--request-timeout`` and only
then counts against ``--max-associations`` (idle or trickling sockets starve nobody; see
:mod:`pneumonia_monai.node.gate`); a study still receiving instances is processed
``--max-study-wait`` seconds after its first one arrived.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from pneumonia_monai.atomic import write_bytes_atomic
from pneumonia_monai.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_limit_args,
    add_verbosity_args,
    apply_limit_args,
    configure_logging,
    non_negative_float,
    positive_float,
    positive_int,
    returns_exit_status,
)
from pneumonia_monai.node.config import NodeConfig, config_from_mapping, read_config_file
from pneumonia_monai.node.processor import InferenceProcessor
from pneumonia_monai.node.service import DicomNode
from pneumonia_monai.site_overlay import SiteOverlayError, read_site_overlay

logger = logging.getLogger(__name__)

#: Command-line destinations of the configuration keys (argparse ``dest`` -> config key).
_CONFIG_ARGS: dict[str, str] = {
    "work_dir": "work_dir",
    "ae_title": "ae_title",
    "host": "host",
    "port": "port",
    "allow_ae": "allowed_calling_aes",
    "require_called_ae": "require_called_ae",
    "stable_seconds": "stable_seconds",
    "max_study_wait": "max_study_wait",
    "queue_size": "queue_size",
    "batch_studies": "max_batch_studies",
    "max_associations": "max_associations",
    "request_timeout": "request_timeout",
    "max_pending_connections": "max_pending_connections",
    "acse_timeout": "acse_timeout",
    "dimse_timeout": "dimse_timeout",
    "network_timeout": "network_timeout",
    "dest_ae": "dest_ae",
    "dest_stow": "dest_stow",
    "send_attempts": "send_attempts",
    "retry_backoff": "retry_backoff_seconds",
    "keep_days": "keep_days",
    "keep_failed_days": "keep_failed_days",
    "heatmaps": "heatmaps",
    "masks": "masks",
    "bundle": "bundle",
    "device": "device",
    "site": "site",
    "fhir_dir": "fhir_dir",
}


def build_parser() -> argparse.ArgumentParser:
    """Return the ``serve`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai serve",
        description="Run a DICOM Storage SCP that processes each received study once it is stable and sends "
        "its pneumonia SR to a DICOM or DICOMweb destination.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="node configuration, YAML or JSON")
    parser.add_argument(
        "--work-dir", type=Path, metavar="DIR", help="inbox/outbox/done/failed/late live here"
    )
    node = parser.add_argument_group("DICOM node")
    node.add_argument("--ae-title", metavar="AET", help="the node's AE title (default PNEUMONIA)")
    node.add_argument("--host", metavar="ADDR", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    node.add_argument(
        "--port",
        type=int,
        metavar="N",
        help="port to listen on (default 11112; 0: let the OS pick a free one, see --port-file)",
    )
    node.add_argument(
        "--allow-ae",
        action="append",
        metavar="AET",
        help="accept associations from this calling AE title only (repeat for several; default: any)",
    )
    node.add_argument(
        "--require-called-ae",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reject associations not addressed to --ae-title",
    )
    node.add_argument(
        "--max-associations", type=positive_int, metavar="N", help="open associations at once (default 10)"
    )
    node.add_argument(
        "--request-timeout",
        type=positive_float,
        metavar="S",
        help="a new connection must deliver its whole A-ASSOCIATE-RQ within S seconds, or is closed "
        "(default 5); until then it is not an association and does not count against --max-associations",
    )
    node.add_argument(
        "--max-pending-connections",
        type=positive_int,
        metavar="N",
        help="connections still waiting for their A-ASSOCIATE-RQ at once; one more closes the oldest "
        "(default 32)",
    )
    node.add_argument(
        "--acse-timeout", type=positive_float, metavar="S", help="ACSE timeout in seconds (default 10)"
    )
    node.add_argument(
        "--dimse-timeout", type=positive_float, metavar="S", help="DIMSE timeout in seconds (default 30)"
    )
    node.add_argument(
        "--network-timeout",
        type=positive_float,
        metavar="S",
        help="an association silent for S seconds is aborted (default 60)",
    )
    node.add_argument(
        "--port-file",
        type=Path,
        metavar="FILE",
        help="once listening, write the port to FILE (atomically, one line); removed when the node stops",
    )
    work = parser.add_argument_group("processing")
    work.add_argument(
        "--stable-seconds",
        type=positive_float,
        metavar="S",
        help="process a study once no instance arrived for S seconds (default 10)",
    )
    work.add_argument(
        "--max-study-wait",
        type=positive_float,
        metavar="S",
        help="process a study S seconds after its first instance arrived even if instances still come "
        "(default 600); later instances are kept in WORK/late/",
    )
    work.add_argument(
        "--queue-size",
        type=positive_int,
        metavar="N",
        help="stable studies waiting for the worker (default 16)",
    )
    work.add_argument(
        "--batch-studies",
        type=positive_int,
        metavar="N",
        help="give the model up to N ready studies at once (default 8); still one result per study",
    )
    work.add_argument(
        "--bundle", type=Path, metavar="DIR", help="MONAI bundle folder (default: the packaged one)"
    )
    work.add_argument(
        "--site",
        type=Path,
        metavar="FILE",
        help="site operating point ('evaluate --choose-threshold'): call films at its threshold, recorded "
        "in every SR; an overlay of another model version stops the start",
    )
    work.add_argument(
        "--fhir-dir",
        type=Path,
        metavar="DIR",
        help="also write each study's FHIR R5 Bundle into DIR (<StudyInstanceUID>.json, atomically)",
    )
    work.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:1 ...")
    work.add_argument(
        "--heatmaps",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also send Grad-CAM heatmaps as Secondary Capture images",
    )
    work.add_argument(
        "--masks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also send the lung fields of each scored film as a DICOM Segmentation, beside the SR",
    )
    dest = parser.add_argument_group("destination (one of)")
    exclusive = dest.add_mutually_exclusive_group()
    exclusive.add_argument("--dest-ae", metavar="AET@HOST:PORT", help="send results with C-STORE to this SCP")
    exclusive.add_argument(
        "--dest-stow", metavar="URL", help="send results with STOW-RS to this DICOMweb URL"
    )
    dest.add_argument(
        "--send-attempts",
        type=positive_int,
        metavar="N",
        help="tries per study before failing it (default 5)",
    )
    dest.add_argument(
        "--retry-backoff",
        type=positive_float,
        metavar="S",
        help="wait before the 2nd try, doubled after (default 2)",
    )
    keep = parser.add_argument_group("retention (the work folder holds patient images)")
    keep.add_argument(
        "--keep-days",
        type=non_negative_float,
        metavar="N",
        help="delete a processed study's images and results from WORK/done/ (and late arrivals from "
        "WORK/late/) N days after it finished (default 7; 0: as soon as its results were sent)",
    )
    keep.add_argument(
        "--keep-failed-days",
        type=non_negative_float,
        metavar="N",
        help="the same for WORK/failed/ and WORK/quarantine/ (default 30)",
    )
    stop = parser.add_argument_group("stopping")
    stop.add_argument(
        "--association-grace",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, seconds open associations may take to end before being aborted (default 10)",
    )
    stop.add_argument(
        "--drain-timeout",
        type=positive_float,
        default=300.0,
        metavar="S",
        help="on SIGTERM, seconds the study being processed may take to finish (default 300)",
    )
    add_limit_args(parser)
    add_verbosity_args(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Merge ``--config`` (if any) and the command-line options into a :class:`NodeConfig`.

    Raises:
        OSError: if the configuration file cannot be read.
        ValueError, TypeError: for an invalid or missing value.
    """
    values: dict[str, Any] = read_config_file(args.config) if args.config is not None else {}
    flags = {
        key: getattr(args, name) for name, key in _CONFIG_ARGS.items() if getattr(args, name) is not None
    }
    if "dest_ae" in flags or "dest_stow" in flags:
        values.pop("dest_ae", None)
        values.pop("dest_stow", None)
    values.update(flags)
    return config_from_mapping(values)


def _load_processor(config: NodeConfig) -> InferenceProcessor:
    """The node's processor with its bundle loaded: once per process, and an unusable one stops the start.

    Raises:
        ValueError: (:class:`~pneumonia_monai.inference.bundle.BundleError` included) naming what is wrong:
            no bundle folder, a bad config, no or a mismatched checkpoint, an unknown device.
    """
    processor = InferenceProcessor(
        bundle=config.bundle,
        device=config.device,
        heatmaps=config.heatmaps,
        site=None if config.site is None else read_site_overlay(config.site),
        fhir_dir=config.fhir_dir,
        masks=config.masks,
    )
    processor.load()
    return processor


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pneumonia-monai serve`` until SIGTERM or SIGINT; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    apply_limit_args(args)  # the C-STORE handler's inflate limit and the decoders' pixel budget
    for name in ("association_grace", "drain_timeout"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)!r}")
    try:
        config = config_from_args(args)
    except (OSError, ValueError, TypeError) as exc:
        logger.error("cannot start the node: %s", exc)
        return EXIT_USAGE
    try:
        processor = _load_processor(config)
    except SiteOverlayError as exc:
        logger.error("cannot start the node: %s", exc)
        return EXIT_USAGE
    except (OSError, ValueError, TypeError) as exc:
        logger.error("cannot start the node: unusable bundle: %s", exc)
        return EXIT_USAGE

    stop_requested = threading.Event()
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # No logging here: a handler runs between two bytecodes of the main thread, maybe inside logging.
        received.append(signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        node = DicomNode(config, processor=processor)
        try:
            _remove_port_file(args.port_file)
            node.start()
        except OSError as exc:
            logger.error("cannot start the node: %s", exc)
            return EXIT_USAGE
        try:
            if args.port_file is not None and not _write_port_file(args.port_file, node.port):
                return EXIT_USAGE
            while not stop_requested.wait(1.0):
                pass
            logger.info("received %s: stopping", signal.Signals(received[0]).name)
        finally:
            clean = node.stop(association_grace=args.association_grace, drain_timeout=args.drain_timeout)
            with suppress(OSError):  # best effort: the next start removes it anyway
                _remove_port_file(args.port_file)
        if not clean:
            logger.warning("the study being processed was left unfinished; it is resumed at the next start")
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _remove_port_file(path: Path | None) -> None:
    """Remove the port file of an earlier run, so that nobody reads its port as this run's.

    Raises:
        OSError: if it exists and cannot be removed (a folder, say).
    """
    if path is not None:
        path.unlink(missing_ok=True)


def _write_port_file(path: Path, port: int) -> bool:
    """Write ``port`` to ``path`` atomically (readers see no file, or the whole line); return success."""
    try:
        write_bytes_atomic(path, f"{port}\n".encode("ascii"))
    except OSError as exc:
        logger.error("cannot write the port file %s: %s", path, exc)
        return False
    logger.info("listening port %d written to %s", port, path)
    return True
