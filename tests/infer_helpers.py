"""The inference tests' building blocks: a small bundle, real films, and the mixed folder of EXPECTED.

test_infer_cli runs ``pneumonia-monai infer`` on :func:`build_dataset`; the other inference tests
(resume, duplicates, intended use, hostile inputs, Ray, study outcomes) build their inputs the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import torch
from dicom_factory import make_cr, make_sr
from monai.bundle import ConfigParser
from PIL import Image
from pydicom.uid import JPEG2000Lossless, RLELossless
from repo_paths import BUNDLE, SAMPLE_TREE

SHIPPED_CONFIG = BUNDLE / "configs" / "inference.json"
SHIPPED_META = BUNDLE / "configs" / "metadata.json"
MODEL_VERSION = json.loads(SHIPPED_META.read_text(encoding="utf-8"))["version"]
SAMPLES = sorted(SAMPLE_TREE.rglob("*.jpeg"))

#: Recognisable identifiers that must never leave the DICOM files they are in.
PHI = {"PatientName": "Zyxwvut^Qwertyuiop", "PatientID": "PHIID8675309", "PatientBirthDate": "19010203"}
PHI_STRINGS = ("Zyxwvut", "Qwertyuiop", "PHIID8675309", "19010203")

STUDY_A = "1.2.826.0.1.3680043.8.498.1001"
STUDY_B = "1.2.826.0.1.3680043.8.498.1002"
STUDY_C = "1.2.826.0.1.3680043.8.498.1003"
SMALL_NET = {
    "_target_": "DenseNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": "@num_classes",
    "init_features": 8,
    "growth_rate": 8,
    "block_config": [2, 2],
}

#: Every file of the dataset: (status, a piece of the reason).
EXPECTED = {
    "__MACOSX/kaggle/._IM-0001.jpeg": ("skipped", "junk file"),
    "empty.dcm": ("skipped", "zero-byte file"),
    "kaggle/NORMAL/IM-0001.jpeg": ("ok", "JPEG image, taken as a frontal chest film"),
    "kaggle/PNEUMONIA/person1_virus_1.png": ("ok", "PNG image, taken as a frontal chest film"),
    "kaggle/PNEUMONIA/broken.png": ("error", "not a readable image"),
    "notes.txt": ("skipped", "not a DICOM file"),
    "studyA/ap_dx_j2k.dcm": ("ok", "DX chest frontal (BodyPartExamined=CHEST; ViewPosition=AP)"),
    "studyA/pa_copy.dcm": ("skipped", "duplicate SOP Instance UID of studyA/pa.dcm"),
    "studyA/lateral.dcm": ("skipped", "lateral view (ViewPosition=LL)"),
    "studyA/pa.dcm": ("ok", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
    "studyA/report_sr.dcm": ("skipped", "structured report"),
    "studyB/abdomen.dcm": ("skipped", "not chest (BodyPartExamined=ABDOMEN)"),
    "studyB/pa_rle_mono1.dcm": ("ok", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
    "studyB/short_pixels.dcm": ("error", "truncated pixel data"),
    "studyC/lateral.dcm": ("skipped", "lateral view (ViewPosition=RL)"),
    "studyC/truncated.dcm": ("error", "truncated file"),
}


def film(index: int, size: int = 96, bits: int = 12) -> np.ndarray:
    """A real chest film from the embedded sample, resized, as unsigned ``bits``-bit values."""
    with Image.open(SAMPLES[index % len(SAMPLES)]) as img:
        grey = np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    return np.round(grey / 255.0 * ((1 << bits) - 1)).astype(np.uint16)


def write_bundle(
    dest: Path, *, network_def: dict | None = None, class_names: list[str] | None = None
) -> Path:
    """A bundle copy: the shipped configs with spatial_size 64 (and the given network), seeded weights."""
    config = json.loads(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    config["spatial_size"] = [64, 64]
    config["threshold"] = 0.5  # random weights: the shipped model's operating point means nothing here
    config["temperature"], config["logit_bias"] = 1.0, None  # nor does its calibration
    if network_def is not None:
        config["network_def"] = network_def
        config["heatmap_layer"] = "features.denseblock2"  # the small test network has two blocks
    if class_names is not None:
        config["class_names"] = class_names
        config["num_classes"] = len(class_names)
    (dest / "configs").mkdir(parents=True)
    (dest / "models").mkdir()
    (dest / "configs" / "inference.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    shutil.copy(SHIPPED_META, dest / "configs" / "metadata.json")
    parser = ConfigParser()
    parser.read_config(config)
    torch.manual_seed(1234)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), dest / "models" / "model.pt")
    return dest


def chest(path: Path, index: int, study: str, **kwargs) -> pydicom.Dataset:
    kwargs.setdefault("modality", "CR")
    photometric = kwargs.get("photometric", "MONOCHROME2")
    pixels = film(index)
    if photometric == "MONOCHROME1":
        pixels = 4095 - pixels
    return make_cr(path, pixels=pixels, StudyInstanceUID=study, **PHI, **kwargs)


def build_dataset(root: Path) -> Path:
    """The mixed folder of :data:`EXPECTED`."""
    a_pa = chest(root / "studyA/pa.dcm", 0, STUDY_A)
    shutil.copy(root / "studyA/pa.dcm", root / "studyA/pa_copy.dcm")
    chest(
        root / "studyA/ap_dx_j2k.dcm", 1, STUDY_A, modality="DX", view="AP", transfer_syntax=JPEG2000Lossless
    )
    chest(root / "studyA/lateral.dcm", 2, STUDY_A, view="LL")
    make_sr(root / "studyA/report_sr.dcm", StudyInstanceUID=STUDY_A, **PHI)
    chest(
        root / "studyB/pa_rle_mono1.dcm", 3, STUDY_B, photometric="MONOCHROME1", transfer_syntax=RLELossless
    )
    chest(root / "studyB/abdomen.dcm", 4, STUDY_B, body_part="ABDOMEN")
    chest(root / "studyB/short_pixels.dcm", 5, STUDY_B, PixelData=b"\0" * 256)
    chest(root / "studyC/lateral.dcm", 8, STUDY_C, view="RL")
    chest(root / "studyC/truncated.dcm", 6, STUDY_C)
    data = (root / "studyC/truncated.dcm").read_bytes()
    (root / "studyC/truncated.dcm").write_bytes(data[:-500])
    assert a_pa.PatientName == PHI["PatientName"]
    (root / "empty.dcm").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n", encoding="utf-8")
    (root / "kaggle/NORMAL").mkdir(parents=True)
    (root / "kaggle/PNEUMONIA").mkdir(parents=True)
    Image.fromarray((film(7, 128, 8)).astype(np.uint8)).save(root / "kaggle/NORMAL/IM-0001.jpeg", quality=95)
    Image.fromarray((film(30, 128, 8)).astype(np.uint8)).save(root / "kaggle/PNEUMONIA/person1_virus_1.png")
    (root / "kaggle/PNEUMONIA/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "__MACOSX/kaggle").mkdir(parents=True)
    (root / "__MACOSX/kaggle/._IM-0001.jpeg").write_bytes(b"\0\x05\x16\x07" + b"\0" * 60)
    return root
