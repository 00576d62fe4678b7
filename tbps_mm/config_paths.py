"""Where relative paths in a config point: one documented root.

A config names data and model files with relative paths
(``data_root='data/synthpedes_small'``, a ``TokenizeCaption`` ``tokenizer``
folder, a text encoder's ``pretrained`` folder, an ``init_cfg``
``checkpoint``). Read relative to the working directory, such a config works
from the repository root only, and a tool run from elsewhere fails late
(after indexing every image, say). :func:`resolve_config_paths` makes them
absolute against one root, :func:`config_root`:

1. the ``TBPS_DATA_ROOT`` environment variable, when set;
2. else the project the config belongs to: the folder holding the nearest
   ``configs`` folder above the config file (the repository root for
   ``configs/tbps_synth.py``);
3. else (a config outside any ``configs`` folder) the config file's own
   folder.

Absolute paths and URLs (``scheme://``) are left as they are. Command-line
paths (``--images``, ``--work-dir``, ``--out``) stay relative to the working
directory, as for any command.

Example:
    >>> cfg = Config.fromfile('configs/tbps_synth.py')  # doctest: +SKIP
    >>> resolve_config_paths(cfg, 'configs/tbps_synth.py')  # doctest: +SKIP
    >>> root = cfg.train_dataloader.dataset.data_root  # doctest: +SKIP
    >>> root == osp.join(config_root('configs/tbps_synth.py'),
    ...                  'data/synthpedes_small')  # doctest: +SKIP
    True
"""

import os
import os.path as osp
from typing import Any

__all__ = ['DATA_ROOT_ENV', 'PATH_KEYS', 'config_root', 'resolve_config_paths']

#: The environment variable that overrides the root.
DATA_ROOT_ENV = 'TBPS_DATA_ROOT'
#: Config keys (at any depth) whose string values are paths.
PATH_KEYS = ('data_root', 'tokenizer', 'pretrained', 'checkpoint')


def config_root(config_path: str) -> str:
    """The folder relative paths in ``config_path`` resolve against.

    Args:
        config_path (str): The config file.

    Returns:
        str: An absolute folder (see the module doc for the rule).

    Example:
        >>> root = config_root('configs/tbps_synth.py')  # doctest: +SKIP
        >>> osp.isdir(osp.join(root, 'configs'))  # the project folder
        True
    """
    override = os.environ.get(DATA_ROOT_ENV)
    if override:
        return osp.abspath(osp.expanduser(override))
    folder = osp.dirname(osp.abspath(config_path))
    probe = folder
    while True:
        if osp.basename(probe) == 'configs':
            return osp.dirname(probe)
        parent = osp.dirname(probe)
        if parent == probe:
            return folder
        probe = parent


def _resolve(node: Any, root: str) -> Any:
    if isinstance(node, dict):
        for key in list(node.keys()):
            value = node[key]
            if (
                key in PATH_KEYS
                and isinstance(value, str)
                and value
                and '://' not in value
                and not osp.isabs(osp.expanduser(value))
            ):
                node[key] = osp.normpath(osp.join(root, value))
            else:
                _resolve(value, root)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _resolve(item, root)
    return node


def resolve_config_paths(cfg, config_path: str) -> str:
    """Make the relative paths under :data:`PATH_KEYS` in ``cfg`` absolute.

    Args:
        cfg (Config | dict): The config, changed in place.
        config_path (str): Its file (decides the root).

    Returns:
        str: The root used.

    Example:
        >>> cfg = dict(ds=dict(data_root='data/x', pipeline=[dict(tokenizer='t')]))
        >>> root = resolve_config_paths(cfg, '/p/configs/a.py')
        >>> cfg['ds']['data_root'], root
        ('/p/data/x', '/p')
    """
    root = config_root(config_path)
    # An MMEngine Config wraps its ConfigDict; edit that in place.
    _resolve(getattr(cfg, '_cfg_dict', cfg), root)
    return root
