"""`BoxDecoder`: SAM's box-prompt decoder in its stock order: the graph ``finetune-sam`` trains through, and the
reference that the split decoder (``split_decoder.py``, which inference and the ONNX export run) is tested against."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BoxDecoder"]


class BoxDecoder(nn.Module):
    """Prompt encoder + mask decoder for boxes only, single-mask output (as the references call SAM).

    The dense positional encoding depends on no input, so it is computed once here rather than per call.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = prompt_encoder, mask_decoder
        with torch.no_grad():
            self.register_buffer("image_pe", prompt_encoder.get_dense_pe().detach().clone())

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(1, C, e, e) embedding, (N, 4) boxes in frame coordinates -> (N, 1, h, w) low-resolution logits."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, _ = self.mask_decoder(image_embeddings=embedding, image_pe=self.image_pe,
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
        return low_res
