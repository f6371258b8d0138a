"""The inference.json contract: one reader of the operating point, one loader, every key honoured."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
from monai.inferers import SimpleInferer
from monai.networks.nets import DenseNet121

from pneumonia_monai.engine import bundle_config
from pneumonia_monai.engine.bundle_config import BundleError, OperatingPoint
from pneumonia_monai.engine.precision import AutocastInferer
from pneumonia_monai.inference.bundle import load_bundle


def _small_bundle(bundle_copy: Path, **updates: object) -> Path:
    """The bundle copy with random weights at 32x32 (a fast load) and ``updates`` set in inference.json."""
    torch.manual_seed(0)
    torch.save(
        DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(),
        bundle_copy / "models/model.pt",
    )
    bundle_config.write_config_values(
        bundle_copy / "configs/inference.json", {"spatial_size": [32, 32], "reduced_decode": False, **updates}
    )
    return bundle_copy


def _channels_last(network: torch.nn.Module) -> bool:
    """Whether a 3x3 convolution's weights (64 or more channels in) are stored channels-last."""
    conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    return conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def _write(path: Path, config: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config), encoding="utf-8")


def test_operating_point_reads_threshold_temperature_and_bias(tmp_path: Path) -> None:
    _write(tmp_path / "configs/inference.json", {"threshold": 0.4, "class_names": ["normal", "pneumonia"]})
    assert bundle_config.read_operating_point(tmp_path) == OperatingPoint(0.4, 1.0, None)
    _write(
        tmp_path / "configs/inference_subtype.json",
        {"threshold": 0.3, "temperature": 2.0, "logit_bias": [0, 1, 2], "class_names": ["normal", "b", "v"]},
    )
    assert bundle_config.read_operating_point(tmp_path, "subtype") == OperatingPoint(
        0.3, 2.0, (0.0, 1.0, 2.0)
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "no 'threshold'"),
        ({"threshold": True}, r"'threshold' must be a number in \[0, 1\], got True"),
        ({"threshold": "$0.5"}, r"'threshold' must be a number in \[0, 1\], got '\$0.5'"),
        ({"threshold": 1.01}, "'threshold' must be a number"),
        ({"threshold": 0.5, "temperature": 0}, "temperature must be a finite number > 0"),
        ({"threshold": 0.5, "logit_bias": [0.0, float("inf")]}, "logit bias must hold finite numbers"),
        ({"threshold": 0.5, "logit_bias": [0.0, 1.0, 2.0]}, "one number per class"),
    ],
)
def test_operating_point_refuses_bad_values(tmp_path: Path, config: dict[str, object], message: str) -> None:
    _write(tmp_path / "configs/inference.json", {**config, "class_names": ["normal", "pneumonia"]})
    with pytest.raises(BundleError, match=message) as info:
        bundle_config.read_operating_point(tmp_path)
    assert "inference.json" in str(info.value)  # the message names the file


@pytest.mark.parametrize("variant", ["", "../x", "a" * 33, "sub type"])
def test_variant_names_are_checked(tmp_path: Path, variant: str) -> None:
    _write(tmp_path / "configs/inference.json", {"threshold": 0.5})
    with pytest.raises(BundleError, match="bundle variant must be"):
        bundle_config.read_inference_config(tmp_path, variant)


def test_model_version_is_refused_not_cut() -> None:
    assert bundle_config.model_version({"version": " 0.3.0 "}) == "0.3.0"
    for bad in ("9" * 65, "", "1\\2", None, 3):
        with pytest.raises(BundleError, match="'version' string of 1 to 64 characters"):
            bundle_config.model_version({"version": bad})
    assert bundle_config.model_name({"name": "x" * 65}) == bundle_config.DEFAULT_MODEL_NAME


def test_write_config_values_keeps_order_and_provenance(bundle_copy: Path) -> None:
    path = bundle_copy / "configs/inference.json"
    before = json.loads(path.read_text(encoding="utf-8"))
    bundle_config.write_config_values(path, {"threshold": 0.5, "threshold_rule": "a rule"})
    after = json.loads(path.read_text(encoding="utf-8"))
    assert list(after) == list(before)  # same keys, same order
    assert (after["threshold"], after["threshold_rule"]) == (0.5, "a rule")
    assert after["calibration"] == before["calibration"]
    assert {k: v for k, v in after.items() if k not in ("threshold", "threshold_rule")} == {
        k: v for k, v in before.items() if k not in ("threshold", "threshold_rule")
    }
    text = path.read_text(encoding="utf-8")
    with pytest.raises(BundleError, match="'threshold' must be a number"):
        bundle_config.write_config_values(path, {"threshold": 2})
    assert path.read_text(encoding="utf-8") == text  # a bad value never reaches the file
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_the_loader_builds_the_configs_inferer_on_the_cpu(bundle_copy: Path) -> None:
    loaded = load_bundle(_small_bundle(bundle_copy), device="cpu")
    assert isinstance(loaded.inferer, AutocastInferer)  # inference.json's inferer, not a loader default
    assert (loaded.inferer.device_type, loaded.inferer.precision, loaded.inferer.channels_last) == (
        "cpu",
        "fp32",  # the bundle's precision
        True,
    )
    assert loaded.amp is False  # amp is float16 on CUDA only
    assert _channels_last(loaded.network)


def test_the_loader_honours_another_inferer_and_amp(bundle_copy: Path) -> None:
    bundle = _small_bundle(bundle_copy, inferer={"_target_": "SimpleInferer"}, amp=True)
    loaded = load_bundle(bundle, device="cpu")
    assert type(loaded.inferer) is SimpleInferer
    assert not _channels_last(loaded.network)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = loaded.network(images)
    torch.testing.assert_close(loaded.logits(images), expected)
    bundle_config.write_config_values(bundle / "configs/inference.json", {"amp": "yes"})
    with pytest.raises(BundleError, match="'amp' must be true or false, got 'yes'"):
        load_bundle(bundle, device="cpu")


def test_the_loader_reads_reduced_decode_as_parsed_and_full_decode_turns_it_off(bundle_copy: Path) -> None:
    bundle = _small_bundle(bundle_copy)
    inference = bundle / "configs/inference.json"
    bundle_config.write_config_values(inference, {"reduced_decode": "$1 == 1"})  # an expression: True
    reduced, full = load_bundle(bundle, device="cpu"), load_bundle(bundle, device="cpu", full_decode=True)
    assert reduced.preprocessing.transforms[0].min_side is not None  # ChestXRayPreprocessd decodes reduced
    assert full.preprocessing.transforms[0].min_side is None
    assert reduced.fingerprint != full.fingerprint  # a full-decode run does not reuse reduced rows
    bundle_config.write_config_values(inference, {"reduced_decode": "false"})  # a string, not a bool
    with pytest.raises(BundleError, match="'reduced_decode' must be true or false, got 'false'"):
        load_bundle(bundle, device="cpu")


def test_the_loader_refuses_an_over_long_version(bundle_copy: Path) -> None:
    bundle = _small_bundle(bundle_copy)
    meta_path = bundle / "configs/metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["version"] = "1." + "0" * 70
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(BundleError, match="'version' string of 1 to 64 characters"):
        load_bundle(bundle, device="cpu")


def test_metadata_and_docs_quote_the_stored_threshold(repo_root: Path) -> None:
    """metadata.json and the READMEs copy the threshold: they must say what inference.json stores."""
    stored = bundle_config.read_operating_point(repo_root / "bundle").threshold
    meta = bundle_config.read_metadata(repo_root / "bundle")
    assert meta["eval_metrics"]["threshold"] == stored
    text = f"{stored:.6f}".rstrip("0")
    card = (repo_root / "bundle/docs/README.md").read_text(encoding="utf-8")
    assert f"**{text}**" in card
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    assert f"At the stored threshold {text} " in readme


def test_metadata_describes_the_networks_input_size(repo_root: Path) -> None:
    config = bundle_config.read_inference_config(repo_root / "bundle")
    rows, columns = config["spatial_size"]
    meta = bundle_config.read_metadata(repo_root / "bundle")
    assert f"resized to {rows}x{columns}" in meta["description"]
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [rows, columns]
    assert meta["training"]["spatial_size"] == [rows, columns]


def test_a_copied_bundle_reads_its_own_operating_point(bundle_copy: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle_copy, moved)
    bundle_config.write_config_values(moved / "configs/inference.json", {"threshold": 0.25})
    assert bundle_config.read_operating_point(moved).threshold == 0.25
    assert bundle_config.read_operating_point(bundle_copy).threshold != 0.25


def _script(repo_root: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", repo_root / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(path: Path, split: str = "validation", threshold: float = 0.61234567) -> Path:
    point = {"threshold": threshold, "min_sensitivity": 0.95, "sensitivity": 0.96, "specificity": 0.9}
    path.write_text(
        json.dumps({"split": split, "n": 12, "extra": {"operating_point_on_this_split": point}}),
        encoding="utf-8",
    )
    return path


def test_set_operating_point_edits_the_config_as_json(
    repo_root: Path, bundle_copy: Path, tmp_path: Path
) -> None:
    script = _script(repo_root, "set_operating_point")
    config = bundle_copy / "configs/inference.json"
    before = json.loads(config.read_text(encoding="utf-8"))
    assert script.main([str(_metrics(tmp_path / "m.json")), "--config", str(config)]) == 0
    after = json.loads(config.read_text(encoding="utf-8"))
    assert list(after) == list(before)
    assert after["threshold"] == 0.612346
    assert after["threshold_rule"].startswith("highest specificity with sensitivity >= 0.95")
    assert "sensitivity 0.9600, specificity 0.9000" in after["threshold_rule"]
    # the calibration and everything else untouched
    assert {k: v for k, v in after.items() if not k.startswith("threshold")} == {
        k: v for k, v in before.items() if not k.startswith("threshold")
    }


def test_set_operating_point_refuses_a_test_split_and_a_bad_threshold(
    repo_root: Path, bundle_copy: Path, tmp_path: Path
) -> None:
    script = _script(repo_root, "set_operating_point")
    config = bundle_copy / "configs/inference.json"
    text = config.read_text(encoding="utf-8")
    assert script.main([str(_metrics(tmp_path / "t.json", split="test")), "--config", str(config)]) == 2
    assert script.main([str(_metrics(tmp_path / "b.json", threshold=1.5)), "--config", str(config)]) == 2
    assert config.read_text(encoding="utf-8") == text


def test_one_version_for_the_package_the_bundle_and_the_deploy_app(repo_root: Path) -> None:
    """``__version__`` is metadata.json's; app.yaml says it; the Deploy app class takes ``__version__``."""
    import ast

    import yaml

    import pneumonia_monai

    version = bundle_config.model_version(bundle_config.read_metadata(repo_root / "bundle"))
    assert pneumonia_monai.__version__ == version
    app_yaml = yaml.safe_load((repo_root / "deploy/app.yaml").read_text(encoding="utf-8"))
    assert app_yaml["application"]["version"] == version
    tree = ast.parse((repo_root / "deploy/app.py").read_text(encoding="utf-8"))
    app = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "PneumoniaDeployApp")
    assigned = {
        t.id: ast.unparse(n.value)
        for n in app.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert assigned["version"] == "pneumonia_monai.__version__"


def test_bundle_root_follows_the_config_file_or_the_override(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy's config run by MONAI's ConfigWorkflow gets the copy; --bundle_root wins; no env var."""
    from monai.bundle import ConfigParser, ConfigWorkflow

    from pneumonia_monai.engine import paths

    monkeypatch.setenv(paths.BUNDLE_ENV, str(tmp_path / "not-read-for-configs"))
    config = str(bundle_copy / "configs" / "inference.json")
    workflow = ConfigWorkflow(config_file=config, workflow_type="infer", logging_file=False)
    workflow.initialize()
    # read as the workflow's property: evaluated by the workflow, as `monai.bundle run` evaluates it
    assert Path(workflow.bundle_root) == bundle_copy.resolve()
    other = tmp_path / "other"
    workflow = ConfigWorkflow(
        config_file=config, workflow_type="infer", logging_file=False, bundle_root=str(other)
    )
    workflow.initialize()
    assert workflow.bundle_root == str(other)
    parser = ConfigParser()  # no workflow, no override: the source checkout's bundle
    parser.read_config(config)
    assert Path(parser.get_parsed_content("bundle_root")) == paths.shipped_bundle()


def test_the_default_bundle_of_the_commands(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pneumonia_monai.engine import paths

    monkeypatch.delenv(paths.BUNDLE_ENV, raising=False)
    assert paths.default_bundle() == paths.shipped_bundle()
    monkeypatch.setenv(paths.BUNDLE_ENV, str(bundle_copy))
    assert paths.default_bundle() == bundle_copy.resolve()
    monkeypatch.setenv(paths.BUNDLE_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"\$PNEUMONIA_MONAI_BUNDLE"):
        paths.default_bundle()
