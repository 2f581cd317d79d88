"""SDG mask-decoder fine-tuning (METHOD.md, SDG step 3): pure training pieces, no file I/O.

The schedule is the reference's: ``epochs`` passes over the pool, each pass visiting every canvas once in a fresh
random order, ``canvases_per_step`` canvases (16 slices: 16 single slices, or 4 canvases of 2x2) per Adam step,
box jitter drawn anew at every visit. A canvas is one slice, or with ``tile=2`` up to four consecutive slices of
a case pasted 2x2 exactly as ``sdg-predict --tile 2`` pastes them (``sam.tiling``), each box shifted into its tile
and its logits cropped back to its slice, so the decoder is trained on the inputs it will see.

Only the mask decoder learns; the image and prompt encoders are frozen, so an embedding depends on the canvas
alone and is computed once, without gradients, and reused in every pass (:class:`EmbeddingCache`; one
(256, 64, 64) float32 embedding, 4 MiB, per canvas, held on the segmenter's device). That is exact because the
canvases are fixed: which slices share a canvas is decided once (:func:`slices.tile_groups`), only their order
changes between passes. The reference instead draws new 2x2 compositions every step (a shuffled loader of single
slices, four per canvas) and re-embeds them; a tiled canvas's embedding depends on all four tiles (the encoder's
attention), so per-slice embeddings could not reproduce those, and re-embedding every canvas of every pass would
cost ``epochs`` x the encoder time. Fixed canvases of consecutive slices are also what inference embeds. Untiled
(LiteMedSAM's default) the two coincide: every slice is its own canvas.

The decoding graph is SAM's stock one (``sam.box_decoder.BoxDecoder``), which inference's split decoder equals to
float rounding (tests/test_sam.py); the loss is nnU-Net's soft Dice + binary cross-entropy on logits brought to
the slice's own resolution with the same upsample-crop-resize as inference (``transforms.postprocess_logits``), so
training optimises exactly the masks ``Segmenter.segment`` thresholds at 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss

from ..prompt_search.config import scale_distance
from ..sam.box_decoder import BoxDecoder
from ..sam.tiling import CanvasLayout, boxes_to_canvas, compose_canvas
from ..sam.transforms import FrameGeometry, boxes_to_frame, postprocess_logits, validate_boxes
from .slices import TrainingSlice, epoch_batches, item_prompts, tile_groups

REFERENCE_BATCH_SLICES = 16  # the reference's batch: 16 slices, i.e. 4 canvases of 2x2


@dataclass(frozen=True)
class FinetuneConfig:
    """SDG reference values: 200 passes, batches of 16 slices, Adam lr 1e-4, weight decay 1e-3, boxes jittered by
    0..9 px per side of the reference's 512 px slices (``reference_side``; ``shift_for`` scales the jitter to each
    slice's side as the DFG search scales its distances, so a 64 px slice gets 0..1 px instead of a jitter as wide
    as its organs; 0: plain pixels). ``tile``: 2 trains on 2x2 canvases (as ``sdg-predict --tile 2`` infers).
    ``batch_canvases``: canvases per step, None = 16 slices' worth (16 untiled, 4 tiled)."""

    epochs: int = 200
    batch_canvases: int | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-3
    max_shift: int = 9
    min_pixels: int = 1      # ground-truth boxes: a class needs this many pixels on a slice to be prompted there
    seed: int = 0
    tile: int = 1
    reference_side: int = 512

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_canvases is not None and self.batch_canvases < 1:
            raise ValueError(f"--batch-canvases must be >= 1, got {self.batch_canvases}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_shift < 0 or self.reference_side < 0:
            raise ValueError("lr must be > 0, weight_decay, max_shift and reference_side >= 0")
        if self.tile not in (1, 2):
            raise ValueError(f"tile must be 1 or 2, got {self.tile}")

    @property
    def canvases_per_step(self) -> int:
        return self.batch_canvases or max(1, REFERENCE_BATCH_SLICES // (self.tile * self.tile))

    def steps_per_epoch(self, n_canvases: int) -> int:
        return -(-n_canvases // self.canvases_per_step)

    def shift_for(self, shape: tuple[int, int]) -> int:
        """The jitter bound in pixels of a (H, W) slice: ``max_shift`` scaled by sqrt(H * W) / ``reference_side``."""
        if not self.reference_side:
            return self.max_shift
        return scale_distance(self.max_shift, math.sqrt(shape[0] * shape[1]) / self.reference_side)


_DICE_BCE = DC_and_BCE_loss({}, {"batch_dice": False, "do_bg": True, "smooth": 1.0, "ddp": False})


def dice_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nnU-Net's region loss ``DC_and_BCE_loss`` (sigmoid soft Dice per mask, smooth 1, plus pixel-mean BCE) on
    (N, H, W) logits and {0, 1} targets, + 1 so that it reads mean(1 - Dice) + BCE (same gradients)."""
    return _DICE_BCE(logits[:, None], targets[:, None].float()) + 1.0


def dice_bce_batch(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`dice_bce_loss` of a batch whose slices differ in size: (N_k, H_k, W_k) logits and targets per slice
    -> mean (1 - soft Dice) over all masks + mean BCE over all their pixels (for one size, the same value)."""
    groups: dict[tuple[int, ...], tuple[list, list]] = {}
    for lg, tg in zip(logits, targets):
        if len(lg):
            group = groups.setdefault(tuple(lg.shape[1:]), ([], []))
            group[0].append(lg)
            group[1].append(torch.as_tensor(tg, device=lg.device).float())
    if not groups:
        raise ValueError("a batch needs at least one mask")
    n_masks = sum(len(t) for _, ts in groups.values() for t in ts)
    n_pixels = sum(t.numel() for _, ts in groups.values() for t in ts)
    dice = bce = 0.0
    for ls, ts in groups.values():
        lg, tg = torch.cat(ls), torch.cat(ts)
        dice = dice + _DICE_BCE.dc(lg[:, None], tg[:, None]) * len(lg)  # dc: -mean soft Dice of the group
        bce = bce + F.binary_cross_entropy_with_logits(lg, tg, reduction="sum")
    return 1.0 + dice / n_masks + bce / n_pixels


def freeze_encoders(parts: Any) -> list[torch.nn.Parameter]:
    """Freeze image and prompt encoders; return the mask decoder's parameters (the only trainable ones)."""
    for module in (parts.image_encoder, parts.prompt_encoder):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
    params = list(parts.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def decoder_logits(decoder: BoxDecoder, embedding: torch.Tensor, geometry: FrameGeometry,
                   boxes: np.ndarray) -> torch.Tensor:
    """Differentiable (N, H, W) slice-resolution logits for inclusive slice boxes (same path as inference); only
    the mask decoder has parameters that require gradients."""
    framed = boxes_to_frame(validate_boxes(boxes, geometry.original_size), geometry)
    box_t = torch.as_tensor(framed, dtype=torch.float32, device=embedding.device)
    return postprocess_logits(decoder(embedding, box_t), geometry)


class EmbeddingCache:
    """Image embeddings of training canvases, each computed once with the frozen encoder (``segmenter.embed``).
    ``keep=False`` embeds at every request instead: the uncached reference the cache is tested against."""

    def __init__(self, segmenter: Any, keep: bool = True) -> None:
        self.segmenter, self.keep = segmenter, keep
        self._store: dict[int, tuple[torch.Tensor, FrameGeometry, CanvasLayout | None]] = {}

    def get(self, index: int, images: Sequence[np.ndarray], tile: int = 1
            ) -> tuple[torch.Tensor, FrameGeometry, CanvasLayout | None]:
        """Embedding, frame geometry and layout (None untiled) of canvas ``index`` made of ``images``; ``tile=1``
        embeds the single slice untouched, as ``segment_tiled`` does."""
        if index in self._store:
            return self._store[index]
        layout = None
        if tile == 1:
            if len(images) != 1:
                raise ValueError(f"an untiled canvas holds one slice, got {len(images)}")
            emb = self.segmenter.embed(images[0])
        else:
            canvas, layout = compose_canvas(images, tile)
            emb = self.segmenter.embed(canvas)
        # embed() runs in inference mode; a clone made outside it can take part in autograd as a constant
        entry = (emb.tensor.clone(), emb.geometry, layout)
        if self.keep:
            self._store[index] = entry
        return entry


def canvas_logits(decoder: BoxDecoder, embedding: torch.Tensor, geometry: FrameGeometry,
                  layout: CanvasLayout | None, boxes: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Per slice of a canvas, (N_k, H_k, W_k) logits for its (N_k, 4) slice boxes, all decoded in one batch: boxes
    shifted into their tiles, logits cropped back (``layout=None``: one untiled slice)."""
    if layout is None:
        return [decoder_logits(decoder, embedding, geometry, boxes[0])]
    shifted = np.concatenate([boxes_to_canvas(b, layout, i) for i, b in enumerate(boxes)])
    logits = decoder_logits(decoder, embedding, geometry, shifted)
    out, first = [], 0
    for i, b in enumerate(boxes):
        (y, x), (h, w) = layout.offset(i), layout.slice_sizes[i]
        out.append(logits[first:first + len(b), y:y + h, x:x + w])
        first += len(b)
    return out


def finetune_mask_decoder(segmenter: Any, pool: Sequence[TrainingSlice], config: FinetuneConfig = FinetuneConfig(),
                          on_step: Callable[[int, int, float], None] | None = None,
                          cache: EmbeddingCache | None = None) -> list[float]:
    """Train ``segmenter.parts.mask_decoder`` in place on ``pool``; returns the mean step loss of every epoch.

    ``config.epochs`` passes; each pass visits every canvas of ``tile_groups(pool, config.tile)`` once in a new
    random order, ``config.canvases_per_step`` canvases per Adam step, all boxes of a canvas decoded as one batch
    of prompts and the batch's masks in one loss (:func:`dice_bce_batch`). Canvas order and box jitter come from
    ``config.seed`` alone, so runs are reproducible (up to CPU/GPU float non-determinism). ``on_step(epoch, step,
    loss)`` is called after every step (progress bars); ``cache`` (keyed by canvas index) lets a caller reuse
    embeddings of the same pool and tile across calls.
    """
    parts = segmenter.parts
    params = freeze_encoders(parts)
    decoder = BoxDecoder(parts.prompt_encoder, parts.mask_decoder)  # shares (and so trains) parts.mask_decoder
    optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    cache = EmbeddingCache(segmenter) if cache is None else cache
    groups = tile_groups(pool, config.tile)
    history: list[float] = []
    parts.mask_decoder.train()
    try:
        for epoch in range(config.epochs):
            losses = []
            for step, batch in enumerate(epoch_batches(len(groups), config.canvases_per_step, rng)):
                logits: list[torch.Tensor] = []
                targets: list[np.ndarray] = []
                for index in batch:
                    items = [pool[i] for i in groups[int(index)]]
                    prompts = [item_prompts(item, rng, config.shift_for(item.image.shape), config.min_pixels)
                               for item in items]
                    if not any(classes for classes, _, _ in prompts):
                        continue
                    embedding, geometry, layout = cache.get(int(index), [item.image for item in items], config.tile)
                    logits += canvas_logits(decoder, embedding, geometry, layout, [b for _, b, _ in prompts])
                    targets += [t for _, _, t in prompts]
                if not logits:
                    continue
                loss = dice_bce_batch(logits, [torch.from_numpy(t) for t in targets])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(epoch, step, losses[-1])
            if not losses:
                raise ValueError("no training slice has a box to train on")
            history.append(float(np.mean(losses)))
    finally:
        parts.mask_decoder.eval()
        for p in params:
            p.requires_grad_(False)
    return history
