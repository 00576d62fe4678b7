"""``HFTextEncoder``: a transformers text model as a tbps_mm text encoder.

Wraps any transformers encoder (BERT family, CLIP text transformer, ...) so
that it is built from a config dict, either from a local pretrained folder
(``pretrained='path'``, never a download) or from a config (random
initialisation, any size), and returns what the part decoder needs: token
features, a pooled feature and the padding mask. The subclasses
``BertTextEncoder`` and ``CLIPTextEncoder`` fix the model class and pooling.

The network, weights and configs are transformers'; this module only adds the
folder checks, the pooling rule and the OpenMMLab interface.
"""

import os.path as osp
from typing import Dict, Optional

import torch
from mmengine.model import BaseModule
from torch import Tensor
from transformers import AutoConfig, AutoModel, PreTrainedModel

from tbps_mm.registry import MODELS

POOLINGS = ('cls', 'eos', 'mean')
CONFIG_FILE = 'config.json'
WEIGHT_FILES = (
    'model.safetensors',
    'model.safetensors.index.json',
    'pytorch_model.bin',
    'pytorch_model.bin.index.json',
)


def check_pretrained_folder(folder: str, owner: str) -> None:
    """Raise a clear error unless ``folder`` holds a transformers model.

    Args:
        folder (str): The local folder.
        owner (str): Who asks (named in the error).

    Raises:
        FileNotFoundError: the folder does not exist, or lacks ``config.json``
            or a weights file.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'{owner}: pretrained folder "{folder}" does not exist (tbps_mm '
            'never downloads weights: point `pretrained` at a local folder saved '
            'with save_pretrained, or build from `config=dict(...)` for random '
            'initialisation)'
        )
    missing = []
    if not osp.isfile(osp.join(folder, CONFIG_FILE)):
        missing.append(CONFIG_FILE)
    if not any(osp.isfile(osp.join(folder, name)) for name in WEIGHT_FILES):
        missing.append('one of ' + ' / '.join(WEIGHT_FILES))
    if missing:
        raise FileNotFoundError(
            f'{owner}: pretrained folder "{folder}" lacks {" and ".join(missing)}'
        )


@MODELS.register_module()
class HFTextEncoder(BaseModule):
    """A transformers text model returning tokens, pooled feature and mask.

    Args:
        pretrained (str, optional): Local folder with a transformers model
            (``config.json`` + weights). Loaded with ``local_files_only=True``.
        config (dict, optional): Config kwargs for a randomly initialised
            model (e.g. ``dict(vocab_size=1000, hidden_size=128,
            num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=512)``). Exactly one of ``pretrained`` and
            ``config`` must be given.
        model_type (str): transformers model type used with ``config``
            (e.g. ``'bert'``, ``'roberta'``). Defaults to ``'bert'``.
        pooling (str): ``'cls'`` (first token), ``'eos'`` (the end-of-text
            token: first occurrence of the config's ``eos_token_id`` among real
            tokens, else the last real token) or ``'mean'`` (over real
            tokens). Defaults to ``'cls'``.
        model_kwargs (dict, optional): Extra kwargs for the model constructor
            / ``from_pretrained`` (e.g. ``add_pooling_layer=False``).
        init_cfg (dict, optional): Unused by the transformers model (its
            weights come from ``pretrained`` or its own initialisation).

    Example:
        >>> enc = HFTextEncoder(config=dict(vocab_size=50, hidden_size=32,
        ...     num_hidden_layers=1, num_attention_heads=4,
        ...     intermediate_size=64))
        >>> ids = torch.tensor([[2, 7, 3, 0]])
        >>> out = enc(ids, (ids > 0).long())
        >>> out['tokens'].shape, out['pooled'].shape
        (torch.Size([1, 4, 32]), torch.Size([1, 32]))
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[dict] = None,
        model_type: str = 'bert',
        pooling: str = 'cls',
        model_kwargs: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if (pretrained is None) == (config is None):
            raise ValueError(
                f'{type(self).__name__}: give exactly one of `pretrained` (a local '
                'folder) and `config` (a dict for random initialisation)'
            )
        if pooling not in POOLINGS:
            raise ValueError(f'pooling must be one of {POOLINGS}, got {pooling!r}')
        self.pooling = pooling
        self.pretrained = pretrained
        kwargs = dict(model_kwargs or {})
        if pretrained is not None:
            check_pretrained_folder(pretrained, type(self).__name__)
            self.model = self._from_pretrained(pretrained, kwargs)
        else:
            self.model = self._from_config(dict(config), model_type, kwargs)
        hf_config = self.model.config
        self.embed_dims = hf_config.hidden_size
        self.vocab_size = hf_config.vocab_size
        self.max_length = getattr(hf_config, 'max_position_embeddings', None)
        self.eos_token_id = getattr(hf_config, 'eos_token_id', None)

    def _from_pretrained(self, folder: str, kwargs: dict) -> PreTrainedModel:
        return AutoModel.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, **kwargs
        )

    def _from_config(
        self, config: dict, model_type: str, kwargs: dict
    ) -> PreTrainedModel:
        return AutoModel.from_config(
            AutoConfig.for_model(model_type, **config), **kwargs
        )

    def init_weights(self) -> None:
        """Keep the transformers weights.

        MMEngine's recursive ``init_weights`` would call the transformers
        model's own ``init_weights`` and could overwrite pretrained weights;
        the model is initialised when it is built (from the folder or by
        transformers' initialisation), so nothing is done here.
        """
        self._is_init = True

    def _check_ids(self, text_ids: Tensor, text_mask: Tensor) -> None:
        if text_ids.dim() != 2 or text_mask.shape != text_ids.shape:
            raise ValueError(
                f'{type(self).__name__}: text_ids and text_mask must be (B, L) of '
                f'one shape, got {tuple(text_ids.shape)} and '
                f'{tuple(text_mask.shape)}'
            )
        if self.max_length is not None and text_ids.shape[1] > self.max_length:
            raise ValueError(
                f'{type(self).__name__}: captions are {text_ids.shape[1]} tokens '
                f'long but the model has {self.max_length} positions: lower the '
                "tokenizer's max_length"
            )
        if text_ids.numel() and int(text_ids.max()) >= self.vocab_size:
            raise ValueError(
                f'{type(self).__name__}: token id {int(text_ids.max())} >= the '
                f"model's vocab_size {self.vocab_size}: the tokenizer does not fit "
                'the text encoder (set vocab_size to at least the tokenizer size)'
            )

    def pool(self, tokens: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Pool (B, L, C) token features into (B, C) by ``self.pooling``."""
        if self.pooling == 'cls':
            return tokens[:, 0]
        real = text_mask.bool()
        if self.pooling == 'mean':
            weights = real.to(tokens.dtype).unsqueeze(-1)
            return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        last_real = (real.long().sum(dim=1) - 1).clamp(min=0)
        if self.eos_token_id is None:
            position = last_real
        else:
            is_eos = (text_ids == self.eos_token_id) & real
            position = torch.where(
                is_eos.any(dim=1), is_eos.long().argmax(dim=1), last_real
            )
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), position]

    def forward(self, text_ids: Tensor, text_mask: Tensor) -> Dict[str, Tensor]:
        """Encode token ids.

        Args:
            text_ids (Tensor): (B, L) token ids.
            text_mask (Tensor): (B, L), 1 for real tokens and 0 for padding.

        Returns:
            dict[str, Tensor]: ``tokens`` (B, L, C), ``pooled`` (B, C) and
            ``mask`` (B, L), the given mask.
        """
        self._check_ids(text_ids, text_mask)
        out = self.model(input_ids=text_ids, attention_mask=text_mask)
        tokens = out.last_hidden_state
        return dict(
            tokens=tokens, pooled=self.pool(tokens, text_ids, text_mask), mask=text_mask
        )


__all__ = ['HFTextEncoder', 'check_pretrained_folder']
