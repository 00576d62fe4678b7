"""``TBPSOptimWrapperConstructor``: MMEngine's constructor, strict about keys.

MMEngine's ``DefaultOptimWrapperConstructor`` applies a
``paramwise_cfg.custom_keys`` entry (a learning-rate or decay multiplier) to
every parameter whose full name (``<module path>.<parameter name>``) contains
the key, and silently ignores a key that no name contains: a typo or a
renamed module quietly trains the new modules at the backbone's learning
rate. This constructor builds exactly what MMEngine's does and raises when a
key matches no parameter of the model.

Select it with ``optim_wrapper = dict(constructor='TBPSOptimWrapperConstructor',
...)`` (tbps_mm's schedules do).
"""

from typing import List

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

from tbps_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS


def parameter_names(model: nn.Module) -> List[str]:
    """Every parameter's name as MMEngine's constructor matches keys against.

    That is ``f'{module path}.{parameter name}'``, so a parameter of the root
    module reads ``'.name'``.

    Args:
        model (nn.Module): The model (unwrapped).

    Returns:
        list[str]: The names, in module order.

    Example:
        >>> parameter_names(nn.Sequential(nn.Linear(2, 2)))
        ['0.weight', '0.bias']
    """
    return [
        f'{prefix}.{name}'
        for prefix, module in model.named_modules()
        for name, _ in module.named_parameters(recurse=False)
    ]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TBPSOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that rejects unmatched custom keys.

    Args:
        optim_wrapper_cfg (dict): As for ``DefaultOptimWrapperConstructor``.
        paramwise_cfg (dict, optional): As for
            ``DefaultOptimWrapperConstructor``; every key of its
            ``custom_keys`` must occur in some parameter's full name.

    Example:
        >>> constructor = TBPSOptimWrapperConstructor(
        ...     dict(optimizer=dict(type='SGD', lr=0.1)),
        ...     dict(custom_keys={'head': dict(lr_mult=5.0)}))
        >>> constructor(nn.Sequential(nn.Linear(2, 2)))
        Traceback (most recent call last):
        ...
        ValueError: optim_wrapper.paramwise_cfg.custom_keys: "head" matches ...
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Check the custom keys against ``model``, then build as MMEngine does."""
        unwrapped = model.module if hasattr(model, 'module') else model
        custom_keys = (self.paramwise_cfg or {}).get('custom_keys', {})
        if custom_keys:
            names = parameter_names(unwrapped)
            for key in custom_keys:
                if not any(key in name for name in names):
                    tops = {n.lstrip('.').split('.')[0] for n in names}
                    examples = ', '.join(sorted(tops))
                    raise ValueError(
                        f'optim_wrapper.paramwise_cfg.custom_keys: "{key}" '
                        f'matches no parameter of {type(unwrapped).__name__} '
                        f'(a key applies to every parameter whose full name '
                        f'contains it; top-level modules: {examples})'
                    )
        return super().__call__(model)
