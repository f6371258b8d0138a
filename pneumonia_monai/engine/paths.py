"""Where the bundle is: two questions, answered separately.

**Which bundle, when a command names none** (``infer`` and ``serve`` without ``--bundle``, MONAI Label
without ``--conf bundle``, the benchmark scripts): :func:`default_bundle`, the folder named by the
``PNEUMONIA_MONAI_BUNDLE`` environment variable (see the README), else the ``bundle/`` folder of the
source checkout the package runs from (:func:`shipped_bundle`).

**What ``bundle_root`` is inside a config** (``"bundle_root": "$bundle_paths.locate_bundle_root()"``):

1. ``--bundle_root DIR`` when given: ``python -m monai.bundle run ... --bundle_root DIR`` sets the key
   before any expression is evaluated, and so do the package's consumers (``load_bundle``, MONAI Deploy,
   MONAI Label set it to the folder they load);
2. otherwise the folder of the config file being run. MONAI's :class:`~monai.bundle.ConfigWorkflow`
   (what ``python -m monai.bundle run`` builds) records that folder as ``config_root_path`` but offers it
   to no expression, and the parser records no file name; model-zoo bundles therefore write
   ``"bundle_root": "."`` and must be started from inside the bundle. So that the model card's commands
   run verbatim from any folder, on the shipped bundle or a copy of it, :func:`running_workflow_bundle`
   asks the workflow: it is the nearest caller whose ``self`` is a ``ConfigWorkflow`` (the parser is
   evaluating that workflow's config), read with :func:`inspect.currentframe`. This is the one place the
   package looks at the call stack;
3. otherwise (a bare :class:`~monai.bundle.ConfigParser` that set no ``bundle_root``):
   :func:`shipped_bundle`.

The command line and the environment are never read for a config's ``bundle_root``: an argument that
merely *looks* like ``--config_file=...`` (a file of that name given to ``infer``, say) must not choose
which bundle, and so which code, runs.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable naming the default bundle of the commands (:func:`default_bundle`).
BUNDLE_ENV = "PNEUMONIA_MONAI_BUNDLE"


def _is_bundle(folder: Path) -> bool:
    return (folder / "configs" / "metadata.json").is_file()


def shipped_bundle() -> Path:
    """The ``bundle/`` folder beside the package in its source checkout (absolute; it may not exist)."""
    return (Path(__file__).resolve().parents[2] / "bundle").resolve()


def default_bundle() -> Path:
    """The bundle a command uses when it names none: ``$PNEUMONIA_MONAI_BUNDLE``, else :func:`shipped_bundle`.

    Raises:
        FileNotFoundError: if the folder chosen holds no ``configs/metadata.json``.
    """
    env = os.environ.get(BUNDLE_ENV)
    folder = Path(env).resolve() if env else shipped_bundle()
    if not _is_bundle(folder):
        source = f"${BUNDLE_ENV}" if env else "the source checkout"
        raise FileNotFoundError(
            f"no bundle at {folder} ({source}): name one (--bundle), or set {BUNDLE_ENV} to the folder "
            "holding configs/"
        )
    return folder


def running_workflow_bundle() -> Path | None:
    """The bundle of the :class:`~monai.bundle.ConfigWorkflow` on the call stack, if any.

    The bundle is the workflow's ``config_root_path`` (the folder of its first config file), or that
    folder's parent when it is called ``configs``. None when no workflow is running.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigWorkflow) and getattr(owner, "config_root_path", None) is not None:
                folder = Path(owner.config_root_path)
                return (folder.parent if folder.name == "configs" else folder).resolve()
            frame = frame.f_back
    finally:
        del frame
    return None


def locate_bundle_root() -> str:
    """Return ``bundle_root`` for a config that was given no ``--bundle_root`` (see the module docstring).

    The running :class:`~monai.bundle.ConfigWorkflow`'s bundle, else :func:`shipped_bundle`.

    Raises:
        FileNotFoundError: if that folder holds no ``configs/metadata.json``.
    """
    found = running_workflow_bundle()
    folder = found if found is not None else shipped_bundle()
    if not _is_bundle(folder):
        raise FileNotFoundError(f"no bundle at {folder}: pass --bundle_root, the folder holding configs/")
    logger.debug("bundle_root from %s: %s", "the ConfigWorkflow" if found else "the source checkout", folder)
    return str(folder)
