"""The test-time score of tbps_mm, in one place.

A caption ``g`` and an image ``f`` are compared by

    ``s = s_coarse + lambda * mean_k s_k``,  ``s_coarse = <g, f>``,
    ``s_k = <g^k, f^k>``

over L2-normalised coarse embeddings ``(B, D)`` and part embeddings
``(B, K, D)``. This module owns that formula in its two equivalent forms:

* :func:`fused_similarity` (and :func:`score_terms`, :func:`fuse_scores` for
  callers that also report the coarse-only and parts-only rows), used by
  ``TBPSRetriever.similarity`` and ``TBPSRetrievalMetric``;
* :func:`fused_vector`, one vector per sample,
  ``[f, sqrt(lambda / K) f^1, ..., sqrt(lambda / K) f^K]``, whose inner
  products are exactly that score. Training losses on ``'fused_embed'``, the
  gallery index and the exported encoders use it, so that what is trained,
  validated, indexed and deployed is one score.

``lambda`` itself belongs to the model (``TBPSRetriever.fusion_weight``);
callers pass it in. It lives at the package top because both the model and
the metric need it and neither may import the other.

Example:
    >>> q = dict(embed=torch.eye(2), part_embeds=torch.zeros(2, 0, 2))
    >>> fused_similarity(q['embed'], q['part_embeds'], q['embed'],
    ...                  q['part_embeds'], fusion_weight=1.0)
    tensor([[1., 0.],
            [0., 1.]])
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['fused_vector', 'fused_similarity', 'score_terms', 'fuse_scores']


def fused_vector(embed: Tensor, part_embeds: Tensor, fusion_weight: float) -> Tensor:
    """One vector per sample whose inner products are the fused score.

    Args:
        embed (Tensor): (B, D) coarse embeddings, normalised or not (they are
            L2-normalised here).
        part_embeds (Tensor): (B, K, D) part embeddings, normalised or not.
        fusion_weight (float): lambda, >= 0.

    Returns:
        Tensor: (B, D * (1 + K)); (B, D) when K = 0 or lambda = 0.

    Raises:
        ValueError: ``fusion_weight < 0`` (``sqrt(lambda / K)`` has no real
            value, so no single vector can carry that score).

    Example:
        >>> v = fused_vector(torch.randn(3, 8), torch.randn(3, 4, 8), 1.0)
        >>> v.shape
        torch.Size([3, 40])
    """
    if fusion_weight < 0:
        raise ValueError(f'fused_embed needs fusion_weight >= 0, got {fusion_weight}')
    embed = F.normalize(embed, dim=-1)
    num_parts = part_embeds.shape[1]
    if not (num_parts and fusion_weight):
        return embed
    parts = F.normalize(part_embeds, dim=-1) * (fusion_weight / num_parts) ** 0.5
    return torch.cat([embed, parts.flatten(1)], dim=1)


def score_terms(
    query_embed: Tensor,
    query_parts: Tensor,
    gallery_embed: Tensor,
    gallery_parts: Tensor,
) -> Tuple[Tensor, Optional[Tensor]]:
    """The coarse score and the mean part score between two sets.

    Args:
        query_embed (Tensor): (Q, D) normalised coarse embeddings.
        query_parts (Tensor): (Q, K, D) normalised part embeddings.
        gallery_embed (Tensor): (G, D).
        gallery_parts (Tensor): (G, K, D).

    Returns:
        tuple[Tensor, Tensor | None]: ``s_coarse`` (Q, G) and
        ``mean_k s_k`` (Q, G), or None when K = 0.
    """
    coarse = query_embed @ gallery_embed.T
    num_parts = query_parts.shape[1]
    if not num_parts:
        return coarse, None
    # One 2-D matmul over flattened parts is sum_k <q_k, g_k> without an
    # intermediate (Q, G, K) tensor or a copy of the gallery.
    parts = query_parts.flatten(1) @ gallery_parts.flatten(1).T
    return coarse, parts / num_parts


def fuse_scores(
    coarse: Tensor, parts: Optional[Tensor], fusion_weight: float
) -> Tensor:
    """``s_coarse + lambda * mean_k s_k`` from :func:`score_terms`' output.

    Args:
        coarse (Tensor): (Q, G) coarse scores.
        parts (Tensor, optional): (Q, G) mean part scores; None when K = 0.
        fusion_weight (float): lambda.

    Returns:
        Tensor: (Q, G) fused scores (``coarse`` itself when there is nothing
        to add).
    """
    if parts is None or not fusion_weight:
        return coarse
    return coarse + fusion_weight * parts


def fused_similarity(
    query_embed: Tensor,
    query_parts: Tensor,
    gallery_embed: Tensor,
    gallery_parts: Tensor,
    fusion_weight: float,
) -> Tensor:
    """``s = s_coarse + lambda * mean_k s_k`` between two sets of embeddings.

    Args:
        query_embed (Tensor): (Q, D) normalised coarse embeddings.
        query_parts (Tensor): (Q, K, D) normalised part embeddings.
        gallery_embed (Tensor): (G, D).
        gallery_parts (Tensor): (G, K, D).
        fusion_weight (float): lambda.

    Returns:
        Tensor: (Q, G) fused scores.
    """
    if not fusion_weight:
        return query_embed @ gallery_embed.T
    coarse, parts = score_terms(query_embed, query_parts, gallery_embed, gallery_parts)
    return fuse_scores(coarse, parts, fusion_weight)
