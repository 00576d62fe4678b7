"""``BertTextEncoder``: a BERT-family encoder (transformers' ``BertModel``).

Token features are the last hidden states and the pooled feature is, by
default, the ``[CLS]`` token's hidden state (``pooling='mean'``: the mean of
the real tokens, which trains much faster from scratch). BERT's pooler layer
(a tanh projection trained for next-sentence prediction) is not built, so
that every parameter receives gradients under DDP. Works for any checkpoint
with the BERT architecture, e.g. all-MiniLM-L6-v2, and for small random BERTs
built from a config (the SynthPedes quick start).
"""

from typing import Optional

import torch
from transformers import BertConfig, BertModel, PreTrainedModel

from tbps_mm.registry import MODELS

from .hf_text_encoder import HFTextEncoder


@MODELS.register_module()
class BertTextEncoder(HFTextEncoder):
    """BERT from a local folder or a config dict, pooled at ``[CLS]`` or by mean.

    Args:
        pretrained (str, optional): Local folder of a BERT model.
        config (dict, optional): ``BertConfig`` kwargs for a randomly
            initialised model, e.g. ``dict(vocab_size=512, hidden_size=128,
            num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=512, max_position_embeddings=64)``.
        pooling (str): ``'cls'`` (pretrained BERTs) or ``'mean'`` over the
            real tokens. Defaults to ``'cls'``.
        init_cfg (dict, optional): Unused (see ``HFTextEncoder``).

    Example:
        >>> enc = BertTextEncoder(config=dict(vocab_size=50, hidden_size=32,
        ...     num_hidden_layers=1, num_attention_heads=4,
        ...     intermediate_size=64))
        >>> ids = torch.tensor([[2, 7, 3, 0]])
        >>> enc(ids, (ids > 0).long())['pooled'].shape
        torch.Size([1, 32])
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[dict] = None,
        pooling: str = 'cls',
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(
            pretrained=pretrained,
            config=config,
            model_type='bert',
            pooling=pooling,
            init_cfg=init_cfg,
        )

    def _from_pretrained(self, folder: str, kwargs: dict) -> PreTrainedModel:
        return BertModel.from_pretrained(
            folder,
            local_files_only=True,
            dtype=torch.float32,
            add_pooling_layer=False,
            **kwargs,
        )

    def _from_config(
        self, config: dict, model_type: str, kwargs: dict
    ) -> PreTrainedModel:
        return BertModel(BertConfig(**config), add_pooling_layer=False, **kwargs)


__all__ = ['BertTextEncoder']
