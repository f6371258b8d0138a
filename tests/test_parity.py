"""One pipeline: a film gives the same tensor and probability whatever its format.

Real Kermany films from the embedded sample are encoded as the JPEG itself, the converter's DICOM, a
MONOCHROME1 DICOM (inverted stored values), a 12-bit DICOM with Rescale Slope/Intercept and a window
(VOI LUT Function LINEAR and LINEAR_EXACT), and JPEG 2000 / RLE compressed DICOM. Each goes through the
bundle's own preprocessing and network (``load_bundle``, as ``infer`` does).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121
from PIL import Image
from pydicom import dcmread

from pneumonia_monai.dicom.convert import build_dx_dataset, encode_dataset
from pneumonia_monai.dicom.uids import derived_uid
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle

FILMS = [
    "NORMAL/IM-0236-0001.jpeg",
    "NORMAL/NORMAL2-IM-0408-0001.jpeg",
    "PNEUMONIA/person12_bacteria_46.jpeg",
    "PNEUMONIA/person409_virus_818.jpeg",
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> InferenceBundle:
    """The shipped bundle; where no model is shipped, a copy with seeded random weights."""
    root = repo_root / "bundle"
    if not (root / "models" / "model.pt").is_file():
        copy_root = tmp_path_factory.mktemp("bundle") / "bundle"
        shutil.copytree(root / "configs", copy_root / "configs")
        (copy_root / "models").mkdir()
        torch.manual_seed(0)
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        torch.save(net.state_dict(), copy_root / "models" / "model.pt")
        root = copy_root
    return load_bundle(root, device="cpu")


def _dx(grey: np.ndarray, name: str):
    return build_dx_dataset(
        grey,
        patient="PARITY",
        study_uid=derived_uid("parity study", name),
        series_uid=derived_uid("parity series", name),
        sop_uid=derived_uid("parity sop", name),
        instance_number=1,
    )


def _encodings(jpeg: Path, out: Path) -> dict[str, Path]:
    """Write the film in every encoding; return name -> file."""
    grey = np.asarray(Image.open(jpeg).convert("L"))
    files = {"jpeg": jpeg}
    plain = _dx(grey, jpeg.name)

    def save(name: str, ds, compression: str = "none") -> None:
        path = out / f"{name}.dcm"
        path.write_bytes(encode_dataset(copy.deepcopy(ds), compression))
        files[name] = path

    save("dicom", plain)
    save("jpeg2000", plain, "jpeg2000")
    save("rle", plain, "rle")

    mono1 = copy.deepcopy(plain)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    mono1.PixelData = (255 - grey).astype(np.uint8).tobytes()
    mono1.PresentationLUTShape = "INVERSE"  # what the DX Image Module requires with MONOCHROME1
    save("monochrome1", mono1)
    del mono1.PresentationLUTShape  # as in CR, which has no Presentation LUT Shape
    save("monochrome1_no_plut_shape", mono1)

    # 12-bit stored values s = 16 v + 8; Modality LUT: m = 0.5 s - 4 = 8 v; a window mapping m back to v / 255
    twelve = copy.deepcopy(plain)
    twelve.BitsAllocated, twelve.BitsStored, twelve.HighBit = 16, 12, 11
    twelve.PixelData = (grey.astype(np.uint16) * 16 + 8).tobytes()
    twelve.RescaleSlope, twelve.RescaleIntercept = 0.5, -4
    twelve.WindowCenter, twelve.WindowWidth, twelve.VOILUTFunction = 1020, 2040, "LINEAR_EXACT"
    save("12bit_linear_exact", twelve)
    twelve.WindowCenter, twelve.WindowWidth, twelve.VOILUTFunction = 1020.5, 2041, "LINEAR"
    save("12bit_linear", twelve)
    twelve.PhotometricInterpretation = "MONOCHROME1"
    twelve.PresentationLUTShape = "INVERSE"
    twelve.PixelData = ((255 - grey.astype(np.uint16)) * 16 + 8).tobytes()
    save("12bit_monochrome1_jpeg2000", twelve, "jpeg2000")
    return files


def _run(bundle: InferenceBundle, path: Path) -> tuple[torch.Tensor, float]:
    image = bundle.preprocessing({"image": str(path)})["image"].as_tensor()
    with torch.inference_mode():
        prob = torch.softmax(bundle.network(image[None].to(bundle.device)), dim=1)[0, 1]
    return image, float(prob)


@pytest.mark.parametrize("film", FILMS)
def test_same_tensor_and_probability_in_every_encoding(
    film: str, tmp_path: Path, sample_tree: Path, bundle: InferenceBundle
) -> None:
    files = _encodings(sample_tree / "train" / film, tmp_path)
    assert (
        dcmread(files["12bit_monochrome1_jpeg2000"]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    )
    reference, reference_prob = _run(bundle, files["jpeg"])
    for name, path in files.items():
        image, prob = _run(bundle, path)
        assert image.shape == reference.shape, name
        diff = float((image - reference).abs().max())
        assert diff <= 1 / 255, f"{name}: tensor differs from the JPEG's by {diff:.5f}"
        assert abs(prob - reference_prob) <= 0.01, f"{name}: p={prob:.4f} vs JPEG p={reference_prob:.4f}"


def test_a_uint8_cast_would_be_caught(tmp_path: Path, sample_tree: Path, bundle: InferenceBundle) -> None:
    """The check has teeth: the 12-bit film read the notebook way (uint8 cast) is far from the JPEG."""
    files = _encodings(sample_tree / "train" / FILMS[2], tmp_path)
    reference, _ = _run(bundle, files["jpeg"])
    naive = dcmread(files["12bit_linear"]).pixel_array.astype(np.uint8).astype(np.float32) / 255.0
    naive_path = tmp_path / "naive.png"
    Image.fromarray((naive * 255).astype(np.uint8)).save(naive_path)
    image, _ = _run(bundle, naive_path)
    assert float((image - reference).abs().max()) > 0.1


# ------------------------------------------------------------------------------ reduced decoding

#: Side of the hospital-size parity films: decoded at half size for the 224-pixel network (747 needed).
BIG = 1536


@pytest.fixture(scope="module")
def full_bundle(bundle: InferenceBundle) -> InferenceBundle:
    """The same bundle decoding every pixel (``infer --full-decode``), fp32 as the shipped config says."""
    return load_bundle(bundle.root, device="cpu", full_decode=True, precision="fp32")


def _big_encodings(jpeg: Path, out: Path) -> dict[str, Path]:
    """The film upscaled to BIG x BIG (as a JPEG), in every encoding, plus a JPEG Baseline DICOM."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    with Image.open(jpeg) as img:
        big = img.convert("L").resize((BIG, BIG), Image.Resampling.BICUBIC)
    big_jpeg = out / f"big_{jpeg.name}"
    big.save(big_jpeg, quality=95)
    files = _encodings(big_jpeg, out)
    ds = dcmread(files["dicom"])
    ds.PixelData = encapsulate([big_jpeg.read_bytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(out / "jpeg_baseline.dcm", enforce_file_format=True)
    files["jpeg_baseline_dicom"] = out / "jpeg_baseline.dcm"
    return files


def _probs(bundle: InferenceBundle, paths: list[Path]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """p(pneumonia) of films (one batch) and the shapes the films were decoded at."""
    images = [bundle.preprocessing({"image": str(path)})["image"] for path in paths]
    probs = bundle.predict(torch.stack([image.as_tensor() for image in images]))[:, 1]
    return probs, [tuple(image.meta["film_shape"]) for image in images]


def test_reduced_decoding_keeps_parity_in_every_encoding(
    tmp_path: Path, sample_tree: Path, bundle: InferenceBundle, full_bundle: InferenceBundle
) -> None:
    """Every reduced path (JPEG DCT scaling, JPEG 2000 level, block averages) gives the full decode's
    probability within 0.01, and each was really taken (the film is decoded at half its size)."""
    from pneumonia_monai.dicom.io import read_image
    from pneumonia_monai.dicom.reduced import min_decoded_side

    files = _big_encodings(sample_tree / "train" / FILMS[2], tmp_path)
    assert len(files) == 10
    names, paths = list(files), list(files.values())
    reduced, reduced_shapes = _probs(bundle, paths)
    full, full_shapes = _probs(full_bundle, paths)
    for name, p_reduced, p_full, r_shape, f_shape in zip(
        names, reduced, full, reduced_shapes, full_shapes, strict=True
    ):
        assert f_shape == (BIG, BIG) and r_shape == (BIG // 2, BIG // 2), (name, r_shape, f_shape)
        assert abs(p_reduced - p_full) <= 0.01, f"{name}: reduced p={p_reduced:.4f} vs full p={p_full:.4f}"
    side = min_decoded_side(bundle.spatial_size)
    for name in ("jpeg2000", "12bit_monochrome1_jpeg2000", "jpeg_baseline_dicom", "rle", "dicom"):
        image, meta = read_image(files[name], min_side=side)
        assert meta["reduction"] == 2 and image.shape == (BIG // 2, BIG // 2), name


@pytest.mark.parametrize("name", ["RG1_UNCI", "RG1_J2KR", "RG1_J2KI"])
def test_reduced_decoding_keeps_parity_on_a_real_cr(
    name: str, bundle: InferenceBundle, full_bundle: InferenceBundle
) -> None:
    """pydicom-data's RG1 (a 1,955 x 1,841 15-bit CR) uncompressed, JPEG 2000 lossless and lossy: the
    wavelet's low band and the block average both stay within 0.01 of the full decode."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(f"{name}.dcm", download=False)
    assert path is not None, f"{name} not found: install the test extra (pydicom-data)"
    (reduced,), (reduced_shape,) = _probs(bundle, [Path(path)])
    (full,), (full_shape,) = _probs(full_bundle, [Path(path)])
    assert abs(reduced_shape[0] - full_shape[0] / 2) <= 1, (reduced_shape, full_shape)
    assert abs(reduced - full) <= 0.01, f"{name}: reduced p={reduced:.4f} vs full p={full:.4f}"


# ---------------------------------------------------------------------------------- bf16 forward


def test_the_shipped_forward_keeps_parity_with_plain_fp32(
    tmp_path: Path, sample_tree: Path, bundle: InferenceBundle
) -> None:
    """The precision and layout the bundle runs in (channels-last, bf16 only where it kept parity) give
    the plain fp32 forward's probabilities within 0.01 on the parity films."""
    files = _encodings(sample_tree / "train" / FILMS[2], tmp_path)
    images = torch.stack(
        [bundle.preprocessing({"image": str(p)})["image"].as_tensor() for p in files.values()]
    )
    chosen = bundle.predict(images)
    plain = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    plain.load_state_dict(bundle.network.state_dict())
    with torch.inference_mode():
        reference = bundle.postprocess(plain.eval()(images))
    assert float(np.abs(chosen - reference).max()) <= 0.01


class _PrecisionSensitive(torch.nn.Module):
    """A stand-in network whose second logit moves by ``shift`` under CPU autocast (as bf16 error would)."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x.float().mean(dim=(1, 2, 3)) * self.scale
        second = base + (self.shift if torch.is_autocast_enabled("cpu") else 0.0)
        return torch.stack([torch.zeros_like(base), second], dim=1)


@pytest.mark.parametrize(("shift", "expected"), [(0.001, "bf16"), (0.5, "fp32")])
def test_bf16_runs_only_where_it_keeps_parity(
    shift: float, expected: str, bundle: InferenceBundle, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """On a CPU with native bf16, ``auto`` keeps bf16 only when the sample films' probabilities stay
    within 0.01 of fp32 (a logit shift of 0.001 moves p by 0.00025; 0.5 by about 0.12)."""
    import logging

    from pneumonia_monai.engine import precision
    from pneumonia_monai.inference import bundle as bundle_module

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo="/proc/cpuinfo": True)
    monkeypatch.setattr(bundle_module, "PARITY_FILMS", 4)
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        inferer = bundle_module._cpu_inferer(
            _PrecisionSensitive(shift), "auto", bundle.root, bundle.preprocessing
        )
    assert inferer.precision == expected and inferer.channels_last
    assert ("running in fp32" in caplog.text) == (expected == "fp32")
