"""MONAI Deploy operators of the pneumonia application (series selection, classification, SR writing).

Why not the SDK's own operators for the last two steps:

- ``MonaiBundleInferenceOperator`` expects an image volume with an affine; a single CR/DX instance has
  neither a slice position nor an orientation and arrives from ``DICOMSeriesToVolumeOperator`` as a
  ``(W, H, 1)`` array, and the operator turns classification outputs into labels with ``int()``. The
  classifier here reads the selected instance's *file* and runs the bundle's own preprocessing, so a
  film gives exactly the probability of ``pneumonia-monai infer``, and keeps the probability.
- ``DICOMTextSRWriterOperator`` writes free text in a Basic Text SR; the report here is the package's
  coded TID 1500 Comprehensive SR (finding SCT 233604007 "Pneumonia", coded probability, references to
  the source images, same study).

The compute logic lives in :mod:`chest_classifier`, which imports nothing from the SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chest_classifier import (
    BundleClassifier,
    ClassifiedFilm,
    SelectedFilm,
    as_film,
    build_study_reports,
    classify_studies,
    find_bundle_root,
    select_films,
)
from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.writer import write_dataset_atomic

logger = logging.getLogger(__name__)

#: Selection name given to the selected films (the SDK names each selection).
SELECTION_NAME = "chest frontal CR/DX"
#: Series-level properties of the SDK's DICOMSeries copied to the filtered series.
_SERIES_PROPERTIES: tuple[str, ...] = (
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "SeriesDescription",
    "BodyPartExamined",
    "PatientPosition",
    "SeriesNumber",
    "Laterality",
)


def _filtered_series(series: DICOMSeries, keep: set[str]) -> DICOMSeries | None:
    """A copy of ``series`` holding only the instances whose SOP Instance UID is in ``keep``."""
    kept = [
        inst.get_native_sop_instance()
        for inst in series.get_sop_instances()
        if str(inst.get_native_sop_instance().get("SOPInstanceUID", "")) in keep
    ]
    if not kept:
        return None
    copy = DICOMSeries(series.SeriesInstanceUID)
    for name in _SERIES_PROPERTIES:
        try:
            value = getattr(series, name)
        except AttributeError:  # the SDK sets a series property only when the header has it
            continue
        setattr(copy, name, value)
    for ds in kept:
        copy.add_sop_instance(ds)
    return copy


class ChestFilmSelectorOperator(DICOMSeriesSelectorOperator):
    """Select the chest frontal CR/DX instances with ``pneumonia_monai``'s selection rules.

    Overrides :meth:`DICOMSeriesSelectorOperator.filter`, the SDK's extension point: the decision is
    made per *instance* (a CR series may hold a PA and a lateral film), with the same rules as
    ``pneumonia-monai select`` (SOP class, Presentation Intent, body part, view, own outputs), instead of
    the SDK's series-level JSON conditions. Each selected series holds only its selected instances.

    Named input:
        dicom_study_list: list of ``DICOMStudy`` (from ``DICOMDataLoaderOperator``).

    Named output:
        study_selected_series_list: list of ``StudySelectedSeries``; studies without a selected film
        are left out.

    Args:
        fragment: the application.
        rules_file: a site's YAML selection rules (keys it leaves out keep the package's values);
            ``None``: the package's ``selection_rules.yaml``.
    """

    def __init__(
        self, fragment: Fragment, *args: Any, rules_file: str | Path | None = None, **kwargs: Any
    ) -> None:
        self.selection_rules = (
            SelectionRules.from_file(rules_file) if rules_file is not None else SelectionRules.default()
        )
        super().__init__(fragment, *args, rules="", all_matched=True, **kwargs)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Receive the studies, emit the selected films (the SDK's compute logs with the root logger)."""
        studies = op_input.receive(self.input_name_study_list)
        op_output.emit(self.filter(None, studies), self.output_name_selected_series)

    def filter(
        self,
        selection_rules: Any,
        dicom_study_list: Sequence[Any],
        all_matched: bool = True,
        sort_by_sop_instance_count: bool = False,
    ) -> list[StudySelectedSeries]:
        """Return the studies' selected films; the SDK's JSON ``selection_rules`` are not used."""
        selected: list[StudySelectedSeries] = []
        for study in dicom_study_list or []:
            datasets = [
                inst.get_native_sop_instance()
                for series in study.get_all_series()
                for inst in series.get_sop_instances()
            ]
            films, _ = select_films(datasets, self.selection_rules)
            keep = {film.sop_instance_uid for group in films.values() for film in group}
            study_selection = StudySelectedSeries(study)
            for series in study.get_all_series():
                filtered = _filtered_series(series, keep)
                if filtered is not None:
                    study_selection.add_selected_series(SelectedSeries(SELECTION_NAME, filtered, None))
            if study_selection.selected_series:
                selected.append(study_selection)
            else:
                logger.info("study %s: no chest frontal CR/DX film", study.StudyInstanceUID)
        return selected


class PneumoniaClassifierOperator(Operator):
    """Run the pneumonia bundle on every selected film.

    Named input:
        study_selected_series_list: list of ``StudySelectedSeries`` (from :class:`ChestFilmSelectorOperator`).

    Named output:
        classified_studies: Study Instance UID -> list of :class:`chest_classifier.ClassifiedFilm`.

    Args:
        fragment: the application.
        bundle_path: the bundle folder, its ``models/model.pt``, or a models folder holding one bundle
            (the application's model path).
        device: torch device; ``None``: the bundle's (CUDA when available).
    """

    INPUT = "study_selected_series_list"
    OUTPUT = "classified_studies"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        bundle_path: str | Path,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Loaded when the application is composed, so that a bad bundle stops it before any input is read.
        self.classifier = BundleClassifier(find_bundle_root(bundle_path), device=device)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input(self.INPUT)
        spec.output(self.OUTPUT).condition(ConditionType.NONE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Classify the selected films, grouped by study."""
        selections = op_input.receive(self.INPUT) or []
        studies: dict[str, list[SelectedFilm]] = {}
        for study_selection in selections:
            for selected in study_selection.selected_series:
                for inst in selected.series.get_sop_instances():
                    film = as_film(inst.get_native_sop_instance(), selected.selection_name)
                    studies.setdefault(film.study_instance_uid, []).append(film)
        if not studies:
            logger.warning("no chest frontal CR/DX film to classify")
        op_output.emit(classify_studies(self.classifier, studies), self.OUTPUT)


class PneumoniaSRWriterOperator(Operator):
    """Write one pneumonia TID 1500 Comprehensive SR per study to the output folder.

    Files are named ``<SOP Instance UID of the report>.dcm`` and written atomically.

    Named input:
        classified_studies: from :class:`PneumoniaClassifierOperator`.

    Args:
        fragment: the application.
        output_folder: where the reports are written (created if missing).
        classifier_op: the classifier operator, for the algorithm's name, version and threshold.
        selection_rules: the rules the films were selected by, for the intended use quoted in the note
            of a film outside it (default: the package's).
    """

    INPUT = "classified_studies"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: str | Path,
        classifier_op: PneumoniaClassifierOperator,
        selection_rules: SelectionRules | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(classifier_op, PneumoniaClassifierOperator):
            raise TypeError(
                f"classifier_op must be a PneumoniaClassifierOperator, got {type(classifier_op).__name__}"
            )
        if selection_rules is not None and not isinstance(selection_rules, SelectionRules):
            raise TypeError(f"selection_rules must be SelectionRules, got {type(selection_rules).__name__}")
        self.selection_rules = selection_rules or SelectionRules.default()
        self.output_folder = Path(output_folder)
        self.classifier_op = classifier_op
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the port."""
        spec.input(self.INPUT)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Build and write the reports."""
        results: dict[str, list[ClassifiedFilm]] = op_input.receive(self.INPUT) or {}
        if not results:
            logger.warning("nothing classified: no report written")
            return
        classifier = self.classifier_op.classifier
        reports = build_study_reports(
            results,
            algorithm_name=classifier.name,
            algorithm_version=classifier.version,
            threshold=classifier.threshold,
            rules=self.selection_rules,
        )
        self.output_folder.mkdir(parents=True, exist_ok=True)
        for report in reports:
            path = self.output_folder / f"{report.SOPInstanceUID}.dcm"
            write_dataset_atomic(report, path)
            self.written.append(path)
            logger.info("wrote %s (study %s)", path, report.StudyInstanceUID)
