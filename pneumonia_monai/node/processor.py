"""What the node does with stable studies: the :class:`StudyProcessor` protocol and its default, the bundle.

A processor turns the folder of one study's instances into result files (DICOM Part 10) to send. The
node never calls it from a C-STORE handler: its worker thread does, for one study, or, when the
processor also has :meth:`BatchStudyProcessor.process_many`, for every study ready at that moment (a
burst after an archive's downtime, say), which shares the forward passes and the file reading.

:class:`InferenceProcessor` loads the bundle once per process (:meth:`InferenceProcessor.load`, which
``serve`` calls at start so that an unusable bundle stops it there) and runs every study on that
loaded model: loading costs about 9-10 s on a CPU, more than a study's processing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pneumonia_monai import checks
from pneumonia_monai.atomic import write_bytes_atomic
from pneumonia_monai.site_overlay import SiteOperatingPoint, apply_site

if TYPE_CHECKING:
    from pneumonia_monai.inference.bundle import InferenceBundle

logger = logging.getLogger(__name__)

#: Longest reason kept when a study fails (the reasons of its files, joined).
MAX_REASON_CHARS = 2000


class StudyProcessingError(RuntimeError):
    """A study could not be processed; the message says why (it becomes the study's failure reason)."""


@runtime_checkable
class StudyProcessor(Protocol):
    """Turn one study into result files."""

    def process(self, study_dir: Path, out_dir: Path) -> list[Path]:
        """Process the instances in ``study_dir`` (one study), writing results under ``out_dir``.

        Args:
            study_dir: the study's instances, ``<SOPInstanceUID>.dcm``; not to be modified. Its name is
                the Study Instance UID.
            out_dir: an empty folder for the results and any by-product.

        Returns:
            The DICOM files to send (an empty list when the study has nothing to report on).

        Raises:
            Exception: any error fails the study (it goes to ``failed/`` with the message as reason).
        """
        ...


@runtime_checkable
class BatchStudyProcessor(StudyProcessor, Protocol):
    """A processor that can also take several studies at once."""

    def process_many(self, study_dirs: Sequence[Path], out_dir: Path) -> dict[Path, list[Path] | Exception]:
        """Process several studies, writing every result under ``out_dir``.

        Returns:
            For each of ``study_dirs``: its result files (under ``out_dir``), or the exception that
            fails it alone.

        Raises:
            Exception: an error that fails every study of the batch.
        """
        ...


class InferenceProcessor:
    """The default processor: :func:`pneumonia_monai.inference.runner.run_inference` on the studies.

    A study's results are its SR (``OUT/sr/<StudyInstanceUID>.dcm``), with ``heatmaps`` the heatmap
    Secondary Captures of its images, and with ``masks`` the lung-field Segmentations of its scored
    films (``OUT/masks/<SOPInstanceUID>.seg.dcm``). A study without SR fails (:class:`StudyProcessingError`)
    if one of its images was scored (its report could not be built: an output failure) or one of its
    files ended in ``error`` (quoting the files' reasons); when all of them were ``skipped`` (no
    frontal chest film) it has nothing to report and the reasons are logged. Such a failure is the
    study's alone: the other studies of the batch get their results.

    The bundle is loaded on first use (or by :meth:`load`) and kept: one load per processor, however
    many studies and batches follow.

    Args:
        bundle: the MONAI bundle folder; ``None`` lets the runner find its default.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        heatmaps: also return the Grad-CAM Secondary Captures.
        batch_size: images per forward pass.
        masks: also return the lung-field DICOM Segmentation of each scored film
            (:mod:`pneumonia_monai.dicom.seg`), beside the SR.
        site: a site operating point (:func:`pneumonia_monai.site_overlay.read_site_overlay`), applied
            to the bundle when it is loaded (an overlay of another model version fails the load).
        fhir_dir: also write each study's FHIR Bundle there (``<StudyInstanceUID>.json``, atomically);
            a study whose Bundle cannot be written fails.
    """

    def __init__(
        self,
        *,
        bundle: str | Path | None = None,
        device: str = "auto",
        heatmaps: bool = False,
        batch_size: int = 8,
        site: SiteOperatingPoint | None = None,
        fhir_dir: str | Path | None = None,
        masks: bool = False,
    ) -> None:
        if bundle is not None and not isinstance(bundle, str | Path):
            raise TypeError(f"bundle must be a path or None, got {type(bundle).__name__}")
        if not isinstance(device, str) or not device:
            raise ValueError(f"device must be a non-empty string, got {device!r}")
        checks.positive_int("batch_size", batch_size)
        self.bundle = None if bundle is None else Path(bundle)
        self.device = device
        self.heatmaps = bool(heatmaps)
        self.masks = bool(masks)
        self.batch_size = batch_size
        if site is not None and not isinstance(site, SiteOperatingPoint):
            raise TypeError(f"site must be a SiteOperatingPoint or None, got {type(site).__name__}")
        if fhir_dir is not None and not isinstance(fhir_dir, str | Path):
            raise TypeError(f"fhir_dir must be a path or None, got {type(fhir_dir).__name__}")
        self.site = site
        self.fhir_dir = None if fhir_dir is None else Path(fhir_dir)
        self._loaded: InferenceBundle | None = None
        self._load_lock = threading.Lock()

    def load(self) -> InferenceBundle:
        """Load the bundle on the first call; return the same loaded bundle on every later one.

        Raises:
            BundleError: if the bundle is unusable (a ValueError naming the file, key or tensor).
            ValueError: if the device is unknown or unavailable.
            SiteOverlayError: if the site overlay was chosen for another model version.
        """
        with self._load_lock:
            if self._loaded is None:
                # Imported on first use: torch and MONAI take seconds to import, and the node must
                # answer C-ECHO and C-STORE (and report a bad configuration) without waiting for them.
                from pneumonia_monai.inference.bundle import load_bundle

                self._loaded = apply_site(load_bundle(self.bundle, device=self.device), self.site)
                logger.info(
                    "bundle %s %s loaded (%s)",
                    self._loaded.model_name,
                    self._loaded.model_version,
                    self._loaded.device,
                )
            return self._loaded

    def process(self, study_dir: Path, out_dir: Path) -> list[Path]:
        """Run the bundle on one study; see :class:`StudyProcessor`."""
        outcome = self.process_many([study_dir], out_dir)[study_dir]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def process_many(self, study_dirs: Sequence[Path], out_dir: Path) -> dict[Path, list[Path] | Exception]:
        """Run the bundle once on several studies; see :class:`BatchStudyProcessor`."""
        from pneumonia_monai.inference.manifest import ERROR, OK
        from pneumonia_monai.inference.runner import StudyOutcome, run_inference

        dirs = [Path(study_dir) for study_dir in study_dirs]
        summary = run_inference(
            dirs,
            out_dir,
            bundle=self.load(),
            batch_size=self.batch_size,
            workers=0,
            heatmaps=self.heatmaps,
            write_sr=True,
            force=True,
            progress=False,
            fhir=self.fhir_dir is not None,
            masks=self.masks,
        )
        outcomes: dict[Path, list[Path] | Exception] = {}
        n_srs = 0
        for study_dir in dirs:
            uid = study_dir.name  # the inbox names a study's folder by its Study Instance UID
            study = summary.studies.get(uid, StudyOutcome())
            if study.sr_path is not None:
                n_srs += 1
                problem = self._deliver_fhir(uid, study.fhir_path)
                extras = [
                    *(study.sc_paths if self.heatmaps else ()),
                    *(study.seg_paths if self.masks else ()),
                ]
                outcomes[study_dir] = problem or [study.sr_path, *sorted(extras)]
                continue
            reasons = "; ".join(f"{row.path}: {row.status}: {row.reason}" for row in study.rows)
            if study.has_status(OK):
                # Scored, but its SR could not be built: an output failure of this study alone.
                outcomes[study_dir] = StudyProcessingError(
                    "no SR: the study was scored but its report could not be built (see the log)"
                )
            elif study.has_status(ERROR) or not study.rows:
                outcomes[study_dir] = StudyProcessingError(
                    f"no SR: {reasons or 'no file of the study was read'}"[:MAX_REASON_CHARS]
                )
            else:
                logger.warning("study %s: nothing to report: %s", uid, reasons[:MAX_REASON_CHARS])
                outcomes[study_dir] = []
        logger.info("%d study(ies) processed: %d SR(s), files %s", len(dirs), n_srs, dict(summary.counts))
        return outcomes

    def _deliver_fhir(self, study_uid: str, source: Path | None) -> StudyProcessingError | None:
        """Copy the study's FHIR Bundle into ``fhir_dir`` (atomically); the failure, if it could not be."""
        if self.fhir_dir is None:
            return None
        if source is None:  # the run could not build it (logged there)
            return StudyProcessingError("no FHIR Bundle: it could not be built (see the log)")
        try:
            write_bytes_atomic(self.fhir_dir / source.name, source.read_bytes(), fsync=True)
        except OSError as exc:
            logger.error("study %s: FHIR Bundle not delivered to %s: %s", study_uid, self.fhir_dir, exc)
            return StudyProcessingError(f"FHIR Bundle not written to {self.fhir_dir}: {exc}")
        return None
