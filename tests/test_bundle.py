"""The MONAI bundle: metadata, network in/out, export, properties, overrides and the card commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fire.parser
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.networks.nets import DenseNet121

SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"


def _configs(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / name) for name in names]


def _workflow(bundle: Path, *names: str, workflow_type: str = "train", **override: object) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=_configs(bundle, *names),
        workflow_type=workflow_type,
        logging_file=False,
        **override,
    )
    workflow.initialize()
    return workflow


def _error_chain(exc: BaseException | None) -> list[str]:
    """The messages of ``exc`` and of its causes: the config parser wraps the component's error."""
    messages = []
    while exc is not None:
        messages.append(str(exc))
        exc = exc.__cause__
    return messages


def _small_tree(src: Path, dest: Path, per_class: int = 6) -> Path:
    for cls in ("NORMAL", "PNEUMONIA"):
        (dest / "train" / cls).mkdir(parents=True)
        for path in sorted((src / "train" / cls).glob("*.jpeg"))[:per_class]:
            shutil.copy(path, dest / "train" / cls / path.name)
    return dest


def _save_random_checkpoint(bundle: Path, num_classes: int = 2) -> Path:
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=num_classes)
    path = bundle / "models" / "model.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def test_verify_metadata_offline(tmp_path: Path, repo_root: Path) -> None:
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)  # present, so verify_metadata does not download it
    verify_metadata(meta_file=str(repo_root / "bundle/configs/metadata.json"), filepath=str(schema))
    meta = json.loads((repo_root / "bundle/configs/metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["channel_def"] == {"0": "image"}
    assert set(meta["network_data_format"]["outputs"]) == {"pred"}
    assert meta["version"] in meta["changelog"]
    broken = tmp_path / "broken.json"
    del meta["network_data_format"]
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network_data_format"):  # verify_metadata wraps the ValidationError
        verify_metadata(meta_file=str(broken), filepath=str(schema))


def test_metadata_matches_inference_config(repo_root: Path) -> None:
    meta = json.loads((repo_root / "bundle/configs/metadata.json").read_text())
    inference = json.loads((repo_root / "bundle/configs/inference.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == inference["spatial_size"]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == inference["num_classes"]
    assert (
        list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values())
        == inference["class_names"]
    )


def test_verify_net_in_out(repo_root: Path) -> None:
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(repo_root / "bundle/configs/metadata.json"),
        config_file=str(repo_root / "bundle/configs/inference.json"),
        bundle_root=str(repo_root / "bundle"),
    )


def test_ckpt_export_torchscript(bundle_copy: Path) -> None:
    ckpt = _save_random_checkpoint(bundle_copy)
    ts_path = bundle_copy / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(ckpt),
        meta_file=str(bundle_copy / "configs/metadata.json"),
        config_file=str(bundle_copy / "configs/inference.json"),
        bundle_root=str(bundle_copy),
    )
    scripted = torch.jit.load(str(ts_path))
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    net.eval()
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_bundle_properties(tmp_path: Path, repo_root: Path) -> None:
    bundle = repo_root / "bundle"
    train = _workflow(  # checking the properties builds the datalist and the handlers: outside the tree
        bundle,
        "train.json",
        dataset_dir=str(bundle / "sample_data/chest_xray"),
        output_dir=str(tmp_path / "runs"),
        ckpt_dir=str(tmp_path / "ckpt"),
    )
    assert train.check_properties() == []
    assert Path(train.parser.get_parsed_content("bundle_root")) == bundle.resolve()
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "device"):
        assert key in train.parser
    infer = ConfigParser()
    infer.read_config(_configs(bundle, "inference.json"))
    for key in (
        "network_def",
        "preprocessing",
        "postprocessing",
        "inferer",
        "device",
        "threshold",
        "class_names",
    ):
        assert key in infer, key  # the keys MONAI Deploy's and MONAI Label's loaders read


def test_multi_gpu_config_overlays_train(repo_root: Path) -> None:
    parser = ConfigParser()
    parser.read_config(_configs(repo_root / "bundle", "train.json", "multi_gpu_train.json"))
    assert parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["train"]["dataloader"]["sampler"] == "@train#sampler"
    assert parser["train"]["dataloader"]["shuffle"] is False
    assert parser["validate"]["dataloader"]["sampler"] == "@validate#sampler"
    assert "init_from_checkpoint(@network_def, @init_checkpoint)" in parser["network"]["module"]
    # everything else comes from train.json
    assert parser["network_def"]["_target_"] == "DenseNet121"
    assert "early_stop" in parser["validate"]


def test_override_dataset_dir_and_num_classes(tmp_path: Path, repo_root: Path, sample_tree: Path) -> None:
    tree = _small_tree(sample_tree, tmp_path / "tree", per_class=6)
    workflow = _workflow(
        repo_root / "bundle",
        "train.json",
        dataset_dir=str(tree),
        output_dir=str(tmp_path / "runs"),
        num_classes=3,
    )
    train = workflow.parser.get_parsed_content("train#dataset")
    val = workflow.parser.get_parsed_content("validate#dataset")
    assert len(train) + len(val) == 12
    assert all(str(tree) in item["image"] for item in train.data)
    labels = {item["label"] for item in train.data + val.data}
    assert labels == {0, 1, 2}  # normal, bacterial and viral: the three-class labels
    net = workflow.parser.get_parsed_content("network")
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64)).shape == (1, 3)
    assert json.loads((tmp_path / "runs" / "datalist.json").read_text())["training"]


def test_override_spatial_size_and_device(tmp_path: Path, repo_root: Path, sample_tree: Path) -> None:
    tree = _small_tree(sample_tree, tmp_path / "tree", per_class=4)
    common = {"dataset_dir": str(tree), "output_dir": str(tmp_path / "runs")}
    workflow = _workflow(repo_root / "bundle", "train.json", spatial_size=[48, 40], **common)
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape[1:]) == (1, 48, 40)
    workflow = _workflow(repo_root / "bundle", "train.json", device="cpu", **common)
    assert str(workflow.parser.get_parsed_content("train#trainer").state.device) == "cpu"
    if not torch.cuda.is_available():
        workflow = _workflow(repo_root / "bundle", "train.json", device="cuda:0", **common)
        with pytest.raises(RuntimeError) as info:
            workflow.parser.get_parsed_content("network")
        causes = _error_chain(info.value)
        assert any("cuda" in c.lower() for c in causes), causes  # the network really went to the device


def test_override_init_checkpoint_transfers_features(
    tmp_path: Path, repo_root: Path, sample_tree: Path
) -> None:
    tree = _small_tree(sample_tree, tmp_path / "tree", per_class=4)
    source = _save_random_checkpoint(tmp_path, num_classes=2)  # a two-class model, as shipped
    torch.save(
        {"model": torch.load(source, weights_only=True)}, tmp_path / "wrapped.pt"
    )  # CheckpointSaver's form
    common = {"dataset_dir": str(tree), "output_dir": str(tmp_path / "runs"), "num_classes": 3}
    src = torch.load(source, weights_only=True)
    for ckpt in (source, tmp_path / "wrapped.pt"):
        net = _workflow(
            repo_root / "bundle", "train.json", init_checkpoint=str(ckpt), **common
        ).parser.get_parsed_content("network")
        state = net.state_dict()
        features = [k for k in src if not k.startswith("class_layers.out.")]
        assert all(torch.equal(state[k], src[k]) for k in features)
        assert state["class_layers.out.weight"].shape == (3, 1024)  # the head is new, for three classes
    scratch = _workflow(repo_root / "bundle", "train.json", **common).parser.get_parsed_content("network")
    assert not torch.equal(scratch.state_dict()["features.conv0.weight"], src["features.conv0.weight"])
    workflow = _workflow(
        repo_root / "bundle", "train.json", init_checkpoint=str(tmp_path / "missing.pt"), **common
    )
    with pytest.raises(Exception) as info:
        workflow.parser.get_parsed_content("network")
    causes = _error_chain(info.value)
    assert any("missing.pt" in c and "does not exist" in c for c in causes), causes


def test_channels_last_follows_the_device_and_the_override(
    tmp_path: Path, repo_root: Path, sample_tree: Path
) -> None:
    tree = _small_tree(sample_tree, tmp_path / "tree", per_class=4)
    common = {"dataset_dir": str(tree), "output_dir": str(tmp_path / "runs")}
    default = _workflow(repo_root / "bundle", "train.json", **common).parser
    assert default.get_parsed_content("channels_last") is True  # CUDA (AMP) and CPU (bf16) alike
    for flag in (False, True):
        net = _workflow(
            repo_root / "bundle", "train.json", channels_last=flag, **common
        ).parser.get_parsed_content("network")
        weight = net.features.denseblock1.denselayer1.layers.conv2.weight  # (32, 128, 3, 3): not both formats
        assert weight.is_contiguous(memory_format=torch.channels_last) is flag
        with torch.no_grad():
            assert net(torch.rand(2, 1, 32, 32)).shape == (2, 2)


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 2])
def test_override_max_epochs(tmp_path: Path, repo_root: Path, sample_tree: Path, epochs: int) -> None:
    tree = _small_tree(sample_tree, tmp_path / "tree", per_class=5)
    workflow = _workflow(
        repo_root / "bundle",
        "train.json",
        dataset_dir=str(tree),
        output_dir=str(tmp_path / "runs"),
        ckpt_dir=str(tmp_path / "ckpt"),
        spatial_size=[32, 32],
        max_epochs=epochs,
    )
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == epochs
    assert (tmp_path / "ckpt" / "model.pt").is_file()
    workflow.finalize()


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_card_commands_verbatim(tmp_path: Path, bundle_copy: Path) -> None:
    """The model card's training and evaluation commands, verbatim, on the embedded sample.

    Run on a copy of the bundle and from another working directory: ``bundle_root`` follows the
    config file, not the current folder.
    """
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    train_cfg = str(bundle_copy / "configs" / "train.json")
    result = _run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", train_cfg], elsewhere
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (bundle_copy / "models" / "model.pt").is_file()
    assert list((bundle_copy / "runs").glob("events.out.tfevents.*")), "no TensorBoard events"
    datalist = json.loads((bundle_copy / "runs" / "datalist.json").read_text())
    assert len(datalist["training"]) + len(datalist["validation"]) == 40
    assert "val_auc" in result.stdout + result.stderr
    assert not list(elsewhere.iterdir()), "the run wrote into the working directory"

    eval_cfg = str([train_cfg, str(bundle_copy / "configs" / "evaluate.json")])
    result = _run(
        [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", eval_cfg], elsewhere
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((bundle_copy / "eval" / "metrics.json").read_text())
    assert metrics["n"] == len(datalist["validation"])
    # intervals resample patients, not films
    assert metrics["n_groups"] == len({item["patient_id"] for item in datalist["validation"]})
    assert metrics["bootstrap"]["unit"] == "patient"
    assert (
        metrics["threshold"]["value"]
        == json.loads((bundle_copy / "configs/inference.json").read_text())["threshold"]
    )
    for figure in ("roc.png", "pr.png", "calibration.png", "confusion_matrix.png"):
        assert (bundle_copy / "eval" / figure).stat().st_size > 1000, figure


@pytest.mark.slow
def test_card_command_from_repository_root(tmp_path: Path, repo_root: Path) -> None:
    """``bundle/configs/train.json`` relative to the repository root, as the README types it."""
    result = _run(
        [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--config_file", "bundle/configs/train.json",
            "--max_epochs", "1", "--spatial_size", "[32,32]",
            "--ckpt_dir", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "runs"),
        ],
        repo_root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ckpt" / "model.pt").is_file()


def test_a_bare_false_on_the_command_line_is_refused_not_read_as_on(tmp_path: Path, repo_root: Path) -> None:
    """``--lung_crop false`` reaches the config as the string ``'false'``, which ``bool()`` reads as on."""
    result = _run(
        [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--config_file", "bundle/configs/train.json",
            "--max_epochs", "1", "--spatial_size", "[32,32]", "--lung_crop", "false",
            "--ckpt_dir", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "runs"),
        ],
        repo_root,
    )  # fmt: skip
    assert result.returncode != 0
    assert "lung_crop must be true or false, got 'false' (str)" in result.stderr
    assert "write --lung_crop True or --lung_crop False" in result.stderr
    assert not (tmp_path / "ckpt").exists()  # refused before any training
    # and the form the README gives is a bool to the parser MONAI's command line uses (Fire)
    assert fire.parser.DefaultParseValue("False") is False


@pytest.mark.slow
def test_bundle_inference_run_writes_class_probabilities(tmp_path: Path, bundle_copy: Path) -> None:
    """``run inference`` of inference.json: one row per film, the per-class softmax of each."""
    _save_random_checkpoint(bundle_copy)
    result = _run(
        [
            sys.executable, "-m", "monai.bundle", "run", "inference",
            "--config_file", str(bundle_copy / "configs" / "inference.json"),
            "--output_dir", str(tmp_path / "out"), "--spatial_size", "[48,48]",
        ],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    films = sorted((bundle_copy / "sample_data" / "chest_xray").rglob("*.jpeg"))
    assert sorted(Path(r.split(",")[0]).name for r in rows) == sorted(f.name for f in films)
    for row in rows:
        probs = [float(v) for v in row.split(",")[1:]]
        assert len(probs) == 2 and abs(sum(probs) - 1) < 1e-4


def test_one_version_for_package_and_bundle(repo_root: Path) -> None:
    import pneumonia_monai

    meta = json.loads((repo_root / "bundle/configs/metadata.json").read_text())
    assert pneumonia_monai.__version__ == meta["version"]
    assert meta["required_packages_version"]["pneumonia-monai"] == meta["version"]
