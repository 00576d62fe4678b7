"""Evaluation: the TBPS protocol (R@K, mAP, mINP), re-ranking and the metric.

``functional.rank_metrics`` is the one implementation of the field's numbers;
``TBPSRetrievalMetric`` wraps it for MMEngine's val/test loops.
"""

from .functional import (
    grouped_rank_stats,
    query_rank_stats,
    rank_lists,
    rank_metrics,
    summarize_rank_stats,
)
from .metrics import TBPSRetrievalMetric
from .rerank import KReciprocalReranker, k_reciprocal_rerank
from .retrieval_table import format_retrieval_table, markdown_table

__all__ = [
    'rank_metrics',
    'rank_lists',
    'query_rank_stats',
    'grouped_rank_stats',
    'summarize_rank_stats',
    'KReciprocalReranker',
    'k_reciprocal_rerank',
    'TBPSRetrievalMetric',
    'format_retrieval_table',
    'markdown_table',
]
