"""Seconds per training step of one nnU-Net trainer, the way ``nnUNetv2_train`` would run it, minus the epochs.

Why not read training logs: nnU-Net's epoch times include validation and the trainers differ in iterations per
epoch, so step times from logs would not compare. Here each trainer is built by nnU-Net's own
``get_trainer_from_args`` (plans, batch size and patch size from the same preprocessed dataset), loaded like
``-pretrained_weights`` does, and ``train_step`` is timed on batches from its own dataloader (loading excluded).
Run it with ``nnUNet_results`` pointing at a scratch folder: ``on_train_start`` writes its output folder there.

    python benchmarks/step_time.py -d 702 -c 2d -tr nnUNetTrainerDFG_FA -pretrained_weights CKPT -n 12
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


def time_steps(dataset: str, configuration: str, trainer_name: str, plans: str, pretrained: str | None,
               steps: int, warmup: int, device: str = "cpu") -> dict:
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
    trainer = get_trainer_from_args(dataset, configuration, "all", trainer_name, plans, device=torch.device(device))
    maybe_load_checkpoint(trainer, False, False, pretrained)
    trainer.on_train_start()
    trainer.network.train()
    seconds = []
    try:
        for i in range(warmup + steps):
            batch = next(trainer.dataloader_train)
            started = time.perf_counter()
            trainer.train_step(batch)
            if trainer.device.type == "cuda":  # train_step returns before the GPU has finished
                torch.cuda.synchronize()
            if i >= warmup:
                seconds.append(time.perf_counter() - started)
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
    return {"trainer": trainer_name, "batch_size": int(trainer.batch_size),
            "patch_size": [int(v) for v in trainer.configuration_manager.patch_size],
            "steps": steps, "mean_s": sum(seconds) / len(seconds), "min_s": min(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", required=True)
    parser.add_argument("-c", required=True)
    parser.add_argument("-tr", required=True)
    parser.add_argument("-p", default="nnUNetPlans")
    parser.add_argument("-pretrained_weights")
    parser.add_argument("-n", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("-device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # as nnUNetv2_train -device cpu does
    print(json.dumps({**time_steps(args.d, args.c, args.tr, args.p, args.pretrained_weights, args.n, args.warmup,
                                   args.device), "device": args.device}))


if __name__ == "__main__":
    main()
