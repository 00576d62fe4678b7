"""tbps_mm: text-based person search as an OpenMMLab plugin.

Importing the package registers every tbps_mm component (datasets, transforms,
models, losses, metrics, hooks, visualisers) in the ``tbps_mm`` registries,
registers MMPretrain's components so that tbps_mm configs build them by their
plain names, and provides the Runner that loads MMEngine checkpoints on
torch >= 2.6.

The floor-1 subpackages that need no model stack (:data:`TORCH_FREE`, e.g.
``tbps_mm.index``) are importable on their own: ``import tbps_mm.index`` (or
``from tbps_mm.index import GalleryIndex``) loads this package without the
registration, so neither torch nor MMPretrain is imported. Any later use of
the registries still finds every component: each registry imports the
modules that fill it on its first lookup (``locations``), and the components
load when ``tbps_mm.datasets`` / ``models`` / ... are first touched.
"""

import importlib
import sys
import warnings

from .version import __version__

#: Subpackages that import without torch or MMPretrain.
TORCH_FREE = ('tbps_mm.index',)
_COMPONENTS = ('datasets', 'engine', 'evaluation', 'models', 'visualization')


def _imported_for_torch_free_subpackage() -> bool:
    """Whether this import is the parent import of ``import tbps_mm.index``.

    Python imports a package before its submodule while holding the
    submodule's import lock; those locks name what is being imported. If the
    interpreter does not expose them, the answer is False and the package
    registers as usual.
    """
    bootstrap = sys.modules.get('importlib._bootstrap')
    locks = getattr(bootstrap, '_module_locks', None)
    if not isinstance(locks, dict) and not hasattr(locks, 'keys'):
        return False
    pending = [name for name in list(locks.keys()) if name.startswith(__name__ + '.')]
    return bool(pending) and all(
        name == sub or name.startswith(sub + '.')
        for name in pending
        for sub in TORCH_FREE
    )


def register_all_components() -> None:
    """Register MMPretrain's and every tbps_mm component (idempotent)."""
    with warnings.catch_warnings():
        # mmcv-lite has no compiled ops; mmcv warns about one tbps_mm never uses.
        warnings.filterwarnings(
            'ignore', message='Fail to import ``MultiScaleDeformable'
        )
        from mmpretrain.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        for name in _COMPONENTS:
            importlib.import_module(f'{__name__}.{name}')


def __getattr__(name: str):
    # ``tbps_mm.models`` etc. after a torch-free import: load on first use.
    if name in _COMPONENTS:
        register_all_components()
        return sys.modules[f'{__name__}.{name}']
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


if not _imported_for_torch_free_subpackage():
    register_all_components()

__all__ = ['__version__', 'register_all_components']
