"""Where the bundle is: ``bundle_root`` from the config file's location, not the working directory.

``python -m monai.bundle run training --config_file bundle/configs/train.json`` builds a
:class:`monai.bundle.ConfigWorkflow`, which knows the folder of its config files
(``config_root_path``) but does not offer it to the config's expressions. Model-zoo bundles therefore
set ``"bundle_root": "."`` and must be run from inside the bundle. :func:`locate_bundle_root` finds the
folder instead, so the card command works verbatim from the repository root or from anywhere else.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable that names the bundle folder explicitly.
BUNDLE_ENV = "PNEUMONIA_MONAI_BUNDLE"


def _bundle_of(config_dir: Path) -> Path:
    return config_dir.parent if config_dir.name == "configs" else config_dir


def _from_workflow() -> Path | None:
    """The ``config_root_path`` of a :class:`~monai.bundle.ConfigWorkflow` on the call stack."""
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigWorkflow) and getattr(owner, "config_root_path", None) is not None:
                return _bundle_of(Path(owner.config_root_path))
            frame = frame.f_back
    finally:
        del frame
    return None


def locate_bundle_root() -> str:
    """Return the absolute path of the bundle whose config is being parsed.

    Looked up in order: the ``config_root_path`` of the :class:`~monai.bundle.ConfigWorkflow` that is
    parsing the config; the ``PNEUMONIA_MONAI_BUNDLE`` environment variable; the ``bundle/`` folder of
    a source checkout. The command line is never read: an argument that merely *looks* like
    ``--config_file=...`` (a file of that name given to ``infer``, say) must not choose which bundle,
    and so which code, runs. Override it like any key
    (``--bundle_root /path/to/bundle``); MONAI Label and MONAI Deploy set it themselves.

    Raises:
        FileNotFoundError: if none of these names a folder with ``configs/metadata.json``.
    """
    here = Path(__file__).resolve().parents[2] / "bundle"
    env = os.environ.get(BUNDLE_ENV)
    for source, found in (
        ("ConfigWorkflow", _from_workflow()),
        (BUNDLE_ENV, Path(env) if env else None),
        ("source checkout", here),
    ):
        if found is not None and (found / "configs" / "metadata.json").is_file():
            logger.debug("bundle_root from %s: %s", source, found)
            return str(found.resolve())
    raise FileNotFoundError(
        f"cannot locate the bundle: pass --bundle_root, or set {BUNDLE_ENV} to the folder holding configs/"
    )
