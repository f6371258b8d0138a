"""Ignite handlers of the bundle's evaluation: collect predictions, then write the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from ignite.engine import Engine, Events

from pneumonia_monai.decision import explained_class, pneumonia_probability
from pneumonia_monai.labels import class_names
from pneumonia_monai.transforms.lung_crop import crop_fractions
from pneumonia_monai.visualize.gradcam import gradcam

logger = logging.getLogger(__name__)


def _film_of(image: Any) -> tuple[str, tuple[float, float, float, float]] | None:
    """``(path, crop as film fractions)`` of a preprocessed film, from its meta; None if it does not say."""
    meta = getattr(image, "meta", None) or {}
    path, box = meta.get("filename_or_obj"), crop_fractions(meta)
    return None if not path or box is None else (str(path), box)


class MetricsReportHandler:
    """Collect the evaluator's probabilities and labels, and write ``metrics.json`` and figures.

    The report (metrics with bootstrap intervals grouped by patient, ROC/PR/calibration/confusion
    figures) is written by :func:`pneumonia_monai.evaluation.report.write_report` when the evaluator
    completes.

    Args:
        output_dir: folder of ``metrics.json`` and the figures.
        num_classes: 2 or 3.
        threshold: operating threshold on the pneumonia probability.
        split_name: name of the evaluated split, recorded in the report.
        n_resamples: bootstrap resamples for the intervals.
        seed: bootstrap seed.
        min_sensitivity: the operating-point rule reported beside the metrics: the threshold with the
            highest specificity among those keeping at least this sensitivity on the evaluated split.
            Run on the validation split, it is the threshold to store in ``inference.json``
            (``scripts/set_operating_point.py`` does it).
    """

    def __init__(
        self,
        output_dir: str | Path,
        num_classes: int,
        threshold: float,
        split_name: str = "validation",
        n_resamples: int = 2000,
        seed: int = 0,
        min_sensitivity: float = 0.95,
    ) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.output_dir = Path(output_dir)
        self.class_names = class_names(num_classes)
        self.threshold = float(threshold)
        self.split_name = split_name
        self.n_resamples = int(n_resamples)
        self.seed = int(seed)
        self.min_sensitivity = float(min_sensitivity)
        self.metrics: dict[str, Any] = {}
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.groups: list[str] = []
        self.images: list[np.ndarray] = []
        self.films: list[tuple[str, tuple[float, float, float, float]] | None] = []

    def attach(self, engine: Engine) -> None:
        """Collect on every iteration of ``engine`` and report when it completes."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _collect(self, engine: Engine) -> None:
        # MONAI's evaluator leaves the decollated items of the iteration here (ignite annotates both
        # attributes as an int)
        output = cast(list[dict[str, Any]], engine.state.output)
        batch: Any = engine.state.batch
        for item in output:
            self.probs.append(torch.as_tensor(item["pred"]).detach().float().cpu().numpy())
            label = torch.as_tensor(item["label"]).detach().cpu()
            self.labels.append(label.argmax().numpy() if label.numel() > 1 else label.reshape(()).numpy())
            self.images.append(torch.as_tensor(item["image"]).detach().float().cpu().numpy()[0])
            self.films.append(_film_of(item["image"]))
        # MONAI engines decollate the batch after each iteration: a list of items; else a collated dict
        if isinstance(batch, dict):
            ids = list(batch.get("patient_id") or [""] * len(output))
        else:
            ids = [item.get("patient_id", "") if isinstance(item, dict) else "" for item in batch]
        self.groups.extend(str(i) for i in ids)

    def _report(self, engine: Engine) -> None:
        from pneumonia_monai.evaluation.report import write_report
        from pneumonia_monai.evaluation.threshold import choose_threshold

        y_true = np.asarray(self.labels, dtype=int)
        probs = np.stack(self.probs)
        groups = np.asarray(self.groups) if all(self.groups) else None
        images = np.stack(self.images)
        network = engine.network  # type: ignore[attr-defined]
        device = next(network.parameters()).device

        def cam_of(i: int) -> np.ndarray:
            # the class inference explains: pneumonia, or the likelier pneumonia subtype
            target = explained_class(probs[i], self.class_names)
            return gradcam(network, torch.from_numpy(images[i])[None, None].to(device), class_index=target)

        prob_pneumonia = np.array([pneumonia_probability(p, self.class_names) for p in probs])
        y_pneumonia = (y_true > 0).astype(int)
        extra: dict[str, Any] = {}
        if 0 < y_pneumonia.sum() < y_pneumonia.size:
            choice = choose_threshold(y_pneumonia, prob_pneumonia, min_sensitivity=self.min_sensitivity)
            extra["operating_point_on_this_split"] = {
                "rule": choice.rule,
                "min_sensitivity": self.min_sensitivity,
                "threshold": choice.threshold,
                "sensitivity": choice.sensitivity,
                "specificity": choice.specificity,
            }
        films = [film for film in self.films if film is not None]  # drawn only when every film has one
        self.metrics = write_report(
            self.output_dir,
            y_true,
            probs,
            class_names=self.class_names,
            threshold=self.threshold,
            groups=groups,
            images=images,
            cams=cam_of,
            films=films if len(films) == len(self.films) else None,
            split_name=self.split_name,
            extra=extra,
            n_resamples=self.n_resamples,
            seed=self.seed,
        )
        logger.info("wrote the %s report (%d films) to %s", self.split_name, len(y_true), self.output_dir)
