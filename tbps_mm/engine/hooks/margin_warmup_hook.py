"""``MarginWarmupHook``: train L_CMR with a fixed margin for the first epochs.

The commonality margin of ``CommonalityMarginRankingLoss`` is estimated from
the part embeddings themselves. Early in training they carry what is
quickest to learn, the parts' colours, so the estimate calls two parts of one
colour shared whatever their shapes and shrinks their margin, which takes
away the gradient that would teach the shapes (sleeves, say): the estimate
does not learn what it is missing. This hook runs the loss with its fixed
margin (``margin_max`` for every negative) for the first epochs and with the
configured margin afterwards, so that the commonality estimate starts from
embeddings that carry the parts' details (docs/method.md, "The margin
warm-up").

The phase is read from the runner's epoch, so a resumed run is in the phase
its epoch says. For epoch-based training loops.

Example:
    >>> # the first half of training (rounded up) with the fixed margin
    >>> custom_hooks = [dict(type='MarginWarmupHook', fraction=0.5)]
    >>> # or a set number of epochs
    >>> custom_hooks = [dict(type='MarginWarmupHook', epochs=3)]
"""

import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from tbps_mm.registry import HOOKS

__all__ = ['MarginWarmupHook']


@HOOKS.register_module()
class MarginWarmupHook(Hook):
    """Fixed L_CMR margin for the first training epochs.

    Give exactly one of ``epochs`` and ``fraction``.

    Args:
        epochs (int, optional): Epochs trained with ``margin_mode='fixed'``
            (``0``: none).
        fraction (float, optional): The share of the training loop's
            ``max_epochs`` trained with the fixed margin, rounded up, in
            [0, 1]: the warm-up scales with the schedule when
            ``train_cfg.max_epochs`` changes, as the learning-rate schedule
            does.
        loss_name (str): The loss's name in the model's ``losses``.
            Defaults to ``'cmr'``.
    """

    def __init__(
        self,
        epochs: Optional[int] = None,
        fraction: Optional[float] = None,
        loss_name: str = 'cmr',
    ) -> None:
        if (epochs is None) == (fraction is None):
            raise ValueError(
                'MarginWarmupHook: give exactly one of epochs and fraction, got '
                f'epochs={epochs!r}, fraction={fraction!r}'
            )
        if epochs is not None and (
            isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0
        ):
            raise ValueError(
                f'MarginWarmupHook: epochs must be an integer >= 0, got {epochs!r}'
            )
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0.0 <= fraction <= 1.0
        ):
            raise ValueError(
                'MarginWarmupHook: fraction must be a number in [0, 1], got '
                f'{fraction!r}'
            )
        self.epochs = epochs
        self.fraction = fraction
        self.loss_name = loss_name
        self._mode: Optional[str] = None
        self._warmup_epochs = epochs

    def _loss(self, runner) -> nn.Module:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        losses = getattr(model, 'losses', None)
        if losses is None or self.loss_name not in losses:
            raise KeyError(
                f'MarginWarmupHook: the model has no loss named {self.loss_name!r} '
                f'(its losses: {sorted(losses or {})}); a config without L_CMR '
                'sets custom_hooks without this hook'
            )
        loss = losses[self.loss_name]
        if not hasattr(loss, 'margin_mode'):
            raise TypeError(
                f'MarginWarmupHook: loss {self.loss_name!r} '
                f'({type(loss).__name__}) has no margin_mode'
            )
        return loss

    def before_train(self, runner) -> None:
        self._mode = self._loss(runner).margin_mode
        if self.fraction is not None:
            self._warmup_epochs = math.ceil(self.fraction * runner.max_epochs - 1e-9)

    def before_train_epoch(self, runner) -> None:
        loss = self._loss(runner)
        loss.margin_mode = 'fixed' if runner.epoch < self._warmup_epochs else self._mode

    def after_train(self, runner) -> None:
        # The trained model leaves with the margin it was configured with.
        self._loss(runner).margin_mode = self._mode
