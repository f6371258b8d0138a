"""The compute logic of the MONAI Deploy application, free of any MONAI Deploy / Holoscan import.

The operators of :mod:`chest_operators` are thin wrappers around these functions, so that the logic
can be read and tested on its own:

- :func:`select_films`: the chest frontal CR/DX instances of a list of loaded DICOM datasets, decided by
  the same :mod:`pneumonia_monai.dicom.selection` rules as ``pneumonia-monai select``; grouped by study;
- :class:`BundleClassifier`: the bundle as :func:`pneumonia_monai.inference.bundle.load_bundle` loads
  it (``preprocessing`` -> ``network_def`` + checkpoint -> ``inferer`` -> ``postprocessing``), run on the
  instance's *file*, so that a DICOM film goes through
  exactly the pipeline of training, evaluation and ``pneumonia-monai infer``
  (:class:`pneumonia_monai.transforms.ChestXRayPreprocessd`: Modality LUT, VOI LUT, polarity, lung
  crop, resize). The result keeps the probabilities: the decision is ``prob_pneumonia >= threshold``
  with the bundle's operating point, never an ``argmax`` or an ``int()`` of a probability;
- :func:`build_study_reports`: one TID 1500 Comprehensive SR per study
  (:func:`pneumonia_monai.dicom.sr.build_pneumonia_sr`).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset

from pneumonia_monai.decision import is_pneumonia, pneumonia_probability
from pneumonia_monai.dicom.header import Header
from pneumonia_monai.dicom.intended_use import UNKNOWN
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import SELECTED, decide_header, intended_use_of
from pneumonia_monai.dicom.sr import ImageFinding, build_pneumonia_sr
from pneumonia_monai.inference.bundle import load_bundle

logger = logging.getLogger(__name__)

#: The bundle config the classifier reads, relative to the bundle root.
INFERENCE_CONFIG = Path("configs") / "inference.json"
#: Pixel data elements (Pixel Data, Float Pixel Data, Double Float Pixel Data).
_PIXEL_TAGS: tuple[int, ...] = (0x7FE00010, 0x7FE00008, 0x7FE00009)
#: Name of the normal class in ``class_names``; every other class is a kind of pneumonia.
NORMAL_CLASS = "normal"


# ------------------------------------------------------------------------------------ selection


@dataclass(frozen=True)
class SelectedFilm:
    """A DICOM instance kept by the selection rules.

    Attributes:
        dataset: the instance as loaded (header and pixel data).
        path: the file it was read from, when known (``Dataset.filename``).
        reason: why it was selected (the rule that decided, as ``pneumonia-monai select`` reports it).
    """

    dataset: Dataset
    path: Path | None
    reason: str

    @property
    def sop_instance_uid(self) -> str:
        """SOP Instance UID of the film."""
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        """Study Instance UID of the film."""
        return str(self.dataset.StudyInstanceUID)


def as_film(ds: Dataset, reason: str) -> SelectedFilm:
    """Wrap a selected dataset; its path is the file pydicom read it from (``Dataset.filename``), if any."""
    filename = getattr(ds, "filename", None)
    path = Path(filename) if isinstance(filename, str | Path) and filename else None
    return SelectedFilm(ds, path, reason)


def _has_pixel_data(ds: Dataset) -> bool:
    return any(tag in ds and bool(ds[tag].value) for tag in _PIXEL_TAGS)


def _sort_key(film: SelectedFilm) -> tuple[str, int, str]:
    number = film.dataset.get("InstanceNumber")
    return (
        str(film.dataset.get("SeriesInstanceUID", "")),
        int(number) if number not in (None, "") else 0,
        film.sop_instance_uid,
    )


def select_films(
    datasets: Iterable[Dataset], rules: SelectionRules | None = None
) -> tuple[dict[str, list[SelectedFilm]], list[tuple[str, str]]]:
    """Apply the selection rules to loaded datasets; group the selected films by study.

    Args:
        datasets: DICOM instances with their pixel data (e.g. from MONAI Deploy's DICOM data loader).
        rules: selection rules (default: the package's ``selection_rules.yaml``).

    Returns:
        ``(studies, skipped)``: Study Instance UID -> selected films (sorted by series, Instance
        Number, SOP Instance UID; a second instance with the same SOP Instance UID is dropped), and
        ``(SOP Instance UID, reason)`` for every instance that was not selected.

    Raises:
        TypeError: if an item is not a pydicom Dataset or ``rules`` is not :class:`SelectionRules`.
    """
    rules = SelectionRules.default() if rules is None else rules
    if not isinstance(rules, SelectionRules):
        raise TypeError(f"rules must be SelectionRules, got {type(rules).__name__}")
    studies: dict[str, list[SelectedFilm]] = {}
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for ds in datasets:
        if not isinstance(ds, Dataset):
            raise TypeError(f"expected pydicom Datasets, got {type(ds).__name__}")
        sop_uid = str(ds.get("SOPInstanceUID", ""))
        status, reason = decide_header(Header(ds, _has_pixel_data(ds), has_preamble=True), rules)
        if status != SELECTED:
            logger.info("skipped %s: %s", sop_uid or "<no SOP Instance UID>", reason)
            skipped.append((sop_uid, reason))
            continue
        if sop_uid in seen:
            logger.info("skipped %s: duplicate SOP Instance UID", sop_uid)
            skipped.append((sop_uid, "duplicate SOP Instance UID"))
            continue
        seen.add(sop_uid)
        film = as_film(ds, reason)
        studies.setdefault(film.study_instance_uid, []).append(film)
    for films in studies.values():
        films.sort(key=_sort_key)
    logger.info(
        "selected %d film(s) in %d study(ies); skipped %d instance(s)",
        sum(len(f) for f in studies.values()),
        len(studies),
        len(skipped),
    )
    return studies, skipped


# ----------------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class Prediction:
    """The classifier's output for one film.

    Attributes:
        probabilities: class name -> softmax probability, in the bundle's ``class_names`` order.
        prob_pneumonia: probability of pneumonia (``1 - p(normal)``: bacterial + viral for three classes).
        threshold: the operating point used.
        present: ``prob_pneumonia >= threshold``.
    """

    probabilities: dict[str, float]
    prob_pneumonia: float
    threshold: float
    present: bool

    @property
    def label(self) -> str:
        """``"pneumonia"`` when present, else ``"normal"``."""
        return "pneumonia" if self.present else NORMAL_CLASS

    def finding(self, ds: Dataset, intended_use: str = UNKNOWN) -> ImageFinding:
        """The SR finding of this prediction for the image ``ds`` (``intended_use`` as selection found)."""
        subtypes: dict[str, float] = {}
        if set(self.probabilities) == {"normal", "bacterial", "viral"}:
            subtypes = {
                "prob_normal": self.probabilities["normal"],
                "prob_bacterial": self.probabilities["bacterial"],
                "prob_viral": self.probabilities["viral"],
            }
        return ImageFinding(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            prob_pneumonia=self.prob_pneumonia,
            present=self.present,
            intended_use=intended_use,
            **subtypes,
        )


def find_bundle_root(path: str | Path) -> Path:
    """Return the bundle folder named by ``path``, as MONAI Deploy passes it in its model path.

    Accepted: the bundle folder itself (``configs/inference.json`` inside), its checkpoint
    ``<bundle>/models/model.pt``, or a models folder holding exactly one bundle folder (the layout of a
    packaged application, ``/opt/holoscan/models/<name>/``).

    Raises:
        FileNotFoundError: if no bundle is found there.
    """
    path = Path(path).resolve()
    candidates = [path]
    if path.is_file():
        candidates.append(path.parent.parent)
    elif path.is_dir():
        candidates.extend(sorted(p for p in path.iterdir() if p.is_dir()))
    found = [c for c in candidates if (c / INFERENCE_CONFIG).is_file()]
    if not found:
        raise FileNotFoundError(f"no bundle ({INFERENCE_CONFIG} not found) at or under {path}")
    if len(found) > 1 and found[0] != path:
        raise FileNotFoundError(f"several bundles under {path}: {[str(f) for f in found]}; name one")
    return found[0]


class BundleClassifier:
    """Run the pneumonia bundle on single films (JPEG/PNG or DICOM files).

    The bundle is loaded by :func:`pneumonia_monai.inference.bundle.load_bundle`, the loader of
    ``pneumonia-monai infer`` and the DICOM node: the same checks, the same ``inferer`` and precision
    rule, ``amp``, operating point and model version (an over-long version is refused, not cut).

    Args:
        bundle_root: the bundle folder (``bundle_root`` is set to it explicitly, whatever the config says).
        device: torch device; default ``auto`` (CUDA when available, else the CPU).

    Raises:
        pneumonia_monai.inference.bundle.BundleError: if the bundle cannot be used (the message names
            the file, key or value at fault).
        ValueError: if ``device`` is unknown or unavailable.
    """

    def __init__(self, bundle_root: str | Path, *, device: str | torch.device | None = None) -> None:
        self.bundle_root = Path(bundle_root).resolve()
        self.bundle = load_bundle(self.bundle_root, device="auto" if device is None else str(device))
        self.device = self.bundle.device
        self.class_names = list(self.bundle.class_names)
        self.threshold = self.bundle.threshold
        self.name, self.version = self.bundle.model_name, self.bundle.model_version
        logger.info(
            "bundle %s %s from %s on %s (threshold %.4f)",
            self.name,
            self.version,
            self.bundle_root,
            self.device,
            self.threshold,
        )

    def predict_file(self, path: str | Path) -> Prediction:
        """Classify the film stored in ``path`` (JPEG/PNG, or DICOM recognised by its header).

        Raises:
            pneumonia_monai.transforms.ImageLoadError: if the file cannot be loaded.
        """
        data = self.bundle.preprocessing({"image": str(path)})
        batch = torch.as_tensor(data["image"]).as_subclass(torch.Tensor)[None]
        probs = self.bundle.predict(batch)[0]
        return self._prediction(probs)

    def predict_dataset(self, ds: Dataset, path: str | Path | None = None) -> Prediction:
        """Classify a DICOM instance: from its file when known, else from a temporary copy of it.

        The file is preferred so that the film is decoded exactly as ``pneumonia-monai infer`` decodes
        it; a dataset without a file (e.g. received over the network) is written to a temporary Part 10
        file first.
        """
        if path is not None and Path(path).is_file():
            return self.predict_file(path)
        with tempfile.TemporaryDirectory(prefix="pneumonia_deploy_") as tmp:
            copy = Path(tmp) / "instance.dcm"
            ds.save_as(copy, enforce_file_format=True)
            return self.predict_file(copy)

    def _prediction(self, probs: np.ndarray) -> Prediction:
        if probs.shape != (len(self.class_names),):
            raise ValueError(f"the network gave {probs.shape[0]} outputs for classes {self.class_names}")
        if not np.all(np.isfinite(probs)) or not math.isclose(float(probs.sum()), 1.0, abs_tol=1e-4):
            raise ValueError(f"postprocessing did not give probabilities: {probs.tolist()}")
        probabilities = {name: float(p) for name, p in zip(self.class_names, probs, strict=True)}
        prob_pneumonia = pneumonia_probability(probs, self.class_names)
        return Prediction(
            probabilities, prob_pneumonia, self.threshold, is_pneumonia(prob_pneumonia, self.threshold)
        )


# ------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ClassifiedFilm:
    """A selected film and the classifier's prediction for it."""

    film: SelectedFilm
    prediction: Prediction


def classify_studies(
    classifier: BundleClassifier, studies: Mapping[str, Sequence[SelectedFilm]]
) -> dict[str, list[ClassifiedFilm]]:
    """Run ``classifier`` on every selected film, keeping the study grouping."""
    results: dict[str, list[ClassifiedFilm]] = {}
    for study_uid, films in studies.items():
        for film in films:
            prediction = classifier.predict_dataset(film.dataset, film.path)
            logger.info(
                "%s: p(pneumonia)=%.4f -> %s",
                film.sop_instance_uid,
                prediction.prob_pneumonia,
                prediction.label,
            )
            results.setdefault(study_uid, []).append(ClassifiedFilm(film, prediction))
    return results


def build_study_reports(
    results: Mapping[str, Sequence[ClassifiedFilm]],
    *,
    algorithm_name: str,
    algorithm_version: str,
    threshold: float,
    rules: SelectionRules | None = None,
) -> list[Dataset]:
    """Build one pneumonia SR (TID 1500 Comprehensive SR) per study of ``results``.

    A film whose patient is outside the intended ages of ``rules`` (default: the package's selection
    rules; :func:`pneumonia_monai.dicom.selection.intended_use_of`) gets a note in its report, as ``infer``
    writes it.

    Raises:
        ValueError: if a study has no film (see :func:`pneumonia_monai.dicom.sr.build_pneumonia_sr`
            for the other checks).
    """
    rules = SelectionRules.default() if rules is None else rules
    reports = []
    for study_uid, classified in results.items():
        if not classified:
            raise ValueError(f"study {study_uid} has no classified film")
        sources = [c.film.dataset for c in classified]
        findings = [
            c.prediction.finding(c.film.dataset, intended_use_of(c.film.dataset, rules)) for c in classified
        ]
        reports.append(
            build_pneumonia_sr(
                sources,
                findings,
                algorithm_name=algorithm_name,
                algorithm_version=algorithm_version,
                threshold=threshold,
                intended_use=rules.intended_age.describe(),
            )
        )
    return reports
