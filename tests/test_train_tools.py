"""tools/train.py and tools/dist_train.sh: checkpoints, resume, CPU DDP, bad input."""

import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from ddp_workers import free_port, run_forked

from tbps_mm.models.checkpoint import load_training_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.dirname(osp.abspath(__file__))

TOY_CONFIG = """
_base_ = [{runtime!r}]
custom_imports = dict(imports=['toy_components'], allow_failed_imports=False)
model = dict(type='ToyRegressor')
train_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ToyRegressionDataset', length=16))
train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=100)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[2], gamma=0.1)]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=5,
                    save_best=None),
    logger=dict(type='LoggerHook', interval=1))
"""


def write_toy_config(tmp_path, extra='', name='toy.py'):
    runtime = osp.join(ROOT, 'configs', '_base_', 'default_runtime.py')
    path = tmp_path / name
    path.write_text(TOY_CONFIG.format(runtime=runtime) + extra)
    return str(path)


def run_tool(args, cwd, env_extra=None):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([TESTS, ROOT, env.get('PYTHONPATH', '')])
    env.update(env_extra or {})
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def load_tool(name):
    """Import ``tools/<name>.py`` as a module (the tools are scripts)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(ROOT, 'tools', f'{name}.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_ckpt(path):
    return load_training_checkpoint(str(path))


def test_train_killed_then_resumed_continues_at_right_epoch_and_lr(tmp_path):
    cfg = write_toy_config(tmp_path)
    killable = write_toy_config(
        tmp_path,
        'custom_hooks = [dict(type="KillAfterEpochHook", epoch=2)]\n',
        name='toy_killed.py',
    )
    work = tmp_path / 'work'
    killed = run_tool(
        [
            sys.executable,
            osp.join(ROOT, 'tools', 'train.py'),
            killable,
            '--work-dir',
            str(work),
        ],
        cwd=tmp_path,
    )
    assert killed.returncode != 0  # SIGKILLed after epoch 2
    assert (work / 'epoch_2.pth').exists()
    assert not (work / 'epoch_3.pth').exists()

    resumed = run_tool(
        [
            sys.executable,
            osp.join(ROOT, 'tools', 'train.py'),
            cfg,
            '--work-dir',
            str(work),
            '--resume',
        ],
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 2' in log
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [3]' in log
    final = load_ckpt(work / 'epoch_4.pth')
    assert final['meta']['epoch'] == 4
    # lr 0.1 for epochs 1-2, 0.01 after the milestone: the resumed run must
    # carry the scheduler state, not restart it.
    assert final['optimizer']['param_groups'][0]['lr'] == pytest.approx(0.01)
    epoch3 = load_ckpt(work / 'epoch_3.pth')
    assert epoch3['optimizer']['param_groups'][0]['lr'] == pytest.approx(0.01)


def test_resume_from_explicit_path_and_load_from(tmp_path):
    cfg = write_toy_config(tmp_path, "train_cfg['max_epochs'] = 2\n")
    work = tmp_path / 'work'
    first = run_tool(
        [sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)], cwd=ROOT
    )
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = str(work / 'epoch_1.pth')
    again = run_tool(
        [
            sys.executable,
            'tools/train.py',
            cfg,
            '--work-dir',
            str(tmp_path / 'w2'),
            '--resume',
            ckpt,
        ],
        cwd=ROOT,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'resumed epoch: 1' in again.stdout + again.stderr
    loaded = run_tool(
        [
            sys.executable,
            'tools/train.py',
            cfg,
            '--work-dir',
            str(tmp_path / 'w3'),
            '--cfg-options',
            f'load_from={ckpt}',
        ],
        cwd=ROOT,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert f'Load checkpoint from {ckpt}' in loaded.stdout + loaded.stderr


def test_training_checkpoint_needs_the_scoped_loader(tmp_path):
    """The fix is needed (plain torch.load refuses) and stays scoped."""
    import pickle

    from tbps_mm.models.checkpoint import load_training_checkpoint

    cfg = write_toy_config(tmp_path, "train_cfg['max_epochs'] = 1\n")
    work = tmp_path / 'work'
    assert (
        run_tool(
            [sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)], cwd=ROOT
        ).returncode
        == 0
    )
    path = str(work / 'epoch_1.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # torch's safe default is untouched
    ckpt = load_training_checkpoint(path)
    assert ckpt['meta']['epoch'] == 1
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_training_checkpoint(str(tmp_path / 'missing.pth'))


def test_dist_train_on_cpu_two_processes_completes_and_resumes(tmp_path):
    cfg = write_toy_config(tmp_path, "train_cfg['max_epochs'] = 2\n")
    work = tmp_path / 'work'
    env = {'PORT': str(free_port()), 'OMP_NUM_THREADS': '1', 'PYTHON': sys.executable}
    first = run_tool(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', str(work)],
        cwd=ROOT,
        env_extra=env,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert 'Distributed launcher: pytorch' in first.stdout + first.stderr
    ckpt = load_ckpt(work / 'epoch_2.pth')
    assert ckpt['meta']['epoch'] == 2
    # Two processes each see half of the 16 items: 2 iters of 4 per epoch.
    assert ckpt['meta']['iter'] == 4

    env['PORT'] = str(free_port())
    more = run_tool(
        [
            'bash',
            'tools/dist_train.sh',
            cfg,
            '2',
            '--work-dir',
            str(work),
            '--resume',
            '--cfg-options',
            'train_cfg.max_epochs=3',
        ],
        cwd=ROOT,
        env_extra=env,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert 'resumed epoch: 2' in more.stdout + more.stderr
    assert load_ckpt(work / 'epoch_3.pth')['meta']['epoch'] == 3


def reference_on_toy_data(tmp_path, batch_size):
    """configs/tbps_cuhk.py with its schedule, on a toy model and data (CPU).

    The reference optimizer (lr, bias multiplier) and ``auto_scale_lr`` are
    kept; the CLIP model, the dataset and AMP (GPU only) are swapped for
    the toy regressor, epochs of one iteration per process, full precision.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'tbps_cuhk.py'))
    cfg.custom_imports = dict(imports=['toy_components'], allow_failed_imports=False)
    cfg.model = dict(type='ToyRegressor')
    cfg.train_dataloader = dict(
        batch_size=batch_size,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='pseudo_collate'),
        dataset=dict(type='ToyRegressionDataset', length=2 * batch_size),
    )
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale')
    # The multipliers keyed by the CLIP model's module names match none of the
    # toy's parameters, which the strict constructor rightly rejects.
    cfg.optim_wrapper.paramwise_cfg.custom_keys = {}
    # The schedule's cosine phase starts after the warm-up: one epoch past it.
    cfg.train_cfg.max_epochs = cfg.param_scheduler[-1].begin + 1
    path = str(tmp_path / 'cuhk_toy.py')
    cfg.dump(path)
    return path, cfg


def _train_worker(rank, port, train_main, argv):
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE='2',
        LOCAL_RANK=str(rank),
    )
    code = train_main(argv)
    if code:
        raise SystemExit(f'rank {rank}: tools/train.py returned {code}')


def test_auto_scale_lr_of_the_reference_config_on_two_processes(tmp_path):
    batch_size = 4
    cfg_path, cfg = reference_on_toy_data(tmp_path, batch_size)
    assert cfg.auto_scale_lr == dict(base_batch_size=64, enable=False)
    work = tmp_path / 'work'
    argv = [cfg_path, '--launcher', 'pytorch', '--auto-scale-lr']
    argv += ['--no-validate', '--work-dir', str(work)]
    # Loaded here, so that the forked ranks inherit the imported stack.
    train_main = load_tool('train').main
    run_forked(_train_worker, (free_port(), train_main, argv), nprocs=2)
    last = cfg.train_cfg.max_epochs
    groups = load_ckpt(work / f'epoch_{last}.pth')['optimizer']['param_groups']
    # MMEngine's rule: lr x (processes x per-process batch) / base_batch_size.
    ratio = 2 * batch_size / cfg.auto_scale_lr.base_batch_size
    base_lr = cfg.optim_wrapper.optimizer.lr
    bias_mult = cfg.optim_wrapper.paramwise_cfg.bias_lr_mult  # the toy's bias
    expected = sorted([base_lr * ratio, base_lr * bias_mult * ratio])
    # initial_lr: what the schedulers start from, i.e. the scaled lr.
    assert sorted(g['initial_lr'] for g in groups) == pytest.approx(expected)


def test_auto_scale_lr_needs_a_base_batch_size(tmp_path, monkeypatch, capsys):
    cfg = write_toy_config(tmp_path)  # no auto_scale_lr
    monkeypatch.chdir(ROOT)
    code = load_tool('train').main([cfg, '--auto-scale-lr'])
    assert code == 2
    assert 'has no auto_scale_lr.base_batch_size' in capsys.readouterr().err


@pytest.mark.parametrize(
    'args, message',
    [
        (
            ['configs/does_not_exist.py'],
            'config file "configs/does_not_exist.py" does not exist',
        ),
        (
            ['{cfg}', '--cfg-options', 'model.no_such.key=1'],
            '--cfg-options key "model.no_such.key" does not exist',
        ),
        (
            ['{cfg}', '--cfg-options', 'no_such_top_key=1'],
            '--cfg-options key "no_such_top_key" does not exist',
        ),
        (
            ['{cfg}', '--resume', 'missing/epoch_3.pth'],
            'resume checkpoint "missing/epoch_3.pth" does not exist',
        ),
        (
            ['{cfg}', '--cfg-options', 'load_from=missing/model.pth'],
            'load_from checkpoint "missing/model.pth" does not exist',
        ),
    ],
)
def test_bad_input_gives_one_clear_line_and_no_work_dir(
    tmp_path, monkeypatch, capsys, args, message
):
    cfg = write_toy_config(tmp_path)
    work = tmp_path / 'work'
    args = [a.format(cfg=cfg) for a in args]
    monkeypatch.chdir(ROOT)
    code = load_tool('train').main([*args, '--work-dir', str(work)])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'error: {message}')
    assert not work.exists()


@pytest.mark.parametrize('world_size', [None, '1', 'x'])
def test_exit_process_exits_normally_outside_a_cpu_group(monkeypatch, world_size):
    # Outside a multi-process CPU group the entry scripts leave through
    # sys.exit, so exit handlers and destructors run as usual (the CPU-group
    # path, os._exit, is what the two-process training test exercises).
    from tbps_mm.engine import exit_process

    if world_size is None:
        monkeypatch.delenv('WORLD_SIZE', raising=False)
    else:
        monkeypatch.setenv('WORLD_SIZE', world_size)
    with pytest.raises(SystemExit) as exited:
        exit_process(3)
    assert exited.value.code == 3
