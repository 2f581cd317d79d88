"""SAM's box decoder split into a once-per-slice image side and a cheap per-box side.

Why: the DFG search decodes ~14 boxes per slice and class against one embedding, and SAM's two-way transformer
spends most of a call on 4096-token projections. Two rewrites, both exact in real arithmetic (outputs agree with
:class:`~nnunet_dfg.sam.box_decoder.BoxDecoder` to float rounding):

- what does not depend on the box is computed once per slice (:class:`DecoderImageSide`): the image tokens plus the
  no-mask dense embedding, and layer 0's image-side projections (token->image keys/values, image->token queries);
- every later attention between the 7 prompt tokens and the 4096 image tokens is evaluated in the low-rank order
  (``(q Wk) K^T`` instead of ``q (K Wk)^T``, values and output projection folded the same way), i.e. the weights are
  applied to the 7 tokens and never to the 4096: about half the multiply-adds of the stock order. The key bias
  adds a constant per attention row and is dropped (softmax is shift-invariant); value rows of a softmax sum to 1,
  so the value bias passes through unchanged.

Only mask token 0 is upscaled into a mask (``multimask_output=False``, as the references call SAM). With
``with_iou`` the box side also returns SAM's own quality estimate of that mask (the IoU head on the IoU token,
as ``MaskDecoder.predict_masks`` computes it); the mask is the same either way.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DecoderImageSide", "DecoderBoxSide"]


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, T, h*d) -> (B, h, T, d)."""
    b, t, c = x.shape
    return x.reshape(b, t, h, c // h).transpose(1, 2)


def _lowrank_token_to_image(a: nn.Module, q_small: torch.Tensor, k_big: torch.Tensor,
                            v_big: torch.Tensor) -> torch.Tensor:
    """Attention of the few prompt tokens (N, P, C) over the image tokens (N|1, T, C); projections on the P side."""
    h, n, p = a.num_heads, q_small.shape[0], q_small.shape[1]
    d = a.internal_dim // h
    q = _heads(a.q_proj(q_small), h)                                   # (N, h, P, d)
    wk = a.k_proj.weight.reshape(h, d, -1)                             # (h, d, C)
    qk = torch.matmul(q, wk).reshape(n, h * p, -1)                     # (N, h*P, C)
    attn = torch.softmax(torch.matmul(qk, k_big.transpose(1, 2)) / math.sqrt(d), dim=-1)  # (N, h*P, T)
    ctx = torch.matmul(attn, v_big).reshape(n, h, p, -1)               # (N, h, P, C)
    wv = a.v_proj.weight.reshape(h, d, -1).transpose(1, 2)             # (h, C, d)
    out = torch.matmul(ctx, wv) + a.v_proj.bias.reshape(h, 1, d)       # (N, h, P, d)
    return a.out_proj(out.transpose(1, 2).reshape(n, p, h * d))


def _image_to_token_scores(a: nn.Module, q_big: torch.Tensor, k_small: torch.Tensor) -> torch.Tensor:
    """Low-rank scores of the image tokens (N|1, T, C) over the prompt tokens: (N, T, h*P), before softmax."""
    h, n, p = a.num_heads, k_small.shape[0], k_small.shape[1]
    d = a.internal_dim // h
    k = _heads(a.k_proj(k_small), h)                                   # (N, h, P, d)
    wq = a.q_proj.weight.reshape(h, d, -1)                             # (h, d, C)
    m = torch.matmul(k, wq).reshape(n, h * p, -1)                      # (N, h*P, C)
    bias = (k * a.q_proj.bias.reshape(1, h, 1, d)).sum(-1).reshape(n, 1, h * p)
    return (torch.matmul(q_big, m.transpose(1, 2)) + bias) / math.sqrt(d)


def _image_to_token_out(a: nn.Module, scores: torch.Tensor, v_small: torch.Tensor) -> torch.Tensor:
    """Softmax per head over the P prompt tokens, then values through ``out_proj`` folded onto the P side."""
    h, n, p = a.num_heads, v_small.shape[0], v_small.shape[1]
    d = a.internal_dim // h
    t = scores.shape[1]
    attn = torch.softmax(scores.reshape(n, t, h, p), dim=-1).reshape(n, t, h * p)
    v = _heads(a.v_proj(v_small), h)                                   # (N, h, P, d)
    wo = a.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)          # (h, d, C)
    vw = torch.matmul(v, wo).reshape(n, h * p, -1)                     # (N, h*P, C)
    return torch.matmul(attn, vw) + a.out_proj.bias


def _upscale_mask(md: nn.Module, keys: torch.Tensor, hyper: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``output_upscaling`` then the mask-token product, channels last: each stride-2 2x2 transposed convolution is
    one matmul per token (eager ConvTranspose2d spends most of its time in copies), one reordering at the end."""
    ct1, ln, act1, ct2, act2 = md.output_upscaling
    n, (h, w) = keys.shape[0], grid
    c1, c2 = ct1.weight.shape[1], ct2.weight.shape[1]
    x = torch.matmul(keys, ct1.weight.permute(0, 2, 3, 1).reshape(keys.shape[-1], 4 * c1))
    x = x.reshape(n, h * w * 4, c1) + ct1.bias                          # rows: (y, x, ky, kx)
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    x = act1(ln.weight * ((x - u) / torch.sqrt(s + ln.eps)) + ln.bias)  # LayerNorm2d over channels
    x = torch.matmul(x, ct2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2))
    x = act2(x.reshape(n, h * w * 16, c2) + ct2.bias)                   # rows: (y, x, ky, kx, ky2, kx2)
    m = torch.matmul(x, hyper.unsqueeze(-1)).reshape(n, h, w, 2, 2, 2, 2)
    return m.permute(0, 1, 3, 5, 2, 4, 6).reshape(n, 1, 4 * h, 4 * w)


class DecoderImageSide(nn.Module):
    """(1, C, e, e) embedding -> image tokens and layer 0's box-independent projections (once per slice)."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.layer0 = mask_decoder.transformer.layers[0]
        with torch.no_grad():
            pe = prompt_encoder.get_dense_pe().detach().clone()
        self.register_buffer("pe_tokens", pe.flatten(2).transpose(1, 2).contiguous())   # (1, T, C)
        self.no_mask = prompt_encoder.no_mask_embed

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys = embedding.flatten(2).transpose(1, 2) + self.no_mask.weight.reshape(1, 1, -1)  # (1, T, C)
        kp = keys + self.pe_tokens
        t2i, i2t = self.layer0.cross_attn_token_to_image, self.layer0.cross_attn_image_to_token
        k0 = _heads(t2i.k_proj(kp), t2i.num_heads)
        v0 = _heads(t2i.v_proj(keys), t2i.num_heads)
        q0 = _heads(i2t.q_proj(kp), i2t.num_heads)
        return keys, k0, v0, q0


class DecoderBoxSide(nn.Module):
    """Image-side tensors + (N, 4) boxes in frame coordinates -> (N, 1, 4e, 4e) low-resolution logits, and with
    ``with_iou`` also (N,) predicted IoUs of those masks (a tuple: an attribute, not an argument, so that the ONNX
    export sees a fixed graph)."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, with_iou: bool = False) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = prompt_encoder, mask_decoder
        self.with_iou = bool(with_iou)
        self.transformer = mask_decoder.transformer
        with torch.no_grad():
            pe = prompt_encoder.get_dense_pe().detach().clone()
        self.register_buffer("pe_tokens", pe.flatten(2).transpose(1, 2).contiguous())
        self.grid = tuple(pe.shape[-2:])

    def _layer0(self, queries: torch.Tensor, query_pe: torch.Tensor, keys: torch.Tensor, k0: torch.Tensor,
                v0: torch.Tensor, q0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.transformer.layers[0]
        queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))  # first layer: no PE
        a = layer.cross_attn_token_to_image
        n, p = queries.shape[:2]
        q = _heads(a.q_proj(queries + query_pe), a.num_heads)
        attn = torch.softmax(torch.matmul(q, k0.transpose(2, 3)) / math.sqrt(q.shape[-1]), dim=-1)
        out = a.out_proj(torch.matmul(attn, v0).transpose(1, 2).reshape(n, p, -1))
        queries = layer.norm2(queries + out)
        queries = layer.norm3(queries + layer.mlp(queries))
        b = layer.cross_attn_image_to_token
        k = _heads(b.k_proj(queries + query_pe), b.num_heads)            # (N, h, P, d)
        scores = torch.matmul(q0, k.transpose(2, 3)) / math.sqrt(k.shape[-1])  # (N, h, T, P)
        scores = scores.transpose(1, 2).reshape(n, scores.shape[2], -1)    # (N, T, h*P)
        keys = layer.norm4(keys + _image_to_token_out(b, scores, queries))
        return queries, keys

    def forward(self, keys: torch.Tensor, k0: torch.Tensor, v0: torch.Tensor, q0: torch.Tensor,
                boxes: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        sparse = self.prompt_encoder._embed_boxes(boxes)                   # (N, 2, C)
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        queries, keys = self._layer0(tokens, tokens, keys, k0, v0, q0)
        for layer in self.transformer.layers[1:]:
            q = queries + tokens
            queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            kp = keys + self.pe_tokens
            queries = layer.norm2(queries + _lowrank_token_to_image(layer.cross_attn_token_to_image,
                                                                    queries + tokens, kp, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            b = layer.cross_attn_image_to_token
            scores = _image_to_token_scores(b, keys + self.pe_tokens, queries + tokens)
            keys = layer.norm4(keys + _image_to_token_out(b, scores, queries))
        final = _lowrank_token_to_image(self.transformer.final_attn_token_to_image, queries + tokens,
                                        keys + self.pe_tokens, keys)
        queries = self.transformer.norm_final_attn(queries + final)
        hyper = md.output_hypernetworks_mlps[0](queries[:, 1, :])          # mask token 0
        low_res = _upscale_mask(md, keys, hyper, self.grid)
        if not self.with_iou:
            return low_res
        return low_res, md.iou_prediction_head(queries[:, 0, :])[:, 0]      # IoU token -> mask 0's estimate
