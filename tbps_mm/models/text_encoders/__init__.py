"""Text encoders backed by transformers: tokens, pooled feature and mask out."""

from .bert_text_encoder import BertTextEncoder
from .clip_text_encoder import CLIPTextEncoder
from .hf_text_encoder import HFTextEncoder, check_pretrained_folder

__all__ = [
    'BertTextEncoder',
    'CLIPTextEncoder',
    'HFTextEncoder',
    'check_pretrained_folder',
]
