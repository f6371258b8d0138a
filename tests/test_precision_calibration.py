"""bf16 autocast on the CPU, temperature scaling fitted on validation and applied by the bundle."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121

from pneumonia_monai.engine.precision import AutocastInferer, cpu_has_native_bf16, resolve_precision
from pneumonia_monai.evaluation.calibration import fit_temperature, negative_log_likelihood, softmax_probs
from pneumonia_monai.inference.bundle import load_bundle
from pneumonia_monai.transforms import TemperatureScaled

NATIVE_BF16 = cpu_has_native_bf16()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    without = tmp_path / "b"
    without.write_text("processor: 0\nflags\t\t: fpu sse avx2\n")
    amx = tmp_path / "c"
    amx.write_text("flags : amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16(with_bf16) and cpu_has_native_bf16(amx)
    assert not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16(tmp_path / "missing")


def test_precision_resolution_says_what_runs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pneumonia_monai"):
        resolved = resolve_precision("auto", "cpu")
    assert resolved == ("bf16" if NATIVE_BF16 else "fp32")
    assert f"precision auto on cpu: {resolved}" in caplog.text
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")


@pytest.mark.skipif(
    not NATIVE_BF16, reason="this CPU has no avx512_bf16/amx_bf16: the bf16 path is not exercised"
)
def test_bf16_forward_is_bf16_inside_and_fp32_outside() -> None:
    torch.manual_seed(0)
    net = (
        DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        .eval()
        .to(memory_format=torch.channels_last)
    )
    x = torch.rand(2, 1, 64, 64)
    seen: list[torch.dtype] = []
    handle = net.features.conv0.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        with torch.no_grad():
            bf16 = AutocastInferer("cpu", "bf16", channels_last=True)(x, net)
            fp32 = AutocastInferer("cpu", "fp32")(x, net)
    finally:
        handle.remove()
    assert seen == [torch.bfloat16, torch.float32]  # the convolutions ran in bf16, then in fp32
    assert bf16.dtype == torch.float32 and fp32.dtype == torch.float32  # the loss and metrics see fp32
    p16, p32 = torch.softmax(bf16, 1), torch.softmax(fp32, 1)
    assert float((p16 - p32).abs().max()) < 0.05
    assert not torch.equal(bf16, fp32)


def test_temperature_fit_on_a_hand_computed_case() -> None:
    # four films with the same logit gap 2, three of them pneumonia: the NLL is least where
    # sigmoid(2 / T) = 3/4, i.e. T = 2 / ln 3
    logits = np.array([[0.0, 2.0]] * 4)
    labels = np.array([1, 1, 1, 0])
    assert fit_temperature(logits, labels) == pytest.approx(2.0 / math.log(3.0), rel=1e-5)
    probs = softmax_probs(logits, 2.0 / math.log(3.0))
    assert probs[:, 1] == pytest.approx([0.75] * 4)
    # over-confident logits (all right, gap 2) want T < 1; temperature scaling keeps the ranking
    assert fit_temperature(np.array([[0.0, 2.0], [2.0, 0.0]]), np.array([1, 0])) < 1.0
    assert negative_log_likelihood(logits, labels, 1.0) > negative_log_likelihood(logits, labels, 1.82)
    with pytest.raises(ValueError, match="labels must be"):
        fit_temperature(logits, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="logits must be"):
        fit_temperature(np.zeros(4), labels)


def test_temperature_transform_and_its_checks() -> None:
    out = TemperatureScaled("pred", temperature=2.0)({"pred": torch.tensor([2.0, -4.0])})
    torch.testing.assert_close(out["pred"], torch.tensor([1.0, -2.0]))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            TemperatureScaled("pred", temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        TemperatureScaled("pred", temperature=True)


def test_the_bundle_applies_its_stored_temperature(bundle_copy: Path, repo_root: Path) -> None:
    """Every consumer of the bundle's post-processing reports softmax(logits / temperature)."""
    (bundle_copy / "models" / "model.pt").write_bytes((repo_root / "bundle/models/model.pt").read_bytes())
    config_path = bundle_copy / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    assert config["postprocessing"]["transforms"][0]["_target_"].endswith("TemperatureScaled")
    config["temperature"] = 2.5
    config["logit_bias"] = [0.0, -1.5]
    config_path.write_text(json.dumps(config))
    bundle = load_bundle(bundle_copy, device="cpu")
    images = torch.rand(2, 1, *bundle.spatial_size)
    logits = bundle.logits(images)
    expected = torch.softmax(logits / 2.5 + torch.tensor([0.0, -1.5]), dim=1).double().numpy()
    np.testing.assert_allclose(bundle.predict(images), expected, atol=1e-6)
    config["temperature"] = 1.0
    config_path.write_text(json.dumps(config))
    assert load_bundle(bundle_copy, device="cpu").fingerprint != bundle.fingerprint


def test_bias_fit_on_a_hand_computed_case() -> None:
    """Class-weighted training biases the logits; the fitted offset undoes a pure prior shift."""
    from pneumonia_monai.evaluation.calibration import fit_temperature_and_bias

    # equal logits, three films of four pneumonia: softmax(z / T + b) = 3/4 needs b = ln 3 whatever T
    logits = np.zeros((4, 2))
    temperature, bias = fit_temperature_and_bias(logits, np.array([1, 1, 1, 0]))
    assert bias[0] == 0.0 and bias[1] == pytest.approx(math.log(3.0), abs=1e-4)
    assert softmax_probs(logits, temperature, bias)[:, 1] == pytest.approx([0.75] * 4, abs=1e-4)
    out = TemperatureScaled("pred", temperature=2.0, bias=[0.0, 1.0])({"pred": torch.tensor([2.0, 4.0])})
    torch.testing.assert_close(out["pred"], torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match="bias has 2 values"):
        TemperatureScaled("pred", bias=[0.0, 1.0])({"pred": torch.zeros(3)})
