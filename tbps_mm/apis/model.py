"""``init_model``: the one way to get a tbps_mm model from a config and weights.

Every inference path builds its model here: ``TBPSInferencer``, the search
and serving tools, the ONNX exporter, the analysis tools and the benchmarks.
The model comes from the config's ``model`` entry through the registry, and
the weights go through :mod:`tbps_mm.models.checkpoint`, the one checkpoint
reader, which never runs code from a file (unless trusted) and names every
key that does not fit. Follows MMPretrain's
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

from tbps_mm.config_paths import resolve_config_paths
from tbps_mm.models.checkpoint import INFERENCE_IGNORED_PREFIXES, load_tbps_weights
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
        A file's relative data and model paths are made absolute against its
        root (:func:`tbps_mm.config_paths.resolve_config_paths`); a Config
        object is used as it is (``tbps_mm.engine.load_config`` resolves
        them).

    Raises:
        FileNotFoundError: ``config`` is a path that does not exist.
        TypeError: ``config`` is neither.

    Example:
        >>> read_config('configs/tbps_synth.py',
        ...             {'model.fusion_weight': 0.5}).model.fusion_weight
        0.5
    """
    path = None
    if isinstance(config, (str, os.PathLike)):
        path = str(config)
        if not osp.isfile(path):
            raise FileNotFoundError(f'config file "{path}" does not exist')
        config = Config.fromfile(path)
    elif not isinstance(config, Config):
        raise TypeError(f'config must be a file path or a Config, got {type(config)}')
    elif cfg_options:
        config = config.copy()
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if path is not None:
        resolve_config_paths(config, path)
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
        checkpoint (str, optional): A published ``.safetensors`` file, a
            state dict, or a training checkpoint ``tools/train.py`` wrote
            (``epoch_N.pth``, ``best_*.pth``), read by
            :func:`tbps_mm.models.checkpoint.load_checkpoint_file`, which
            never runs code from the file. None keeps the random
            initialisation (what cost benchmarks measure).
        device (str | torch.device): Where the model goes. Defaults to
            ``'cpu'``.
        cfg_options (dict, optional): ``{'a.b': value}`` config overrides.
        trust_checkpoint (bool): Unpickle the checkpoint in full
            (``--trust-checkpoint``), for a file that holds types beyond
            tensors and those MMEngine training checkpoints hold. A pickle
            can run any code: only for files you wrote or trust. Defaults
            to False.
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
            (every misfit key named).
        UnsafeCheckpointError: Reading the checkpoint could run code and
            ``trust_checkpoint`` is False.

    Example:
        >>> model = init_model('configs/tbps_synth.py',
        ...                    'work_dirs/tbps_synth/epoch_9.pth')
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
        load_tbps_weights(
            model,
            checkpoint,
            ignore_prefixes=tuple(ignore_prefixes),
            trust=trust_checkpoint,
        )
    model.cfg = cfg
    model.checkpoint = checkpoint
    return model.to(device).eval()
