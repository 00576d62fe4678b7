"""MarginWarmupHook: the fixed-margin phase and the switch to the configured margin."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tbps_mm.engine.hooks import MarginWarmupHook
from tbps_mm.models.losses import CommonalityMarginRankingLoss
from tbps_mm.registry import HOOKS


def _runner(epoch=0, max_epochs=9, **losses):
    model = nn.Module()
    model.losses = nn.ModuleDict(losses)
    return SimpleNamespace(model=model, epoch=epoch, max_epochs=max_epochs)


def test_fixed_margin_for_the_warmup_epochs_then_the_configured_one():
    loss = CommonalityMarginRankingLoss(margin_mode='commonality', margin_max=0.3)
    runner = _runner(cmr=loss)
    hook = HOOKS.build(dict(type='MarginWarmupHook', epochs=2))
    hook.before_train(runner)
    modes = []
    for epoch in range(4):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        modes.append(loss.margin_mode)
    assert modes == ['fixed', 'fixed', 'commonality', 'commonality']
    hook.after_train(runner)
    assert loss.margin_mode == 'commonality'


@pytest.mark.parametrize(
    'fraction, max_epochs, fixed',
    [(0.5, 9, 5), (0.5, 5, 3), (0.5, 4, 2), (1 / 3, 9, 3), (0.0, 9, 0), (1.0, 3, 3)],
)
def test_a_fraction_scales_with_the_schedule(fraction, max_epochs, fixed):
    loss = CommonalityMarginRankingLoss()
    runner = _runner(max_epochs=max_epochs, cmr=loss)
    hook = MarginWarmupHook(fraction=fraction)
    hook.before_train(runner)
    modes = []
    for epoch in range(max_epochs):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        modes.append(loss.margin_mode)
    assert modes == ['fixed'] * fixed + ['commonality'] * (max_epochs - fixed)


def test_the_warmup_changes_the_loss_value():
    torch.manual_seed(0)
    parts = torch.randn(6, 2, 8), torch.randn(6, 2, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = CommonalityMarginRankingLoss(margin_max=0.3)
    runner = _runner(cmr=loss)
    hook = MarginWarmupHook(epochs=1)
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    warm = loss(*parts, labels)
    expected = CommonalityMarginRankingLoss(margin_max=0.3, margin_mode='fixed')
    torch.testing.assert_close(warm, expected(*parts, labels))
    runner.epoch = 1
    hook.before_train_epoch(runner)
    torch.testing.assert_close(
        loss(*parts, labels),
        CommonalityMarginRankingLoss(margin_max=0.3)(*parts, labels),
    )
    assert not torch.allclose(warm, loss(*parts, labels))


def test_a_resumed_run_is_in_the_phase_of_its_epoch():
    loss = CommonalityMarginRankingLoss(commonality='sample')
    runner = _runner(epoch=5, cmr=loss)
    hook = MarginWarmupHook(epochs=3)
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    assert loss.margin_mode == 'commonality'
    runner.epoch = 2
    hook.before_train_epoch(runner)
    assert loss.margin_mode == 'fixed'


def test_zero_epochs_leaves_the_margin_alone():
    loss = CommonalityMarginRankingLoss()
    runner = _runner(cmr=loss)
    hook = MarginWarmupHook(epochs=0)
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    assert loss.margin_mode == 'commonality'


@pytest.mark.parametrize('epochs', [-1, 1.5, True, '2'])
def test_bad_epochs_are_refused(epochs):
    with pytest.raises(ValueError, match='epochs must be an integer'):
        MarginWarmupHook(epochs=epochs)


@pytest.mark.parametrize('fraction', [-0.1, 1.5, True, '0.5'])
def test_bad_fractions_are_refused(fraction):
    with pytest.raises(ValueError, match=r'fraction must be a number in \[0, 1\]'):
        MarginWarmupHook(fraction=fraction)


@pytest.mark.parametrize('kwargs', [{}, dict(epochs=2, fraction=0.5)])
def test_exactly_one_length_is_given(kwargs):
    with pytest.raises(ValueError, match='exactly one of epochs and fraction'):
        MarginWarmupHook(**kwargs)


def test_a_model_without_the_loss_is_named():
    hook = MarginWarmupHook(epochs=1)
    with pytest.raises(KeyError, match="no loss named 'cmr'.*sdm"):
        hook.before_train(_runner(sdm=nn.Identity()))
    with pytest.raises(TypeError, match='has no margin_mode'):
        hook.before_train(_runner(cmr=nn.Identity()))
