"""Import alias for ``pydicom._storage_sopclass_uids`` in the MONAI Label environment (``.venv-label``) only.

MONAI Label 0.8.5 imports pydicom-seg 0.4.1 at module level (``monailabel.datastore.utils.convert``),
and pydicom-seg does ``from pydicom._storage_sopclass_uids import SegmentationStorage``. pydicom 3
removed that private module; the same names (the storage SOP Class UIDs) are in :mod:`pydicom.uid`.
This module installs a meta path finder that answers that one module name with a module holding
pydicom.uid's UIDs, so the import works; nothing else is changed, and pydicom is not imported before
someone asks for that module.

It is installed into ``.venv-label`` by ``scripts/make_optional_env.sh label`` beside a
``pneumonia_label_compat.pth`` file (``import pneumonia_label_compat``) that runs it at interpreter
start-up. It is never imported by ``pneumonia_monai`` or in the main environment. Drop it once MONAI
Label ships a release without pydicom-seg (its main branch replaced it with highdicom, PR #1879).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: The module pydicom 3 removed, which this finder provides.
ALIASED = "pydicom._storage_sopclass_uids"


class _UidAliasLoader(importlib.abc.Loader):
    """Fill the alias module with every UID constant of :mod:`pydicom.uid`."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        import pydicom.uid

        names = [name for name, value in vars(pydicom.uid).items() if isinstance(value, pydicom.uid.UID)]
        for name in names:
            setattr(module, name, getattr(pydicom.uid, name))
        module.__all__ = names  # type: ignore[attr-defined]


class _UidAliasFinder(importlib.abc.MetaPathFinder):
    """Find :data:`ALIASED` (and nothing else)."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIASED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _UidAliasLoader(), origin=__file__)


def install() -> None:
    """Add the finder to :data:`sys.meta_path` (once); it comes last, so a real module would win."""
    if not any(isinstance(finder, _UidAliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_UidAliasFinder())


install()
