"""Benchmark the bundle's training pipeline against the bare model train step, in one run.

Prints images/s of (a) the full training pipeline of ``bundle/configs/train.json`` (cached
preprocessing, augmentation, ``ThreadDataLoader``, ``SupervisedTrainer`` iteration with its loss,
optimiser and post-processing) and (b) the bare DenseNet121 train step (forward, loss, backward,
optimiser step) on pre-made tensors of the same shape, on the same device and batch size, and the
ratio (a)/(b). A ratio near 1 means data loading and the engine are not the bottleneck.

Usage::

    python scripts/benchmark_train.py [--spatial-size 224] [--batch-size 16] [--iterations 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[1]


def pipeline_rate(args: argparse.Namespace) -> float:
    """Images/s of the bundle's trainer over ``args.iterations`` iterations after a warm-up."""
    workflow = ConfigWorkflow(
        config_file=str(REPO / "bundle/configs/train.json"),
        workflow_type="train",
        logging_file=False,
        dataset_dir=str(args.dataset_dir),
        spatial_size=[args.spatial_size, args.spatial_size],
        batch_size=args.batch_size,
        device=args.device,
        output_dir=str(args.workdir / "runs"),
        ckpt_dir=str(args.workdir / "ckpt"),
        max_epochs=1,
    )
    workflow.initialize()
    workflow.parser["train#trainer#train_handlers"] = []  # no validation, logging or checkpoints
    workflow.parser["train#trainer#epoch_length"] = args.warmup + args.iterations
    workflow.parser["train#dataloader#drop_last"] = True
    trainer = workflow.parser.get_parsed_content("train#trainer")  # builds (and caches) the dataset
    marks: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _mark(engine: object) -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    trainer.run()
    timed = marks[args.warmup - 1 :]
    return args.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def bare_rate(args: argparse.Namespace) -> float:
    """Images/s of forward + loss + backward + step of DenseNet121 on pre-made tensors."""
    from monai.networks.nets import DenseNet121

    device = torch.device(args.device)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.5], device=device))
    x = torch.rand(args.batch_size, 1, args.spatial_size, args.spatial_size, device=device)
    y = torch.randint(0, 2, (args.batch_size,), device=device)
    net.train()
    marks = []
    for _ in range(args.warmup + args.iterations):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
    timed = marks[args.warmup - 1 :]
    return args.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-dir", type=Path, default=REPO / "bundle/sample_data/chest_xray")
    parser.add_argument("--spatial-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pneumonia_monai_benchmark_train"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # bare step before and after the pipeline: their mean cancels drift (thermal, other load)
    bare_before = bare_rate(args)
    pipeline = pipeline_rate(args)
    bare_after = bare_rate(args)
    bare = (bare_before + bare_after) / 2
    size = f"{args.spatial_size}x{args.spatial_size}"
    print(f"device {args.device}, batch {args.batch_size}, {size}, torch threads {torch.get_num_threads()}")
    print(f"bare model train step:   {bare:8.2f} images/s (before {bare_before:.2f}, after {bare_after:.2f})")
    print(f"full training pipeline:  {pipeline:8.2f} images/s")
    print(f"ratio pipeline / bare:   {pipeline / bare:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
