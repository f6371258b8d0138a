"""Benchmark the bundle's training pipeline against the bare model train step, in one run.

Prints images/s of (a) the full training pipeline of ``bundle/configs/train.json`` (cached loading,
route augmentation, lung crop, ``ThreadDataLoader``, ``SupervisedTrainer`` iteration with its loss,
optimiser and post-processing) in the precision the bundle resolves (``precision`` key: bf16 on CPUs
with native bf16), and (b) the bare DenseNet121 train step (forward, loss, backward, optimiser step)
on pre-made tensors of the same shape, in fp32 and in bf16 autocast with channels-last weights, on the
same device and batch size; then the bf16/fp32 speed-up of the bare step and the ratio (a)/(b) against
the bare step of the same precision. A ratio near 1 means data loading and the engine keep up.

Usage::

    python scripts/benchmark_train.py [--spatial-size 224] [--batch-size 16] [--iterations 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
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


def bare_rate(args: argparse.Namespace, precision: str) -> float:
    """Images/s of forward + loss + backward + step of DenseNet121 on pre-made tensors.

    ``precision`` ``"bf16"``: autocast to bfloat16 with channels-last weights and inputs (as the
    bundle's :class:`~pneumonia_monai.engine.precision.AutocastInferer`); ``"fp32"``: neither.
    """
    from monai.networks.nets import DenseNet121

    device = torch.device(args.device)
    bf16 = precision == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    net = net.to(device, memory_format=layout)  # type: ignore[call-overload]  # not in torch's stubs
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.5], device=device))
    x = torch.rand(args.batch_size, 1, args.spatial_size, args.spatial_size, device=device)
    x = x.contiguous(memory_format=layout)
    y = torch.randint(0, 2, (args.batch_size,), device=device)
    net.train()
    marks = []
    for _ in range(args.warmup + args.iterations):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
    timed = marks[args.warmup - 1 :]
    return args.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def main(argv: Sequence[str] | None = None) -> int:
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
    from pneumonia_monai.engine.precision import resolve_precision

    precision = resolve_precision("auto", args.device)
    fp32 = bare_rate(args, "fp32")
    # the bare step of the pipeline's precision before and after it: their mean cancels drift
    same_before = bare_rate(args, precision)
    pipeline = pipeline_rate(args)
    same_after = bare_rate(args, precision)
    same = (same_before + same_after) / 2
    size = f"{args.spatial_size}x{args.spatial_size}"
    print(f"device {args.device}, batch {args.batch_size}, {size}, torch threads {torch.get_num_threads()}")
    print(f"bare train step, fp32:          {fp32:8.2f} images/s")
    print(
        f"bare train step, {precision:<4}:          {same:8.2f} images/s "
        f"(before {same_before:.2f}, after {same_after:.2f}); {precision}/fp32 {same / fp32:.2f}x"
    )
    print(f"full training pipeline ({precision}): {pipeline:8.2f} images/s")
    print(f"ratio pipeline / bare {precision}:    {pipeline / same:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
