"""Benchmark batch inference on hospital-size DICOM films against what bounds it, in one run.

Usage::

    python scripts/benchmark_infer.py --n 120 --workdir /tmp/bench

Generates ``--n`` DICOM CR films of 2,048 x 2,048 (chest PA, one per study) from the sample JPEGs in
``bundle/sample_data/chest_xray/train``, upscaled, stored in turn uncompressed (12-bit), RLE lossless
(12-bit), JPEG 2000 lossless (12-bit), JPEG-LS lossless (12-bit, when an encoder is installed) and
JPEG baseline (8-bit: baseline has no 12-bit process). The files are kept in ``WORKDIR/dicom`` and
reused by later runs with the same ``--n``.

Then, on the same files and device, it prints:

- **infer end to end**: ``pneumonia-monai infer`` in a subprocess (SRs on, ``--workers``), in steady
  state: ``n/2`` films over the difference between a run over all ``n`` films and one over the first
  ``n/2`` (model loading and start-up cancel out); with the peak memory of the run over all films
  (the child's own ``VmHWM``);
- **full-decode bound**: decoding every pixel of the same films with the fastest decoders here
  (imagecodecs for JPEG 2000, JPEG-LS and JPEG, pylibjpeg-rle for RLE, a buffer view for uncompressed),
  ``--workers`` threads, file reading included, no model, no LUTs;
- **lean reference**: a plain pipeline (pydicom's default decoders, its Modality and VOI LUT, area
  resize of the whole film to the network input, the shipped network, ``--workers`` decoding threads,
  batches of ``--batch-size``; no crop, no SR);
- **bare forward** of the network as ``infer`` runs it, on pre-made tensors;
- ``infer`` end to end per compression and with ``--full-decode`` (in this process, model loading
  excluded), and what each film costs by compression, in one thread (median ms): reading the header,
  decoding with the LUT steps reduced and whole, the lung-field search, the whole preprocessing; and one
  study's SR.

Without ``bundle/models/model.pt`` (or ``--bundle`` pointing at a bundle with a checkpoint), a copy of the
bundle with random weights is made in ``WORKDIR``: the speed is the same, the probabilities meaningless.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels import get_encoder
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pneumonia_monai.engine.paths import default_bundle
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.inference.runner import run_inference

logger = logging.getLogger("benchmark_infer")

SIZE = 2048
BITS = 12
#: The child's own peak resident memory, printed by the driver of the end-to-end subprocess.
_DRIVER = (
    "import sys\n"
    "from pneumonia_monai.cli import infer\n"
    "status = infer.main(sys.argv[1:])\n"
    "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
    "print('PEAK_RSS_KB', hwm[0], file=sys.stderr)\n"
    "sys.exit(status)\n"
)


# ------------------------------------------------------------------------------------------ films


def encodable(syntax: str, plugin: str | None = None) -> bool:
    """Whether this install can encode ``syntax`` (with ``plugin``, if given)."""
    encoder = get_encoder(syntax)
    if plugin is not None:
        return plugin in encoder.available_plugins
    return encoder.is_available


def compressions() -> list[tuple[str, str | None, str | None]]:
    """(label, transfer syntax or None for uncompressed, encoding plugin) of the encodable syntaxes."""
    out: list[tuple[str, str | None, str | None]] = [("uncompressed", None, None)]
    out.append(("rle", RLELossless, "pylibjpeg" if encodable(RLELossless, "pylibjpeg") else "pydicom"))
    if encodable(JPEG2000Lossless, "pylibjpeg"):
        out.append(("jpeg2000-lossless", JPEG2000Lossless, "pylibjpeg"))
    if encodable(JPEGLSLossless):
        out.append(("jpeg-ls-lossless", JPEGLSLossless, None))
    else:
        logger.warning("no JPEG-LS encoder installed: JPEG-LS films left out")
    out.append(("jpeg-baseline", JPEGBaseline8Bit, "pillow"))
    return out


def film_pixels(jpeg: Path, bits: int) -> np.ndarray:
    """A sample JPEG upscaled to ``SIZE`` x ``SIZE`` and spread over ``bits`` bits."""
    with Image.open(jpeg) as img:
        grey = img.convert("F").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    values = np.clip(np.asarray(grey, dtype=np.float64) / 255.0, 0.0, 1.0)
    return np.round(values * ((1 << bits) - 1)).astype(np.uint16 if bits > 8 else np.uint8)


def build_dataset(pixels: np.ndarray, bits: int) -> Dataset:
    """A CR chest PA instance of its own study (synthetic patient)."""
    ds = Dataset()
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "BENCHMARK^SYNTHETIC"
    ds.PatientID = "BENCH0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "benchmark"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = 1 << (bits - 1)
    ds.WindowWidth = 1 << bits
    ds.PixelData = pixels.astype("<u2" if bits > 8 else "u1").tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _compress(ds: Dataset, syntax: str, plugin: str | None) -> None:
    if syntax == JPEGBaseline8Bit:  # pydicom has no JPEG encoder: Pillow's (libjpeg-turbo), encapsulated
        import io

        buffer = io.BytesIO()
        Image.fromarray(ds.pixel_array).save(buffer, format="JPEG", quality=90)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return
    # "" is pydicom's default: the first encoding plugin available for the syntax
    ds.compress(syntax, encoding_plugin=plugin or "", generate_instance_uid=False)


def make_films(folder: Path, n: int, samples: list[Path]) -> dict[str, list[Path]]:
    """Write ``n`` films into ``folder`` (reused when complete); return the files of each compression."""
    kinds = compressions()
    marker = folder.with_name(folder.name + ".complete.json")  # beside the folder: not an input
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("n") == n and done.get("size") == SIZE:
            logger.info("reusing the %d films in %s", n, folder)
            return {kind: [folder / p for p in paths] for kind, paths in done["kinds"].items()}
    marker.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files: dict[str, list[Path]] = {}
    for i in range(n):
        label, syntax, plugin = kinds[i % len(kinds)]
        bits = 8 if syntax == JPEGBaseline8Bit else BITS
        ds = build_dataset(film_pixels(samples[i % len(samples)], bits), bits)
        if syntax is not None:
            _compress(ds, syntax, plugin)
        path = folder / f"{i:04d}_{label}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.setdefault(label, []).append(path)
        logger.info("film %d/%d (%s)", i + 1, n, label)
    listing = {kind: [p.name for p in paths] for kind, paths in files.items()}
    marker.write_text(json.dumps({"n": n, "size": SIZE, "kinds": listing}), encoding="utf-8")
    return files


def linked_subset(paths: list[Path], folder: Path) -> Path:
    """A folder of hard links to ``paths`` (infer never follows symbolic links)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in paths:
        os.link(path, folder / path.name)
    return folder


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
    shutil.copytree(bundle / "sample_data", copy / "sample_data")
    (copy / "models").mkdir(parents=True)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    parser["bundle_root"] = str(copy)
    torch.save(network.state_dict(), parser.get_parsed_content("checkpoint"))
    return copy, True


# ------------------------------------------------------------------------------------ measurements


def infer_subprocess(
    folder: Path, out: Path, bundle: Path, workers: int, batch_size: int
) -> tuple[float, int]:
    """Wall seconds of ``pneumonia-monai infer`` over ``folder`` in a fresh process, and its peak RSS (kB)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", _DRIVER, str(folder), "-o", str(out), "--bundle", str(bundle)]
    command += ["--workers", str(workers), "--batch-size", str(batch_size), "--force", "-q"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"infer exited {done.returncode}: {done.stderr[-2000:]}")
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return elapsed, int(peak[0]) if peak else 0


def _decode_fastest(path: Path) -> int:
    """Decode every pixel of a film with the fastest decoder installed; return the pixel count."""
    import imagecodecs
    from pydicom.pixels import get_decoder

    ds = dcmread(path)
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        dtype = "<u2" if int(ds.BitsAllocated) == 16 else "u1"
        arr = np.frombuffer(ds.PixelData, dtype=dtype).reshape(int(ds.Rows), int(ds.Columns))
    elif syntax == RLELossless:
        arr = get_decoder(syntax).as_array(ds, index=0, decoding_plugin="pylibjpeg")[0]
    else:
        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
        if syntax == JPEG2000Lossless:
            arr = imagecodecs.jpeg2k_decode(frame, numthreads=1)
        elif syntax == JPEGLSLossless:
            arr = imagecodecs.jpegls_decode(frame)
        else:
            arr = imagecodecs.jpeg8_decode(frame)
    return int(arr.size)


def threaded_rate(paths: list[Path], work: Callable[[Path], Any], workers: int) -> float:
    """Films per second of ``work`` over ``paths`` in ``workers`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, paths))
    return len(paths) / (time.perf_counter() - start)


def lean_reference(paths: list[Path], loaded: InferenceBundle, workers: int, batch_size: int) -> float:
    """Films per second of a plain pipeline: pydicom decode, its LUTs, area resize, the network."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    size = loaded.spatial_size
    network = loaded.network

    def prepare(path: Path) -> torch.Tensor:
        ds = dcmread(path)
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / max(high - low, 1e-6)
        tensor = torch.from_numpy(values)[None, None]
        return torch.nn.functional.interpolate(tensor, size=size, mode="area")[0]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, torch.inference_mode():
        images = pool.map(prepare, paths)
        batch: list[torch.Tensor] = []
        for image in images:
            batch.append(image)
            if len(batch) == batch_size:
                torch.softmax(network(torch.stack(batch)), dim=1)
                batch = []
        if batch:
            torch.softmax(network(torch.stack(batch)), dim=1)
    return len(paths) / (time.perf_counter() - start)


def bare_forward(loaded: InferenceBundle, batch_size: int, batches: int = 6) -> float:
    """Images/s of the network's forward as ``infer`` runs it (:meth:`InferenceBundle.logits`)."""
    x = torch.rand((batch_size, 1, *loaded.spatial_size), generator=torch.Generator().manual_seed(0))
    loaded.logits(x)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        loaded.logits(x)
    return batches * batch_size / (time.perf_counter() - start)


def stage_costs(
    files: dict[str, list[Path]], loaded: InferenceBundle, per_kind: int = 4
) -> dict[str, dict[str, float]]:
    """Median milliseconds per film of each compression for the pipeline's stages, in one thread."""
    from pneumonia_monai.dicom.io import read_image
    from pneumonia_monai.dicom.reduced import min_decoded_side
    from pneumonia_monai.transforms.lung_crop import locate_crop

    side = min_decoded_side(loaded.spatial_size)
    out: dict[str, dict[str, float]] = {}
    for kind, paths in files.items():
        stages: dict[str, list[float]] = {}

        def timed(name: str, call: Callable[[], Any], stages: dict[str, list[float]] = stages) -> Any:
            start = time.perf_counter()
            result = call()
            stages.setdefault(name, []).append(1000 * (time.perf_counter() - start))
            return result

        for path in paths[:per_kind]:
            timed("header", partial(dcmread, path, stop_before_pixels=True))
            timed("decode+LUT full", partial(read_image, path))
            image, _ = timed("decode+LUT reduced", partial(read_image, path, min_side=side))
            timed("lung box", partial(locate_crop, image))
            timed("preprocessing", partial(loaded.preprocessing, {"image": str(path)}))
        out[kind] = {name: float(np.median(values)) for name, values in stages.items()}
    return out


def sr_cost(path: Path) -> float:
    """Milliseconds to build and write the SR of a one-image study (median of 3)."""
    from pneumonia_monai.dicom.sr import ImageFinding, build_pneumonia_sr
    from pneumonia_monai.dicom.writer import write_dataset_atomic

    header = dcmread(path, stop_before_pixels=True)
    finding = ImageFinding(
        str(header.SOPInstanceUID), str(header.SOPClassUID), prob_pneumonia=0.5, present=True
    )
    times = []
    for _ in range(3):
        start = time.perf_counter()
        sr = build_pneumonia_sr(
            [header], [finding], algorithm_name="benchmark", algorithm_version="0", threshold=0.5
        )
        write_dataset_atomic(sr, path.parent.parent / "benchmark_sr.dcm")
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def in_process_rate(folder: Path, out: Path, bundle: Path, args: argparse.Namespace, **options: Any) -> float:
    """Images/s of :func:`run_inference` (model loading excluded), as its summary reports."""
    summary = run_inference(
        [folder],
        out,
        bundle=bundle,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        force=True,
        progress=False,
        **options,
    )
    return summary.images_per_second


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=120, help="number of DICOM films (default 120)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--workdir", type=Path, required=True, help="where the films and outputs go")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the package's)")
    parser.add_argument(
        "--quick", action="store_true", help="leave out the per-compression and full-decode runs"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.n < 10 or args.batch_size < 1 or args.workers < 0:
        parser.error("--n must be at least 10, --batch-size positive, --workers non-negative")

    bundle = args.bundle if args.bundle is not None else default_bundle()
    samples = sorted((default_bundle() / "sample_data" / "chest_xray" / "train").rglob("*.jpeg"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle_dir, random_weights = bundle_with_weights(bundle, args.workdir)
    start = time.perf_counter()
    files = make_films(args.workdir / "dicom", args.n, samples)
    every = sorted(path for paths in files.values() for path in paths)
    counts = {kind: len(paths) for kind, paths in files.items()}
    print(
        f"films: {args.n} CR of {SIZE}x{SIZE}, one per study: {counts} "
        f"(ready in {time.perf_counter() - start:.0f} s)"
    )
    if random_weights:
        print(f"weights: RANDOM (no checkpoint in {bundle}); speed is representative, predictions are not")
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")

    half = linked_subset(every[: args.n // 2], args.workdir / "half")
    t_half, _ = infer_subprocess(half, args.workdir / "out_half", bundle_dir, args.workers, args.batch_size)
    t_all, peak_kb = infer_subprocess(
        args.workdir / "dicom", args.workdir / "out_all", bundle_dir, args.workers, args.batch_size
    )
    if t_all <= t_half:
        raise SystemExit(
            f"the run over {args.n} films was no slower than over {args.n // 2}: use a larger --n"
        )
    steady = (args.n - args.n // 2) / (t_all - t_half)

    loaded = load_bundle(bundle_dir, device=args.device)
    bound = threaded_rate(every, _decode_fastest, args.workers)
    lean = lean_reference(every, loaded, args.workers, args.batch_size)
    forward = bare_forward(loaded, args.batch_size)

    print(
        f"device: {loaded.device}, batch size {args.batch_size}, {args.workers} worker(s), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"infer end to end (steady state, SRs on):  {steady:8.2f} images/s   "
        f"peak memory {peak_kb / 1024:.0f} MiB"
    )
    print(f"full-decode bound (every pixel, fastest): {bound:8.2f} images/s")
    print(f"lean reference (pydicom, LUTs, resize):   {lean:8.2f} images/s")
    print(
        f"bare forward ({getattr(loaded.inferer, 'precision', 'device')}):"
        f"                   {forward:8.2f} images/s"
    )
    print(f"ratio infer / full-decode bound:          {steady / bound:8.3f}   (target >= 1.0)")
    print(f"ratio infer / lean reference:             {steady / lean:8.3f}   (target >= 3.0)")
    print(f"ratio infer / bare forward:               {steady / forward:8.3f}")

    if not args.quick:
        print("per compression (infer in this process, model loading excluded; bound: fastest decoders):")
        for kind, paths in files.items():
            folder = linked_subset(paths, args.workdir / f"kind_{kind}")
            rate = in_process_rate(folder, args.workdir / f"out_{kind}", bundle_dir, args)
            kind_bound = threaded_rate(paths, _decode_fastest, args.workers)
            print(
                f"  {kind:<20} infer {rate:7.2f} images/s   bound {kind_bound:7.2f}   "
                f"ratio {rate / kind_bound:6.3f}"
            )
        full = in_process_rate(
            args.workdir / "dicom", args.workdir / "out_full", bundle_dir, args, full_decode=True
        )
        reduced = in_process_rate(args.workdir / "dicom", args.workdir / "out_reduced", bundle_dir, args)
        print(
            f"  all, reduced decoding (default) {reduced:7.2f} images/s; "
            f"with --full-decode {full:7.2f} images/s"
        )

    stages = stage_costs(files, loaded)
    names = list(next(iter(stages.values())))
    print("per film, one thread, median ms:")
    print(f"  {'compression':<20}" + "".join(f"{name:>20}" for name in names))
    for kind, costs in stages.items():
        print(f"  {kind:<20}" + "".join(f"{costs[name]:20.1f}" for name in names))
    print(
        f"  SR of a one-image study (build + write): {sr_cost(every[0]):.1f} ms; "
        f"bare forward {1000 / forward:.1f} ms per image"
    )
    print(f"infer subprocess wall: {t_half:.1f} s over {args.n // 2} films, {t_all:.1f} s over {args.n}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
