"""The MONAI Deploy application of ``deploy/``, run for real in its optional environment.

The SDK (Holoscan) lives in ``.venv-deploy`` (``make deploy-env``, i.e.
``scripts/make_optional_env.sh deploy``), never in the main environment. These tests run in the main
environment: they build the inputs (DICOM films made from the sample JPEGs, a bundle copy with seeded
random weights), run ``deploy/app.py`` with the optional environment's python as a subprocess, and
read its output back with pydicom / highdicom here.

Where the optional environment is missing they are skipped, and the reason says so and how to run
them (conftest's ``deploy_python``): ``make test-deploy`` builds it and runs them there, where a missing
environment fails instead (``PNEUMONIA_MONAI_REQUIRE_OPTIONAL_ENVS``; CI runs it).
``PNEUMONIA_MONAI_DEPLOY_PYTHON`` names another interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from bundle_reference import reference_probabilities
from dicom_factory import make_cr, make_dx
from monai.bundle import ConfigParser
from monai.networks.nets import DenseNet121
from PIL import Image
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage
from repo_paths import BUNDLE, REPO, SAMPLE_TREE

from pneumonia_monai.dicom.sr import ABSENT, OUTSIDE_INTENDED_USE, PNEUMONIA, PRESENT, PROB_PNEUMONIA

pytestmark = pytest.mark.slow

APP = REPO / "deploy" / "app.py"
#: SNOMED CT "Pneumonia", the finding of every measurement group.
PNEUMONIA_SCT = ("233604007", "SCT")


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's configs with a seeded random DenseNet121 checkpoint (the real model may not exist)."""
    dest = tmp_path_factory.mktemp("deploy") / "bundle"
    shutil.copytree(BUNDLE / "configs", dest / "configs")
    (dest / "models").mkdir()
    torch.manual_seed(20240611)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    return dest


def _film(kind: str, index: int = 0) -> np.ndarray:
    path = sorted((SAMPLE_TREE / "train" / kind).glob("*.jpeg"))[index]
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


def _run_app(python: Path, inputs: Path, output: Path, model: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The SDK's README: the CUDA 13 runtime of the nvidia-cuda-runtime wheel must be on LD_LIBRARY_PATH.
    venv = python.parent.parent
    libs = sorted(venv.glob("lib/python3*/site-packages/nvidia/cu13/lib"))
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libs[0]), env.get("LD_LIBRARY_PATH", "")]).rstrip(
            os.pathsep
        )
    env.pop("PNEUMONIA_MONAI_SELECTION_RULES", None)
    env["PNEUMONIA_MONAI_DEVICE"] = "cpu"
    return subprocess.run(
        [str(python), str(APP), "-i", str(inputs), "-o", str(output), "-m", str(model)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _codes(item: pydicom.Dataset) -> set[tuple[str, str]]:
    found = set()
    for keyword in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
        for code in item.get(keyword, []):
            found.add((str(code.CodeValue), str(code.CodingSchemeDesignator)))
    for child in item.get("ContentSequence", []):
        found |= _codes(child)
    return found


def _referenced_instances(item: pydicom.Dataset) -> set[str]:
    found = {str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedSOPSequence", [])}
    for child in item.get("ContentSequence", []):
        found |= _referenced_instances(child)
    return found


def _evidence_instances(ds: pydicom.Dataset) -> set[str]:
    return {
        str(instance.ReferencedSOPInstanceUID)
        for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }


def test_app_writes_pneumonia_sr_per_study(deploy_python: Path, random_bundle: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    # Study A: a DX For Presentation PA film (a real sample film) and a lateral film of the same study.
    pa = make_dx(inputs / "a" / "pa.dcm", pixels=_film("PNEUMONIA"), bits_stored=8, view="PA")
    lateral = make_dx(
        inputs / "a" / "lat.dcm",
        pixels=_film("PNEUMONIA"),
        bits_stored=8,
        view="LL",
        StudyInstanceUID=pa.StudyInstanceUID,
        PatientID=pa.PatientID,
        PatientName=pa.PatientName,
    )
    # Study B: a 12-bit CR MONOCHROME1 AP film (inverted polarity: the DICOM pipeline must undo it).
    normal = _film("NORMAL").astype(np.uint16) * 16
    # An adult's film (Patient's Age 062Y): outside the intended use, scored with a note in its SR.
    ap = make_cr(
        inputs / "b" / "ap.dcm",
        pixels=4095 - normal,
        bits_stored=12,
        photometric="MONOCHROME1",
        view="AP",
        PatientAge="062Y",
    )
    # Study C: an abdomen film only: no report.
    abdomen = make_dx(inputs / "c" / "abdomen.dcm", body_part="ABDOMEN")
    # Not DICOM: ignored by the loader.
    shutil.copy(sorted((SAMPLE_TREE / "train" / "NORMAL").glob("*.jpeg"))[1], inputs / "film.jpeg")

    output = tmp_path / "out"
    result = _run_app(deploy_python, inputs, output, random_bundle, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    reports = {
        str(ds.StudyInstanceUID): (path, ds)
        for path in output.glob("*.dcm")
        for ds in [pydicom.dcmread(path)]
    }
    assert set(reports) == {str(pa.StudyInstanceUID), str(ap.StudyInstanceUID)}
    assert str(abdomen.StudyInstanceUID) not in reports

    threshold = float(
        ConfigParser.load_config_file(str(random_bundle / "configs" / "inference.json"))["threshold"]
    )
    for source, film_path in ((pa, inputs / "a" / "pa.dcm"), (ap, inputs / "b" / "ap.dcm")):
        path, ds = reports[str(source.StudyInstanceUID)]
        assert ds.SOPClassUID == ComprehensiveSRStorage
        assert ds.Modality == "SR"
        assert ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        # References the selected instance only (never the lateral film), in the content and the evidence.
        assert _referenced_instances(ds) == {str(source.SOPInstanceUID)}
        assert _evidence_instances(ds) == {str(source.SOPInstanceUID)}
        assert PNEUMONIA_SCT in _codes(ds)
        assert str(lateral.SOPInstanceUID) not in _referenced_instances(ds)
        note = (OUTSIDE_INTENDED_USE.value, OUTSIDE_INTENDED_USE.scheme_designator)
        assert (note in _codes(ds)) == (source is ap)  # only the adult's film is outside the intended use

        report = hd.sr.srread(path)
        groups = report.content.get_image_measurement_groups()
        per_image = [g for g in groups if g.source_images]
        assert len(per_image) == 1
        group = per_image[0]
        assert group.source_images[0].referenced_sop_instance_uid == str(source.SOPInstanceUID)
        assert group.finding_type == PNEUMONIA
        (measurement,) = group.get_measurements(name=PROB_PNEUMONIA)
        assert measurement.unit == codes.UCUM.NoUnits
        expected = reference_probabilities(random_bundle, film_path)
        # The app's probability is the bundle's on the same file (the deploy env decodes it the same way).
        assert measurement.value == pytest.approx(expected[1], abs=1e-5)
        (evaluation,) = group.get_qualitative_evaluations(name=PNEUMONIA)
        assert evaluation.value == (PRESENT if expected[1] >= threshold else ABSENT)


def test_app_without_chest_frontal_film_writes_nothing(
    deploy_python: Path, random_bundle: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    make_dx(inputs / "lat.dcm", view="LL")
    make_dx(inputs / "processing.dcm", presentation_intent="FOR PROCESSING")
    output = tmp_path / "out"
    result = _run_app(deploy_python, inputs, output, random_bundle, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not list(output.glob("*.dcm"))
    assert "no chest frontal CR/DX film to classify" in result.stdout + result.stderr


def test_app_fails_on_missing_checkpoint(deploy_python: Path, random_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(random_bundle / "configs", bundle / "configs")
    inputs = tmp_path / "in"
    make_dx(inputs / "pa.dcm")
    result = _run_app(deploy_python, inputs, tmp_path / "out", bundle, tmp_path)
    assert result.returncode != 0
    # load_bundle's message, as infer gives it
    assert "not found (train the model, or point 'checkpoint' at one)" in result.stdout + result.stderr


def test_app_yaml_is_read_by_the_packager(deploy_python: Path) -> None:
    """``monai-deploy package`` reads app.yaml with holoscan-cli's ApplicationConfiguration."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from holoscan_cli.packager.config_reader import ApplicationConfiguration\n"
        "config = ApplicationConfiguration()\n"
        "config.read(Path(sys.argv[1]))\n"
        "print(json.dumps({'title': config.title(), 'version': config._get_version(type('P', (), "
        "{'version': None})()), 'resources': config._resource_object}))\n"
    )
    result = subprocess.run(
        [str(deploy_python), "-c", script, str(REPO / "deploy" / "app.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads(result.stdout.strip().splitlines()[-1])
    assert config["title"].startswith("pneumonia_monai")
    assert config["version"] == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    # The CPU option: no GPU required (holoscan run then checks for no NVIDIA Container Toolkit).
    assert config["resources"]["gpu"] == 0 and "gpuMemory" not in config["resources"]
    assert config["resources"]["cpu"] >= 1
    # The packager runs `python3 <app dir>`: the folder needs its __main__.py.
    assert (REPO / "deploy" / "__main__.py").is_file()


def test_one_packaging_command_everywhere() -> None:
    """README, deploy/README.md and app.yaml give one `monai-deploy package` command, of this version."""
    pattern = re.compile(r"(?:\.venv-deploy/bin/)?monai-deploy package (?!`)[^\n`]+")
    docs = [REPO / "README.md", REPO / "deploy" / "README.md", REPO / "deploy" / "app.yaml"]
    commands = [(doc.name, c.strip()) for doc in docs for c in pattern.findall(doc.read_text())]
    version = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    expected = (
        ".venv-deploy/bin/monai-deploy package deploy -c deploy/app.yaml -m bundle "
        f"-t pneumonia-monai-deploy:{version} --platform x86_64"
    )
    assert [name for name, _ in commands] == ["README.md", "README.md", "app.yaml"], commands
    assert {command for _, command in commands} == {expected}, commands
    for doc in (REPO / "README.md", REPO / "deploy" / "README.md"):
        text = doc.read_text()
        assert "Docker" in text and "network access" in text
