"""``PartDiversityLoss``: keep the part queries from attending to the same tokens.

An optional regulariser (our design, not the paper's): the mean cosine
overlap between the attention maps of different part queries, averaged over
the image and the text side. Zero when every query attends to its own tokens,
one when all queries attend identically. Written by hand (no OpenMMLab package
has it), vectorised over the batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tbps_mm.registry import MODELS


def attention_overlap(attn: Tensor) -> Tensor:
    """Mean pairwise cosine overlap of (B, K, N) attention maps.

    Args:
        attn (Tensor): (B, K, N) non-negative attention of K queries.

    Returns:
        Tensor: Scalar in [0, 1]; 0 for K < 2.
    """
    B, K, _ = attn.shape
    if K < 2:
        return attn.sum() * 0.0
    unit = F.normalize(attn, dim=-1)
    gram = unit @ unit.transpose(1, 2)  # (B, K, K)
    off_diagonal = ~torch.eye(K, dtype=torch.bool, device=attn.device)
    return gram[:, off_diagonal].mean()


@MODELS.register_module()
class PartDiversityLoss(nn.Module):
    """Penalise overlap between the K part queries' attention maps.

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.

    Example:
        >>> loss = PartDiversityLoss()
        >>> loss(torch.rand(2, 3, 10).softmax(-1), torch.rand(2, 3, 7).softmax(-1))
        tensor(...)
    """

    #: What the retriever feeds this loss: the attention maps.
    input_key = 'attn'

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(
        self, image_attn: Tensor, text_attn: Tensor, labels: Tensor = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            image_attn (Tensor): (B, K, N) attention over image tokens.
            text_attn (Tensor): (B, K, L) attention over caption tokens.
            labels (Tensor, optional): Unused; accepted so every tbps_mm loss
                shares one call signature.

        Returns:
            Tensor: The scalar loss.
        """
        overlap = 0.5 * (attention_overlap(image_attn) + attention_overlap(text_attn))
        return self.loss_weight * overlap


__all__ = ['PartDiversityLoss', 'attention_overlap']
