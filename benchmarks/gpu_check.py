"""GPU figures in one prepared run: SAM/MedSAM vit_b refinement per slice, batched vs sequential box decoding, and
the FA and self-training steps against a stock nnU-Net step; written as BENCHMARKS.md's GPU section (markdown).

Why one script: device time is lent in short slots, so everything that needs the GPU is measured by one command
that needs no network and no data set beyond an optional ``nnunet_dfg demo -o`` folder (for the step times).
Without ``--checkpoint`` the vit_b weights are random: the timings are those of the architecture, and the output
says so. ``--device cpu --tiny`` (a 2-block ViT) runs the same code paths in seconds: the check that the script
works before device time is spent on it.

    .venv/bin/python benchmarks/gpu_check.py --device cuda [--checkpoint medsam_vit_b.pth] [--demo demo_out] \
        [--markdown gpu_section.md] [-o gpu.json]
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny       # dry run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CALLS_PER_SLICE = 14  # decoder calls per searched slice and present class (BENCHMARKS.md, LiteMedSAM on CPU)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` over ``repeat`` runs after ``warmup`` (GPU work included via synchronize)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def build_parts(checkpoint: str | None, tiny: bool):
    """(SamParts, what the weights are): a checkpoint (MedSAM preprocessing if its name says medsam), a random
    vit_b, or with ``tiny`` a random 2-block ViT of the same interface."""
    from nnunet_dfg.sam.build import SamParts
    from nnunet_dfg.sam.finetuned import build_parts as build_from_spec
    from nnunet_dfg.sam.transforms import MEDSAM_PREPROCESS

    if checkpoint:
        spec = checkpoint if ":" in checkpoint else f"vit_b:{checkpoint}"
        return build_from_spec(spec), f"checkpoint {Path(checkpoint.split(':')[-1]).name}"
    from segment_anything.build_sam import _build_sam, sam_model_registry

    torch.manual_seed(0)
    if tiny:
        sam, note = _build_sam(64, 2, 2, [1]), "random weights, tiny 2-block ViT (machinery check, not vit_b)"
    else:
        sam, note = sam_model_registry["vit_b"](), "random weights (no checkpoint given): architecture timing only"
    return SamParts("medsam_vit_b", sam.image_encoder, sam.prompt_encoder, sam.mask_decoder, MEDSAM_PREPROCESS,
                    ""), note


def refinement_figures(parts, device: torch.device, n_boxes: int, repeat: int, size: int = 512) -> dict:
    """Encoder per slice; per-box decoder time, stock vs split decoder, sequential vs one batched call."""
    from nnunet_dfg.sam import Segmenter
    from nnunet_dfg.sam.box_decoder import BoxDecoder
    from nnunet_dfg.sam.transforms import boxes_to_frame, validate_boxes

    seg = Segmenter(parts, device=device, runtime="torch")
    stock = BoxDecoder(seg.parts.prompt_encoder, seg.parts.mask_decoder).eval()  # SAM's decoder in its own order
    rng = np.random.default_rng(0)
    image = rng.normal(size=(size, size)).astype(np.float32)
    encoder_s = best_seconds(lambda: seg.embed(image), device, repeat)
    emb = seg.embed(image)
    lo = rng.integers(0, size // 2, (n_boxes, 2))
    boxes = np.concatenate([lo, lo + rng.integers(size // 8, size // 2, (n_boxes, 2))], 1)
    framed = boxes_to_frame(validate_boxes(boxes, emb.image_size), emb.geometry)
    framed_t = torch.as_tensor(framed, dtype=torch.float32, device=device)
    with torch.inference_mode():
        stock_seq = best_seconds(lambda: [stock(emb.tensor, framed_t[i:i + 1]) for i in range(n_boxes)],
                                 device, repeat) / n_boxes
        stock_batch = best_seconds(lambda: stock(emb.tensor, framed_t), device, repeat) / n_boxes
        split_seq = best_seconds(lambda: [seg._decode(emb.tensor, framed[i:i + 1]) for i in range(n_boxes)],
                                 device, repeat) / n_boxes
        split_batch = best_seconds(lambda: seg._decode(emb.tensor, framed), device, repeat) / n_boxes
        image_side = best_seconds(lambda: seg._image_side(emb.tensor), device, repeat)
        agree = float((stock(emb.tensor, framed_t) - seg._decode(emb.tensor, framed)).abs().max())
    per_box = min(split_seq, split_batch)
    return {"encoder_s": encoder_s, "n_boxes": n_boxes, "stock_sequential_s_per_box": stock_seq,
            "stock_batched_s_per_box": stock_batch, "split_sequential_s_per_box": split_seq,
            "split_batched_s_per_box": split_batch, "split_image_side_s": image_side,
            "split_vs_stock_max_abs_logit_diff": agree,
            "refinement_s_per_slice_and_class": encoder_s + image_side + CALLS_PER_SLICE * per_box,
            "ratio_over_encoder": (encoder_s + image_side + CALLS_PER_SLICE * per_box) / encoder_s}


def step_figures(demo: Path, device: str, steps: int) -> dict:
    """FA / self-training / stock nnU-Net step seconds on ``device`` from a ``nnunet_dfg demo -o`` folder."""
    import os

    import speed_ratios

    res = demo / "nnUNet_results"
    fa = next((res / "Dataset702_DFGSynthTarget").glob("nnUNetTrainerDFG_FA_*__*__2d"))
    source = next((res / "Dataset701_DFGSynthSource").glob("nnUNetTrainerDFG_Source_*__*__2d"))
    trainer_fa, plans, _ = fa.name.split("__")
    env = {**os.environ, "nnUNet_raw": str(demo / "nnUNet_raw"),
           "nnUNet_preprocessed": str(demo / "nnUNet_preprocessed")}
    return speed_ratios.step_ratios(
        env, "2d", 702, 802, {"fa": trainer_fa, "st": trainer_fa.replace("_FA_", "_ST_")},
        {"source": next(source.glob("fold_*/checkpoint_final.pth")), "fa": fa / "fold_all" / "checkpoint_final.pth"},
        steps=steps, plans=plans, device=device)


def markdown(device_name: str, note: str, r: dict, steps: dict | None) -> str:
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    lines = [f"**GPU ({device_name})**, MedSAM/SAM vit_b-shaped ({note}), one 512 x 512 slice, "
             f"{r['n_boxes']} boxes, PyTorch:", "",
             "| figure | value |", "|---|---|",
             f"| encoder per slice | {ms(r['encoder_s'])} |",
             f"| decoder per box, stock, sequential | {ms(r['stock_sequential_s_per_box'])} |",
             f"| decoder per box, stock, batched | {ms(r['stock_batched_s_per_box'])} |",
             f"| decoder per box, split, sequential | {ms(r['split_sequential_s_per_box'])} |",
             f"| decoder per box, split, batched | {ms(r['split_batched_s_per_box'])} |",
             f"| split image side (once per slice) | {ms(r['split_image_side_s'])} |",
             f"| refinement per slice and class ({CALLS_PER_SLICE} calls) | {ms(r['refinement_s_per_slice_and_class'])}"
             f" ({r['ratio_over_encoder']:.2f}x the encoder) |",
             f"| split vs stock, max abs logit difference | {r['split_vs_stock_max_abs_logit_diff']:.2g} |"]
    if steps:
        lines += [f"| stock nnU-Net step | {steps['stock']['mean_s']:.3f} s |",
                  f"| FA step | {steps['fa']['mean_s']:.3f} s ({steps['fa_over_stock']:.2f}x stock) |",
                  f"| self-training step | {steps['self_training']['mean_s']:.3f} s "
                  f"({steps['self_training_over_stock']:.2f}x stock) |"]
    else:
        lines += ["| FA / self-training / stock step | not measured (pass --demo) |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--checkpoint", help="SAM/MedSAM vit_b checkpoint (default: random vit_b weights)")
    parser.add_argument("--tiny", action="store_true", help="tiny random ViT: a dry run of the machinery")
    parser.add_argument("--boxes", type=int, default=CALLS_PER_SLICE)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--demo", help="a `nnunet_dfg demo -o` folder: also time FA/ST/stock training steps")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--markdown", help="write the GPU section here")
    parser.add_argument("-o", help="write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU dry run, {torch.get_num_threads()} threads")
    parts, note = build_parts(args.checkpoint, args.tiny)
    figures = refinement_figures(parts, device, args.boxes, args.repeat)
    steps = step_figures(Path(args.demo), device.type, args.steps) if args.demo else None
    text = markdown(name, note, figures, steps)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.o:
        Path(args.o).write_text(json.dumps({"device": name, "weights": note, "refinement": figures, "steps": steps},
                                           indent=2))


if __name__ == "__main__":
    main()
