"""Fixtures shared by the test modules: where the repository, the bundle and its sample data are."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.networks.nets import DenseNet121
from node_helpers import NODE_AET
from repo_paths import BUNDLE, REPO, SAMPLE_DICOM, SAMPLE_TREE

from pneumonia_monai.devtools.netns import NamespaceUnavailableError
from pneumonia_monai.devtools.orthanc import OrthancServer
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.node.config import NodeConfig, StowDestination
from pneumonia_monai.node.service import DicomNode

#: repo_guard: the session fails if it wrote into the repository tree; pytester: tests of that plugin.
pytest_plugins = ["pytester", "repo_guard"]


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


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    """The sample DICOM studies (``bundle/sample_data/dicom``: CR/DX films, a lateral, an RLE film...)."""
    return SAMPLE_DICOM


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> InferenceBundle:
    """The shipped bundle, loaded on the CPU; where no model is shipped, a copy with seeded random weights."""
    root = BUNDLE
    if not (root / "models" / "model.pt").is_file():
        root = tmp_path_factory.mktemp("bundle") / "bundle"
        shutil.copytree(BUNDLE / "configs", root / "configs")
        (root / "models").mkdir()
        torch.manual_seed(0)
        torch.save(
            DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(),
            root / "models" / "model.pt",
        )
    return load_bundle(root, device="cpu")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's configs with a 64x64 input and a seeded random DenseNet121 checkpoint (fast to run)."""
    root = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    shutil.copytree(BUNDLE / "configs", root / "configs")
    config_path = root / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["spatial_size"] = [64, 64]
    config_path.write_text(json.dumps(config, indent=2))
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(
        DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), root / "models" / "model.pt"
    )
    return root


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


# ------------------------------------------------------------------------------------- DICOM node


@pytest.fixture
def node_defaults() -> dict[str, Any]:
    """What ``start_node`` gives a node unless the call says otherwise; a node test module overrides it.

    Keys: ``processor`` and ``destination`` (factories of the node's processor and destination
    doubles, required), ``drain_timeout`` (of the stop at teardown, default 30 s), and any
    :class:`NodeConfig` value (``stable_seconds``...).
    """
    pytest.fail("a module using start_node defines node_defaults (its processor and destination doubles)")


@pytest.fixture
def start_node(tmp_path: Path, node_defaults: dict[str, Any]) -> Iterator[Callable[..., DicomNode]]:
    """Start a :class:`DicomNode` on a free loopback port, working in ``tmp_path``; each is stopped after.

    ``start(processor=None, destination=None, work_dir=None, transfer_syntaxes=None, **config)``.
    """
    defaults = dict(node_defaults)
    make_processor, make_destination = defaults.pop("processor"), defaults.pop("destination")
    drain_timeout = defaults.pop("drain_timeout", 30)
    nodes: list[DicomNode] = []

    def start(
        processor: Any = None,
        destination: Any = None,
        work_dir: Path | None = None,
        transfer_syntaxes: list[str] | None = None,
        **overrides: Any,
    ) -> DicomNode:
        values = {
            "work_dir": work_dir or tmp_path / f"work{len(nodes)}",
            "destination": StowDestination("http://127.0.0.1:9/dicom-web"),
            "ae_title": NODE_AET,
            "port": 0,
            "stable_seconds": 0.5,
            "retry_backoff_seconds": 0.01,
            **defaults,
            **overrides,
        }
        node = DicomNode(
            NodeConfig(**values),
            processor=processor or make_processor(),
            destination=destination or make_destination(),
            poll_interval=0.05,
            transfer_syntaxes=transfer_syntaxes,
        )
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(association_grace=2, drain_timeout=drain_timeout)


# ------------------------------------------------------------------------- optional environments

#: ``make test-deploy`` and ``make test-label`` set it (``deploy``, ``label``, a comma list, or ``1`` for
#: all): there a missing optional environment fails the tests instead of skipping them.
REQUIRE_OPTIONAL_ENVS = "PNEUMONIA_MONAI_REQUIRE_OPTIONAL_ENVS"
#: Per optional environment: its folder, the variable naming another interpreter, its make targets.
OPTIONAL_ENVS = {
    "deploy": (".venv-deploy", "PNEUMONIA_MONAI_DEPLOY_PYTHON", "deploy-env", "test-deploy"),
    "label": (".venv-label", "PNEUMONIA_MONAI_LABEL_PYTHON", "label-env", "test-label"),
}


def optional_python(kind: str) -> Path:
    """The interpreter of optional environment ``kind``; skip, saying why and how to run, where it is missing.

    The skip reason names the missing interpreter, the make target that builds the environment and the
    one that runs these tests in it; under :data:`REQUIRE_OPTIONAL_ENVS` (CI) it is a failure instead.
    """
    folder, variable, build, run = OPTIONAL_ENVS[kind]
    python = Path(os.environ.get(variable) or REPO / folder / "bin" / "python")
    if python.is_file() and os.access(python, os.X_OK):
        return python
    message = (
        f"optional environment {kind!r} not built: no {python} (`make {build}` builds it; "
        f"`make {run}` builds it and runs these tests in it; {variable} names another interpreter)"
    )
    required = {v.strip() for v in os.environ.get(REQUIRE_OPTIONAL_ENVS, "").split(",")}
    if "1" in required or kind in required:
        pytest.fail(f"{message}, and {REQUIRE_OPTIONAL_ENVS} requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def deploy_python() -> Path:
    """The MONAI Deploy App SDK environment's interpreter (``.venv-deploy``)."""
    return optional_python("deploy")


@pytest.fixture(scope="session")
def label_python() -> Path:
    """The MONAI Label environment's interpreter (``.venv-label``)."""
    return optional_python("label")
