"""The schedules follow ``train_cfg.max_epochs``; lr multiplier keys must match."""

import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from model_fixtures import tiny_retriever_cfg

from tbps_mm.engine import (
    TBPSOptimWrapperConstructor,
    build_runner,
    load_config,
    parameter_names,
)
from tbps_mm.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCHEDULES = osp.join(ROOT, 'configs', '_base_', 'schedules')

TOY_CONFIG = """
_base_ = [{runtime!r}, {schedule!r}]
custom_imports = dict(imports=['toy_components'], allow_failed_imports=False)
model = dict(type='ToyRegressor')
train_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ToyRegressionDataset', length=8))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    constructor='TBPSOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1))
val_cfg = None
test_cfg = None
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1000, save_best=None),
    logger=dict(type='LoggerHook', interval=1))
"""


def write_toy_config(tmp_path, schedule):
    """The toy model on ``configs/_base_/schedules/<schedule>``."""
    path = tmp_path / 'toy.py'
    path.write_text(
        TOY_CONFIG.format(
            runtime=osp.join(ROOT, 'configs', '_base_', 'default_runtime.py'),
            schedule=osp.join(SCHEDULES, schedule),
        )
    )
    return path


class LrRecorder(Hook):
    """The learning rate after each iteration's scheduler step."""

    def __init__(self):
        self.lrs = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


@pytest.mark.parametrize(
    'schedule,max_epochs,warmup,eta_min',
    [('synth_cpu.py', 4, 1, 1e-6), ('irra_60e.py', 7, 5, 0.0)],
)
def test_cosine_floor_at_the_overridden_last_epoch(
    tmp_path, schedule, max_epochs, warmup, eta_min
):
    path = write_toy_config(tmp_path, schedule)
    # As tools/train.py --cfg-options train_cfg.max_epochs=N does.
    cfg = load_config(str(path), {'train_cfg.max_epochs': max_epochs})
    assert Config.fromfile(str(path)).train_cfg.max_epochs != max_epochs
    cfg.work_dir = str(tmp_path / 'work')
    runner = build_runner(cfg)
    recorder = LrRecorder()
    runner.register_hook(recorder, priority='LOWEST')
    runner.train()
    per_epoch = 2  # 8 items, batch 4
    lrs = recorder.lrs
    assert len(lrs) == max_epochs * per_epoch
    # The cosine phase spans the warm-up's end to the new last step: its
    # floor (step T) is where training ends, and the last iteration runs at
    # step T - 1 of it.
    cosine = runner.param_schedulers[1]
    steps = (max_epochs - warmup) * per_epoch
    assert (cosine.begin, cosine.end) == (warmup * per_epoch, max_epochs * per_epoch)
    assert cosine.T_max == steps
    assert lrs[warmup * per_epoch - 1] == pytest.approx(0.1)
    last = eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * (steps - 1) / steps)) / 2
    assert lrs[-1] == pytest.approx(last, rel=1e-9)
    decay = lrs[warmup * per_epoch - 1 :]
    assert all(a > b for a, b in zip(decay, decay[1:-1]))


def test_unmatched_custom_key_is_an_error_naming_it():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    constructor = TBPSOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
        dict(custom_keys={'0.weight': dict(lr_mult=2.0), 'head': dict(lr_mult=5.0)}),
    )
    with pytest.raises(ValueError, match='custom_keys: "head" matches no parameter'):
        constructor(model)
    assert parameter_names(model) == ['0.weight', '0.bias']
    ok = TBPSOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
        dict(custom_keys={'0.weight': dict(lr_mult=2.0)}),
    )(model)
    assert sorted(g['lr'] for g in ok.optimizer.param_groups) == [0.1, 0.2]


def reference_optim_cfg(**custom_keys):
    """The reference recipe's optimizer wrapper, plain (AMP needs a GPU)."""
    cfg = Config.fromfile(osp.join(SCHEDULES, 'irra_60e.py')).optim_wrapper
    cfg.type = 'OptimWrapper'
    cfg.pop('loss_scale')
    cfg.paramwise_cfg.custom_keys.update(custom_keys)
    return cfg


def test_reference_multipliers_match_the_reference_head():
    init_default_scope('tbps_mm')
    model = MODELS.build(tiny_retriever_cfg(head=dict(attention='cross')))
    wrapper = build_optim_wrapper(model, reference_optim_cfg())
    lrs = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lrs[names[id(p)]] = group['lr']
    # New modules at 5x (their biases too: in MMEngine a matching custom key
    # takes precedence over bias_lr_mult); backbone linear biases 2x.
    assert lrs['head.part_queries'] == pytest.approx(5e-5)
    assert lrs['losses.id.classifier.weight'] == pytest.approx(5e-5)
    bias = next(n for n in lrs if n.startswith('head.decoder') and 'bias' in n)
    assert lrs[bias] == pytest.approx(5e-5)
    vit = [n for n in lrs if n.startswith('image_encoder.layers')]
    assert lrs[next(n for n in vit if n.endswith('weight'))] == pytest.approx(1e-5)
    assert lrs[next(n for n in vit if n.endswith('qkv.bias'))] == pytest.approx(2e-5)
    # A typo in a key is an error, not a silently slower module.
    with pytest.raises(ValueError, match='"head.part_querys"'):
        build_optim_wrapper(
            model, reference_optim_cfg(**{'head.part_querys': dict(lr_mult=5.0)})
        )


@pytest.mark.parametrize(
    'schedule,max_epochs,warmup', [('synth_cpu.py', 1, 1), ('irra_60e.py', 3, 5)]
)
def test_runs_shorter_than_the_warm_up_train(tmp_path, schedule, max_epochs, warmup):
    """A run that ends during the warm-up warms up over the whole run."""
    path = write_toy_config(tmp_path, schedule)
    cfg = load_config(str(path), {'train_cfg.max_epochs': max_epochs})
    cfg.work_dir = str(tmp_path / 'work')
    runner = build_runner(cfg)
    recorder = LrRecorder()
    runner.register_hook(recorder, priority='LOWEST')
    runner.train()
    per_epoch = 2
    assert len(recorder.lrs) == max_epochs * per_epoch
    assert len(runner.param_schedulers) == 1  # the cosine phase is left out
    (linear,) = runner.param_schedulers
    assert (linear.begin, linear.end) == (0, max_epochs * per_epoch)
    lrs = recorder.lrs
    assert all(a <= b for a, b in zip(lrs, lrs[1:]))  # still warming up
    # MMEngine's LinearLR reaches its end factor on the phase's last step.
    assert lrs[0] < 0.1 or max_epochs * per_epoch == 2
    assert lrs[-1] == pytest.approx(0.1)


@pytest.mark.parametrize('max_epochs', [0, -2])
def test_train_tool_refuses_an_impossible_run_length(tmp_path, max_epochs, capsys):
    import importlib.util

    path = write_toy_config(tmp_path, 'synth_cpu.py')
    spec = importlib.util.spec_from_file_location(
        'tool_train_schedules', osp.join(ROOT, 'tools', 'train.py')
    )
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    code = train.main(
        [
            str(path),
            '--work-dir',
            str(tmp_path / 'work'),
            '--cfg-options',
            f'train_cfg.max_epochs={max_epochs}',
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f'config "{path}"' in err and 'max_epochs' in err
    assert not (tmp_path / 'work').exists()
