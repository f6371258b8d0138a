"""The MONAI Label app of ``monailabel_app/``.

Two parts:

- what needs no MONAI Label (``monailabel_app/lib/decision.py``: a DICOM series folder resolved to its
  chest frontal film, the thresholded decision) runs here, in the main environment;
- the task and the app run in the optional environment ``.venv-label`` (``make label-env``), as a
  subprocess with the app folder on ``PYTHONPATH`` (as ``monailabel start_server`` puts it). That
  environment has the registry's CUDA build of torch 2.13.0 (it runs on a CPU; the registry's
  torchvision 0.28.0, which MONAI Label imports, needs it) and an import alias for
  ``pydicom._storage_sopclass_uids`` (pydicom-seg 0.4.1, imported by MONAI Label 0.8.5, needs it;
  pydicom 3 removed it): see ``monailabel_app/README.md``. CI builds it (``make test-label``).

Where ``.venv-label`` is missing those two are skipped, and the reason says so and how to run them
(conftest's ``label_python``): ``make test-label`` builds it and runs them there, where a missing
environment fails instead (``PNEUMONIA_MONAI_REQUIRE_OPTIONAL_ENVS``; CI runs it).
``PNEUMONIA_MONAI_LABEL_PYTHON`` names another interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from bundle_reference import reference_probabilities
from dicom_factory import make_dx, make_sr
from monai.bundle import ConfigParser
from monai.networks.nets import DenseNet121
from PIL import Image
from repo_paths import BUNDLE, REPO, SAMPLE_TREE

APP_DIR = REPO / "monailabel_app"


def _load_decision() -> ModuleType:
    """Load ``monailabel_app/lib/decision.py`` (the app folder is not a package of this repository)."""
    spec = importlib.util.spec_from_file_location("monailabel_app_decision", APP_DIR / "lib" / "decision.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


decision = _load_decision()


def _film(kind: str, index: int = 0) -> np.ndarray:
    path = sorted((SAMPLE_TREE / "train" / kind).glob("*.jpeg"))[index]
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


# ------------------------------------------------------------------------------ main environment


def test_series_folder_resolves_to_its_chest_frontal_film(tmp_path: Path) -> None:
    series = tmp_path / "series"
    lateral = make_dx(series / "a_lateral.dcm", view="LL")
    pa = make_dx(
        series / "b_pa.dcm",
        view="PA",
        StudyInstanceUID=lateral.StudyInstanceUID,
        SeriesInstanceUID=lateral.SeriesInstanceUID,
    )
    make_sr(series / "c_report.dcm", StudyInstanceUID=lateral.StudyInstanceUID)
    resolve = decision.ResolveChestFilmd(keys="image")
    out = resolve({"image": str(series), "other": 1})
    assert out["image"] == str(series / "b_pa.dcm")
    assert out[decision.SOP_INSTANCE_UID_KEY] == str(pa.SOPInstanceUID)
    assert out["other"] == 1
    # A file is left as it is, with no SOP Instance UID added.
    single = resolve({"image": str(series / "a_lateral.dcm")})
    assert single == {"image": str(series / "a_lateral.dcm")}


def test_series_folder_without_frontal_film_names_the_reasons(tmp_path: Path) -> None:
    make_dx(tmp_path / "series" / "lat.dcm", view="LL")
    with pytest.raises(ValueError, match=r"no chest frontal CR/DX film .*lateral view \(ViewPosition=LL\)"):
        decision.ResolveChestFilmd(keys="image")({"image": str(tmp_path / "series")})
    with pytest.raises(TypeError, match="rules must be SelectionRules"):
        decision.ResolveChestFilmd(keys="image", rules={"modalities": ["CR"]})


def test_classification_result_applies_the_threshold_inclusively() -> None:
    names = ["normal", "pneumonia"]
    at = decision.classification_result([0.3, 0.7], names, 0.7)
    assert at["label"] == "pneumonia"
    assert at["prob_pneumonia"] == pytest.approx(0.7)
    assert at["probabilities"] == {"normal": pytest.approx(0.3), "pneumonia": pytest.approx(0.7)}
    assert decision.classification_result([0.31, 0.69], names, 0.7)["label"] == "normal"
    # Three classes: pneumonia is bacterial + viral = 1 - p(normal).
    three = decision.classification_result([0.5, 0.3, 0.2], ["normal", "bacterial", "viral"], 0.45)
    assert three["label"] == "pneumonia"
    assert three["prob_pneumonia"] == pytest.approx(0.5)
    assert three["threshold"] == 0.45


@pytest.mark.parametrize(
    ("probs", "names", "threshold", "message"),
    [
        ([0.5, 0.5], ["normal"], 0.5, "2 outputs for the classes"),
        ([0.5, 0.5], ["healthy", "pneumonia"], 0.5, "must include 'normal'"),
        ([0.9, 0.9], ["normal", "pneumonia"], 0.5, "not probabilities"),
        ([0.5, 0.5], ["normal", "pneumonia"], 1.5, r"'threshold' must be a number in \[0, 1\], got 1.5"),
        ([0.5, 0.5], ["normal", "pneumonia"], True, "'threshold' must be a number"),
    ],
)
def test_classification_result_rejects_bad_values(probs, names, threshold, message) -> None:
    with pytest.raises(ValueError, match=message):
        decision.classification_result(probs, names, threshold)


# -------------------------------------------------------------------------- optional environment


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's configs with a seeded random DenseNet121 checkpoint."""
    dest = tmp_path_factory.mktemp("label") / "bundle"
    shutil.copytree(BUNDLE / "configs", dest / "configs")
    (dest / "models").mkdir()
    torch.manual_seed(7)
    torch.save(
        DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), dest / "models" / "model.pt"
    )
    return dest


def _run_in_label_env(python: Path, script: str, args: list[str], cwd: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(APP_DIR))
    result = subprocess.run(
        [str(python), "-c", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


TASK_SCRIPT = """
import json, sys
from lib.infers.pneumonia import PneumoniaInferTask
task = PneumoniaInferTask(sys.argv[1], {})
out = {}
for image in sys.argv[2:]:
    _, result = task({"image": image, "device": "cpu"})
    keys = ("label", "prob_pneumonia", "threshold", "sop_instance_uid", "prediction")
    out[image] = {k: result.get(k) for k in keys}
print(json.dumps(out))
"""

APP_SCRIPT = """
import json, sys
from main import PneumoniaApp
from monailabel.interfaces.exception import MONAILabelException
app = PneumoniaApp(sys.argv[1], sys.argv[2], {"bundle": sys.argv[3]})
out = {"images": {}, "unknown": {}}
for image in app.datastore().list_images():
    params = app.infer({"model": "pneumonia", "image": image, "device": "cpu"})["params"]
    out["images"][image] = {k: params.get(k) for k in ("label", "prob_pneumonia", "threshold")}
for image in ("no-such-image", ""):
    try:
        app.infer({"model": "pneumonia", "image": image, "device": "cpu"})
        out["unknown"][image] = "classified"
    except MONAILabelException as exc:
        out["unknown"][image] = f"{exc.error.name}: {exc.msg}"
print(json.dumps(out))
"""


@pytest.mark.slow
def test_task_classifies_dicom_film_series_and_jpeg(
    label_python: Path, random_bundle: Path, tmp_path: Path
) -> None:
    series = tmp_path / "series"
    lateral = make_dx(series / "lat.dcm", pixels=_film("PNEUMONIA"), bits_stored=8, view="LL")
    pa = make_dx(
        series / "pa.dcm",
        pixels=_film("PNEUMONIA"),
        bits_stored=8,
        StudyInstanceUID=lateral.StudyInstanceUID,
        SeriesInstanceUID=lateral.SeriesInstanceUID,
    )
    jpeg = sorted((SAMPLE_TREE / "train" / "NORMAL").glob("*.jpeg"))[0]
    out = _run_in_label_env(label_python, TASK_SCRIPT, [str(random_bundle), str(series), str(jpeg)], tmp_path)
    threshold = float(
        ConfigParser.load_config_file(str(random_bundle / "configs" / "inference.json"))["threshold"]
    )
    for image, film, sop_uid in (
        (str(series), series / "pa.dcm", str(pa.SOPInstanceUID)),
        (str(jpeg), jpeg, None),
    ):
        result = out[image]
        expected = float(reference_probabilities(random_bundle, film)[1])
        assert result["prob_pneumonia"] == pytest.approx(expected, abs=1e-5)
        assert result["threshold"] == threshold
        assert result["label"] == ("pneumonia" if expected >= threshold else "normal")
        assert result["sop_instance_uid"] == sop_uid
        assert {p["label"] for p in result["prediction"]} == {"normal", "pneumonia"}


@pytest.mark.slow
def test_app_infer_request_on_local_datastore(
    label_python: Path, random_bundle: Path, tmp_path: Path
) -> None:
    studies = tmp_path / "studies"
    make_dx(studies / "pa.dcm", pixels=_film("PNEUMONIA"), bits_stored=8)
    shutil.copy(sorted((SAMPLE_TREE / "train" / "NORMAL").glob("*.jpeg"))[0], studies / "normal.jpeg")
    # A film in the working folder, which an unknown id once resolved to and classified.
    cwd = tmp_path / "cwd"
    make_dx(cwd / "stray.dcm", pixels=_film("NORMAL"), bits_stored=8)
    out = _run_in_label_env(label_python, APP_SCRIPT, [str(APP_DIR), str(studies), str(random_bundle)], cwd)
    images = out["images"]
    assert set(images) == {"pa", "normal"}
    for image, film in (("pa", studies / "pa.dcm"), ("normal", studies / "normal.jpeg")):
        expected = float(reference_probabilities(random_bundle, film)[1])
        assert images[image]["prob_pneumonia"] == pytest.approx(expected, abs=1e-5)
        assert images[image]["label"] == ("pneumonia" if expected >= images[image]["threshold"] else "normal")
    assert out["unknown"] == {
        "no-such-image": f"INVALID_INPUT: unknown image id 'no-such-image': not a file and not in the "
        f"datastore {studies}",
        "": f"INVALID_INPUT: unknown image id '': not a file and not in the datastore {studies}",
    }


def test_an_empty_image_path_is_refused_not_the_working_folder_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dx(tmp_path / "stray.dcm", view="PA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'image' is an empty path \(an image id the datastore does not"):
        decision.ResolveChestFilmd(keys="image")({"image": ""})
