"""Small typed pieces the bundle configs reference by ``_target_`` or in short ``$`` expressions."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.networks.utils import copy_model_state

from pneumonia_monai import checks
from pneumonia_monai.engine.bundle_config import read_inference_config, read_operating_point
from pneumonia_monai.engine.checkpoint import load_network_state

logger = logging.getLogger(__name__)


def class_weights(items: Sequence[Mapping[str, Any]], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for ``CrossEntropyLoss``, normalised to mean 1.

    Kermany's train split is about 3:1 pneumonia:normal; weighting the loss keeps the network from
    buying accuracy with the majority class (the alternative, oversampling, repeats the few normal
    films and overfits them sooner).

    Args:
        items: datalist items with an integer ``label``.
        num_classes: number of classes of the network.

    Raises:
        ValueError: if a class has no item or a label is out of range.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for item in items:
        label = int(item["label"])
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} out of range for {num_classes} classes")
        counts[label] += 1
    if (counts == 0).any():
        missing = [i for i in range(num_classes) if counts[i] == 0]
        raise ValueError(f"no training item of class(es) {missing}: cannot weight the loss")
    weights = counts.sum() / (num_classes * counts)
    weights = weights / weights.mean()
    logger.info(
        "class counts %s -> loss weights %s", counts.tolist(), [round(w, 3) for w in weights.tolist()]
    )
    return weights.float()


def memory_format(channels_last: object) -> torch.memory_format:
    """The weights' memory layout for the ``channels_last`` key: ``torch.channels_last`` or contiguous.

    Raises:
        ValueTypeError: if ``channels_last`` is not a bool (``--channels_last false`` on the command line
            is the string ``"false"``; see :func:`pneumonia_monai.checks.flag`).
    """
    on = checks.flag("channels_last", channels_last, command_line=True)
    return torch.channels_last if on else torch.contiguous_format


def key_metric_score(engine: Engine) -> float:
    """Score for early stopping: the evaluator's key metric (validation ROC AUC).

    Raises:
        ValueError: if ``engine`` has no key metric (MONAI's Workflow sets ``state.key_metric_name``
            from its ``key_val_metric``; ignite's State has no such field).
    """
    name = getattr(engine.state, "key_metric_name", None)
    if name is None:
        raise ValueError("the engine has no key metric: give the evaluator a key_val_metric")
    return float(engine.state.metrics[name])


def stored_setting(bundle_root: str | Path, key: str, variant: str | None = None) -> Any:
    """Return ``key`` of the bundle's inference config: ``inference.json``, overlaid by a variant's.

    ``variant`` ``"subtype"`` reads ``configs/inference_subtype.json`` over ``configs/inference.json``
    (:func:`pneumonia_monai.engine.bundle_config.read_inference_config`, the reader
    :func:`pneumonia_monai.inference.bundle.load_bundle` uses), so evaluation reads the very value
    inference uses.

    Raises:
        KeyError: if neither file holds ``key``.
    """
    merged = read_inference_config(bundle_root, variant)
    if key not in merged:
        raise KeyError(
            f"{Path(bundle_root) / 'configs'}: no {key!r} in inference.json"
            f"{'' if variant is None else ' or its overlay'}"
        )
    return merged[key]


def stored_threshold(bundle_root: str | Path, variant: str | None = None) -> float:
    """Return the operating threshold stored in the bundle's inference config.

    Read and validated by :func:`pneumonia_monai.engine.bundle_config.read_operating_point`.

    Raises:
        ValueError: if the stored operating point is missing or invalid (threshold outside [0, 1] ...).
    """
    return read_operating_point(bundle_root, variant).threshold


def stored_temperature(bundle_root: str | Path, variant: str | None = None) -> float:
    """Return the calibration temperature stored in the bundle's inference config (1 where none is).

    Raises:
        ValueError: if the stored operating point is invalid (a temperature that is not > 0 ...).
    """
    return read_operating_point(bundle_root, variant).temperature


def stored_logit_bias(bundle_root: str | Path, variant: str | None = None) -> list[float] | None:
    """Return the per-class logit offsets of the stored calibration (None where none is stored).

    Raises:
        ValueError: if the stored operating point is invalid (a bias that is not finite numbers ...).
    """
    bias = read_operating_point(bundle_root, variant).logit_bias
    return None if bias is None else list(bias)


def init_from_checkpoint(network: torch.nn.Module, path: str | Path | None) -> torch.nn.Module:
    """Initialise ``network`` from the weights of another checkpoint of the same architecture.

    For transfer between variants: the three-class network starts from the two-class model's feature
    extractor. Every tensor whose name and shape match is copied; the rest (the final ``Linear``
    layer, whose shape depends on the number of classes) keeps its fresh initialisation. With
    ``path`` None the network is returned untouched, so the default training run starts from scratch.

    Args:
        network: the network to initialise, in place.
        path: a checkpoint file in a form :func:`~pneumonia_monai.engine.checkpoint.network_state` reads
            (``CheckpointSaver``'s ``{"model": ...}``, a bare state dict, ...).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file holds no state dict, or fewer tensors could be copied than were left
            fresh (another architecture).
    """
    if path is None:
        return network
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_checkpoint {str(path)!r} does not exist")
    own, updated, unchanged = copy_model_state(network, load_network_state(path), inplace=True)
    learnable = [k for k in unchanged if own[k].dtype.is_floating_point and own[k].dim() > 0]
    if len(updated) < len(learnable):
        raise ValueError(
            f"init_checkpoint {str(path)!r} matches {len(updated)} of {len(own)} tensors of the network: "
            "it is not a checkpoint of this architecture"
        )
    logger.info(
        "initialised %d of %d tensors from %s; kept fresh: %s", len(updated), len(own), path, unchanged
    )
    return network


class ResumableTraining:
    """Save the whole training state every epoch, and resume from such a save when one is given.

    Attached to the trainer, it adds the trainer itself (epoch and iteration counts) to ``state``, so
    a config need not reference the trainer from inside its own handlers:

    - a :class:`~monai.handlers.CheckpointSaver` writes ``state`` plus the trainer to ``save_dir``
      after every epoch, keeping the last one (``checkpoint_epoch=N.pt``);
    - with ``load_path``, a :class:`~monai.handlers.CheckpointLoader` restores them when the run starts,
      so it goes on from the epoch after the saved one, with the same optimiser and scheduler state.

    Args:
        save_dir: folder of the per-epoch saves.
        state: the objects to save and restore (network, optimizer, lr_scheduler), by name.
        load_path: a save to resume from, or None (a fresh run).
        map_location: where to load the tensors.

    Raises:
        FileNotFoundError: if ``load_path`` is given and does not exist.
    """

    def __init__(
        self,
        save_dir: str | Path,
        state: Mapping[str, Any],
        load_path: str | Path | None = None,
        map_location: Any = None,
    ) -> None:
        if load_path is not None and not Path(load_path).is_file():
            raise FileNotFoundError(f"resume checkpoint {str(load_path)!r} does not exist")
        self.save_dir = str(save_dir)
        self.state = dict(state)
        self.load_path = None if load_path is None else str(load_path)
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        """Attach the per-epoch saver, and the loader when resuming, to the trainer ``engine``."""
        objects = {**self.state, "trainer": engine}
        if self.load_path is not None:
            logger.info("resuming training from %s", self.load_path)
            CheckpointLoader(self.load_path, objects, map_location=self.map_location).attach(engine)
        CheckpointSaver(self.save_dir, objects, save_interval=1, n_saved=1, epoch_level=True).attach(engine)


def bn_subset(items: Sequence[Mapping[str, Any]], size: int, seed: int = 0) -> list[Mapping[str, Any]]:
    """A seeded random subset of ``size`` training items (all of them when there are fewer)."""
    checks.positive_int("size", size)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(int(seed))).tolist()
    return [items[i] for i in sorted(order[:size])]


class PreciseBatchNorm:
    """Re-estimate batch-norm statistics on clean training films after every epoch, before validation.

    Batch-norm running statistics are an exponential average over *augmented* training batches; the
    model is then used on clean films (validation, inference), whose activations have other statistics.
    With this bundle's route augmentations the mismatch was large enough that eval-mode predictions
    collapsed while the weights were good (ROC AUC 0.84 with running statistics, 0.98 with batch
    statistics, on the same validation films). As in "precise BN" (Wu and Johnson, 2021, "Rethinking
    'Batch' in BatchNorm"), the statistics are recomputed as a plain average over a fixed set of clean
    training films (the deterministic preprocessing of inference), with gradients off. No validation
    film is used.

    Attach it to the trainer *before* the ``ValidationHandler``, so validation and the saved
    checkpoints see the re-estimated statistics.

    Args:
        network: the trained network.
        data_loader: batches (``{"image": (B, 1, H, W)}``) of clean training films.
        device: where the network is.
        inferer: how the network is called (the training inferer: same precision and layout).
    """

    def __init__(self, network: torch.nn.Module, data_loader: Any, device: Any, inferer: Any = None) -> None:
        self.network = network
        self.data_loader = data_loader
        self.device = torch.device(device)
        self.inferer = inferer

    def attach(self, engine: Engine) -> None:
        """Re-estimate after every epoch of ``engine`` (the trainer)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Recompute the running mean and variance of every batch-norm layer of the network."""
        norms = [m for m in self.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        training = self.network.training
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        self.network.train()
        n = 0
        with torch.no_grad():
            for batch in self.data_loader:
                images = torch.as_tensor(batch["image"]).to(self.device)
                if self.inferer is not None:
                    self.inferer(images, self.network)
                else:
                    self.network(images)
                n += images.shape[0]
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        self.network.train(training)
        logger.info("batch-norm statistics re-estimated on %d clean training films", n)
