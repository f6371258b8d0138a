"""Fixtures shared by the test modules: where the repository, the bundle and its sample data are."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pneumonia_monai.devtools.netns import NamespaceUnavailableError
from pneumonia_monai.devtools.orthanc import OrthancServer

#: repo_guard: the session fails if it wrote into the repository tree; pytester: tests of that plugin.
pytest_plugins = ["pytester", "repo_guard"]

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
SAMPLE_TREE = BUNDLE / "sample_data" / "chest_xray"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_tree() -> Path:
    """The embedded Kaggle-style sample: 40 real films of 36 patients."""
    return SAMPLE_TREE


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    return sorted(SAMPLE_TREE.rglob("*.jpeg"))


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A copy of the bundle (configs, docs, sample data; no checkpoints) in a temporary folder."""
    dest = tmp_path / "bundle"
    shutil.copytree(BUNDLE, dest, ignore=shutil.ignore_patterns("models", "runs", "eval", "datalist*.json"))
    (dest / "models").mkdir()
    return dest


@pytest.fixture(scope="session")
def start_orthanc() -> Callable[..., OrthancServer]:
    """Start a private :class:`OrthancServer` (use it with ``with``); skip where it cannot be isolated.

    Orthanc cannot listen on the loopback only, so it runs in a network namespace of its own; where
    this process may not create one (not root), the tests that need Orthanc are skipped, saying so.
    """

    def start(work_dir: Path, **options: Any) -> OrthancServer:
        try:
            return OrthancServer(work_dir, **options).start()
        except NamespaceUnavailableError as exc:
            pytest.skip(f"no private Orthanc: {exc}")

    return start
