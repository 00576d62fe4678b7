"""``CLIPTextEncoder``: the CLIP text transformer (transformers' ``CLIPTextModel``).

Token features are the final-layer-normed hidden states; the pooled feature
is the end-of-text (EOT) token's, as in CLIP: the first occurrence of the
config's ``eos_token_id`` among the real tokens (the last real token when a
caption was truncated before its EOT). Folders saved by older transformers
versions carry ``eos_token_id=2``; for those CLIP pools at the largest token
id (the EOT has the largest id in CLIP's vocabulary), and so does this
encoder. The projection to the joint space is not here: it is the head's text
coarse projection (``tools/model_converters/clip_to_tbps.py`` puts CLIP's
``text_projection`` there).
"""

from typing import Optional

import torch
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedModel

from tbps_mm.registry import MODELS

from .hf_text_encoder import HFTextEncoder

# transformers' marker of CLIP configs saved before the EOT id was stored.
LEGACY_EOS_TOKEN_ID = 2


@MODELS.register_module()
class CLIPTextEncoder(HFTextEncoder):
    """CLIP text transformer from a local folder or a config dict.

    Args:
        pretrained (str, optional): Local folder of a ``CLIPTextModel`` or a
            full ``CLIPModel`` (its text tower is used).
        config (dict, optional): ``CLIPTextConfig`` kwargs for a randomly
            initialised model, e.g. ``dict(vocab_size=49408, hidden_size=512,
            intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=8, max_position_embeddings=77)``.
        init_cfg (dict, optional): Unused (see ``HFTextEncoder``).

    Example:
        >>> enc = CLIPTextEncoder(config=dict(vocab_size=100, hidden_size=32,
        ...     intermediate_size=64, num_hidden_layers=1,
        ...     num_attention_heads=4, eos_token_id=99))
        >>> ids = torch.tensor([[98, 5, 99, 0]])
        >>> enc(ids, (ids > 0).long())['pooled'].shape
        torch.Size([1, 32])
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(
            pretrained=pretrained,
            config=config,
            model_type='clip_text_model',
            pooling='eos',
            init_cfg=init_cfg,
        )

    def _from_pretrained(self, folder: str, kwargs: dict) -> PreTrainedModel:
        return CLIPTextModel.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, **kwargs
        )

    def _from_config(
        self, config: dict, model_type: str, kwargs: dict
    ) -> PreTrainedModel:
        return CLIPTextModel(CLIPTextConfig(**config), **kwargs)

    def pool(self, tokens: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """EOT-token pooling (largest real token id for legacy configs)."""
        if self.eos_token_id != LEGACY_EOS_TOKEN_ID:
            return super().pool(tokens, text_ids, text_mask)
        position = text_ids.masked_fill(~text_mask.bool(), -1).argmax(dim=1)
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), position]


__all__ = ['CLIPTextEncoder']
