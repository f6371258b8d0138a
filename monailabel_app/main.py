r"""MONAI Label app: the pneumonia bundle as a classification model, on a local folder or a DICOMweb server.

Start it (in the environment of ``scripts/make_optional_env.sh label``)::

    .venv-label/bin/python -m monailabel.main start_server --app monailabel_app \\
        --studies http://127.0.0.1:8042/dicom-web --conf bundle /path/to/bundle --host 127.0.0.1

then ``POST /infer/pneumonia?image=<Series Instance UID>`` (DICOMweb) or ``?image=<image id>`` (local
folder of ``.dcm`` / ``.jpeg`` / ``.png`` films). The answer's ``params`` hold the class probabilities
(``prediction``, MONAI Label's classification format), and the bundle's decision: ``label``
(``"pneumonia"`` when ``prob_pneumonia >= threshold``, else ``"normal"``), ``prob_pneumonia``,
``threshold`` and, for a series, the SOP Instance UID of the film classified.

The task (:class:`lib.infers.pneumonia.PneumoniaInferTask`) is MONAI Label's own bundle task, made a
classifier that returns the bundle's thresholded decision.

Configuration (``--conf KEY VALUE``): ``bundle`` (default: ``PNEUMONIA_MONAI_BUNDLE`` or the source
checkout's ``bundle/``), ``dicomweb_search_filter`` (JSON QIDO filter for the series listed from a
DICOMweb server, default ``{}``), ``preload`` (load the network at start).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lib.infers.pneumonia import PneumoniaInferTask
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask

from pneumonia_monai.engine import bundle_config
from pneumonia_monai.engine.paths import default_bundle

logger = logging.getLogger(__name__)

#: Name of the inference task (``POST /infer/<name>``).
TASK_NAME = "pneumonia"
#: Files listed by the local-folder datastore.
FILE_EXTENSIONS: tuple[str, ...] = ("*.dcm", "*.jpeg", "*.jpg", "*.png")


def _bundle_root(conf: Mapping[str, str]) -> Path:
    configured = conf.get("bundle")
    root = Path(configured) if configured else default_bundle()
    if not (root / "configs" / "inference.json").is_file():
        raise ValueError(
            f"--conf bundle must name a bundle folder (configs/inference.json), got {str(root)!r}"
        )
    return root.resolve()


class PneumoniaApp(MONAILabelApp):
    """MONAI Label app serving the pneumonia bundle's classification.

    Args:
        app_dir: this folder (MONAI Label passes it).
        studies: a local folder of films, or a DICOMweb URL (``http(s)://.../dicom-web``).
        conf: ``--conf`` values (see the module docstring).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        self.bundle_root = _bundle_root(conf)
        version = bundle_config.model_version(bundle_config.read_metadata(self.bundle_root))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="pneumonia_monai",
            description="Pediatric chest X-ray pneumonia classification (research use, not for diagnosis)",
            version=version,
        )

    def init_datastore(self) -> Datastore:
        """A local folder lists DICOM and raster films; a URL is a DICOMweb server.

        The local datastore is MONAI Label's, reconciled with the folder at start (it writes its
        ``datastore_v2.json`` and ``labels/`` folders there; this app writes no label). Its
        ``read_only=True`` skips that reconcile, so it would list no image at all.
        """
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return LocalDatastore(self.studies, extensions=list(FILE_EXTENSIONS), auto_reload=False)

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's ``infer``, refusing an image id that is neither a path nor in the datastore.

        MONAI Label resolves an unknown id to ``""``, which is the working folder: the task would
        classify whatever film it found there.

        Raises:
            MONAILabelException: ``INVALID_INPUT``, naming the id, if it is unknown.
        """
        image = request.get("image")
        if isinstance(image, str) and (not image.strip() or not Path(image).exists()):
            store = datastore if datastore is not None else self.datastore()
            if not image.strip() or not store.get_image_uri(image):
                raise MONAILabelException(
                    MONAILabelError.INVALID_INPUT,
                    f"unknown image id {image!r}: not a file and not in the datastore {self.studies}",
                )
        return super().infer(request, datastore)

    def _init_dicomweb_datastore(self) -> Datastore:
        """DICOMweb without NIfTI conversion (the bundle reads the DICOM film) and without dcmqi download.

        MONAI Label's own version downloads the dcmqi tools (for DICOM SEG, not used by a classifier)
        from the internet and converts each series to NIfTI, which would bypass the DICOM pipeline.
        """
        try:
            search_filter = json.loads(self.conf.get("dicomweb_search_filter", "{}"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"dicomweb_search_filter must be a JSON object: {exc}") from exc
        if not isinstance(search_filter, dict):
            raise ValueError(f"dicomweb_search_filter must be a JSON object, got {search_filter!r}")
        logger.info("DICOMweb datastore %s (series filter %s)", self.studies, search_filter)
        client = DICOMwebClientX(url=self.studies)
        cache = self.conf.get("dicomweb_cache_path") or None
        return DICOMWebDatastore(
            client=client, search_filter=search_filter, cache_path=cache, convert_to_nifti=False
        )

    def init_infers(self) -> dict[str, InferTask]:
        """One task: the bundle's classification."""
        return {TASK_NAME: PneumoniaInferTask(self.bundle_root, self.conf)}

    def init_trainers(self) -> dict[str, Any]:
        """No training from MONAI Label: the bundle is trained with its own configs."""
        return {}
