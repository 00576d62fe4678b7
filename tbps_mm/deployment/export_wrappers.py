"""Traceable one-modality views of a ``TBPSRetriever`` for graph export.

Each wrapper is an ``nn.Module`` whose ``forward`` goes from one modality's
tensors to the vectors search uses, with plain tensors in and a tuple of
tensors out, as ``torch.onnx.export`` needs them:

* :class:`ImageEncoderForExport`: normalised images -> ``fused_embed``,
  ``embed``, ``part_embeds`` (and ``attn``, each part query's attention over
  the image tokens, when asked for);
* :class:`TextEncoderForExport`: token ids + mask -> the same for captions.

``fused_embed`` is ``TBPSRetriever.fused_embed`` of the L2-normalised
encoder output, so a dot product between an image's and a caption's fused
vector is the model's test-time score.

The text wrapper runs the text encoder and the head on the full given length
instead of ``TBPSRetriever.encode_text``: that method skips trailing padding
columns by reading the mask's values, and a traced graph would freeze the
length of the example caption into the graph. Padding is masked everywhere,
so both give the same vectors.
"""

from typing import Tuple

from torch import Tensor, nn

__all__ = ['ImageEncoderForExport', 'TextEncoderForExport']


class ImageEncoderForExport(nn.Module):
    """Images -> fused / coarse / part embeddings (and part attention).

    Args:
        model (TBPSRetriever): The model; its weights are shared, not copied.
        with_attention (bool): Also return ``attn`` (B, K, N), each part
            query's attention over the N image tokens. Defaults to False.

    Example:
        >>> wrapper = ImageEncoderForExport(model).eval()
        >>> fused, embed, parts = wrapper(torch.rand(2, 3, 96, 32))
    """

    def __init__(self, model: nn.Module, with_attention: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_attention = with_attention

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Encode normalised images.

        Args:
            images (Tensor): (B, 3, H, W), as the data preprocessor gives them.

        Returns:
            tuple[Tensor, ...]: ``fused_embed`` (B, D * (1 + K)), ``embed``
            (B, D), ``part_embeds`` (B, K, D) and, with attention, ``attn``
            (B, K, N).
        """
        out = self.model.encode_image(images)
        outputs = (self.model.fused_embed(out), out['embed'], out['part_embeds'])
        return outputs + (out['attn'],) if self.with_attention else outputs


class TextEncoderForExport(nn.Module):
    """Token ids + mask -> fused / coarse / part embeddings (and attention).

    Args:
        model (TBPSRetriever): The model; its weights are shared, not copied.
        with_attention (bool): Also return ``attn`` (B, K, L), each part
            query's attention over the caption tokens (zero on padding).
            Defaults to False.

    Example:
        >>> wrapper = TextEncoderForExport(model).eval()
        >>> fused, embed, parts = wrapper(ids, mask)
    """

    def __init__(self, model: nn.Module, with_attention: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_attention = with_attention

    def forward(self, text_ids: Tensor, text_mask: Tensor) -> Tuple[Tensor, ...]:
        """Encode token ids.

        Args:
            text_ids (Tensor): (B, L) int64 token ids.
            text_mask (Tensor): (B, L) int64, 1 for real tokens, 0 for padding.

        Returns:
            tuple[Tensor, ...]: ``fused_embed`` (B, D * (1 + K)), ``embed``
            (B, D), ``part_embeds`` (B, K, D) and, with attention, ``attn``
            (B, K, L).
        """
        model = self.model
        feats = model.text_encoder(text_ids, text_mask)
        out = model.head(feats['tokens'], feats['pooled'], feats['mask'], 'text')
        out = model._normalised(out)
        outputs = (model.fused_embed(out), out['embed'], out['part_embeds'])
        return outputs + (out['attn'],) if self.with_attention else outputs
