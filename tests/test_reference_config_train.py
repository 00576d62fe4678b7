"""``tools/train.py configs/tbps_cuhk.py`` trains, validates and resumes.

The reference CLIP recipe as a user runs it, on CPU and small: a tiny random
CLIP (transformers) converted by ``tools/model_converters/clip_to_tbps.py``
into the folder the config loads by default (``data/pretrained/
clip-vit-b16``, with CLIP's tokenizer), a CUHK-PEDES-format fixture in
``data/cuhk_pedes``, and the config's own schedule (5 linear warm-up epochs,
cosine to ``max_epochs``), learning-rate multipliers, pipeline and metric.
Reductions, all through ``--cfg-options``: ViT width (``deit-tiny``), the
head's widths, 96x32 crops, batch 4, a higher base lr so that a few steps
move the loss. The one file-level change: AMP needs a GPU, so a two-line
config on top of ``tbps_cuhk.py`` swaps ``AmpOptimWrapper`` for a plain
``OptimWrapper`` that keeps the config's optimizer and multipliers.
"""

import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from fixtures_tbps import make_tbps_fixture
from transformers import CLIPConfig, CLIPModel

from tbps_mm.models.checkpoint import load_training_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.dirname(osp.abspath(__file__))
SPEC = {
    'train': [(1, 3), (2, 3), (3, 2), (4, 2)],
    'val': [(7, 2), (8, 2)],
    'test': [(10, 2), (11, 2)],
}
CPU_CONFIG = """
_base_ = [{base!r}]
# AmpOptimWrapper needs a GPU: the same optimizer and multipliers, no AMP.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='TBPSOptimWrapperConstructor',
    optimizer={{{{_base_.optim_wrapper.optimizer}}}},
    paramwise_cfg={{{{_base_.optim_wrapper.paramwise_cfg}}}},
)
"""


def tiny_clip() -> CLIPModel:
    """A random CLIP whose ViT has deit-tiny's shape and CLIP's vocabulary."""
    torch.manual_seed(0)
    return CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=49406,
                eos_token_id=49407,
            ),
            vision_config=dict(
                hidden_size=192,
                intermediate_size=768,
                num_hidden_layers=12,
                num_attention_heads=3,
                image_size=32,
                patch_size=16,
            ),
            projection_dim=32,
        )
    )


def options(max_epochs: int) -> list:
    crop = '(96,32)'
    train = 'train_dataloader.dataset.pipeline.0.transforms'
    opts = [
        'model.image_encoder.arch=deit-tiny',
        f'model.image_encoder.img_size={crop}',
        'model.head.image_in_channels=192',
        'model.head.text_in_channels=32',
        'model.head.embed_dims=32',
        'model.head.decoder_dims=32',
        'model.head.num_heads=4',
        'model.head.num_parts=2',
        'model.losses.id.in_channels=32',
        'model.losses.id.num_classes=4',
        f'{train}.1.scale=(32,96)',
        f'{train}.3.crop_size={crop}',
        'val_dataloader.dataset.pipeline.0.transforms.1.scale=(32,96)',
        'optim_wrapper.optimizer.lr=0.0005',
        f'train_cfg.max_epochs={max_epochs}',
        f'train_cfg.val_interval={max_epochs}',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.save_best=None',
        'default_hooks.checkpoint.interval=5',  # epoch_5 and the last one
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [
            f'{loader}.batch_size=4',
            f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
        ]
    return opts


def train(cwd, config, work_dir, max_epochs, *extra):
    # The config's relative data paths resolve against TBPS_DATA_ROOT.
    env = dict(os.environ, OMP_NUM_THREADS='1', TBPS_DATA_ROOT=str(cwd))
    env['PYTHONPATH'] = os.pathsep.join([TESTS, ROOT, env.get('PYTHONPATH', '')])
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config]
    cmd += ['--work-dir', str(work_dir), *extra, '--cfg-options']
    result = subprocess.run(
        cmd + options(max_epochs),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def scalars(work_dir):
    """The training log records MMEngine's LoggerHook wrote, in order."""
    (path,) = [
        osp.join(dirpath, 'scalars.json')
        for dirpath, _, files in os.walk(work_dir)
        if 'scalars.json' in files
    ]
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_reference_config_trains_validates_and_resumes(tmp_path):
    converter_path = osp.join(ROOT, 'tools', 'model_converters', 'clip_to_tbps.py')
    pytest.importorskip('open_clip')  # CLIP's BPE vocabulary
    import importlib.util

    spec = importlib.util.spec_from_file_location('clip_to_tbps', converter_path)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)

    clip = tiny_clip()
    clip.save_pretrained(tmp_path / 'hf_clip')
    converter.convert(
        str(tmp_path / 'hf_clip'), str(tmp_path / 'data/pretrained/clip-vit-b16')
    )
    make_tbps_fixture(tmp_path / 'data', 'cuhk', SPEC, (48, 16), name='cuhk_pedes')
    config = tmp_path / 'tbps_cuhk_cpu.py'
    config.write_text(CPU_CONFIG.format(base=osp.join(ROOT, 'configs', 'tbps_cuhk.py')))

    # 6 epochs of 5 steps: the 5-epoch warm-up, then the cosine epoch.
    work = tmp_path / 'work'
    log = train(tmp_path, str(config), work, 6)
    records = [r for r in scalars(work) if 'loss' in r]
    assert len(records) == 30
    first = sum(r['loss'] for r in records[:5]) / 5
    last = sum(r['loss'] for r in records[-5:]) / 5
    assert last < first, (first, last)
    # The config's multipliers: new modules at 5x the base lr after warm-up.
    ckpt = load_training_checkpoint(str(work / 'epoch_5.pth'))
    lrs = sorted({g['lr'] for g in ckpt['optimizer']['param_groups']})
    assert lrs[0] == pytest.approx(5e-4) and lrs[-1] == pytest.approx(2.5e-3)
    # Validation ran on the val split with the field's metric.
    assert 't2i/R1' in scalars(work)[-1] and 'Text-based person search' in log

    # Resume from epoch 5: the schedule continues where it was.
    resumed = tmp_path / 'resumed'
    log = train(
        tmp_path, str(config), resumed, 6, '--resume', str(work / 'epoch_5.pth')
    )
    assert 'resumed epoch: 5' in log
    final = load_training_checkpoint(str(resumed / 'epoch_6.pth'))
    reference = load_training_checkpoint(str(work / 'epoch_6.pth'))
    assert [g['lr'] for g in final['optimizer']['param_groups']] == pytest.approx(
        [g['lr'] for g in reference['optimizer']['param_groups']]
    )
