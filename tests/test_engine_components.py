"""The typed components the bundle configs reference: loss weights, stored threshold, weight transfer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.nets import DenseNet121, ResNet

from pneumonia_monai.engine.checkpoint import load_network_state, network_state
from pneumonia_monai.engine.components import class_weights, init_from_checkpoint, stored_threshold


def test_class_weights_hand_computed() -> None:
    items = [{"label": 0}] * 1 + [{"label": 1}] * 3  # 1:3, like normal:pneumonia in Kermany
    weights = class_weights(items, 2)
    # inverse frequency 4/(2*1)=2 and 4/(2*3)=2/3, normalised to mean 1: 1.5 and 0.5
    assert torch.allclose(weights, torch.tensor([1.5, 0.5]))
    assert weights.dtype == torch.float32


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 0, 1], r"no training item of class\(es\) \[2\]"),
        ([0, 1, 3], "label 3 out of range for 3 classes"),
    ],
)
def test_class_weights_rejects(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        class_weights([{"label": v} for v in labels], 3)


@pytest.mark.parametrize("value", [1.5, -0.1, "0.5", None])
def test_stored_threshold_rejects(tmp_path: Path, value: object) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps({"threshold": value}))
    with pytest.raises(ValueError, match="'threshold' must be a number in"):
        stored_threshold(tmp_path)


def test_stored_threshold_reads_the_bundle(repo_root: Path) -> None:
    stored = json.loads((repo_root / "bundle/configs/inference.json").read_text())["threshold"]
    assert stored_threshold(repo_root / "bundle") == stored


def _densenet(num_classes: int, seed: int) -> DenseNet121:
    torch.manual_seed(seed)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=num_classes)


def test_init_from_checkpoint_none_leaves_the_network(tmp_path: Path) -> None:
    net = _densenet(3, seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert init_from_checkpoint(net, None) is net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_init_from_checkpoint_copies_all_but_the_head(tmp_path: Path) -> None:
    source = _densenet(2, seed=0)
    torch.save(source.state_dict(), tmp_path / "two.pt")
    net = _densenet(3, seed=1)
    head = net.state_dict()["class_layers.out.weight"].clone()
    init_from_checkpoint(net, tmp_path / "two.pt")
    state = net.state_dict()
    assert torch.equal(
        state["features.denseblock4.denselayer16.layers.conv2.weight"],
        source.state_dict()["features.denseblock4.denselayer16.layers.conv2.weight"],
    )
    assert torch.equal(
        state["class_layers.out.weight"], head
    )  # a 3-class head cannot come from a 2-class one


def test_init_from_checkpoint_rejects_another_architecture(tmp_path: Path) -> None:
    other = ResNet("basic", [1, 1, 1, 1], [1, 1, 1, 1], spatial_dims=2, n_input_channels=1, num_classes=2)
    torch.save(other.state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(ValueError, match=r"resnet\.pt.*not a checkpoint of this architecture"):
        init_from_checkpoint(_densenet(3, seed=0), tmp_path / "resnet.pt")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        init_from_checkpoint(_densenet(3, seed=0), tmp_path / "nowhere.pt")


@pytest.mark.parametrize("form", ["bare", "model", "network", "state_dict", "ddp"])
def test_network_state_reads_every_saved_form(tmp_path: Path, form: str) -> None:
    state = _densenet(2, seed=0).state_dict()
    if form == "ddp":
        saved: object = {f"module.{k}": v for k, v in state.items()}
    else:
        saved = state if form == "bare" else {form: state, "epoch": 7}
    torch.save(saved, tmp_path / "ckpt.pt")
    loaded = load_network_state(tmp_path / "ckpt.pt")
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("raw", [{}, {"model": {}}, {"epoch": 3}, [torch.zeros(1)], {"w": [1.0]}])
def test_network_state_rejects_what_is_not_a_state_dict(raw: object) -> None:
    with pytest.raises(ValueError, match=r"checkpoint here\.pt does not hold a state dict of tensors"):
        network_state(raw, "here.pt")


def test_stored_settings_follow_the_variant_overlay(tmp_path: Path) -> None:
    """Evaluation reads the temperature and threshold inference uses, the variant's overlay winning."""
    from pneumonia_monai.engine.components import stored_temperature

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "inference.json").write_text(json.dumps({"threshold": 0.4, "temperature": 1.5}))
    (configs / "inference_subtype.json").write_text(json.dumps({"threshold": 0.3, "temperature": 2.0}))
    assert (stored_threshold(tmp_path), stored_temperature(tmp_path)) == (0.4, 1.5)
    assert (stored_threshold(tmp_path, "subtype"), stored_temperature(tmp_path, "subtype")) == (0.3, 2.0)
    (configs / "inference.json").write_text(json.dumps({"threshold": 0.4}))
    assert stored_temperature(tmp_path) == 1.0  # no calibration stored: softmax as it is
    (configs / "inference.json").write_text(json.dumps({"threshold": 0.4, "temperature": -1}))
    with pytest.raises(ValueError, match="temperature"):
        stored_temperature(tmp_path)


def test_precise_batch_norm_re_estimates_running_statistics() -> None:
    """After re-estimation the running statistics are the plain mean and variance of the clean batches."""
    from pneumonia_monai.engine.components import PreciseBatchNorm, bn_subset

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1, bias=False), torch.nn.BatchNorm2d(3))
    net[1].running_mean.fill_(7.0)  # stale statistics, as after augmented training
    net.eval()
    batches = [{"image": torch.rand(4, 1, 5, 5) * 2.0 + 1.0} for _ in range(3)]
    PreciseBatchNorm(net, batches, "cpu")()
    with torch.no_grad():
        acts = torch.cat([net[0](b["image"]) for b in batches])
    mean = acts.mean(dim=(0, 2, 3))
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-5)
    assert not net.training and net[1].momentum == 0.1  # mode and momentum restored
    items = [{"image": str(i)} for i in range(10)]
    assert bn_subset(items, 4, seed=1) == bn_subset(items, 4, seed=1)
    assert len(bn_subset(items, 40)) == 10
    with pytest.raises(ValueError, match="size"):
        bn_subset(items, 0)
