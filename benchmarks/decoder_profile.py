"""Where one box-decoder call's time goes under ONNX Runtime, and the refinement/encoder ratio that sets as a floor.

Why: the goal for the DFG search is <= 1.5x the encoder-only time, and the search makes ~60 decoder calls per
slice (~18 per present class). The split decoder (``sam/split_decoder.py``) already computes the box-independent
image side once per slice and applies every attention projection on the 7 prompt tokens, so what is left per
call is work that depends on the box: the two-way transformer's products against the 4096 image tokens, the
LayerNorms and GELUs on them, and the output upscaling to 256 x 256 x 32. Profiling the exact graph the search
runs, per operator type, shows how much of a call is matrix products (the part no exact rewrite removes without
changing arithmetic) and the ratio a decoder made of nothing else would give.

    .venv/bin/python benchmarks/decoder_profile.py [--speed bench_out/refine_2d.json] [--calls 40]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from nnunet_dfg.sam import load_segmenter
from nnunet_dfg.sam.runtimes import PREPARED, export_box_side
from nnunet_dfg.sam.split_decoder import DecoderBoxSide, DecoderImageSide

MATRIX_OPS = ("MatMul", "FusedMatMul", "Gemm", "MatMulNBits")


def profile(calls: int = 40, threads: int | None = None) -> dict:
    """Per operator type: ms per call of the box side (LiteMedSAM, one box, a random slice's embedding)."""
    import onnxruntime as ort

    segmenter = load_segmenter("litemedsam", runtime="torch")
    parts = segmenter.parts
    image_side = DecoderImageSide(parts.prompt_encoder, parts.mask_decoder).eval()
    box_side = DecoderBoxSide(parts.prompt_encoder, parts.mask_decoder).eval()
    embedding = segmenter.embed(np.random.default_rng(0).random((64, 64), dtype=np.float32))
    with torch.no_grad():
        prepared = list(image_side(embedding.tensor))
    boxes = torch.tensor([[60.0, 60.0, 180.0, 170.0]])  # frame (256 px) coordinates
    model = export_box_side(box_side, prepared, boxes)
    feed = {**{k: t.numpy() for k, t in zip(PREPARED, prepared)}, "boxes": boxes.numpy()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    options.enable_profiling = True
    warm = 5
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "decoder")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for _ in range(warm + calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs[warm]  # the warm-up calls (allocations, first-touch) stay out
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            per_op[e["args"].get("op_name", "?")] += e["dur"] / 1000.0 / calls
    total = sum(per_op.values())
    matrix = sum(v for k, v in per_op.items() if k in MATRIX_OPS)
    return {"threads": options.intra_op_num_threads, "calls": calls, "ms_per_call": round(total, 2),
            "matrix_ms_per_call": round(matrix, 2),
            "per_op_ms": {k: round(v, 2) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]}}


def floor_ratio(figures: dict, speed: dict) -> dict:
    """The ratio with today's decoder and with one made of its matrix products alone, from refine_speed.py's
    encoder time per slice and decoder calls per slice."""
    encoder, calls = speed["encoder_s_per_slice"], speed["decoder_calls_per_slice"]["fast"]
    ratio = lambda ms: round((encoder + calls * ms / 1000.0) / encoder, 2)  # noqa: E731
    return {"encoder_s_per_slice": encoder, "decoder_calls_per_slice": calls,
            "ratio_profiled_decoder": ratio(figures["ms_per_call"]),
            "ratio_matrix_products_only": ratio(figures["matrix_ms_per_call"]),
            "ms_per_call_for_ratio_1_5": round(0.5 * encoder / calls * 1000.0, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--speed", help="refine_speed.py's JSON (run_all.py's refine_2d.json) for the floor ratio")
    parser.add_argument("-o", help="also write the figures as JSON here")
    args = parser.parse_args()
    figures = profile(args.calls)
    if args.speed:
        figures["floor"] = floor_ratio(figures, json.loads(Path(args.speed).read_text()))
    print(json.dumps(figures, indent=2))
    if args.o:
        Path(args.o).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
