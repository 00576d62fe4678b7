"""tbps_mm: text-based person search as an OpenMMLab plugin.

Importing the package registers every tbps_mm component (datasets, transforms,
models, losses, metrics, hooks, visualisers) in the ``tbps_mm`` registries,
registers MMPretrain's components so that tbps_mm configs build them by their
plain names, and provides the Runner that loads MMEngine checkpoints on
torch >= 2.6.
"""

import warnings

from .version import __version__

with warnings.catch_warnings():
    # mmcv-lite has no compiled ops; mmcv warns about one tbps_mm never uses.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformable')
    from mmpretrain.utils import register_all_modules

    register_all_modules(init_default_scope=False)

    from . import datasets, engine, evaluation, models, visualization  # noqa: E402

__all__ = ['__version__']
