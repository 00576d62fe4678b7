"""``init_model``: the one way to get a tbps_mm model from a config and weights.

Every inference path builds its model here: ``TBPSInferencer``, the search
and serving tools, the ONNX exporter, the analysis tools and the benchmarks.
The model comes from the config's ``model`` entry through the registry, and
the weights go through :mod:`tbps_mm.models.checkpoint`, the one checkpoint
loader, which names every key that does not fit. Follows MMPretrain's
``mmpretrain.apis.init_model``.

Example:
    >>> model = init_model('configs/tbps_synth.py', 'tbps_synth.safetensors')
    >>> model.fusion_weight
    1.0
"""

import os
import os.path as osp
from typing import Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from tbps_mm.models.checkpoint import (
    INFERENCE_IGNORED_PREFIXES,
    CheckpointMismatchError,
    load_tbps_weights,
    load_training_checkpoint,
)
from tbps_mm.registry import MODELS

__all__ = ['init_model', 'read_config']


def read_config(
    config: Union[str, Config], cfg_options: Optional[dict] = None
) -> Config:
    """A config object from a path or a config, with overrides merged.

    Args:
        config (str | Config): A config file or object.
        cfg_options (dict, optional): ``{'a.b': value}`` overrides.

    Returns:
        Config: The config (a copy when overrides were merged into an object).

    Raises:
        FileNotFoundError: ``config`` is a path that does not exist.
        TypeError: ``config`` is neither.
    """
    if isinstance(config, (str, os.PathLike)):
        config = str(config)
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file "{config}" does not exist')
        config = Config.fromfile(config)
    elif not isinstance(config, Config):
        raise TypeError(f'config must be a file path or a Config, got {type(config)}')
    elif cfg_options:
        config = config.copy()
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


def init_model(
    config: Union[str, Config],
    checkpoint: Optional[str] = None,
    device: Union[str, torch.device] = 'cpu',
    cfg_options: Optional[dict] = None,
    trust_checkpoint: bool = False,
    ignore_prefixes: Sequence[str] = INFERENCE_IGNORED_PREFIXES,
) -> nn.Module:
    """Build the config's model, load its weights, put it in eval mode.

    Args:
        config (str | Config): A tbps_mm config (path or object) with a
            ``model`` entry.
        checkpoint (str, optional): A published weights-only file
            (``.safetensors``, or a state dict that
            ``torch.load(weights_only=True)`` reads) or, with
            ``trust_checkpoint``, a training checkpoint ``tools/train.py``
            wrote (``epoch_N.pth``, ``best_*.pth``). None keeps the random
            initialisation (what cost benchmarks measure).
        device (str | torch.device): Where the model goes. Defaults to
            ``'cpu'``.
        cfg_options (dict, optional): ``{'a.b': value}`` config overrides.
        trust_checkpoint (bool): Allow a checkpoint that can only be read by
            unpickling arbitrary objects (an MMEngine training checkpoint).
            Only for files you wrote or trust. Defaults to False.
        ignore_prefixes (Sequence[str]): Keys left out on both sides; by
            default the ID classifiers, which inference does not use and
            whose size depends on the training set.

    Returns:
        nn.Module: The model (``TBPSRetriever``) in eval mode on ``device``,
        with the loaded config as ``model.cfg`` and the checkpoint path as
        ``model.checkpoint`` (None without one).

    Raises:
        FileNotFoundError: The config or checkpoint does not exist.
        ValueError: The config has no ``model`` entry.
        CheckpointMismatchError: The checkpoint does not fit the config
            (every misfit key named), or needs unpickling and
            ``trust_checkpoint`` is False.

    Example:
        >>> model = init_model('configs/tbps_synth.py',
        ...                    'work_dirs/tbps_synth/epoch_9.pth',
        ...                    trust_checkpoint=True)
    """
    source = f'"{config}"' if isinstance(config, str) else '(Config object)'
    cfg = read_config(config, cfg_options)
    if cfg.get('model') is None:
        raise ValueError(f'config {source} has no "model" entry')
    init_default_scope(cfg.get('default_scope', 'tbps_mm'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        if not isinstance(checkpoint, str) or not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint file "{checkpoint}" does not exist')
        if trust_checkpoint:
            weights = load_training_checkpoint(checkpoint)
        else:
            weights = checkpoint
        try:
            load_tbps_weights(model, weights, ignore_prefixes=tuple(ignore_prefixes))
        except CheckpointMismatchError as err:
            if trust_checkpoint or 'not weights-only' not in str(err):
                raise
            raise CheckpointMismatchError(
                f'{err}\nIf you wrote this file yourself (a training checkpoint '
                'of tools/train.py), pass trust_checkpoint=True '
                '(--trust-checkpoint), or publish it with '
                'tools/model_converters/publish_model.py.'
            ) from None
    model.cfg = cfg
    model.checkpoint = checkpoint
    return model.to(device).eval()
