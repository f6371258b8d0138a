"""Streaming batch inference over files and folders of DICOM and JPEG/PNG chest films.

:func:`run_inference` is the engine of ``pneumonia-monai infer`` and of the DICOM node (called once per
received study). Its pipeline, for every file found under the inputs, in a stable order:

1. **triage** (header only): junk files (``__MACOSX``, ``._*``, ``.DS_Store``) are skipped; JPEG/PNG files
   (by suffix, and not DICOM by header) are taken as frontal chest films; everything else goes through the
   DICOM selection rules (:func:`pneumonia_monai.triage.decide_file`);
2. **decoding and preprocessing** with the bundle's own ``preprocessing``, in a pool of ``workers`` threads
   (numpy, scipy, torch and the decoders tried first, imagecodecs for JPEG 2000 / JPEG-LS and
   pylibjpeg-rle, release the GIL for most of this work; see
   :data:`pneumonia_monai.dicom.codecs.PREFERRED_PLUGINS`);
3. **batched inference** on the device (``torch.inference_mode``, mixed precision on CUDA) through the
   bundle's ``postprocessing``; optional Grad-CAM heatmaps (PNG for people, DICOM Secondary Capture for
   DICOM inputs);
4. the file's row is appended to the resume journal as soon as it is done.

This module holds the scheduling (the stream of files, the window of pending work, the batches); the
per-film step is :mod:`~pneumonia_monai.inference.film_step` (shared with the Ray engine), the resume
journal :mod:`~pneumonia_monai.inference.journal`, the output writers (heatmaps, masks, Secondary
Captures, SEGs, SRs, FHIR Bundles) :mod:`~pneumonia_monai.inference.outputs`, and the results files
:mod:`~pneumonia_monai.inference.manifest`.

One DICOM SR is written per study with at least one ``ok`` DICOM image
(:func:`pneumonia_monai.dicom.sr.build_pneumonia_sr`): during the run, for a study as soon as a batch
passes without adding to it (in an output thread, while the threads decode and the network runs), and
at the end for the rest and for any study whose results changed since. At the end ``results.csv``,
``results.json`` and ``studies.csv`` are rebuilt from the rows of every file found (see
:mod:`pneumonia_monai.inference.manifest`).

Memory is bounded whatever the number of files: at most :func:`in_flight_limit` preprocessed images exist
at any time (a bounded window of submitted work plus one batch); rows hold no pixels.

Resumption: a run that is interrupted (killed, even) and started again reuses the rows of the journal for
files whose path, size and modification time are unchanged and whose run fingerprint (weights and
settings, see :attr:`~pneumonia_monai.inference.bundle.InferenceBundle.fingerprint`) matches; ``error`` rows
are retried (a decoder installed since, say), ``ok`` and ``skipped`` rows are not. ``force=True`` redoes every
file. An SR whose study results did not change is kept as it is (same SOP Instance UID).

Concurrency: a run holds an exclusive :func:`fcntl.flock` on ``OUT/.lock`` from start to end. A second run
into the same folder does not wait: it fails at once with :class:`OutputBusyError` (the command line exits
with status 2), so that a scheduler or a DICOM node never hangs behind a long run.

Inputs are only ever read. Outputs are written to a temporary file and moved into place (``os.replace``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pneumonia_monai import checks
from pneumonia_monai.atomic import remove_stale_temporaries
from pneumonia_monai.dicom import limits
from pneumonia_monai.dicom.duplicates import FirstOfSop, duplicate_reason
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.walk import iter_input_files
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.inference.film_step import FilmContext, FilmItem, FilmJob, with_output_stems
from pneumonia_monai.inference.journal import (
    JOURNAL_NAME,
    StateEntry,
    StateJournal,
    file_key,
    reusable,
    run_fingerprint,
)
from pneumonia_monai.inference.manifest import (
    ERROR,
    OK,
    RESULTS_CSV,
    RESULTS_JSON,
    RESULTS_PARQUET,
    SKIPPED,
    STATE_DIR,
    STATUSES,
    STUDIES_CSV,
    ResultRow,
    aggregate_studies,
    write_results,
    write_results_parquet,
    write_studies,
)
from pneumonia_monai.inference.masks import MASK_DIR
from pneumonia_monai.inference.outputs import (
    FHIR_DIR,
    HEATMAP_DIR,
    SR_DIR,
    RunOutputs,
    StudyOutcome,
)
from pneumonia_monai.site_overlay import SiteOperatingPoint, apply_site

logger = logging.getLogger(__name__)

#: Lock file of an output folder.
LOCK_NAME = ".lock"
#: Without a terminal, a progress line is logged every this many files ...
PROGRESS_EVERY = 100
#: ... or after this many seconds, whichever comes first.
PROGRESS_SECONDS = 10.0
#: What a run writes at the top of its output folder (besides ``.<name>.*.tmp`` temporary files).
_OUTPUT_NAMES = frozenset(
    {LOCK_NAME, STATE_DIR, SR_DIR, HEATMAP_DIR, FHIR_DIR, MASK_DIR, RESULTS_CSV, RESULTS_JSON, STUDIES_CSV}
    | {RESULTS_PARQUET}
)
#: Where entries of a manifest fetched from a URI are kept (:mod:`pneumonia_monai.inference.sources`).
FETCHED = Path(STATE_DIR) / "fetched"
#: The engines of :func:`run_inference`.
ENGINES: tuple[str, ...] = ("local", "ray")


class OutputBusyError(RuntimeError):
    """Another run holds the output folder's lock."""


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        counts: number of files per status (``ok``, ``skipped``, ``error``; all present).
        images_per_second: images inferred by this run per second of the run, model loading excluded.
        results_csv: ``OUT/results.csv``.
        results_json: ``OUT/results.json``.
        studies_csv: ``OUT/studies.csv``.
        sr_paths: the SR of every study with at least one ``ok`` DICOM image (unless SRs were turned off).
        sc_paths: the heatmap Secondary Captures of the ``ok`` DICOM images (with ``heatmaps``).
        fhir_paths: the FHIR Bundle of every study with at least one ``ok`` DICOM image (with ``fhir``).
        png_paths: the heatmap PNGs of the ``ok`` images (with ``heatmaps``).
        mask_paths: the lung-field and heatmap NIfTI files of the ``ok`` images (with ``masks``).
        seg_paths: the lung-field DICOM Segmentations of the ``ok`` DICOM images (with ``masks``).
        exit_code: 0 when every file is ``ok`` or ``skipped`` and every output was written, else 1.
        n_inferred: images that went through the network in this run.
        n_reused: files whose row was reused from an earlier run.
        output_failures: SRs, heatmaps or Secondary Captures that could not be written.
        peak_in_flight: the most preprocessed-but-unfinished items held at once.
        in_flight_limit: the bound ``peak_in_flight`` never exceeds (:func:`in_flight_limit`).
        elapsed_s: seconds of the run, model loading excluded.
        studies: each study's outcome (its rows, SR, Secondary Captures, SEGs and FHIR Bundle), by Study
            Instance UID; files without one (JPEG/PNG films, unreadable headers) are in no study.
    """

    counts: dict[str, int]
    images_per_second: float
    results_csv: Path
    results_json: Path
    studies_csv: Path
    sr_paths: list[Path] = field(default_factory=list)
    sc_paths: list[Path] = field(default_factory=list)
    fhir_paths: list[Path] = field(default_factory=list)
    png_paths: list[Path] = field(default_factory=list)
    mask_paths: list[Path] = field(default_factory=list)
    seg_paths: list[Path] = field(default_factory=list)
    exit_code: int = 0
    n_inferred: int = 0
    n_reused: int = 0
    output_failures: int = 0
    peak_in_flight: int = 0
    in_flight_limit: int = 0
    elapsed_s: float = 0.0
    studies: dict[str, StudyOutcome] = field(default_factory=dict)


def in_flight_limit(batch_size: int, workers: int) -> int:
    """The most items the pipeline holds at once: a window of submitted work and one batch being filled.

    The window is ``batch_size + 2 * max(workers, 1)`` items, enough for the workers to prepare the next batch
    while the device runs the current one.
    """
    return _window(batch_size, workers) + batch_size


def _window(batch_size: int, workers: int) -> int:
    return batch_size + 2 * max(workers, 1)


# ------------------------------------------------------------------------------------------ items


# The per-film step (triage, decoding and preprocessing, scoring) is shared with the Ray engine.
_Job = FilmJob
_Item = FilmItem
_Context = FilmContext


class _Ready:
    """A finished item in the window of pending work (the same interface as a Future)."""

    def __init__(self, item: _Item) -> None:
        self._item = item

    def result(self) -> _Item:
        return self._item


# ---------------------------------------------------------------------------------------- progress


class _Progress:
    """A tqdm bar, or a log line every :data:`PROGRESS_EVERY` files or :data:`PROGRESS_SECONDS` seconds."""

    def __init__(self, total: int, bar: bool) -> None:
        self.total = total
        self.done = 0
        self._last = time.monotonic()
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="infer", unit="file", file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.done % PROGRESS_EVERY == 0 or now - self._last >= PROGRESS_SECONDS:
            self._last = now
            logger.info("infer: %d/%d file(s) done", self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------------------------- run


@contextlib.contextmanager
def _exclusive_lock(out: Path) -> Iterator[None]:
    handle: IO[str] = (out / LOCK_NAME).open("a", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"another inference run is writing to {out} (it holds {out / LOCK_NAME}); "
                "wait for it to finish or choose another output folder"
            ) from None
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


def _check_arguments(
    inputs: Sequence[str | Path], batch_size: int, workers: int, *, manifest: str | Path | None = None
) -> list[Path]:
    if isinstance(inputs, str | Path) or not isinstance(inputs, Sequence):
        raise TypeError("inputs must be a sequence of paths, not a single path")
    if not inputs and manifest is None:
        raise ValueError("inputs is empty: give at least one file or folder, or a manifest")
    if manifest is not None and not Path(manifest).is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    # Absolute: ITK's lazy module loader changes the process's working directory while it loads a
    # module (itk.support.base.LibraryLoader), so a relative path opened by another worker meanwhile
    # would not be found.
    paths = [Path(os.path.abspath(item)) for item in inputs]  # noqa: PTH100 - links are inputs, not resolved
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
    checks.positive_int("batch_size", batch_size)
    checks.non_negative_int("workers", workers)
    return paths


def _is_own_output(path: Path, out: Path) -> bool:
    """Whether ``path`` is one of the files a run writes into ``out`` (never read back as an input)."""
    try:
        parts = Path(os.path.realpath(path)).relative_to(out).parts  # a link loop does not raise
    except ValueError:
        return False
    top = parts[0] if parts else ""
    return top in _OUTPUT_NAMES or (top.startswith(".") and top.endswith(".tmp"))


def run_inference(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    bundle: str | Path | InferenceBundle | None = None,
    device: str = "auto",
    batch_size: int = 8,
    workers: int = 2,
    heatmaps: bool = False,
    write_sr: bool = True,
    force: bool = False,
    rules: SelectionRules | None = None,
    progress: bool | None = None,
    variant: str | None = None,
    site: SiteOperatingPoint | None = None,
    full_decode: bool = False,
    precision: str | None = None,
    fhir: bool = False,
    masks: bool = False,
    manifest: str | Path | None = None,
    parquet: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    ray_cpus_per_actor: float = 1.0,
) -> RunSummary:
    """Run the bundle on every file under ``inputs`` and write the results into ``output``.

    Args:
        inputs: files and folders (searched recursively), DICOM and JPEG/PNG in any mix.
        output: the output folder (created); see :mod:`pneumonia_monai.inference.manifest` for its files.
        bundle: the bundle folder (default: the package's bundle), or a bundle already loaded with
            :func:`~pneumonia_monai.inference.bundle.load_bundle` (a process that runs many times, the
            node, loads it once); ``device`` and ``variant`` are then the loaded bundle's.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: images per forward pass.
        workers: threads decoding and preprocessing files (0: in the calling thread).
        heatmaps: also write Grad-CAM overlays (``OUT/heatmaps/``): a PNG per ``ok`` image and a DICOM
            Secondary Capture per ``ok`` DICOM image.
        write_sr: write one DICOM SR per study (``OUT/sr/<StudyInstanceUID>.dcm``).
        force: recompute every file, ignoring the results of earlier runs.
        rules: the DICOM selection rules (default: the package's).
        progress: ``True`` a tqdm bar, ``False`` periodic log lines, ``None`` a bar on a terminal only.
        variant: a model variant of the bundle (``configs/inference_<variant>.json``), e.g. ``"subtype"``.
        site: a site operating point (:func:`pneumonia_monai.site_overlay.read_site_overlay`): films are
            called at its threshold, and rows and SRs record it (``operating_point``).
        full_decode: decode every pixel of each film (default: only as finely as the network input
            needs, :mod:`pneumonia_monai.dicom.reduced`, where the bundle says ``reduced_decode``).
        precision: the CPU forward's precision (``auto``, ``bf16``, ``fp32``; default: the bundle's),
            see :func:`~pneumonia_monai.inference.bundle.load_bundle`.
        fhir: also write one FHIR R5 Bundle per study (``OUT/fhir/<StudyInstanceUID>.json``,
            :mod:`pneumonia_monai.fhir`).
        masks: also write the lung fields and the Grad-CAM as NIfTI on each ``ok`` film's own grid and
            affine, and the lung fields of each ``ok`` DICOM film as a DICOM Segmentation
            (``OUT/masks/``, :mod:`pneumonia_monai.inference.masks`).
        manifest: a CSV or Parquet of URIs to infer on too, after ``inputs`` (local paths, object-store
            URIs through fsspec, DICOMweb instance URLs; :mod:`pneumonia_monai.inference.sources`).
        parquet: also write ``OUT/results.parquet`` (always with ``engine="ray"``;
            :func:`~pneumonia_monai.inference.manifest.write_results_parquet`).
        engine: ``"local"`` (threads of this process) or ``"ray"`` (a Ray Data actor pool,
            :mod:`pneumonia_monai.inference.ray_engine`: ``bundle`` must then be a folder, no ``masks``).
        ray_address: the Ray cluster (``auto``, ``ray://HOST:10001``); default: a running Ray of this
            process, else a local one started for the run.
        ray_actors: size of the Ray actor pool (default: the cluster's CPUs over ``ray_cpus_per_actor``).
        ray_cpus_per_actor: CPUs each actor reserves (its forward's threads).

    Returns:
        The run's :class:`RunSummary`.

    Raises:
        BundleError: if the bundle is unusable (nothing is read or written then).
        SiteOverlayError: if ``site`` was chosen for another model version (nothing is written then).
        OutputBusyError: if another run is writing to ``output``.
        FileNotFoundError: if an input does not exist.
        ValueError, TypeError: for invalid arguments or an unavailable device.
    """
    input_paths = _check_arguments(inputs, batch_size, workers, manifest=manifest)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray" and masks:
        raise ValueError("masks are not written by engine 'ray' yet: run them with engine 'local'")
    if engine == "ray" and isinstance(bundle, InferenceBundle):
        raise TypeError("engine 'ray' loads the bundle in every actor: pass its folder, not a loaded bundle")
    rules = rules if rules is not None else SelectionRules.default()
    if not isinstance(rules, SelectionRules):
        raise TypeError(f"rules must be SelectionRules, got {type(rules).__name__}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if (out / LOCK_NAME).is_file():
        with _exclusive_lock(out):  # a busy folder is refused before the model is loaded (seconds)
            pass
    loaded = (
        bundle
        if isinstance(bundle, InferenceBundle)
        else load_bundle(bundle, device=device, variant=variant, full_decode=full_decode, precision=precision)
    )
    loaded = apply_site(loaded, site)

    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    output_folders = (
        out,
        out / STATE_DIR,
        out / SR_DIR,
        out / HEATMAP_DIR,
        out / FHIR_DIR,
        out / MASK_DIR,
        out / FETCHED,
    )
    with _exclusive_lock(out), limits.film_budget():  # two films at --max-pixels are never in memory at once
        remove_stale_temporaries(*output_folders)
        options: dict[str, Any] = {"masks": masks, "manifest": manifest, "parquet": parquet}
        run_class: type[_Run] = _Run
        if engine == "ray":
            from pneumonia_monai.inference.ray_engine import ActorSpec, RayRun, ray_session

            run_class = RayRun
            options["parquet"] = True
            options["spec"] = ActorSpec(
                str(loaded.root),
                "cuda" if loaded.device.type == "cuda" else "cpu",
                variant,
                full_decode,
                precision,
                site,
                rules,
                str(out),
                heatmaps,
                loaded.fingerprint,
            )
            options.update(
                actors=ray_actors,
                cpus_per_actor=ray_cpus_per_actor,
                gpus_per_actor=1.0 if loaded.device.type == "cuda" else 0.0,
            )
        session = ray_session(ray_address) if engine == "ray" else contextlib.nullcontext()
        with session:
            summary = run_class(
                loaded,
                rules,
                out,
                batch_size,
                workers,
                heatmaps,
                write_sr,
                force,
                progress,
                fhir,
                **options,
            ).run(input_paths)
        # a Ray actor killed mid-write (and restarted) left its temporary file; every writer is done now
        remove_stale_temporaries(*output_folders)
        return summary


class _Run:
    """One run of the pipeline, with the lock held."""

    def __init__(
        self,
        bundle: InferenceBundle,
        rules: SelectionRules,
        out: Path,
        batch_size: int,
        workers: int,
        heatmaps: bool,
        write_sr: bool,
        force: bool,
        progress: bool | None,
        fhir: bool = False,
        *,
        masks: bool = False,
        manifest: str | Path | None = None,
        parquet: bool = False,
    ) -> None:
        self.bundle = bundle
        self.fhir = bool(fhir)
        self.masks = bool(masks)
        self.manifest = None if manifest is None else Path(manifest)
        self.parquet = bool(parquet)
        self.context = _Context(bundle, rules)
        self.out = out
        self.batch_size = batch_size
        self.workers = workers
        self.heatmaps = heatmaps
        self.write_sr = write_sr
        self.force = force
        self.bar = sys.stderr.isatty() if progress is None else bool(progress)
        self.state_dir = out / STATE_DIR
        fingerprint = run_fingerprint(bundle.fingerprint, rules)
        self.journal = StateJournal(self.state_dir / JOURNAL_NAME, fingerprint)
        self.rows: list[ResultRow | None] = []
        self.entries: list[tuple[str, StateEntry] | None] = []
        #: Which file holds each SOP Instance UID: the first one with an ``ok`` row.
        self.sops = FirstOfSop()
        self.summary = RunSummary(
            counts=dict.fromkeys(STATUSES, 0),
            images_per_second=0.0,
            results_csv=out / RESULTS_CSV,
            results_json=out / RESULTS_JSON,
            studies_csv=out / STUDIES_CSV,
            in_flight_limit=in_flight_limit(batch_size, workers),
        )
        self.outputs = RunOutputs(
            bundle, rules, out, self.summary, fingerprint=fingerprint, heatmaps=heatmaps, masks=masks
        )
        self._recent_studies: set[str] = set()
        #: The thread writing the SRs of settled studies during the stream (None: in this thread).
        self._writer: ThreadPoolExecutor | None = None

    # ---- driving

    def run(self, inputs: list[Path]) -> RunSummary:
        from pneumonia_monai.dicom.codecs import log_missing_decoders

        start = time.perf_counter()
        log_missing_decoders()
        if self.force and self.manifest is not None:  # a changed object under the same URI is read again
            shutil.rmtree(self.out / FETCHED, ignore_errors=True)
        jobs = self._jobs(inputs)
        previous = {} if self.force else self.journal.load()
        self.outputs.load_state(self.force)
        self.rows = [None] * len(jobs)
        self.entries = [None] * len(jobs)
        logger.info(
            "infer: %d file(s), %d result(s) of an earlier run reusable, batch %d, %d worker(s), device %s",
            len(jobs),
            sum(1 for job in jobs if self._reusable(job, previous.get(job.key))),
            self.batch_size,
            self.workers,
            self.bundle.device,
        )
        self.progress = _Progress(len(jobs), self.bar)
        try:
            with self.journal:
                self._stream(jobs, previous)
        finally:
            self.progress.close()
        self._finish(jobs)
        elapsed = time.perf_counter() - start
        summary = self.summary
        summary.elapsed_s = elapsed
        summary.images_per_second = summary.n_inferred / elapsed if elapsed > 0 else 0.0
        errors = summary.counts[ERROR]
        summary.exit_code = 1 if errors or summary.output_failures else 0
        log = logger.warning if summary.exit_code else logger.info
        log(
            "infer: %d file(s): %d ok, %d skipped, %d error; %d image(s) inferred at %.2f images/s, "
            "%d reused; %d output failure(s); results in %s",
            len(jobs),
            summary.counts[OK],
            summary.counts[SKIPPED],
            errors,
            summary.n_inferred,
            summary.images_per_second,
            summary.n_reused,
            summary.output_failures,
            summary.results_csv,
        )
        return summary

    def _jobs(self, inputs: list[Path]) -> list[_Job]:
        jobs: list[_Job] = []
        excluded = 0
        for path, root in iter_input_files(inputs):
            if _is_own_output(path, self.out):
                excluded += 1
                continue
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                rel = path.name
            try:
                key = file_key(path)
            except OSError:
                key = hashlib.sha256(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()
            jobs.append(_Job(len(jobs), path, root, rel, key))
        if excluded:
            logger.info("infer: %d output file(s) of this folder's runs are not inputs", excluded)
        if self.manifest is not None:
            from pneumonia_monai.inference.sources import manifest_jobs

            jobs += manifest_jobs(self.manifest, self.state_dir, first_index=len(jobs))
        return with_output_stems(jobs)

    def _stream(self, jobs: list[_Job], previous: dict[str, StateEntry]) -> None:
        window = _window(self.batch_size, self.workers)
        pending: deque[Future[_Item] | _Ready] = deque()
        batch: list[_Item] = []
        executor = (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="infer") if self.workers else None
        )
        # SRs of settled studies are written by one thread of their own while the network runs (its
        # forward releases the GIL); with no worker threads everything stays in this thread.
        self._writer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer-out") if self.workers else None
        )
        try:
            for job in jobs:
                while len(pending) >= window:
                    self._consume(pending.popleft().result(), batch)
                entry = previous.get(job.key)
                if self._reusable(job, entry):
                    pending.append(_Ready(_Item(job, row=entry.row, reused=entry)))  # type: ignore[union-attr]
                elif executor is None:
                    pending.append(_Ready(self.context.prepare(job)))
                else:
                    pending.append(executor.submit(self.context.prepare, job))
                self._note_in_flight(len(pending) + len(batch))
            while pending:
                self._consume(pending.popleft().result(), batch)
            if batch:
                self._infer(batch)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            if self._writer is not None:
                self._writer.shutdown(wait=True)  # every SR begun is finished before the end of the run
                self._writer = None

    def _note_in_flight(self, count: int) -> None:
        self.summary.peak_in_flight = max(self.summary.peak_in_flight, count)

    def _consume(self, item: _Item, batch: list[_Item]) -> None:
        """Take the next item in input order: finish it, or add it to the batch (inferred when full)."""
        row = item.row
        sop = (
            item.sop_uid
            if item.image is not None
            else (row.sop_uid if row is not None and row.status == OK else "")
        )
        if sop and any(pending.sop_uid == sop for pending in batch):
            # An earlier file of this SOP Instance UID is not scored yet: whether it holds the UID (an ok
            # row) or not (its forward failed) decides this file, so that batch is run now.
            self._infer(batch)
            batch.clear()
        first = self.sops.holder(sop)
        if first is not None:  # the rule of pneumonia-monai select and of the Ray engine (dicom.duplicates)
            source = row if row is not None else item
            dup = self.context.row(
                item.job,
                SKIPPED,
                duplicate_reason(first),
                study_uid=source.study_uid,
                series_uid=source.series_uid,
                sop_uid=sop,
                view=source.view,
                intended_use=source.intended_use,
            )
            self._done(item.job, StateEntry(dup))
            return
        if item.reused is not None:
            self.summary.n_reused += 1
            self._done(item.job, item.reused, record=False)
            return
        if row is not None:
            self._done(item.job, StateEntry(row, heatmaps=item.heatmaps))
            return
        batch.append(item)
        if len(batch) >= self.batch_size:
            self._infer(batch)
            batch.clear()

    def _infer(self, batch: list[_Item]) -> None:
        try:
            rows, probs = self.context.score(batch)
        except (
            RuntimeError,
            ValueError,
        ) as exc:  # e.g. out of device memory: these files are retried next run
            for item, row in zip(batch, self.context.failed(batch, exc), strict=True):
                self._done(item.job, StateEntry(row))
            return
        self.summary.n_inferred += len(batch)
        for item, p, row in zip(batch, probs, rows, strict=True):
            done_heatmaps = self.heatmaps and self.outputs.write_heatmap(item, p, row)
            done_masks = self.masks and self.outputs.write_masks(item, p)
            item.image = item.cam = None  # no pixels are kept past this point
            self._done(item.job, StateEntry(row, heatmaps=done_heatmaps, masks=done_masks))
        self._write_srs_of_settled_studies({item.study_uid for item in batch if item.study_uid})

    def _done(self, job: _Job, entry: StateEntry, *, record: bool = True) -> None:
        self.rows[job.index] = entry.row
        self.entries[job.index] = (job.key, entry)
        self.summary.counts[entry.row.status] += 1
        self.outputs.add_result(job, entry.row)
        if entry.row.status == OK:
            self.sops.hold(entry.row.sop_uid, job.rel)
        self.progress.update()
        if entry.row.status == ERROR:
            logger.warning("%s: error: %s", job.rel, entry.row.reason)
        if record:
            self.journal.record(job.key, entry)

    def _reusable(self, job: _Job, entry: StateEntry | None) -> bool:
        """Whether a journal entry stands for this run, its output files included."""
        return reusable(entry, self.heatmaps) and self.outputs.reusable(job, entry)  # type: ignore[arg-type]

    # ---- end of run

    def _finish(self, jobs: list[_Job]) -> None:
        rows = [row for row in self.rows if row is not None]
        if len(rows) != len(jobs):  # every file is accounted for, or the run is not finished
            raise RuntimeError(f"{len(jobs) - len(rows)} file(s) have no result row")
        if self.heatmaps:
            self.outputs.reused_heatmaps(jobs, self.rows)
        if self.masks:
            self.outputs.reused_masks(jobs, self.rows)
        studies = aggregate_studies(
            rows,
            threshold=self.bundle.threshold,
            model_version=self.bundle.model_version,
            operating_point=self.bundle.operating_point,
        )
        if self.write_sr:
            studies = self.outputs.write_srs(studies)
        if self.fhir:
            self.outputs.write_fhir_bundles(studies)
        write_results(self.out, rows, three_class=self.bundle.three_class)
        if self.parquet:
            write_results_parquet(self.out, rows, three_class=self.bundle.three_class)
        else:
            _remove_stale_parquet(self.out / RESULTS_PARQUET)
        write_studies(self.out, studies)
        self.summary.studies = self.outputs.study_outcomes(rows)
        self.journal.compact(entry for entry in self.entries if entry is not None)

    def _write_srs_of_settled_studies(self, touched: set[str]) -> None:
        """Write the SRs of studies that the last batch did not add to, while the workers decode.

        Files of a study usually come together in input order, so a study that got images in one batch
        and none in the next is most likely complete: its SR is built now, in parallel with the decoding
        threads (the decoders release the GIL), instead of all SRs at the end. Should more of its images
        come later, the end of the run sees that the study's results changed and builds it again.
        """
        settled = self._recent_studies - touched
        self._recent_studies = touched
        if not settled or not self.write_sr:
            return
        for study_uid in sorted(settled):
            images = self.outputs.study_images(study_uid)
            if not images:
                continue
            if self._writer is None:
                self.outputs.write_sr(study_uid, images, final=False)
            else:  # write_sr(final=False) logs its own failures; the end of the run retries them
                self._writer.submit(self.outputs.write_sr, study_uid, images, final=False)


def _remove_stale_parquet(path: Path) -> None:
    """Remove the ``results.parquet`` of an earlier run that this run does not rewrite (it would disagree)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    else:
        return
    logger.info("%s of an earlier run removed: this run writes no Parquet (--parquet)", path.name)
