"""The tbps_mm registries: one child of every MMPretrain registry.

Every registry has ``scope='tbps_mm'`` and MMPretrain's as parent, so that a
config with ``default_scope='tbps_mm'`` builds tbps_mm components by their
plain names and MMPretrain / MMCV / MMEngine components by theirs (or with an
explicit ``mmpretrain.`` prefix). ``locations`` lets the registry import the
modules that register into it the first time it is searched, so that
``import tbps_mm`` is all a user needs.

Example:
    >>> import tbps_mm
    >>> from tbps_mm.registry import MODELS
    >>> loss = MODELS.build(dict(type='SDMLoss'))
"""

import warnings

from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain_registry

with warnings.catch_warnings():
    # mmcv-lite has no compiled ops; mmcv warns about one tbps_mm never uses.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformable')
    from mmpretrain.utils import register_all_modules

    # The parents must hold MMPretrain's components, whichever way tbps_mm
    # was imported (``import tbps_mm.index`` skips the package's registration).
    register_all_modules(init_default_scope=False)

__all__ = [
    'RUNNERS',
    'RUNNER_CONSTRUCTORS',
    'LOOPS',
    'HOOKS',
    'LOG_PROCESSORS',
    'OPTIMIZERS',
    'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS',
    'PARAM_SCHEDULERS',
    'DATASETS',
    'DATA_SAMPLERS',
    'TRANSFORMS',
    'MODELS',
    'MODEL_WRAPPERS',
    'WEIGHT_INITIALIZERS',
    'BATCH_AUGMENTS',
    'TASK_UTILS',
    'METRICS',
    'EVALUATORS',
    'VISUALIZERS',
    'VISBACKENDS',
    'TOKENIZER',
]


def _child(name: str, locations: tuple = ()) -> Registry:
    """Create the tbps_mm child of MMPretrain's registry ``name``."""
    parent = getattr(mmpretrain_registry, name)
    return Registry(
        parent.name, parent=parent, scope='tbps_mm', locations=list(locations)
    )


# Runner and training machinery (tbps_mm adds loops and hooks).
RUNNERS = _child('RUNNERS', ['tbps_mm.engine'])
RUNNER_CONSTRUCTORS = _child('RUNNER_CONSTRUCTORS')
LOOPS = _child('LOOPS', ['tbps_mm.engine'])
HOOKS = _child('HOOKS', ['tbps_mm.engine'])
LOG_PROCESSORS = _child('LOG_PROCESSORS')
OPTIMIZERS = _child('OPTIMIZERS')
OPTIM_WRAPPERS = _child('OPTIM_WRAPPERS')
OPTIM_WRAPPER_CONSTRUCTORS = _child('OPTIM_WRAPPER_CONSTRUCTORS', ['tbps_mm.engine'])
PARAM_SCHEDULERS = _child('PARAM_SCHEDULERS')

# Data.
DATASETS = _child('DATASETS', ['tbps_mm.datasets'])
DATA_SAMPLERS = _child('DATA_SAMPLERS', ['tbps_mm.datasets'])
TRANSFORMS = _child('TRANSFORMS', ['tbps_mm.datasets'])

# Models.
MODELS = _child('MODELS', ['tbps_mm.models'])
MODEL_WRAPPERS = _child('MODEL_WRAPPERS')
WEIGHT_INITIALIZERS = _child('WEIGHT_INITIALIZERS')
BATCH_AUGMENTS = _child('BATCH_AUGMENTS')
# Video search: person detectors and tracker adapters (tbps_mm.video).
TASK_UTILS = _child('TASK_UTILS', ['tbps_mm.video'])
TOKENIZER = _child('TOKENIZER')

# Evaluation and visualisation.
METRICS = _child('METRICS', ['tbps_mm.evaluation'])
EVALUATORS = _child('EVALUATORS', ['tbps_mm.evaluation'])
VISUALIZERS = _child('VISUALIZERS', ['tbps_mm.visualization'])
VISBACKENDS = _child('VISBACKENDS')
