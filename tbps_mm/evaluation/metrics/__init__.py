"""Evaluation metrics (registered in ``tbps_mm.registry.METRICS``)."""

from .tbps_retrieval_metric import RANKED_LISTS_INFO, TBPSRetrievalMetric

__all__ = ['RANKED_LISTS_INFO', 'TBPSRetrievalMetric']
