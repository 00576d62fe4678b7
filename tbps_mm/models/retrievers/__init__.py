"""Retrievers: the full TBPS model behind MMEngine's BaseModel interface."""

from .tbps_retriever import TBPSRetriever

__all__ = ['TBPSRetriever']
