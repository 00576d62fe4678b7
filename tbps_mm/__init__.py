"""tbps_mm: text-based person search as an OpenMMLab plugin.

Importing the package registers every tbps_mm component (datasets, transforms,
models, losses, metrics, hooks, visualisers) in the ``tbps_mm`` registries and
makes MMEngine's training checkpoints loadable with torch >= 2.6.
"""

from . import (
    datasets,  # noqa: F401,E402
    engine,  # noqa: F401,E402  (checkpoint loading fix, hooks, loops)
    evaluation,  # noqa: F401,E402
    models,  # noqa: F401,E402
    visualization,  # noqa: F401,E402
)
from mmpretrain.utils import register_all_modules

from .version import __version__

# MMPretrain's components (backbones, transforms, ...) must be registered for
# tbps_mm configs to build them by their plain names through our child registries.
register_all_modules(init_default_scope=False)

__all__ = ['__version__']
