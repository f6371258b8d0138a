"""Where the repository, the bundle and its sample data are: the one definition the tests use.

Test functions take conftest's fixtures (``repo_root``, ``sample_tree``, ``sample_dicom``...), which
return these. A module imports the constants (``from repo_paths import REPO``) only where no fixture can
reach: module-level helpers, parametrize lists, module-scoped data.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
#: The embedded Kaggle-style sample: 40 real films of 36 patients (train/{NORMAL,PNEUMONIA}).
SAMPLE_TREE = BUNDLE / "sample_data" / "chest_xray"
#: The sample DICOM studies made from real Kermany films by scripts/make_sample_dicom.py.
SAMPLE_DICOM = BUNDLE / "sample_data" / "dicom"
