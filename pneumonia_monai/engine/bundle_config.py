"""The bundle's files as data: ``configs/inference.json`` (and a variant's overlay), ``metadata.json``.

One reader for what every consumer of the bundle (``infer``, the DICOM node, the bundle's own
``evaluating`` run, ``evaluate --bundle``, the MONAI Deploy app, MONAI Label, the calibration scripts)
takes from these files before building anything, and one writer for the values the scripts store:

- :func:`read_inference_config`: ``inference.json``, overlaid key by key by ``inference_<variant>.json``;
- :func:`read_operating_point` / :func:`operating_point`: the operating ``threshold`` and the stored
  calibration (``temperature``, ``logit_bias``), validated;
- :func:`model_version` / :func:`model_name`: ``metadata.json``'s ``version`` and ``name``;
- :func:`write_config_values`: set keys of a config file as JSON (key order and every other key kept),
  atomically, after validating the operating-point values among them.

The contract (which key means what, and who reads it) is documented in ``bundle/docs/README.md``,
section "The inference.json contract". ``threshold``, ``temperature`` and ``logit_bias`` are literal
numbers there (never ``$`` expressions): they are read as JSON and edited as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumonia_monai import checks
from pneumonia_monai.atomic import atomic_open
from pneumonia_monai.transforms.temperature import check_bias, check_temperature

logger = logging.getLogger(__name__)

#: The bundle's config folder, relative to the bundle root.
CONFIGS = "configs"
#: The inference config, in :data:`CONFIGS`.
INFERENCE_CONFIG = "inference.json"
#: The bundle metadata, in :data:`CONFIGS`.
METADATA = "metadata.json"
#: Longest ``version`` / ``name`` accepted: they are written to DICOM LO elements (64 characters).
MAX_IDENTITY_LENGTH = 64
#: Algorithm name used when ``metadata.json`` has no usable ``name``.
DEFAULT_MODEL_NAME = "pneumonia_monai"
#: Keys whose values :func:`write_config_values` checks before writing.
OPERATING_POINT_KEYS: tuple[str, ...] = ("threshold", "temperature", "logit_bias")


class BundleError(ValueError):
    """The bundle cannot be used; the one-line message names the file, key or value at fault."""


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut at 300 characters (for a one-line error message)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def read_json(path: str | Path) -> dict[str, Any]:
    """Return the JSON object stored in ``path``.

    Raises:
        BundleError: if the file is missing, unreadable, not JSON, or not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path} not found")
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read: {one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_variant(variant: Any) -> str:
    """Return ``variant`` if it names an overlay (1 to 32 letters, digits, ``_`` or ``-``).

    Raises:
        BundleError: naming the value otherwise.
    """
    if (
        not isinstance(variant, str)
        or not variant
        or not variant.replace("_", "").replace("-", "").isalnum()
        or not variant.isascii()
        or len(variant) > 32
    ):
        raise BundleError(f"bundle variant must be 1 to 32 letters, digits, '_' or '-', got {variant!r}")
    return variant


def inference_config_files(bundle_root: str | Path, variant: str | None = None) -> list[Path]:
    """``[configs/inference.json]``, plus ``configs/inference_<variant>.json`` for a variant.

    Raises:
        BundleError: if a file is missing or the variant's name is not acceptable.
    """
    configs = Path(bundle_root) / CONFIGS
    files = [configs / INFERENCE_CONFIG]
    if variant is not None:
        overlay = configs / f"inference_{check_variant(variant)}.json"
        if not overlay.is_file():
            raise BundleError(f"bundle variant {variant!r}: {overlay} not found")
        files.append(overlay)
    return files


def read_inference_config(bundle_root: str | Path, variant: str | None = None) -> dict[str, Any]:
    """Return ``inference.json``, overlaid key by key by the variant's file (as the config parser does).

    Raises:
        BundleError: if a file is missing or unreadable.
    """
    merged: dict[str, Any] = {}
    for path in inference_config_files(bundle_root, variant):
        merged.update(read_json(path))
    return merged


def check_threshold(value: Any, source: str | Path = "the bundle") -> float:
    """Return the operating threshold ``value`` as a float.

    Args:
        value: the stored threshold.
        source: where it was read (named in the message).

    Raises:
        BundleError: if it is not a number in [0, 1] (a bool is not a number).
    """
    try:
        return checks.probability(f"{source}: 'threshold'", value)
    except ValueError as exc:  # ValueTypeError included
        raise BundleError(str(exc)) from None


@dataclass(frozen=True)
class OperatingPoint:
    """The stored decision rule and calibration of a bundle.

    Attributes:
        threshold: pneumonia when ``p(pneumonia) >= threshold``.
        temperature: logits are divided by it before the softmax (1: uncalibrated).
        logit_bias: per-class offsets added after the division, or None.
    """

    threshold: float
    temperature: float = 1.0
    logit_bias: tuple[float, ...] | None = None


def operating_point(
    config: Mapping[str, Any], source: str | Path = "the bundle", num_classes: int | None = None
) -> OperatingPoint:
    """Return the operating point of an inference config (see :func:`read_inference_config`).

    ``temperature`` defaults to 1 and ``logit_bias`` to None when absent.

    Args:
        config: the merged config.
        source: where it was read (named in messages).
        num_classes: when given, ``logit_bias`` must have one value per class.

    Raises:
        BundleError: if ``threshold`` is missing or not in [0, 1], ``temperature`` is not a finite
            number > 0, or ``logit_bias`` is not one finite number per class.
    """
    if "threshold" not in config:
        raise BundleError(f"{source}: no 'threshold' (the operating point) in the inference config")
    threshold = check_threshold(config["threshold"], source)
    try:
        temperature = check_temperature(config.get("temperature", 1.0))
        bias = config.get("logit_bias")
        logit_bias = None if bias is None else tuple(check_bias(bias))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{source}: {exc}") from exc
    if logit_bias is not None and num_classes is not None and len(logit_bias) != num_classes:
        raise BundleError(
            f"{source}: 'logit_bias' must be None or one number per class ({num_classes}), got {bias!r}"
        )
    return OperatingPoint(threshold, temperature, logit_bias)


def read_operating_point(bundle_root: str | Path, variant: str | None = None) -> OperatingPoint:
    """Return the operating point stored in the bundle's inference config (a variant's overlay over it).

    Raises:
        BundleError: if the files are unreadable or a value is invalid (see :func:`operating_point`).
    """
    files = inference_config_files(bundle_root, variant)
    config = read_inference_config(bundle_root, variant)
    classes = config.get("class_names")
    return operating_point(
        config,
        " + ".join(str(f) for f in files),
        len(classes) if isinstance(classes, list) else None,
    )


def read_metadata(bundle_root: str | Path) -> dict[str, Any]:
    """Return ``configs/metadata.json``.

    Raises:
        BundleError: if it is missing or unreadable.
    """
    return read_json(Path(bundle_root) / CONFIGS / METADATA)


def model_version(metadata: Mapping[str, Any], source: str | Path = METADATA) -> str:
    r"""Return ``metadata.json``'s ``version``, stripped.

    An over-long version is refused, never cut: two versions that share their first 64 characters
    would otherwise be reported as one.

    Raises:
        BundleError: unless it is a string of 1 to 64 characters without a backslash (it is written to
            DICOM LO elements, where ``\`` separates values).
    """
    version = metadata.get("version")
    if (
        not isinstance(version, str)
        or not version.strip()
        or len(version) > MAX_IDENTITY_LENGTH
        or "\\" in version
    ):
        raise BundleError(
            f"{source} needs a 'version' string of 1 to {MAX_IDENTITY_LENGTH} characters "
            f"without a backslash, got {version!r}"
        )
    return version.strip()


def model_name(metadata: Mapping[str, Any]) -> str:
    """Return ``metadata.json``'s ``name``, or :data:`DEFAULT_MODEL_NAME` when it is unusable."""
    name = metadata.get("name")
    if isinstance(name, str) and 0 < len(name.strip()) <= MAX_IDENTITY_LENGTH:
        return name.strip()
    return DEFAULT_MODEL_NAME


def write_config_values(path: str | Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``updates`` in the JSON config file ``path``, as JSON, atomically; return the new config.

    Every other key, and the order of all keys, is kept (a key not yet present is added at the end).
    ``threshold``, ``temperature`` and ``logit_bias`` among ``updates`` are validated first, so a bad
    value never reaches the file. Written with four-space indentation and a final newline, the layout
    of the shipped configs.

    Raises:
        BundleError: if the file cannot be read or a value is invalid.
    """
    path = Path(path)
    config = read_json(path)
    candidate = {**config, **updates}
    checked = {key: candidate[key] for key in OPERATING_POINT_KEYS if key in updates}
    if checked:
        if "threshold" not in candidate:
            raise BundleError(f"{path}: an operating point needs a 'threshold'")
        operating_point({"threshold": candidate["threshold"], **checked}, path)
    config.update(updates)
    text = json.dumps(config, indent=4, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_open(path, "w", fsync=True) as handle:
        handle.write(text)
    logger.info("set %s in %s", ", ".join(updates), path)
    return config
