"""Losses. Each declares ``input_key``: the retriever output it is fed
(``'embed'``, ``'part_embeds'``, ``'attn'`` or ``'fused_embed'``), as
``loss(image, text, labels)``."""

from .commonality_margin_ranking_loss import CommonalityMarginRankingLoss
from .id_loss import IDLoss
from .part_concentration_loss import PartConcentrationLoss
from .part_diversity_loss import PartDiversityLoss
from .sdm_loss import SDMLoss

__all__ = [
    'CommonalityMarginRankingLoss',
    'IDLoss',
    'PartConcentrationLoss',
    'PartDiversityLoss',
    'SDMLoss',
]
