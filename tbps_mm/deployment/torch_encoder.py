"""``PyTorchEncoder``: the model itself behind the encoder interface.

Search can encode with the model in PyTorch or with the graphs exported from
it on onnxruntime (:class:`~tbps_mm.deployment.ONNXRuntimeEncoder`). Both
backends answer ``encode_image(images)`` and ``encode_text(ids, mask)`` with
the same dictionary: ``fused_embed`` (the vector the index stores and
searches), ``embed``, ``part_embeds``, ``attn`` and, for images,
``attn_hw``. This one runs ``TBPSRetriever.encode_image`` /
``encode_text`` and the model's own ``fused_embed``, so the fusion weight is
the model's.

Example:
    >>> encoder = PyTorchEncoder(model)
    >>> encoder.encode_image(torch.rand(2, 3, 96, 32))['fused_embed'].shape
    torch.Size([2, 128])
"""

from typing import Dict

import torch
from torch import nn

__all__ = ['PyTorchEncoder']


class PyTorchEncoder:
    """The image and text encoders of a ``TBPSRetriever``, run eagerly.

    Args:
        model (nn.Module): The model (put in eval mode here).

    Example:
        >>> out = PyTorchEncoder(model).encode_text(ids, mask)
        >>> sorted(out)
        ['attn', 'embed', 'fused_embed', 'part_embeds']
    """

    #: The name ``FusedEncoder`` knows this backend by.
    name = 'pytorch'

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    @property
    def fusion_weight(self) -> float:
        """lambda of the fused score: the model's."""
        return float(self.model.fusion_weight)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> Dict:
        """Encode normalised images.

        Args:
            images (Tensor): (B, 3, H, W), as the data preprocessor gives them.

        Returns:
            dict: ``fused_embed``, ``embed``, ``part_embeds``, ``attn`` and
            ``attn_hw`` (see ``TBPSRetriever.encode_image``).
        """
        out = dict(self.model.encode_image(images))
        out['fused_embed'] = self.model.fused_embed(out)
        return out

    @torch.no_grad()
    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> Dict:
        """Encode token ids.

        Args:
            text_ids (Tensor): (B, L) token ids.
            text_mask (Tensor): (B, L), 1 for real tokens, 0 for padding.

        Returns:
            dict: ``fused_embed``, ``embed``, ``part_embeds`` and ``attn``.
        """
        out = dict(self.model.encode_text(text_ids, text_mask))
        out['fused_embed'] = self.model.fused_embed(out)
        return out
