"""The pneumonia bundle as a MONAI Label classification task."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.decision import (
    NORMAL_CLASS,
    SOP_INSTANCE_UID_KEY,
    ResolveChestFilmd,
    classification_result,
)
from pneumonia_monai.engine import bundle_config
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle

logger = logging.getLogger(__name__)


class PneumoniaInferTask(BundleInferTask):
    """MONAI Label's bundle task, as a classifier that returns the bundle's thresholded decision.

    MONAI Label's :class:`~monailabel.tasks.infer.bundle.BundleInferTask` reads the bundle's
    ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``; this task changes:

    - the type is classification, given explicitly (MONAI Label infers it from the bundle folder's
      *name*, which must contain "classification" otherwise);
    - no ``Restored`` post-transform (it restores a segmentation mask to the image's geometry);
    - a series folder (what the DICOMweb datastore downloads) is resolved to its chest frontal CR/DX
      film before the bundle's preprocessing, which reads one file;
    - the network is the one :func:`pneumonia_monai.inference.bundle.load_bundle` loads, run through
      its forward (:meth:`~pneumonia_monai.inference.bundle.InferenceBundle.logits`: the bundle's
      ``inferer`` with its precision rule, ``amp``), as ``infer``, the node and the Deploy app run it;
      the operating threshold is read by :func:`pneumonia_monai.engine.bundle_config.read_operating_point`;
    - the result carries the bundle's decision at its operating threshold
      (:func:`lib.decision.classification_result`), beside MONAI Label's per-class scores.

    Args:
        bundle_root: the bundle folder (``configs/inference.json``, ``configs/metadata.json``,
            ``models/model.pt``).
        conf: the app's configuration (``preload``).

    Raises:
        ValueError: if MONAI Label cannot use the bundle (no config or no checkpoint: it logs why), or
            the bundle's ``threshold`` / ``class_names`` are invalid.
    """

    def __init__(self, bundle_root: str | Path, conf: Mapping[str, str]) -> None:
        bundle_root = Path(bundle_root).resolve()
        super().__init__(
            str(bundle_root),
            dict(conf),
            type=InferType.CLASSIFICATION,
            add_post_restore=False,
            load_strict=True,
        )
        if not self.is_valid():
            raise ValueError(f"MONAI Label cannot load the bundle at {bundle_root} (see the log for why)")
        self.bundle_root = bundle_root
        self.threshold = bundle_config.read_operating_point(bundle_root).threshold
        self.class_names = [str(c) for c in self.bundle_config.get_parsed_content("class_names")]
        self._loaded: dict[str, InferenceBundle] = {}
        if NORMAL_CLASS not in self.class_names:
            raise ValueError(
                f"the bundle's class_names must include {NORMAL_CLASS!r}, got {self.class_names}"
            )

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        """A series folder is resolved to its film, then the bundle's own preprocessing runs."""
        return [ResolveChestFilmd(keys=self.key_image), *super().pre_transforms(data)]

    def loaded_bundle(self, device: str) -> InferenceBundle:
        """The bundle loaded by the package's loader for ``device`` (``"cpu"``, ``"cuda"``), once."""
        if device not in self._loaded:
            self._loaded[device] = load_bundle(self.bundle_root, device=device)
        return self._loaded[device]

    def run_inferer(
        self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda"
    ) -> dict[str, Any]:
        """The loaded bundle's forward on the preprocessed image: its logits under the output key."""
        image = torch.as_tensor(data[self.input_key]).as_subclass(torch.Tensor)
        logits = self.loaded_bundle(device).logits(image[None] if convert_to_batch else image)
        data[self.output_label_key] = logits[0] if convert_to_batch else logits
        return data

    def writer(
        self, data: dict[str, Any], extension: str | None = None, dtype: Any = None
    ) -> tuple[Any, Any]:
        """MONAI Label's classification result plus the bundle's decision at its operating threshold."""
        _, result = super().writer(data, extension, dtype)
        result.update(classification_result(data[self.output_label_key], self.class_names, self.threshold))
        if data.get(SOP_INSTANCE_UID_KEY):
            result[SOP_INSTANCE_UID_KEY] = str(data[SOP_INSTANCE_UID_KEY])
        return None, result
