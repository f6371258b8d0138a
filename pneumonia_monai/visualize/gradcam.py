"""Grad-CAM heatmaps of the classifier.

:func:`gradcam` computes a Gradient-weighted Class Activation Map (Selvaraju et al., 2017) with
:class:`monai.visualize.GradCAM`, without leaving any trace on the network: MONAI's
:class:`~monai.visualize.ModelWithHooks` registers hooks it never removes, turns off ``inplace`` on the
target layer and calls ``zero_grad()`` on the model, so here the hooks are registered by this module
through removable handles and every other change (train/eval flags, ``requires_grad``, ``.grad``,
``inplace``) is undone in a ``finally`` block. Which output a heatmap explains is the decision rule's
(:func:`pneumonia_monai.decision.explained_class`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from typing import cast

import numpy as np
import torch
from monai.data import MetaTensor
from monai.visualize import GradCAM, ModelWithHooks

from pneumonia_monai import checks
from pneumonia_monai.visualize.overlay import check_unit_array

logger = logging.getLogger(__name__)

#: Output of the third dense block of :class:`monai.networks.nets.DenseNet121`: 1/16 of the input, so
#: 14 x 14 at the 224-pixel input (the last block, ``class_layers.relu``, is 7 x 7: too coarse to lay
#: over a film). Its 1,024 channels are already class-specific enough for Grad-CAM.
DENSENET_TARGET_LAYER = "features.denseblock3"


def _identity(x: torch.Tensor) -> torch.Tensor:
    """Post-processing that leaves the map as it is (MONAI's default flips max to 0 and min to 1)."""
    return x


def _as_batched_image(image: torch.Tensor) -> torch.Tensor:
    """Validate ``image`` and return it as a ``(1, 1, H, W)`` view without metadata or autograd history."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating point tensor, got dtype {image.dtype}")
    shape = tuple(image.shape)
    if image.ndim == 3 and shape[0] == 1:
        image = image.unsqueeze(0)
    elif not (image.ndim == 4 and shape[0] == 1 and shape[1] == 1):
        raise ValueError(f"image must have shape (1, 1, H, W) or (1, H, W), got {shape}")
    if image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {shape}")
    if isinstance(image, MetaTensor):  # a plain tensor: the metadata is of no use here
        image = image.as_tensor()
    return image.detach()


def gradcam(
    network: torch.nn.Module,
    image: torch.Tensor,
    *,
    target_layer: str = DENSENET_TARGET_LAYER,
    class_index: int = 1,
) -> np.ndarray:
    """Compute the Grad-CAM of ``class_index`` for one image, scaled to [0, 1].

    The map is the ReLU of the gradient-weighted sum of the ``target_layer`` activations, upsampled
    (bilinear, by MONAI) to the input size and min-max scaled; a map with no positive evidence (all
    zero after the ReLU) is returned as zeros.

    The network is left as it was found: no hooks remain, each module's ``training`` flag, each
    parameter's ``requires_grad`` and ``.grad`` and the target layer's ``inplace`` flag are restored.
    The network is run in eval mode (dropout off, batch-norm running statistics untouched).

    Args:
        network: the classifier, e.g. ``DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)``.
        image: the model input, ``(1, 1, H, W)`` or ``(1, H, W)``, preprocessed as for inference; it is
            moved to the network's device.
        target_layer: name (as in ``network.named_modules()``) of the layer whose output is explained.
        class_index: index of the logit explained (1 = pneumonia for the binary model).

    Returns:
        ``(H, W)`` float32 array in [0, 1], row-major as the input.

    Raises:
        TypeError: if ``network`` is not a module or ``image`` not a floating point tensor.
        ValueError: if the shape of ``image``, ``target_layer`` or ``class_index`` is invalid.
    """
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    checks.non_negative_int("class_index", class_index)
    modules = dict(network.named_modules())
    if target_layer not in modules:
        raise ValueError(f"target_layer {target_layer!r} is not a module of {type(network).__name__}")
    target = modules[target_layer]
    image = _as_batched_image(image)
    first_param = next(network.parameters(), None)

    # Everything gradcam changes, recorded to be put back.
    modes = {module: module.training for module in network.modules()}
    params = list(network.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    has_inplace = "inplace" in vars(target)
    inplace = vars(target).get("inplace")

    # No hooks are registered by MONAI (both flags False at construction): this module registers them
    # with handles and then tells the wrapper to use what they cache.
    wrapper = ModelWithHooks(network, target_layer, register_forward=False, register_backward=False)
    wrapper.register_forward = True
    wrapper.register_backward = True

    def _forward_hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        wrapper.activations[target_layer] = output

    def _backward_hook(_module: torch.nn.Module, _grad_input: object, grad_output: tuple) -> None:
        wrapper.gradients[target_layer] = grad_output[0]

    with ExitStack() as stack:
        try:
            if has_inplace and inplace:
                # A full backward hook cannot be put on a module that modifies its input in place.
                target.inplace = False
            stack.callback(target.register_forward_hook(_forward_hook).remove)
            stack.callback(target.register_full_backward_hook(_backward_hook).remove)
            # Gradients are needed with respect to the activations only: the parameters are frozen
            # and the input requires grad, so that no parameter .grad is written.
            for p in params:
                p.requires_grad_(False)
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            # A fresh copy (a normal tensor even if the caller runs in inference mode) that records grads.
            x = image.clone()
            if first_param is not None:
                x = x.to(device=first_param.device, dtype=first_param.dtype)
            x.requires_grad_(True)
            # MONAI's CAM classes take a ModelWithHooks as it is (CAMBase checks for one), though their
            # nn_module parameter is annotated as a Module only.
            cam_layer = GradCAM(
                nn_module=cast(torch.nn.Module, wrapper), target_layers=target_layer, postprocessing=_identity
            )
            try:
                cam = cam_layer(x, class_idx=class_index)
            except IndexError as exc:  # logits[:, class_index] outside the network's outputs
                raise ValueError(f"class_index {class_index} is out of range for this network") from exc
        finally:
            for module, mode in modes.items():
                module.training = mode
            for p, flag, grad in zip(params, requires_grad, grads, strict=True):
                p.requires_grad_(flag)
                p.grad = grad
            if has_inplace:
                target.inplace = inplace
            wrapper.activations.clear()
            wrapper.gradients.clear()

    cam_np = cam.detach().to("cpu", torch.float32).numpy()[0, 0]
    if cam_np.shape != tuple(image.shape[-2:]):  # MONAI's upsampler returns the input's spatial size
        raise RuntimeError(f"Grad-CAM of shape {cam_np.shape} does not match the input {tuple(image.shape)}")
    low, high = float(cam_np.min()), float(cam_np.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("Grad-CAM is not finite; is the input finite?")
    if high - low <= np.finfo(np.float32).eps * max(1.0, abs(high)):
        logger.debug("Grad-CAM of class %d has no positive evidence: returning zeros", class_index)
        return np.zeros_like(cam_np, dtype=np.float32)
    return ((cam_np - low) / (high - low)).astype(np.float32)


def heat_inside(cam: np.ndarray, box: Sequence[float], crop: Sequence[float]) -> float:
    """Share of a map's heat mass inside ``box`` (film fractions), for a map lying on ``crop``.

    For the model card: the Grad-CAM of the network input lies on the crop (the lung box plus its margin);
    this tells how much of its mass is on the lung box proper.
    """
    heat = check_unit_array("cam", cam)
    total = float(heat.sum())
    if total <= 0.0:
        return float("nan")
    h, w = heat.shape
    cr0, cr1, cc0, cc1 = (float(v) for v in crop)
    br0, br1, bc0, bc1 = (float(v) for v in box)

    def span(b0: float, b1: float, c0: float, c1: float, n: int) -> slice:
        lo = int(np.clip(round((b0 - c0) / (c1 - c0) * n), 0, n))
        hi = int(np.clip(round((b1 - c0) / (c1 - c0) * n), lo, n))
        return slice(lo, hi)

    inside = heat[span(br0, br1, cr0, cr1, h), span(bc0, bc1, cc0, cc1, w)]
    return float(inside.sum()) / total
