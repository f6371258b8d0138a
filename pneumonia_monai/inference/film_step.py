"""The per-film step of batch inference, shared by the local engine and the Ray engine.

Both engines (:mod:`pneumonia_monai.inference.runner` in threads, :mod:`pneumonia_monai.inference.ray_engine`
in Ray actors) run every file through the same functions, so their rows cannot drift apart:

1. :meth:`FilmContext.prepare`: the file's bytes (a local file, or a URI of a manifest fetched once into
   the run's cache, :mod:`pneumonia_monai.inference.sources`) -> header triage with the selection rules
   (:func:`pneumonia_monai.triage.decide_file`) -> decoding and the bundle's ``preprocessing``;
   a file that is not to be scored comes back as a finished row;
2. :meth:`FilmContext.score`: a batch of prepared films -> the bundle's ``predict`` -> one ``ok`` row per
   film, called at the bundle's threshold (:class:`~pneumonia_monai.inference.manifest.ResultRow` checks
   the prediction against it); :meth:`FilmContext.failed` gives the rows of a batch whose forward failed.

What is done with the rows (journal, duplicate SOP Instance UIDs, SRs, the results files) is the engines'
common :class:`~pneumonia_monai.inference.runner._Run` (its writers: :mod:`~.outputs`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch

from pneumonia_monai.decision import label_at
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import SELECTED, entry_problem
from pneumonia_monai.inference.bundle import InferenceBundle
from pneumonia_monai.inference.manifest import ERROR, OK, SKIPPED, ResultRow
from pneumonia_monai.names import JUNK_REASON, is_junk
from pneumonia_monai.transforms.lung_crop import crop_fractions, lacks_content
from pneumonia_monai.triage import decide_file

if TYPE_CHECKING:  # for the annotations only (typing.Unpack is Python 3.11+)
    from typing_extensions import Unpack

logger = logging.getLogger(__name__)

#: The crop box of a film whose preprocessing does not say (the whole film).
WHOLE_FILM: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)


@dataclass(frozen=True)
class FilmJob:
    """One input entry.

    Attributes:
        index: its place in the run's input order.
        path: the local file (for a manifest URI: its copy in the run's cache, fetched by :meth:`prepare`).
        root: the folder ``rel`` is relative to.
        rel: the name its row carries (a manifest entry: the URI as given, without credentials).
        key: what identifies its current content, for resuming (:func:`~.journal.file_key`).
        uri: the manifest URI it is fetched from (empty for a local file found under the inputs).
        stem: the name of its per-film output files (heatmap PNG, mask NIfTIs), set by
            :func:`with_output_stems` (empty: :func:`output_stem` of ``rel``).
    """

    index: int
    path: Path
    root: Path
    rel: str
    key: str
    uri: str = ""
    stem: str = ""

    @property
    def output_name(self) -> str:
        """The stem its per-film output files are named by (see :func:`with_output_stems`)."""
        return self.stem or output_stem(self.rel)


#: The longest output stem kept as it is: with the longest suffix (``.heatmap.nii.gz`` and a ``.tmp``
#: name while it is written) a file name stays within the 255 bytes of common file systems.
MAX_STEM_BYTES = 180
#: Characters of a longer stem kept (its end: the file's own name), before a digest of its source.
STEM_TAIL = 40


def output_stem(rel: str) -> str:
    """A relative path as one file name: each ``/`` as ``__``."""
    return rel.replace("/", "__")


def with_output_stems(jobs: Sequence[FilmJob]) -> list[FilmJob]:
    """Name each entry's per-film outputs so that no two entries of a run share a file.

    The stem is :func:`output_stem` of the entry's relative path; where two or more entries have the same
    one (the same relative path under two inputs), each of them gets a digest of its real path (or URI)
    after it; a stem over :data:`MAX_STEM_BYTES` (a long URL) is cut to its last :data:`STEM_TAIL`
    characters plus a digest. The names depend only on the inputs, so a resumed run finds its files.
    """
    counts = Counter(output_stem(job.rel) for job in jobs)
    named = []
    for job in jobs:
        stem = output_stem(job.rel)
        source = job.uri.encode("utf-8") if job.uri else os.fsencode(os.path.realpath(job.path))
        if counts[stem] > 1:
            stem = f"{stem}.{hashlib.sha256(source).hexdigest()[:8]}"
            logger.warning("%s: another input has an entry of that name; outputs named %s", job.rel, stem)
        if len(os.fsencode(stem)) > MAX_STEM_BYTES:  # e.g. a DICOMweb URL: a name must fit in 255 bytes
            stem = f"{stem[-STEM_TAIL:]}.{hashlib.sha256(source).hexdigest()[:16]}"
        named.append(replace(job, stem=stem))
    return named


class FileFacts(TypedDict, total=False):
    """What the triage read of a file, for its row (the :class:`ResultRow` fields of the same names)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    view: str
    intended_use: str


class RunFacts(TypedDict):
    """What every row of a run carries (the :class:`ResultRow` fields of the same names)."""

    threshold: float
    model_version: str
    operating_point: str


class SubtypeProbabilities(TypedDict, total=False):
    """The class probabilities of a three-class model's ``ok`` row (none for two classes)."""

    prob_normal: float
    prob_bacterial: float
    prob_viral: float


@dataclass
class FilmItem:
    """A file on its way through the pipeline: a finished row, or a preprocessed image for the model."""

    job: FilmJob
    row: ResultRow | None = None
    reused: Any = None  # the StateEntry of an earlier run standing for this file
    image: torch.Tensor | None = None
    box: tuple[float, float, float, float] = WHOLE_FILM
    reason: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    view: str = ""
    intended_use: str = ""
    cam: Any = None  # the Grad-CAM of ``image``, once computed for the heatmaps or the masks
    heatmaps: bool = False  # whether the heatmaps of ``row`` were written (by a Ray actor)


def root_cause_message(exc: BaseException, job: FilmJob) -> str:
    """The innermost meaningful message of an exception chain (MONAI wraps transform errors)."""
    from pneumonia_monai.transforms import ImageLoadError

    current: BaseException | None = exc
    text = f"cannot preprocess the image ({type(exc).__name__}: {exc})"
    while current is not None:
        if isinstance(current, ImageLoadError):
            text = str(current)
            break
        if current.__cause__ is None:
            text = f"cannot preprocess the image ({type(current).__name__}: {current})"
            break
        current = current.__cause__
    # Readers quote the absolute path; the manifest names files relative to their input.
    text = text.replace(os.path.realpath(job.path), job.rel).replace(str(job.path), job.rel)
    return " ".join(text.split())


class FilmContext:
    """What the per-film step needs: the loaded bundle and the selection rules (read-only during a run)."""

    def __init__(self, bundle: InferenceBundle, rules: SelectionRules) -> None:
        if not isinstance(rules, SelectionRules):
            raise TypeError(f"rules must be SelectionRules, got {type(rules).__name__}")
        self.bundle = bundle
        self.rules = rules
        self.common: RunFacts = {
            "threshold": bundle.threshold,
            "model_version": bundle.model_version,
            "operating_point": bundle.operating_point,
        }

    def row(self, job: FilmJob, status: str, reason: str, **uids: Unpack[FileFacts]) -> ResultRow:
        """A row without probabilities (``skipped`` or ``error``)."""
        return ResultRow(job.rel, status, reason, **uids, **self.common)

    def finished(self, job: FilmJob, status: str, reason: str, **uids: Unpack[FileFacts]) -> FilmItem:
        """An item that needs no inference."""
        return FilmItem(job, row=self.row(job, status, reason, **uids))

    def prepare(self, job: FilmJob) -> FilmItem:
        """Triage one file and, when it is to be inferred, decode and preprocess it (runs in a worker)."""
        if is_junk(job.rel):
            return self.finished(job, SKIPPED, JUNK_REASON)
        if job.uri:
            from pneumonia_monai.inference.sources import SourceError, fetch

            try:
                fetch(job.uri, job.path)
            except SourceError as exc:
                return self.finished(job, ERROR, str(exc))
        entry = entry_problem(job.path)  # links, pipes, unreadable folders: never opened
        if entry is not None:
            return self.finished(job, *entry)
        uids: FileFacts = {}
        try:
            # DICOM by the selection rules; pictures and research films by name and header
            # (triage.decide_film_file), as pneumonia-monai select decides them.
            decision = decide_file(job.path, self.rules, root=job.root)
            uids = {
                "study_uid": decision.study_uid,
                "series_uid": decision.series_uid,
                "sop_uid": decision.sop_uid,
                "view": decision.view,
                "intended_use": decision.intended_use,
            }
            if decision.status != SELECTED:
                return self.finished(job, decision.status, decision.reason, **uids)
            reason = decision.reason
            data = self.bundle.preprocessing({"image": str(job.path)})
            meta = getattr(data["image"], "meta", {})
            if lacks_content(str(meta.get("lung_crop", ""))):  # a blank film is never scored
                status = str(meta["lung_crop"]).removeprefix("fallback: ")
                return self.finished(job, ERROR, f"{status}: not scored", **uids)
            box = crop_fractions(meta) or WHOLE_FILM
            image = torch.as_tensor(data["image"]).as_subclass(torch.Tensor).detach()
            expected = (1, *self.bundle.spatial_size)
            if tuple(image.shape) != expected:
                raise ValueError(f"preprocessing gave shape {tuple(image.shape)}, expected {expected}")
            image = image.to(torch.float32).contiguous()
        except Exception as exc:  # a broken file is an error row, never the end of the run
            logger.debug("%s: %s", job.rel, type(exc).__name__, exc_info=True)
            return self.finished(job, ERROR, root_cause_message(exc, job), **uids)
        return FilmItem(job, image=image, box=box, reason=reason, **uids)

    def score(self, batch: list[FilmItem]) -> tuple[list[ResultRow], Any]:
        """Run the model on a batch of prepared items; return one ``ok`` row per item and the outputs.

        Raises:
            RuntimeError, ValueError: if the forward fails (out of device memory, say); the engine gives
                the batch :meth:`failed` rows, retried by the next run.
        """
        bundle = self.bundle
        probs = bundle.predict(torch.stack([item.image for item in batch]))  # type: ignore[misc]
        rows = []
        for item, p in zip(batch, probs, strict=True):
            prob = bundle.pneumonia_probability(p)
            subtypes: SubtypeProbabilities = (
                {"prob_normal": float(p[0]), "prob_bacterial": float(p[1]), "prob_viral": float(p[2])}
                if bundle.three_class
                else {}
            )
            rows.append(
                ResultRow(
                    item.job.rel,
                    OK,
                    item.reason,
                    item.study_uid,
                    item.series_uid,
                    item.sop_uid,
                    item.view,
                    prob_pneumonia=prob,
                    prediction=label_at(prob, bundle.threshold),
                    intended_use=item.intended_use,
                    **self.common,
                    **subtypes,
                )
            )
        return rows, probs

    def failed(self, batch: list[FilmItem], exc: BaseException) -> list[ResultRow]:
        """The ``error`` rows of a batch whose forward raised ``exc``."""
        reason = "inference failed (" + " ".join(f"{type(exc).__name__}: {exc}".split())[:300] + ")"
        logger.error("a batch of %d image(s): %s", len(batch), reason)
        return [
            self.row(
                item.job,
                ERROR,
                reason,
                view=item.view,
                study_uid=item.study_uid,
                series_uid=item.series_uid,
                sop_uid=item.sop_uid,
            )
            for item in batch
        ]
