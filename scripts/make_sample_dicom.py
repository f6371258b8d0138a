"""Make the embedded sample DICOM studies of ``bundle/sample_data/dicom`` from the sample JPEGs.

Four studies made from real Kermany films, chosen to show what a hospital archive throws at the
pipeline (the same film gives the same probability in every encoding):

- ``pneumonia_dx``: DX For Presentation, MONOCHROME2, 8-bit, uncompressed, plus a lateral view of the
  same patient (which the selection rules skip);
- ``normal_monochrome1_j2k``: DX, 12-bit MONOCHROME1 (inverted stored values) with a
  LINEAR_EXACT window, JPEG 2000 lossless;
- ``viral_rle``: DX, RLE lossless;
- ``normal_dx``: DX, uncompressed.

Usage: ``python scripts/make_sample_dicom.py [--output bundle/sample_data/dicom]``. Deterministic:
UIDs derive from the source files, so re-running gives the same files.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from pneumonia_monai.data.kaggle_dicom import kaggle_to_dicom
from pneumonia_monai.dicom.convert import encode_dataset
from pneumonia_monai.dicom.uids import derived_uid

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "bundle/sample_data/chest_xray/train"
FILMS = {
    "pneumonia_dx": "PNEUMONIA/person12_bacteria_46.jpeg",
    "normal_monochrome1_j2k": "NORMAL/IM-0236-0001.jpeg",
    "viral_rle": "PNEUMONIA/person409_virus_818.jpeg",
    "normal_dx": "NORMAL/NORMAL2-IM-0408-0001.jpeg",
}


def _monochrome1_12bit(ds: Dataset) -> None:
    """Store the film as 12-bit MONOCHROME1 whose window maps back to the original grey levels."""
    grey = ds.pixel_array.astype(np.uint16)
    ds.PixelData = ((255 - grey) * 16).astype(np.uint16).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PresentationLUTShape = "INVERSE"
    # LINEAR_EXACT: y = (x - c) / w + 0.5 over [0, 1]; c = 2040, w = 4080 maps 16 v to v / 255
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2040, 4080, "LINEAR_EXACT"


def _lateral(ds: Dataset) -> Dataset:
    lateral = copy.deepcopy(ds)
    lateral.ViewPosition = "LL"
    lateral.ViewCodeSequence[0].CodeValue = "399173006"
    lateral.ViewCodeSequence[0].CodeMeaning = "left lateral"
    lateral.SOPInstanceUID = derived_uid("sample lateral", str(ds.SOPInstanceUID))
    lateral.file_meta.MediaStorageSOPInstanceUID = lateral.SOPInstanceUID
    lateral.InstanceNumber = int(ds.InstanceNumber) + 1
    return lateral


def main(argv: Sequence[str] | None = None) -> int:
    """Write the sample studies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "bundle/sample_data/dicom")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        for rel in FILMS.values():
            (tree / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLE / rel, tree / "train" / rel)
        conversion = kaggle_to_dicom(tree, Path(tmp) / "dicom")
        converted = {Path(r.source).name: Path(tmp) / "dicom" / r.output for r in conversion.rows if r.output}
        if args.output.exists():
            shutil.rmtree(args.output)
        for name, rel in FILMS.items():
            ds = dcmread(converted[Path(rel).name])
            folder = args.output / name
            folder.mkdir(parents=True)
            compression = "none"
            if name == "normal_monochrome1_j2k":
                _monochrome1_12bit(ds)
                compression = "jpeg2000"
            elif name == "viral_rle":
                compression = "rle"
            elif name == "pneumonia_dx":
                (folder / "lateral.dcm").write_bytes(encode_dataset(_lateral(ds)))
            (folder / "frontal.dcm").write_bytes(encode_dataset(ds, compression))
    print(f"wrote {sum(1 for _ in args.output.rglob('*.dcm'))} files to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
