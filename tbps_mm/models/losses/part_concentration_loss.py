"""``PartConcentrationLoss``: keep each part query's image attention compact.

An optional regulariser (our design, not the paper's), after the
concentration loss of unsupervised part segmentation (SCOPS, Hung et al.,
CVPR 2019): the spatial variance of each query's image attention around its
own centre of mass, in units of the token grid's height. A query spread over
the whole image pays the most; one that gathers on a compact region (a body
part) pays little. Together with ``PartDiversityLoss``, which keeps the
queries off each other's tokens, it asks the K queries to split the image
into K compact regions; which regions is left to the retrieval losses, so no
part label is used. Only the image side is concentrated: a caption has no
grid. Written by hand (no OpenMMLab package has it), vectorised.
"""

from typing import Sequence

import torch
from torch import Tensor, nn

from tbps_mm.registry import MODELS


def attention_spread(attn: Tensor, grid: Sequence[int]) -> Tensor:
    """Mean spatial variance of (B, K, h * w) attention maps.

    Args:
        attn (Tensor): (B, K, N) non-negative attention over a row-major
            (h, w) grid, each row summing to 1.
        grid (Sequence[int]): (h, w), with ``h * w == N``.

    Returns:
        Tensor: Scalar: the variance of the cell coordinates (row and column
        variances summed, cells of side ``1 / h``) under each map, averaged
        over maps. 0 for a map on one cell; ``(h**2 - 1 + w**2 - 1) / (12
        h**2)`` for a uniform map.
    """
    h, w = int(grid[0]), int(grid[1])
    if attn.dim() != 3 or attn.shape[-1] != h * w:
        raise ValueError(
            f'attention of shape {tuple(attn.shape)} does not cover the {h}x{w} '
            'token grid the loss was built for (check grid against the image '
            'size and the encoder stride)'
        )
    rows = torch.arange(h, dtype=attn.dtype, device=attn.device) / h
    cols = torch.arange(w, dtype=attn.dtype, device=attn.device) / h
    y = rows[:, None].expand(h, w).reshape(-1)
    x = cols[None, :].expand(h, w).reshape(-1)
    mass = attn / attn.sum(-1, keepdim=True).clamp(min=1e-12)
    var_y = (mass * y**2).sum(-1) - (mass * y).sum(-1) ** 2
    var_x = (mass * x**2).sum(-1) - (mass * x).sum(-1) ** 2
    return (var_y + var_x).clamp(min=0.0).mean()


@MODELS.register_module()
class PartConcentrationLoss(nn.Module):
    """Penalise the spatial spread of every part query's image attention.

    Args:
        grid (Sequence[int]): (h, w) token grid of the image attention (e.g.
            (16, 6) for a stride-8 map of a 128x48 image).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.

    Example:
        >>> loss = PartConcentrationLoss(grid=(4, 2))
        >>> loss(torch.rand(2, 3, 8).softmax(-1), torch.rand(2, 3, 5))
        tensor(...)
    """

    #: What the retriever feeds this loss: the attention maps.
    input_key = 'attn'

    def __init__(self, grid: Sequence[int], loss_weight: float = 1.0) -> None:
        super().__init__()
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f'grid must be (h, w) with h, w >= 1, got {grid!r}')
        self.grid = (int(grid[0]), int(grid[1]))
        self.loss_weight = loss_weight

    def forward(
        self, image_attn: Tensor, text_attn: Tensor = None, labels: Tensor = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            image_attn (Tensor): (B, K, N) attention over the image grid.
            text_attn (Tensor, optional): Unused (a caption has no grid).
            labels (Tensor, optional): Unused; accepted so every tbps_mm loss
                shares one call signature.

        Returns:
            Tensor: The scalar loss.
        """
        return self.loss_weight * attention_spread(image_attn, self.grid)


__all__ = ['PartConcentrationLoss', 'attention_spread']
