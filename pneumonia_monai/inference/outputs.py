"""The output writers of a batch inference run: heatmaps, masks, Secondary Captures, SEGs, SRs, FHIR.

:class:`RunOutputs` writes, into the run's output folder, what a run makes besides its results files
(:mod:`pneumonia_monai.inference.manifest`):

- ``OUT/heatmaps/<name>.png``: the Grad-CAM overlaid on the whole film, for people
  (:func:`heatmap_png_name`), and for a DICOM film ``OUT/heatmaps/<SOPInstanceUID>.dcm``, the same
  picture as a DICOM Secondary Capture (:func:`pneumonia_monai.dicom.secondary_capture.build_heatmap_sc`);
- ``OUT/masks/``: the lung fields and the Grad-CAM as NIfTI on the film's own grid, and for a DICOM film
  the lung fields as a DICOM Segmentation (:mod:`pneumonia_monai.inference.masks`);
- ``OUT/sr/<StudyInstanceUID>.dcm``: one DICOM SR per study with ``ok`` DICOM images
  (:func:`pneumonia_monai.dicom.sr.build_pneumonia_sr`), and ``OUT/fhir/<StudyInstanceUID>.json``, one
  FHIR Bundle per such study (:mod:`pneumonia_monai.fhir`). A study whose results did not change since
  its SR or Bundle was written keeps it as it is (``OUT/.state/sr.json`` and ``fhir.json`` record the
  digest of the results each was built from, :func:`~pneumonia_monai.inference.journal.study_digest`).

Every file is written atomically. A file that cannot be written is an output failure of the run
(:attr:`~pneumonia_monai.inference.runner.RunSummary.output_failures`), logged, and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread

from pneumonia_monai.decision import PNEUMONIA
from pneumonia_monai.dicom import sr
from pneumonia_monai.dicom.intended_use import UNKNOWN
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.secondary_capture import build_heatmap_sc
from pneumonia_monai.dicom.seg import build_lung_seg
from pneumonia_monai.dicom.sr import ImageFinding
from pneumonia_monai.dicom.writer import write_dataset_atomic
from pneumonia_monai.fhir import build_study_bundle, write_bundle_atomic
from pneumonia_monai.inference.bundle import InferenceBundle
from pneumonia_monai.inference.film_step import FilmItem, FilmJob
from pneumonia_monai.inference.journal import StateEntry, read_state_record, study_digest
from pneumonia_monai.inference.manifest import (
    OK,
    STATE_DIR,
    ResultRow,
    StudyRow,
    write_json_atomic,
)
from pneumonia_monai.inference.masks import (
    MASK_DIR,
    SEG_SUFFIX,
    cam_on_film,
    load_film_and_grid,
    mask_names,
    write_nifti_atomic,
)
from pneumonia_monai.transforms.io import load_film
from pneumonia_monai.transforms.lung_crop import lung_field_mask
from pneumonia_monai.visualize.gradcam import gradcam
from pneumonia_monai.visualize.overlay import film_heatmap, reduce_for_display, save_png_atomic

if TYPE_CHECKING:  # the summary the writers add their files to; the runner imports this module
    from pneumonia_monai.inference.runner import RunSummary

logger = logging.getLogger(__name__)

#: Sub-folders of the output folder.
SR_DIR = "sr"
HEATMAP_DIR = "heatmaps"
#: Record of the SRs written, by study (to keep an unchanged study's SR as it is).
SR_STATE_NAME = "sr.json"
#: Folder of the FHIR Bundles (``fhir=True``), and the record of those written, by study.
FHIR_DIR = "fhir"
FHIR_STATE_NAME = "fhir.json"


@dataclass
class StudyOutcome:
    """What a run did for one study (Study Instance UID (0020,000D)): its rows and the files written for it.

    Attributes:
        rows: the rows of the study's files, in input order.
        sr_path: its SR, if written (or kept from an earlier run).
        sc_paths: the heatmap Secondary Captures of its ``ok`` images (with ``heatmaps``).
        seg_paths: the lung-field Segmentations of its ``ok`` images (with ``masks``).
        fhir_path: its FHIR Bundle, if written (with ``fhir``).
    """

    rows: list[ResultRow] = field(default_factory=list)
    sr_path: Path | None = None
    sc_paths: list[Path] = field(default_factory=list)
    seg_paths: list[Path] = field(default_factory=list)
    fhir_path: Path | None = None

    def has_status(self, status: str) -> bool:
        """Whether a file of the study has ``status`` (``ok``, ``skipped``, ``error``)."""
        return any(row.status == status for row in self.rows)


def heatmap_png_name(job: FilmJob) -> str:
    """The name of a film's heatmap PNG in ``OUT/heatmaps/`` (:func:`~.film_step.with_output_stems`)."""
    return job.output_name + ".png"


class RunOutputs:
    """The output writers of one run into ``out``; the files written are added to ``summary``.

    Args:
        bundle: the loaded bundle (its network for Grad-CAM, its name, version and operating point).
        rules: the selection rules (the SR and FHIR Bundle state their intended use).
        out: the output folder.
        summary: the run's summary: its ``*_paths`` lists and ``output_failures``.
        fingerprint: the run's fingerprint (:func:`~pneumonia_monai.inference.journal.run_fingerprint`).
        heatmaps: heatmaps are asked for (reused ones are listed, an entry without them is redone).
        masks: masks are asked for (likewise).
    """

    def __init__(
        self,
        bundle: InferenceBundle,
        rules: SelectionRules,
        out: Path,
        summary: RunSummary,
        *,
        fingerprint: str,
        heatmaps: bool = False,
        masks: bool = False,
    ) -> None:
        self.bundle = bundle
        self.rules = rules
        self.out = out
        self.summary = summary
        self.fingerprint = fingerprint
        self.heatmaps = bool(heatmaps)
        self.masks = bool(masks)
        self.state_dir = out / STATE_DIR
        #: Study Instance UID -> digest of the results its SR on disk was built from.
        self.sr_state: dict[str, Any] = {}
        #: Study Instance UID -> digest of the results its FHIR Bundle on disk was built from.
        self.fhir_state: dict[str, Any] = {}
        #: Study Instance UID -> {job index: (job, row)} of its ``ok`` DICOM images done so far.
        self._ok_by_study: dict[str, dict[int, tuple[FilmJob, ResultRow]]] = {}

    def load_state(self, force: bool) -> None:
        """Read the records of the SRs and FHIR Bundles an earlier run wrote (none with ``force``)."""
        self.sr_state = {} if force else read_state_record(self.state_dir / SR_STATE_NAME)
        self.fhir_state = {} if force else read_state_record(self.state_dir / FHIR_STATE_NAME)

    def add_result(self, job: FilmJob, row: ResultRow) -> None:
        """Note a finished file: an ``ok`` row of a study goes into that study's SR and FHIR Bundle."""
        if row.status == OK and row.study_uid:
            self._ok_by_study.setdefault(row.study_uid, {})[job.index] = (job, row)

    def reusable(self, job: FilmJob, entry: StateEntry) -> bool:
        """Whether the mask files of a reusable journal entry are all there (always, without ``masks``)."""
        if not self.masks or entry.row.status != OK:
            return True
        heat = self.out / MASK_DIR / mask_names(job.output_name)[1]
        return entry.masks and heat.is_file()  # all written, and still there

    def png_path(self, job: FilmJob) -> Path:
        """Where a film's heatmap PNG goes."""
        return self.out / HEATMAP_DIR / heatmap_png_name(job)

    def sc_path(self, sop_uid: str) -> Path:
        """Where the heatmap Secondary Capture of the DICOM film ``sop_uid`` goes."""
        return self.out / HEATMAP_DIR / f"{sop_uid}.dcm"

    def seg_path(self, sop_uid: str) -> Path:
        """Where the lung-field Segmentation of the DICOM film ``sop_uid`` goes."""
        return self.out / MASK_DIR / f"{sop_uid}{SEG_SUFFIX}"

    def sr_path(self, study_uid: str) -> Path:
        """Where the SR of a study goes."""
        return self.out / SR_DIR / f"{study_uid}.dcm"

    def fhir_path(self, study_uid: str) -> Path:
        """Where the FHIR Bundle of a study goes."""
        return self.out / FHIR_DIR / f"{study_uid}.json"

    def _failed(self, job: FilmJob, what: str, exc: Exception) -> bool:
        """Count and log an output of ``job`` that could not be written; return ``False`` (not all done)."""
        self.summary.output_failures += 1
        logger.error("%s: %s not written: %s: %s", job.rel, what, type(exc).__name__, exc)
        return False

    def write_heatmap(self, item: FilmItem, probs: Any, row: ResultRow) -> bool:
        """Write the PNG overlay (and the Secondary Capture for DICOM); return whether all was written.

        The Grad-CAM of the network input is laid over the whole film at its own geometry (the film
        is loaded again, for display, only here).
        """
        folder = self.out / HEATMAP_DIR
        folder.mkdir(exist_ok=True)
        job = item.job
        try:
            cam = self.cam(item, probs)
            film, _ = load_film(job.path)
            shape = film.shape
            film = reduce_for_display(film)  # the full-size film is garbage now: its budget share is back
            caption = (
                f"p(pneumonia) {row.prob_pneumonia:.2f}: {row.prediction} at threshold "
                f"{self.bundle.threshold:.2f} ({self.bundle.model_name} {self.bundle.model_version})"
            )
            rgb = film_heatmap(film, cam, item.box, caption=caption, film_shape=shape)
            del film
            png = self.png_path(job)
            save_png_atomic(rgb, png)
            self.summary.png_paths.append(png)
            if item.sop_uid:
                self.summary.sc_paths.append(self.write_sc(job.path, rgb, self.sc_path(item.sop_uid)))
        except Exception as exc:  # noqa: BLE001 - any failure to build an output is that file's failure
            return self._failed(job, "heatmap", exc)
        return True

    def cam(self, item: FilmItem, probs: Any) -> Any:
        """The Grad-CAM of an item's network input (computed once, for the heatmaps and the masks)."""
        if item.cam is None:
            item.cam = gradcam(
                self.bundle.network,
                item.image.cpu(),  # type: ignore[union-attr]
                target_layer=self.bundle.heatmap_layer,
                class_index=self.bundle.explained_class(probs),
            )
        return item.cam

    def write_masks(self, item: FilmItem, probs: Any) -> bool:
        """Write the heatmap and lung-field NIfTI files (and the SEG of a DICOM film); return whether done.

        The film is loaded again, with its grid, only here (:func:`~.masks.load_film_and_grid`).
        """
        job, folder = item.job, self.out / MASK_DIR
        what = f"{self.bundle.model_name} {self.bundle.model_version}"
        lungs_name, heat_name = mask_names(job.output_name)
        try:
            cam = self.cam(item, probs)
            film, _, grid = load_film_and_grid(job.path)
            lungs = lung_field_mask(film)
            heat = cam_on_film(cam, item.box, film.shape)
            del film
            description = f"Grad-CAM of {what}"[:80]
            self.summary.mask_paths.append(
                write_nifti_atomic(heat, grid, folder / heat_name, label=False, description=description)
            )
            if lungs is None:
                logger.info("%s: no plausible lung fields found: no lung mask or SEG written", job.rel)
                return True
            description = f"lung fields of the crop of {what}"[:80]
            self.summary.mask_paths.append(
                write_nifti_atomic(lungs, grid, folder / lungs_name, label=True, description=description)
            )
            if item.sop_uid:
                self.summary.seg_paths.append(self.write_seg(job.path, lungs, self.seg_path(item.sop_uid)))
        except Exception as exc:  # noqa: BLE001 - any failure to build an output is that file's failure
            return self._failed(job, "masks", exc)
        return True

    def write_seg(self, source_path: Path, lungs: Any, path: Path) -> Path:
        """Write the lung-field DICOM Segmentation of the film at ``source_path`` to ``path``; return it."""
        return self.write_derived(source_path, build_lung_seg, lungs, path)

    def write_derived(self, source_path: Path, build: Any, pixels: Any, path: Path, **options: Any) -> Path:
        """Write (atomically) ``build(header, pixels, ...)`` of the film at ``source_path``; return ``path``.

        ``build`` is a builder of a derived DICOM object (Secondary Capture, Segmentation) from the source
        film's header; it gets the bundle's name and version as the algorithm's, and ``options``.
        """
        header = dcmread(source_path, stop_before_pixels=True, force=True)
        derived = build(
            header,
            pixels,
            algorithm_name=self.bundle.model_name,
            algorithm_version=self.bundle.model_version,
            **options,
        )
        write_dataset_atomic(derived, path)
        return path

    def reused_masks(self, jobs: Sequence[FilmJob], rows: Sequence[ResultRow | None]) -> None:
        """List the mask files of rows reused from an earlier run (they were written then)."""
        fresh = set(self.summary.mask_paths)
        folder = self.out / MASK_DIR
        for job, row in zip(jobs, rows, strict=True):
            if row is None or row.status != OK:
                continue
            paths = [folder / name for name in mask_names(job.output_name)]
            if any(path in fresh for path in paths):
                continue
            self.summary.mask_paths += [path for path in paths if path.is_file()]
            seg_path = self.seg_path(row.sop_uid)
            if row.sop_uid and seg_path.is_file():
                self.summary.seg_paths.append(seg_path)

    def write_sc(self, source_path: Path, rgb: Any, path: Path) -> Path:
        """Write the heatmap ``rgb`` of the film at ``source_path`` as a Secondary Capture at ``path``."""
        return self.write_derived(
            source_path, build_heatmap_sc, rgb, path, operating_point=self.bundle.operating_point
        )

    def reused_heatmaps(self, jobs: Sequence[FilmJob], rows: Sequence[ResultRow | None]) -> None:
        """List the heatmap files of rows reused from an earlier run (they were written then)."""
        fresh = set(self.summary.png_paths)
        for job, row in zip(jobs, rows, strict=True):
            if row is None or row.status != OK:
                continue
            png = self.out / HEATMAP_DIR / heatmap_png_name(job)
            if png not in fresh and png.is_file():
                self.summary.png_paths.append(png)
                sc_path = self.sc_path(row.sop_uid)
                if row.sop_uid and sc_path.is_file():
                    self.summary.sc_paths.append(sc_path)

    def study_outcomes(self, rows: Sequence[ResultRow]) -> dict[str, StudyOutcome]:
        """Each study's rows and the files this run wrote (or kept) for it, by Study Instance UID.

        Rows without a Study Instance UID (JPEG/PNG films, files whose header could not be read) belong to
        no study.
        """
        written = {
            *self.summary.sr_paths,
            *self.summary.sc_paths,
            *self.summary.seg_paths,
            *self.summary.fhir_paths,
        }
        outcomes: dict[str, StudyOutcome] = {}
        for row in rows:
            if not row.study_uid:
                continue
            outcome = outcomes.setdefault(row.study_uid, StudyOutcome())
            outcome.rows.append(row)
            if row.status != OK or not row.sop_uid:
                continue
            for path, found in (
                (self.sc_path(row.sop_uid), outcome.sc_paths),
                (self.seg_path(row.sop_uid), outcome.seg_paths),
            ):
                if path in written:
                    found.append(path)
        for study_uid, outcome in outcomes.items():
            sr, bundle = self.sr_path(study_uid), self.fhir_path(study_uid)
            outcome.sr_path = sr if sr in written else None
            outcome.fhir_path = bundle if bundle in written else None
        return outcomes

    def write_srs(self, studies: list[StudyRow]) -> list[StudyRow]:
        """Write (or keep) the SR of each study with ``ok`` DICOM images; return the studies with SR paths."""
        updated = []
        for study in studies:
            images = self.study_images(study.study_uid)
            path = self.write_sr(study.study_uid, images) if images else None
            updated.append(
                study if path is None else replace(study, sr_path=path.relative_to(self.out).as_posix())
            )
            if path is not None:
                self.summary.sr_paths.append(path)
        write_json_atomic(self.state_dir / SR_STATE_NAME, self.sr_state)
        return updated

    def study_images(self, study_uid: str) -> list[tuple[FilmJob, ResultRow]]:
        """The ``ok`` DICOM images of a study done so far, in input order."""
        done = self._ok_by_study.get(study_uid, {})
        return [done[index] for index in sorted(done)]

    def write_sr(
        self, study_uid: str, images: list[tuple[FilmJob, ResultRow]], *, final: bool = True
    ) -> Path | None:
        """Write the SR of one study unless the same results already have one; return its path.

        Returns ``None`` when it cannot be written: an output failure of the run when ``final``; during
        the run (``final=False``) only a warning, since the end of the run tries again.
        """
        path = self.sr_path(study_uid)
        digest = study_digest(self.fingerprint, [row for _, row in images])
        if self.sr_state.get(study_uid) == digest and path.is_file():
            logger.debug("study %s unchanged: its SR is kept", study_uid)
            return path
        try:
            headers = [dcmread(job.path, stop_before_pixels=True, force=True) for job, _ in images]
            findings = [
                _finding(row, str(header.SOPClassUID))
                for (_, row), header in zip(images, headers, strict=True)
            ]
            report = sr.build_pneumonia_sr(  # looked up at call time (tests replace it)
                headers,
                findings,
                **self._report_options(),
            )
            path.parent.mkdir(exist_ok=True)
            write_dataset_atomic(report, path)
        except Exception as exc:  # noqa: BLE001 - any failure to build an SR is its study's output failure
            self.sr_state.pop(study_uid, None)
            if not final:
                logger.warning(
                    "study %s: SR not written yet (%s: %s); retried at the end",
                    study_uid,
                    type(exc).__name__,
                    exc,
                )
                return None
            self.summary.output_failures += 1
            logger.error("study %s: SR not written: %s: %s", study_uid, type(exc).__name__, exc)
            return None
        self.sr_state[study_uid] = digest
        return path

    def _report_options(self) -> dict[str, Any]:
        """What a study's SR and FHIR Bundle state about the algorithm and its operating point."""
        return {
            "algorithm_name": self.bundle.model_name,
            "algorithm_version": self.bundle.model_version,
            "threshold": self.bundle.threshold,
            "operating_point": self.bundle.operating_point,
            "intended_use": self.rules.intended_age.describe(),
        }

    def write_fhir_bundles(self, studies: list[StudyRow]) -> None:
        """Write (or keep) the FHIR Bundle of each study with ``ok`` DICOM images (module ``fhir``).

        Like the SRs: a study whose results did not change since its Bundle was written keeps it as it
        is; one that cannot be built is an output failure of the run, logged, and the others go on.
        """
        for study in studies:
            images = self.study_images(study.study_uid)
            if not images:
                continue
            path = self.fhir_path(study.study_uid)
            digest = study_digest(self.fingerprint, [row for _, row in images])
            if self.fhir_state.get(study.study_uid) == digest and path.is_file():
                self.summary.fhir_paths.append(path)
                continue
            try:
                findings = [
                    _finding(
                        row,
                        str(
                            dcmread(
                                job.path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"]
                            ).SOPClassUID
                        ),
                    )
                    for job, row in images
                ]
                bundle = build_study_bundle(
                    study.study_uid,
                    findings,
                    **self._report_options(),
                )
                write_bundle_atomic(path, bundle)
            except Exception as exc:  # noqa: BLE001 - any failure to build a Bundle is its study's failure
                self.fhir_state.pop(study.study_uid, None)
                self.summary.output_failures += 1
                logger.error(
                    "study %s: FHIR Bundle not written: %s: %s", study.study_uid, type(exc).__name__, exc
                )
                continue
            self.fhir_state[study.study_uid] = digest
            self.summary.fhir_paths.append(path)
        write_json_atomic(self.state_dir / FHIR_STATE_NAME, self.fhir_state)


def _finding(row: ResultRow, sop_class_uid: str) -> ImageFinding:
    """The finding of an ``ok`` DICOM image, for its study's SR and FHIR Bundle."""
    return ImageFinding(
        sop_instance_uid=row.sop_uid,
        sop_class_uid=sop_class_uid,
        prob_pneumonia=row.prob_pneumonia,  # type: ignore[arg-type]
        present=row.prediction == PNEUMONIA,
        prob_normal=row.prob_normal,
        prob_bacterial=row.prob_bacterial,
        prob_viral=row.prob_viral,
        intended_use=row.intended_use or UNKNOWN,
    )
