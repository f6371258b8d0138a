"""Load the MONAI bundle for inference: the network with its weights, the pre/post-processing, the threshold.

Everything inference needs comes from the bundle's ``configs/inference.json`` and ``configs/metadata.json``,
parsed with :class:`monai.bundle.ConfigParser`, so a prediction cannot drift from training: the same
``preprocessing`` Compose, the ``network_def`` the checkpoint was trained with, the ``postprocessing``
(softmax) and the operating ``threshold`` chosen on validation.

A bundle that cannot be used (a missing file or key, a checkpoint that does not fit ``network_def``, a
network whose output does not have ``num_classes`` channels ...) raises :class:`BundleError` with a
one-line message, *before* any input is read; the command line maps it to exit status 2.

Class layouts understood (``class_names`` in ``inference.json``):

- ``["normal", "pneumonia"]``: the probability of pneumonia is the second softmax output;
- ``["normal", "bacterial", "viral"]``: the probability of pneumonia is ``1 - p(normal)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumonia_monai import decision
from pneumonia_monai.decision import BINARY_CLASSES, SUBTYPE_CLASSES
from pneumonia_monai.engine.checkpoint import network_state
from pneumonia_monai.engine.precision import PRECISIONS, AutocastInferer
from pneumonia_monai.visualize.gradcam import DENSENET_TARGET_LAYER

logger = logging.getLogger(__name__)

#: Keys of ``inference.json`` that inference reads.
REQUIRED_KEYS: tuple[str, ...] = (
    "num_classes",
    "class_names",
    "spatial_size",
    "lung_crop",
    "threshold",
    "checkpoint",
    "network_def",
    "preprocessing",
    "postprocessing",
)
#: Algorithm name used when ``metadata.json`` has no usable ``name``.
DEFAULT_MODEL_NAME = "pneumonia_monai"
#: Largest deviation from 1 tolerated in the sum of one image's class probabilities.
PROBABILITY_SUM_TOLERANCE = 1e-3
#: Largest difference in any class probability between the bf16 and the fp32 forward that lets a CPU
#: run in bf16 (:func:`bf16_difference` on the bundle's sample films); past it the network runs in fp32.
BF16_PARITY_TOLERANCE = 0.01
#: Sample films the bf16 forward is checked on when a bundle loads with bf16 asked for (or ``auto``).
PARITY_FILMS = 40


class BundleError(ValueError):
    """The bundle cannot be used for inference; the one-line message says why."""


@dataclass(frozen=True)
class InferenceBundle:
    """A bundle ready for inference.

    Attributes:
        root: the bundle folder.
        network: the network with the checkpoint's weights, in eval mode, on ``device``.
        preprocessing: the bundle's ``preprocessing``: ``{"image": path}`` -> ``{"image": (1, H, W)}``.
        postprocessing: the bundle's ``postprocessing``: ``{"pred": logits (C,)}`` -> ``{"pred": probs}``.
        device: where the network runs.
        class_names: the classes, in output order (see the module docstring).
        threshold: the operating point: ``prob_pneumonia >= threshold`` means pneumonia.
        spatial_size: the network's input ``(rows, columns)``.
        model_name: the algorithm name (``metadata.json`` ``name``, at most 64 characters).
        model_version: the model version (``metadata.json`` ``version``).
        checkpoint: the weights file.
        fingerprint: SHA-256 of the weights and of every setting that changes a result (classes,
            threshold, spatial size, lung crop, pre/post-processing configs, version): results computed
            with another fingerprint are never reused.
        heatmap_layer: the module of ``network`` whose output Grad-CAM explains (``heatmap_layer`` in
            ``inference.json``; default :data:`~pneumonia_monai.visualize.gradcam.DENSENET_TARGET_LAYER`).
        operating_point: where ``threshold`` comes from: ``"bundle"`` (its ``inference.json``), or a
            site overlay's label (:func:`pneumonia_monai.site_overlay.apply_site`).
    """

    root: Path
    network: torch.nn.Module
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    postprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    device: torch.device
    class_names: tuple[str, ...]
    threshold: float
    spatial_size: tuple[int, int]
    model_name: str
    model_version: str
    checkpoint: Path
    fingerprint: str
    heatmap_layer: str = DENSENET_TARGET_LAYER
    inferer: AutocastInferer | None = None
    operating_point: str = "bundle"

    @property
    def three_class(self) -> bool:
        """Whether the network outputs normal / bacterial / viral."""
        return self.class_names == SUBTYPE_CLASSES

    @property
    def num_classes(self) -> int:
        """Number of network outputs."""
        return len(self.class_names)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Return the network's raw outputs for a batch, float32 on the CPU (before post-processing).

        The forward pass runs under :func:`torch.inference_mode`, with automatic mixed precision
        (float16) on CUDA, and on a CPU through :attr:`inferer` (bf16 autocast where the CPU has native
        bf16 and the bf16 forward kept parity at load, see :func:`load_bundle`; else fp32).

        Args:
            images: ``(B, 1, H, W)`` float tensor of preprocessed films.

        Returns:
            ``(B, num_classes)`` float32 tensor.

        Raises:
            TypeError: if ``images`` is not a floating point tensor.
            ValueError: if its shape is not ``(B, 1, H, W)`` with ``B >= 1``, or the network's output
                is not ``(B, num_classes)``.
        """
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"images must be a floating point torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (B, 1, H, W) with B >= 1, got {tuple(images.shape)}")
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if self.device.type == "cuda"
            else nullcontext()
        )
        with torch.inference_mode(), autocast:
            inputs = images.to(self.device, non_blocking=True)
            logits = self.network(inputs) if self.inferer is None else self.inferer(inputs, self.network)
        logits = logits.detach().float().cpu()
        if tuple(logits.shape) != (images.shape[0], self.num_classes):
            raise ValueError(
                f"the network returned shape {tuple(logits.shape)}, "
                f"expected ({images.shape[0]}, {self.num_classes})"
            )
        return logits

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Return the class probabilities of a batch, through the bundle's post-processing.

        The logits (:meth:`logits`) are post-processed one image at a time in float32 (temperature
        scaling, softmax), as the bundle's ``postprocessing`` expects a channel-first item.

        Args:
            images: ``(B, 1, H, W)`` float tensor of preprocessed films.

        Returns:
            ``(B, num_classes)`` float64 array of probabilities.

        Raises:
            TypeError: if ``images`` is not a floating point tensor.
            ValueError: if its shape is not ``(B, 1, H, W)`` with ``B >= 1``, or the post-processing does
                not give finite probabilities summing to 1.
        """
        return self.postprocess(self.logits(images))

    def postprocess(self, logits: torch.Tensor) -> np.ndarray:
        """Return the class probabilities of ``(B, num_classes)`` logits, through the post-processing.

        Raises:
            ValueError: if the post-processing does not give finite probabilities summing to 1.
        """
        probs = np.stack(
            [
                np.asarray(torch.as_tensor(self.postprocessing({"pred": row})["pred"]), dtype=np.float64)
                for row in logits
            ]
        )
        sums = probs.sum(axis=1)
        if not np.all(np.isfinite(probs)) or np.any(np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE):
            raise ValueError(f"post-processing did not give probabilities (row sums {sums.tolist()})")
        return np.clip(probs, 0.0, 1.0)

    def pneumonia_probability(self, probs: Sequence[float] | np.ndarray) -> float:
        """Return p(pneumonia) from one image's class probabilities (:mod:`pneumonia_monai.decision`)."""
        return decision.pneumonia_probability(probs, self.class_names)

    def explained_class(self, probs: Sequence[float] | np.ndarray) -> int:
        """Return the output index a heatmap explains (:func:`pneumonia_monai.decision.explained_class`)."""
        return decision.explained_class(probs, self.class_names)


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device.

    Raises:
        ValueError: for an unknown name, or CUDA asked for where none is available.
    """
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, got {type(device).__name__}")
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} (expected auto, cpu, cuda or cuda:N)")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return resolved


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path} not found")
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate_default_bundle() -> Path:
    """Return the bundle shipped with the package.

    Found by :func:`pneumonia_monai.engine.paths.locate_bundle_root` (the ``bundle/`` of a source checkout,
    or the folder named by ``PNEUMONIA_MONAI_BUNDLE``).

    Raises:
        BundleError: if no bundle can be found.
    """
    from pneumonia_monai.engine.paths import locate_bundle_root

    try:
        return Path(locate_bundle_root())
    except FileNotFoundError as exc:
        raise BundleError(str(exc)) from exc


def bf16_difference(network: torch.nn.Module, images: torch.Tensor) -> float:
    """Largest class-probability difference between the bf16-autocast and the fp32 CPU forward.

    Args:
        network: the network (on the CPU, eval mode).
        images: ``(B, 1, H, W)`` preprocessed films.
    """
    with torch.inference_mode():
        fp32 = torch.softmax(network(images).float(), dim=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = torch.softmax(network(images).float(), dim=1)
    return float((bf16 - fp32).abs().max())


def _parity_films(root: Path) -> list[Path]:
    """:data:`PARITY_FILMS` of the bundle's ``sample_data/chest_xray/train`` films."""
    films = sorted((root / "sample_data" / "chest_xray" / "train").glob("*/*.jpeg"))[:PARITY_FILMS]
    if not films:
        raise BundleError(f"{root}: no sample_data/chest_xray/train films to check the bf16 forward on")
    return films


def _cpu_inferer(
    network: torch.nn.Module,
    precision: str,
    root: Path,
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> AutocastInferer:
    """The CPU forward's :class:`AutocastInferer`, channels-last: bf16 where it keeps parity, else fp32.

    bf16 (``auto`` on a CPU with native bf16, or asked for) is kept only when its probabilities on the
    bundle's sample films stay within :data:`BF16_PARITY_TOLERANCE` of fp32's; otherwise fp32 runs and a
    warning says by how much bf16 differed.
    """
    inferer = AutocastInferer("cpu", precision=precision, channels_last=True)
    if inferer.precision != "bf16":
        return inferer
    try:
        films = _parity_films(root)
    except BundleError as exc:
        logger.warning("%s: running in fp32", exc)
        return AutocastInferer("cpu", precision="fp32", channels_last=True)
    difference = 0.0
    for start in range(0, len(films), 8):  # in batches, stopping at the first one out of tolerance
        images = torch.stack(
            [
                torch.as_tensor(preprocessing({"image": str(path)})["image"]).as_subclass(torch.Tensor)
                for path in films[start : start + 8]
            ]
        )
        difference = max(difference, bf16_difference(network, images))
        if difference > BF16_PARITY_TOLERANCE:
            break
    if difference > BF16_PARITY_TOLERANCE:
        logger.warning(
            "the bf16 forward differs from fp32 by up to %.4f in probability on the bundle's sample films "
            "(tolerance %.2f): running in fp32",
            difference,
            BF16_PARITY_TOLERANCE,
        )
        return AutocastInferer("cpu", precision="fp32", channels_last=True)
    logger.info("bf16 forward within %.4f of fp32 in probability on the bundle's sample films", difference)
    return inferer


def load_bundle(
    bundle: str | Path | None = None,
    *,
    device: str = "auto",
    variant: str | None = None,
    full_decode: bool = False,
    precision: str | None = None,
) -> InferenceBundle:
    """Load and check a bundle for inference.

    Args:
        bundle: the bundle folder (holding ``configs/inference.json``); default: the package's bundle.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        variant: a model variant: ``configs/inference_<variant>.json`` is read over ``inference.json``
            (``"subtype"``: the three-class normal / bacterial / viral model).
        full_decode: decode every pixel of each film (the bundle's ``reduced_decode`` set to false;
            see :mod:`pneumonia_monai.dicom.reduced`).
        precision: the CPU forward's precision, ``"auto"``, ``"bf16"`` or ``"fp32"``
            (:mod:`pneumonia_monai.engine.precision`); default: the bundle's ``precision``, else
            ``"auto"``. bf16 runs only where its probabilities stay within
            :data:`BF16_PARITY_TOLERANCE` of fp32 on the bundle's sample films (else fp32, with a
            warning).

    Returns:
        The bundle, its network in eval mode on the device and checked with one forward pass of a blank
        image of ``spatial_size``.

    Raises:
        BundleError: if the bundle is unusable (the message names the file, key or tensor at fault).
        ValueError: if ``device`` is unknown or unavailable.
    """
    from monai.bundle import ConfigParser

    torch_device = resolve_device(device)
    root = locate_default_bundle() if bundle is None else Path(bundle)
    if not root.is_dir():
        raise BundleError(f"bundle folder {root} not found")
    root = root.resolve()
    config_path = root / "configs" / "inference.json"
    meta_path = root / "configs" / "metadata.json"
    config = _read_json(config_path)
    config_files = [str(config_path)]
    if variant is not None:
        if (
            not isinstance(variant, str)
            or not variant.replace("_", "").replace("-", "").isalnum()
            or len(variant) > 32
        ):
            raise BundleError(f"bundle variant must be 1 to 32 letters, digits, '_' or '-', got {variant!r}")
        overlay_path = root / "configs" / f"inference_{variant}.json"
        if not overlay_path.is_file():
            raise BundleError(f"bundle variant {variant!r}: {overlay_path} not found")
        config.update(_read_json(overlay_path))
        config_files.append(str(overlay_path))
    meta = _read_json(meta_path)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise BundleError(f"{config_path} lacks key(s) {', '.join(missing)}")
    version = meta.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64 or "\\" in version:
        raise BundleError(f"{meta_path} needs a 'version' string of 1 to 64 characters, got {version!r}")
    name = meta.get("name")
    model_name = name.strip() if isinstance(name, str) and 0 < len(name.strip()) <= 64 else DEFAULT_MODEL_NAME

    parser = ConfigParser()
    parser.read_config(config_files)
    parser.read_meta(str(meta_path))
    parser["bundle_root"] = str(root)
    reduced_decode = bool(config.get("reduced_decode", False)) and not full_decode
    if "reduced_decode" in config:
        parser["reduced_decode"] = reduced_decode
    precision = precision if precision is not None else config.get("precision", "auto")
    if precision not in PRECISIONS:
        raise BundleError(f"{config_path}: 'precision' must be one of {PRECISIONS}, got {precision!r}")

    def parsed(key: str) -> Any:
        try:
            return parser.get_parsed_content(key)
        except Exception as exc:  # any failure of the bundle's own config is a bundle error
            raise BundleError(f"{config_path}: cannot build {key!r}: {_one_line(exc)}") from exc

    class_names = parsed("class_names")
    if not isinstance(class_names, list | tuple) or tuple(class_names) not in (
        BINARY_CLASSES,
        SUBTYPE_CLASSES,
    ):
        raise BundleError(
            f"{config_path}: 'class_names' must be {list(BINARY_CLASSES)} or {list(SUBTYPE_CLASSES)}, "
            f"got {class_names!r}"
        )
    class_names = tuple(class_names)
    num_classes = parsed("num_classes")
    if num_classes != len(class_names):
        raise BundleError(
            f"{config_path}: 'num_classes' is {num_classes!r} but 'class_names' has {len(class_names)}"
        )
    threshold = parsed("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise BundleError(f"{config_path}: 'threshold' must be a number in [0, 1], got {threshold!r}")
    threshold = float(threshold)
    size = parsed("spatial_size")
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 16 for s in size)
    ):
        raise BundleError(f"{config_path}: 'spatial_size' must be two sizes of at least 16, got {size!r}")
    spatial_size = (int(size[0]), int(size[1]))

    checkpoint = Path(parsed("checkpoint"))
    if not checkpoint.is_file():
        raise BundleError(
            f"checkpoint {checkpoint} not found (train the model, or point 'checkpoint' at one)"
        )
    network = parsed("network_def")
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"{config_path}: 'network_def' is a {type(network).__name__}, not a torch module")
    preprocessing = parsed("preprocessing")
    postprocessing = parsed("postprocessing")
    for key, value in (("preprocessing", preprocessing), ("postprocessing", postprocessing)):
        if not callable(value):
            raise BundleError(f"{config_path}: {key!r} is a {type(value).__name__}, not a transform")

    try:
        raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "unreadable weights"
        raise BundleError(f"checkpoint {checkpoint} cannot be read: {_one_line(exc)}") from exc
    try:
        state = network_state(raw, checkpoint)
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"checkpoint {checkpoint} does not fit 'network_def': {_one_line(exc)}") from exc
    network = network.to(torch_device).eval()
    try:
        with torch.inference_mode():
            out = network(torch.zeros((1, 1, *spatial_size), device=torch_device))
    except Exception as exc:  # any failure of the forward pass: unusable
        raise BundleError(
            f"'network_def' fails on a (1, 1, {spatial_size[0]}, {spatial_size[1]}) input: {_one_line(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, len(class_names)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BundleError(
            f"the network outputs {shape} for one image, expected (1, {len(class_names)}) for {class_names}"
        )
    if not math.isfinite(float(out.float().abs().sum())):
        raise BundleError(f"checkpoint {checkpoint} gives non-finite outputs")
    bias = config.get("logit_bias")
    if bias is not None and (not isinstance(bias, list) or len(bias) != len(class_names)):
        raise BundleError(
            f"{config_path}: 'logit_bias' must be None or one number per class {class_names}, got {bias!r}"
        )
    heatmap_layer = parsed("heatmap_layer") if "heatmap_layer" in config else DENSENET_TARGET_LAYER
    if not isinstance(heatmap_layer, str) or heatmap_layer not in dict(network.named_modules()):
        raise BundleError(
            f"{config_path}: 'heatmap_layer' {heatmap_layer!r} is not a module of 'network_def'"
        )

    inferer = None
    if torch_device.type == "cpu":
        # channels-last: oneDNN's fast layout (fp32 DenseNet121 about twice as fast, same outputs)
        network = network.to(memory_format=torch.channels_last)
        inferer = _cpu_inferer(network, precision, root, preprocessing)
    settings = {
        "reduced_decode": reduced_decode,
        "precision": inferer.precision if inferer is not None else "cuda-amp",
        "class_names": list(class_names),
        "threshold": threshold,
        "spatial_size": list(spatial_size),
        "lung_crop": config.get("lung_crop"),
        "temperature": config.get("temperature"),
        "logit_bias": config.get("logit_bias"),
        "preprocessing": config.get("preprocessing"),
        "postprocessing": config.get("postprocessing"),
        "version": version,
    }
    digest = hashlib.sha256(_file_sha256(checkpoint).encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    loaded = InferenceBundle(
        root=root,
        network=network,
        preprocessing=preprocessing,
        postprocessing=postprocessing,
        device=torch_device,
        class_names=class_names,
        threshold=threshold,
        spatial_size=spatial_size,
        model_name=model_name,
        # a variant's results say which model made them: "0.3.0+subtype"
        model_version=version.strip() if variant is None else f"{version.strip()}+{variant}",
        checkpoint=checkpoint,
        fingerprint=digest.hexdigest(),
        heatmap_layer=heatmap_layer,
        inferer=inferer,
    )
    logger.info(
        "bundle %s: %s %s, classes %s, input %dx%d, threshold %.4g, on %s",
        root,
        model_name,
        loaded.model_version,
        "/".join(class_names),
        *spatial_size,
        threshold,
        torch_device,
    )
    return loaded
