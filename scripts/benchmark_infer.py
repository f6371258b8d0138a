"""Benchmark batch inference: end to end on real-size DICOM films against the bare network forward.

Usage::

    python scripts/benchmark_infer.py --n 40 --batch-size 8 --device auto --workdir /tmp/bench

Generates ``--n`` DICOM files of 2,000 x 2,000 12-bit pixels (DX For Presentation, chest PA) from the
sample JPEGs in ``bundle/sample_data/chest_xray/train``, upscaled, stored in turn uncompressed, JPEG 2000
lossless, RLE lossless and JPEG-LS lossless (when an encoder is installed), four images per study. The
files are kept in ``WORKDIR/dicom`` and reused by later runs with the same ``--n``.

Then, on the same device and batch size, it prints:

- images/s of :func:`pneumonia_monai.inference.runner.run_inference` end to end (header triage, decoding,
  preprocessing, batched inference, journal, SRs and manifests; model loading excluded), once per
  ``--workers`` value given, so that the decoding pool's scaling can be read off;
- images/s of the bare network forward on pre-made tensors of the bundle's spatial size;
- their ratio (the share of the device's speed the pipeline delivers);
- what each film costs, by compression, in one thread: decoding with the LUT steps, the lung-field
  search and the whole preprocessing, and what one study's SR costs, so that the ratio can be explained.

Without ``bundle/models/model.pt`` (or ``--bundle`` pointing at a bundle with a checkpoint), a copy of the
bundle with random weights is made in ``WORKDIR``: the speed is the same, the probabilities meaningless.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pneumonia_monai.engine.paths import locate_bundle_root
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.inference.runner import run_inference

logger = logging.getLogger("benchmark_infer")

SIZE = 2000
BITS = 12
IMAGES_PER_STUDY = 4


def encodable(syntax: str, plugin: str | None = None) -> bool:
    """Whether this install can encode ``syntax`` (with ``plugin``, if given)."""
    encoder = get_encoder(syntax)
    if plugin is not None:
        return plugin in encoder.available_plugins
    return encoder.is_available


def compressions() -> list[tuple[str, str | None, str | None]]:
    """(label, transfer syntax or None for uncompressed, encoding plugin) of the encodable syntaxes."""
    out: list[tuple[str, str | None, str | None]] = [("uncompressed", None, None)]
    if encodable(JPEG2000Lossless, "pylibjpeg"):
        out.append(("jpeg2000-lossless", JPEG2000Lossless, "pylibjpeg"))
    rle_plugin = "pylibjpeg" if encodable(RLELossless, "pylibjpeg") else "pydicom"
    out.append(("rle", RLELossless, rle_plugin))
    if encodable(JPEGLSLossless):
        out.append(("jpeg-ls-lossless", JPEGLSLossless, None))
    else:
        logger.warning("no JPEG-LS encoder installed: JPEG-LS files left out")
    return out


def film_pixels(jpeg: Path) -> np.ndarray:
    """A sample JPEG upscaled to ``SIZE`` x ``SIZE`` and spread over ``BITS`` bits (uint16)."""
    with Image.open(jpeg) as img:
        grey = img.convert("F").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    values = np.clip(np.asarray(grey, dtype=np.float64) / 255.0, 0.0, 1.0)
    return np.round(values * ((1 << BITS) - 1)).astype(np.uint16)


def build_dataset(pixels: np.ndarray, study_uid: str, number: int) -> Dataset:
    """A minimal DX For Presentation chest PA instance (synthetic patient)."""
    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "BENCHMARK^SYNTHETIC"
    ds.PatientID = "BENCH0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, "series"])
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Manufacturer = "benchmark"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = BITS
    ds.HighBit = BITS - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def make_films(folder: Path, n: int, samples: list[Path]) -> dict[str, int]:
    """Write ``n`` films into ``folder`` (reused when already complete); return the count per compression."""
    kinds = compressions()
    marker = folder.with_name(folder.name + ".complete.json")  # beside the folder: not an input
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("n") == n:
            logger.info("reusing the %d films in %s", n, folder)
            return done["kinds"]
    marker.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    counts: dict[str, int] = {}
    study_uid = ""
    for i in range(n):
        label, syntax, plugin = kinds[i % len(kinds)]
        if i % IMAGES_PER_STUDY == 0:
            study_uid = generate_uid()
        ds = build_dataset(film_pixels(samples[i % len(samples)]), study_uid, i % IMAGES_PER_STUDY + 1)
        if syntax is not None:
            options = {"encoding_plugin": plugin} if plugin else {}
            ds.compress(syntax, generate_instance_uid=False, **options)
        path = folder / f"study{i // IMAGES_PER_STUDY:03d}" / f"{i:04d}_{label}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        counts[label] = counts.get(label, 0) + 1
        logger.info("film %d/%d (%s)", i + 1, n, label)
    marker.write_text(json.dumps({"n": n, "kinds": counts}), encoding="utf-8")
    return counts


def bundle_with_weights(bundle: Path, workdir: Path) -> tuple[Path, bool]:
    """``bundle`` if its checkpoint exists, else a copy in ``workdir`` with seeded random weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    if Path(parser.get_parsed_content("checkpoint")).is_file():
        return bundle, False
    copy = workdir / "bundle_random_weights"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle / "configs", copy / "configs")
    (copy / "models").mkdir(parents=True)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    parser["bundle_root"] = str(copy)
    torch.save(network.state_dict(), parser.get_parsed_content("checkpoint"))
    return copy, True


def bare_forward(loaded: InferenceBundle, batch_size: int, n: int) -> float:
    """Images/s of the network alone on pre-made tensors of the bundle's spatial size."""
    network, dev = loaded.network, loaded.device
    batches = max(2, math.ceil(n / batch_size))
    x = torch.rand((batch_size, 1, *loaded.spatial_size), generator=torch.Generator().manual_seed(0)).to(dev)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16) if dev.type == "cuda" else nullcontext()
    )

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.inference_mode(), autocast:
        network(x)  # warm-up (cuDNN autotuning, allocator)
        sync()
        start = time.perf_counter()
        for _ in range(batches):
            network(x)
        sync()
        elapsed = time.perf_counter() - start
    return batches * batch_size / elapsed


def stage_costs(folder: Path, preprocessing: Any) -> tuple[dict[str, dict[str, float]], float]:
    """Median milliseconds per film of each compression for the pipeline's stages, in one thread.

    Returns ``({compression: {"decode + LUTs": ms, "lung box": ms, "preprocessing": ms}}, SR ms per
    study)``: decoding with the Modality/VOI LUT steps (:func:`~pneumonia_monai.dicom.io.read_image`),
    the lung-field search on the decoded film, the bundle's whole ``preprocessing`` (both of those plus
    crop and resize), and building and writing one study's SR from its headers.
    """
    from pydicom import dcmread

    from pneumonia_monai.dicom.io import read_image
    from pneumonia_monai.dicom.sr import ImageFinding, build_pneumonia_sr, write_dataset_atomic
    from pneumonia_monai.transforms.lung_crop import find_lung_box

    timings: dict[str, dict[str, list[float]]] = {}
    for path in sorted(folder.rglob("*.dcm")):
        kind = path.stem.split("_", 1)[1]
        stages = timings.setdefault(kind, {"decode + LUTs": [], "lung box": [], "preprocessing": []})
        start = time.perf_counter()
        image, _ = read_image(path)
        stages["decode + LUTs"].append(time.perf_counter() - start)
        start = time.perf_counter()
        find_lung_box(image)
        stages["lung box"].append(time.perf_counter() - start)
        start = time.perf_counter()
        preprocessing({"image": str(path)})
        stages["preprocessing"].append(time.perf_counter() - start)
    study = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    headers = [dcmread(p, stop_before_pixels=True) for p in sorted(study.glob("*.dcm"))]
    findings = [
        ImageFinding(str(h.SOPInstanceUID), str(h.SOPClassUID), prob_pneumonia=0.5, present=True)
        for h in headers
    ]
    sr_times = []
    for _ in range(3):
        start = time.perf_counter()
        sr = build_pneumonia_sr(
            headers, findings, algorithm_name="benchmark", algorithm_version="0", threshold=0.5
        )
        write_dataset_atomic(sr, folder.parent / "benchmark_sr.dcm")
        sr_times.append(time.perf_counter() - start)
    medians = {
        kind: {stage: 1000 * float(np.median(values)) for stage, values in stages.items()}
        for kind, stages in timings.items()
    }
    return medians, 1000 * float(np.median(sr_times))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="number of DICOM films (default 40)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[2], help="decoding threads; several to compare"
    )
    parser.add_argument("--workdir", type=Path, required=True, help="where the films and outputs go")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the package's)")
    parser.add_argument(
        "--no-sr", action="store_true", help="time infer without writing SRs (as infer --no-sr)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.n < 1 or args.batch_size < 1 or min(args.workers) < 0:
        parser.error("--n and --batch-size must be positive, --workers non-negative")

    bundle = args.bundle if args.bundle is not None else Path(locate_bundle_root())
    samples = sorted((bundle / "sample_data" / "chest_xray" / "train").rglob("*.jpeg"))
    if not samples:
        samples = sorted(
            (Path(locate_bundle_root()) / "sample_data" / "chest_xray" / "train").rglob("*.jpeg")
        )
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle_dir, random_weights = bundle_with_weights(bundle, args.workdir)

    start = time.perf_counter()
    kinds = make_films(args.workdir / "dicom", args.n, samples)
    print(
        f"films: {args.n} of {SIZE}x{SIZE} {BITS}-bit: {kinds} (ready in {time.perf_counter() - start:.1f} s)"
    )
    if random_weights:
        print(f"weights: RANDOM (no checkpoint in {bundle}); speed is representative, predictions are not")

    loaded = load_bundle(bundle_dir, device=args.device)  # the network and preprocessing timed below
    device = str(loaded.device)
    end_to_end: dict[int, float] = {}
    for workers in args.workers:
        summary = run_inference(
            [args.workdir / "dicom"],
            args.workdir / f"out_w{workers}",
            bundle=bundle_dir,
            device=args.device,
            batch_size=args.batch_size,
            workers=workers,
            force=True,
            progress=False,
            write_sr=not args.no_sr,
        )
        if summary.counts["ok"] != args.n:
            print(f"warning: {summary.counts} (expected {args.n} ok)", file=sys.stderr)
        end_to_end[workers] = summary.images_per_second
    model = bare_forward(loaded, args.batch_size, args.n)

    threads = torch.get_num_threads()
    stages, sr_ms = stage_costs(args.workdir / "dicom", loaded.preprocessing)
    print(f"device: {device}, batch size {args.batch_size}, torch threads {threads}")
    print("per film, one thread, median ms:")
    names = list(next(iter(stages.values())))
    print(f"  {'compression':<20}" + "".join(f"{name:>16}" for name in names))
    for kind, costs in stages.items():
        print(f"  {kind:<20}" + "".join(f"{costs[name]:16.1f}" for name in names))
    mean_pre = float(np.mean([costs["preprocessing"] for costs in stages.values()]))
    print(
        f"  mean preprocessing {mean_pre:.1f} ms per film; SR build + write {sr_ms:.1f} ms per study "
        f"of {IMAGES_PER_STUDY}; bare forward {1000 / model:.1f} ms per image"
    )
    for workers, speed in end_to_end.items():
        label = f"{workers} worker(s){', no SR' if args.no_sr else ''}"
        print(f"end to end (run_inference, {label}): {speed:8.2f} images/s")
    print(f"bare model forward:                       {model:8.2f} images/s")
    for workers, speed in end_to_end.items():
        print(f"ratio end to end / model ({workers} worker(s)):   {speed / model:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
