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
