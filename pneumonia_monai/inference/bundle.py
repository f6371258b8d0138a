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

from pneumonia_monai import checks, decision
from pneumonia_monai.decision import BINARY_CLASSES, SUBTYPE_CLASSES
from pneumonia_monai.engine import bundle_config
from pneumonia_monai.engine.bundle_config import DEFAULT_MODEL_NAME, BundleError
from pneumonia_monai.engine.checkpoint import network_state
from pneumonia_monai.engine.paths import default_bundle
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
#: Largest deviation from 1 tolerated in the sum of one image's class probabilities.
PROBABILITY_SUM_TOLERANCE = 1e-3
#: Largest difference in any class probability between the bf16 and the fp32 forward that lets a CPU
#: run in bf16 (:func:`bf16_difference` on the bundle's sample films); past it the network runs in fp32.
BF16_PARITY_TOLERANCE = 0.01
#: Sample films the bf16 forward is checked on when a bundle loads with bf16 asked for (or ``auto``).
PARITY_FILMS = 40


__all__ = ["DEFAULT_MODEL_NAME", "BundleError", "InferenceBundle", "load_bundle", "resolve_device"]


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
        inferer: how the network is called (the bundle's ``inferer``, built for ``device`` with the
            ``precision`` rule; see :func:`load_bundle`).
        amp: float16 autocast on CUDA around :attr:`inferer` (the bundle's ``amp`` key).
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
    inferer: Callable[..., Any] | None = None
    operating_point: str = "bundle"
    amp: bool = False

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

        The forward pass runs under :func:`torch.inference_mode` through :attr:`inferer` (on a CPU,
        bf16 autocast where the CPU has native bf16 and the bf16 forward kept parity at load, see
        :func:`load_bundle`; else fp32), inside float16 autocast on CUDA where :attr:`amp` is set.

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
            if self.amp and self.device.type == "cuda"
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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate_default_bundle() -> Path:
    """Return the bundle used when none is named (:func:`pneumonia_monai.engine.paths.default_bundle`).

    The folder named by ``PNEUMONIA_MONAI_BUNDLE``, else the ``bundle/`` of the source checkout.

    Raises:
        BundleError: if no bundle is there.
    """
    try:
        return default_bundle()
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


def _parity_checked(
    inferer: AutocastInferer,
    network: torch.nn.Module,
    root: Path,
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> AutocastInferer:
    """``inferer`` where its bf16 forward keeps parity with fp32 on the CPU, else an fp32 one like it.

    bf16 (``auto`` on a CPU with native bf16, or asked for) is kept only when its probabilities on the
    bundle's sample films stay within :data:`BF16_PARITY_TOLERANCE` of fp32's; otherwise fp32 runs and a
    warning says by how much bf16 differed.
    """
    if inferer.precision != "bf16" or inferer.device_type != "cpu":
        return inferer
    fp32 = AutocastInferer("cpu", precision="fp32", channels_last=inferer.channels_last)
    try:
        films = _parity_films(root)
    except BundleError as exc:
        logger.warning("%s: running in fp32", exc)
        return fp32
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
        return fp32
    logger.info("bf16 forward within %.4f of fp32 in probability on the bundle's sample films", difference)
    return inferer


def _cpu_inferer(
    network: torch.nn.Module,
    precision: str,
    root: Path,
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> AutocastInferer:
    """The default CPU forward (a bundle without ``inferer``): channels-last, bf16 where it keeps parity."""
    inferer = AutocastInferer("cpu", precision=precision, channels_last=True)
    return _parity_checked(inferer, network, root, preprocessing)


@dataclass(frozen=True)
class _Files:
    """The bundle's config files, read as JSON (the values every consumer reads the same way)."""

    root: Path
    config_files: list[Path]
    meta_path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def source(self) -> str:
        """The config file named in messages (``inference.json``)."""
        return str(self.config_files[0])


def _read_files(bundle: str | Path | None, variant: str | None) -> _Files:
    """Find the bundle folder; read ``inference.json`` (and the variant's overlay) and ``metadata.json``."""
    root = locate_default_bundle() if bundle is None else Path(bundle)
    if not root.is_dir():
        raise BundleError(f"bundle folder {root} not found")
    root = root.resolve()
    files = bundle_config.inference_config_files(root, variant)
    config = bundle_config.read_inference_config(root, variant)
    meta_path = root / bundle_config.CONFIGS / bundle_config.METADATA
    metadata = bundle_config.read_json(meta_path)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise BundleError(f"{files[0]} lacks key(s) {', '.join(missing)}")
    return _Files(root, files, meta_path, config, metadata)


class _Parsed:
    """The bundle's :class:`~monai.bundle.ConfigParser`, every failure a :class:`BundleError`."""

    def __init__(self, files: _Files, overrides: Mapping[str, Any]) -> None:
        from monai.bundle import ConfigParser

        self.source = files.source
        self.parser = ConfigParser()
        self.parser.read_config([str(f) for f in files.config_files])
        self.parser.read_meta(str(files.meta_path))
        for key, value in {"bundle_root": str(files.root), **overrides}.items():
            self.parser[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.parser

    def __call__(self, key: str) -> Any:
        try:
            return self.parser.get_parsed_content(key)
        except Exception as exc:  # any failure of the bundle's own config is a bundle error
            raise BundleError(f"{self.source}: cannot build {key!r}: {bundle_config.one_line(exc)}") from exc


def _switch(parsed: _Parsed, key: str, *, default: bool) -> bool:
    """The bundle's bool ``key`` as parsed (``default`` where it has none), or :class:`BundleError`."""
    if key not in parsed:
        return default
    try:
        return checks.flag(f"{key!r}", parsed(key))
    except ValueError as exc:
        raise BundleError(f"{parsed.source}: {exc}") from exc


def _class_names(parsed: _Parsed) -> tuple[str, ...]:
    class_names = parsed("class_names")
    if not isinstance(class_names, list | tuple) or tuple(class_names) not in (
        BINARY_CLASSES,
        SUBTYPE_CLASSES,
    ):
        raise BundleError(
            f"{parsed.source}: 'class_names' must be {list(BINARY_CLASSES)} or {list(SUBTYPE_CLASSES)}, "
            f"got {class_names!r}"
        )
    num_classes = parsed("num_classes")
    if num_classes != len(class_names):
        raise BundleError(
            f"{parsed.source}: 'num_classes' is {num_classes!r} but 'class_names' has {len(class_names)}"
        )
    return tuple(class_names)


def _spatial_size(parsed: _Parsed) -> tuple[int, int]:
    size = parsed("spatial_size")
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 16 for s in size)
    ):
        raise BundleError(f"{parsed.source}: 'spatial_size' must be two sizes of at least 16, got {size!r}")
    return int(size[0]), int(size[1])


def _transform(parsed: _Parsed, key: str) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    value = parsed(key)
    if not callable(value):
        raise BundleError(f"{parsed.source}: {key!r} is a {type(value).__name__}, not a transform")
    return value


def _network(parsed: _Parsed, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """``network_def`` with the checkpoint's weights (strict), in eval mode on ``device``."""
    if not checkpoint.is_file():
        raise BundleError(
            f"checkpoint {checkpoint} not found (train the model, or point 'checkpoint' at one)"
        )
    network = parsed("network_def")
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"{parsed.source}: 'network_def' is a {type(network).__name__}, not a torch module")
    try:
        raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "unreadable weights"
        raise BundleError(f"checkpoint {checkpoint} cannot be read: {bundle_config.one_line(exc)}") from exc
    try:
        state = network_state(raw, checkpoint)
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(
            f"checkpoint {checkpoint} does not fit 'network_def': {bundle_config.one_line(exc)}"
        ) from exc
    return network.to(device).eval()


def _check_forward(
    network: torch.nn.Module,
    spatial_size: tuple[int, int],
    class_names: tuple[str, ...],
    device: torch.device,
    checkpoint: Path,
) -> None:
    """One forward pass of a blank image: ``(1, num_classes)`` finite outputs, or :class:`BundleError`."""
    try:
        with torch.inference_mode():
            out = network(torch.zeros((1, 1, *spatial_size), device=device))
    except Exception as exc:  # any failure of the forward pass: unusable
        raise BundleError(
            f"'network_def' fails on a (1, 1, {spatial_size[0]}, {spatial_size[1]}) input: "
            f"{bundle_config.one_line(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, len(class_names)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BundleError(
            f"the network outputs {shape} for one image, expected (1, {len(class_names)}) for {class_names}"
        )
    if not math.isfinite(float(out.float().abs().sum())):
        raise BundleError(f"checkpoint {checkpoint} gives non-finite outputs")


def _heatmap_layer(parsed: _Parsed, network: torch.nn.Module) -> str:
    layer = parsed("heatmap_layer") if "heatmap_layer" in parsed else DENSENET_TARGET_LAYER
    if not isinstance(layer, str) or layer not in dict(network.named_modules()):
        raise BundleError(f"{parsed.source}: 'heatmap_layer' {layer!r} is not a module of 'network_def'")
    return layer


def _forward_rule(
    parsed: _Parsed,
    network: torch.nn.Module,
    device: torch.device,
    root: Path,
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> tuple[torch.nn.Module, Callable[..., Any], bool]:
    """``(network, inferer, amp)``: how the network is called, from ``inferer`` and ``amp``.

    ``inferer`` is built from the config (for ``device``, with the ``precision`` the caller or the
    config asks for); a bundle without one gets :class:`AutocastInferer` (channels-last on the CPU).
    A bf16 :class:`AutocastInferer` on the CPU is kept only where it keeps parity with fp32
    (:func:`_parity_checked`). A channels-last inferer gets channels-last weights (oneDNN's fast
    layout: fp32 DenseNet121 about twice as fast on a CPU, same outputs). ``amp`` (default: on CUDA)
    adds float16 autocast on CUDA, as MONAI's engines do.
    """
    if "inferer" in parsed:
        inferer = parsed("inferer")
        if not callable(inferer):
            raise BundleError(f"{parsed.source}: 'inferer' is a {type(inferer).__name__}, not an inferer")
    else:
        inferer = AutocastInferer(device, precision=parsed("precision"), channels_last=device.type == "cpu")
    if isinstance(inferer, AutocastInferer):
        if inferer.device_type != device.type:
            raise BundleError(
                f"{parsed.source}: 'inferer' autocasts on {inferer.device_type!r}, the network is on {device}"
            )
        inferer = _parity_checked(inferer, network, root, preprocessing)
        if inferer.channels_last:
            network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
    amp = _switch(parsed, "amp", default=device.type == "cuda")
    return network, inferer, amp and device.type == "cuda"


def _precision_label(inferer: Callable[..., Any], amp: bool) -> str:
    """What the fingerprint records of the forward's precision."""
    if amp:
        return "cuda-amp"
    return str(getattr(inferer, "precision", type(inferer).__name__))


def _fingerprint(checkpoint: Path, settings: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(file_sha256(checkpoint).encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_bundle(
    bundle: str | Path | None = None,
    *,
    device: str = "auto",
    variant: str | None = None,
    full_decode: bool = False,
    precision: str | None = None,
) -> InferenceBundle:
    """Load and check a bundle for inference.

    Every consumer of the bundle (``infer``, the DICOM node, the MONAI Deploy app, MONAI Label) loads it
    here, so each honours every key of ``inference.json`` the same way (``bundle/docs/README.md``, "The
    inference.json contract").

    Args:
        bundle: the bundle folder (holding ``configs/inference.json``); default: the package's bundle.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; the config's
            ``device`` is set to it.
        variant: a model variant: ``configs/inference_<variant>.json`` is read over ``inference.json``
            (``"subtype"``: the three-class normal / bacterial / viral model).
        full_decode: decode every pixel of each film (the bundle's ``reduced_decode`` set to false;
            see :mod:`pneumonia_monai.dicom.reduced`).
        precision: the CPU forward's precision, ``"auto"``, ``"bf16"`` or ``"fp32"``
            (:mod:`pneumonia_monai.engine.precision`), set as the config's ``precision`` (which its
            ``inferer`` references); default: the bundle's ``precision``, else ``"auto"``. bf16 runs
            only where its probabilities stay within :data:`BF16_PARITY_TOLERANCE` of fp32 on the
            bundle's sample films (else fp32, with a warning).

    Returns:
        The bundle, its network in eval mode on the device and checked with one forward pass of a blank
        image of ``spatial_size``.

    Raises:
        BundleError: if the bundle is unusable (the message names the file, key or tensor at fault).
        ValueError: if ``device`` is unknown or unavailable.
    """
    torch_device = resolve_device(device)
    files = _read_files(bundle, variant)
    config = files.config
    version = bundle_config.model_version(files.metadata, files.meta_path)
    model_name = bundle_config.model_name(files.metadata)
    precision = precision if precision is not None else config.get("precision", "auto")
    if precision not in PRECISIONS:
        raise BundleError(f"{files.source}: 'precision' must be one of {PRECISIONS}, got {precision!r}")
    overrides: dict[str, Any] = {"device": torch_device, "precision": precision}
    if full_decode and "reduced_decode" in config:
        overrides["reduced_decode"] = False
    parsed = _Parsed(files, overrides)
    reduced_decode = _switch(parsed, "reduced_decode", default=False)

    class_names = _class_names(parsed)
    point = bundle_config.operating_point(config, files.source, len(class_names))
    spatial_size = _spatial_size(parsed)
    checkpoint = Path(parsed("checkpoint"))
    preprocessing = _transform(parsed, "preprocessing")
    postprocessing = _transform(parsed, "postprocessing")
    network = _network(parsed, checkpoint, torch_device)
    _check_forward(network, spatial_size, class_names, torch_device, checkpoint)
    heatmap_layer = _heatmap_layer(parsed, network)
    network, inferer, amp = _forward_rule(parsed, network, torch_device, files.root, preprocessing)

    settings = {
        "reduced_decode": reduced_decode,
        "precision": _precision_label(inferer, amp),
        "class_names": list(class_names),
        "threshold": point.threshold,
        "spatial_size": list(spatial_size),
        "lung_crop": config.get("lung_crop"),
        "temperature": config.get("temperature"),
        "logit_bias": config.get("logit_bias"),
        "preprocessing": config.get("preprocessing"),
        "postprocessing": config.get("postprocessing"),
        "version": version,
    }
    loaded = InferenceBundle(
        root=files.root,
        network=network,
        preprocessing=preprocessing,
        postprocessing=postprocessing,
        device=torch_device,
        class_names=class_names,
        threshold=point.threshold,
        spatial_size=spatial_size,
        model_name=model_name,
        # a variant's results say which model made them: "0.3.0+subtype"
        model_version=version if variant is None else f"{version}+{variant}",
        checkpoint=checkpoint,
        fingerprint=_fingerprint(checkpoint, settings),
        heatmap_layer=heatmap_layer,
        inferer=inferer,
        amp=amp,
    )
    logger.info(
        "bundle %s: %s %s, classes %s, input %dx%d, threshold %.4g, on %s (%s)",
        files.root,
        model_name,
        loaded.model_version,
        "/".join(class_names),
        *spatial_size,
        point.threshold,
        torch_device,
        settings["precision"],
    )
    return loaded
