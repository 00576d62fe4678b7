"""Heads: turn encoder token features into coarse and part embeddings."""

from .part_query_decoder_head import PartQueryDecoderHead
from .part_query_decoder_layer import PartCrossAttention, PartQueryDecoderLayer

__all__ = ['PartCrossAttention', 'PartQueryDecoderHead', 'PartQueryDecoderLayer']
