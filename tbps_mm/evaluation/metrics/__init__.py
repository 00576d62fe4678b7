"""Evaluation metrics (registered in ``tbps_mm.registry.METRICS``)."""

from .tbps_retrieval_metric import TBPSRetrievalMetric

__all__ = ['TBPSRetrievalMetric']
