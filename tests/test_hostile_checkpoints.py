"""Malicious pickles at every entry point that loads a checkpoint.

Each payload's ``__reduce__`` would create a marker file when unpickled in
full; every entry point must refuse the file with an error naming what it
needs, and the marker must never appear. ``--trust-checkpoint`` (and only
it) unpickles in full.
"""

import importlib.util
import os
import os.path as osp
import pathlib
import pickle
import sys

import numpy as np
import pytest
import torch
from model_fixtures import tiny_retriever_cfg
from test_publish import tiny_run  # noqa: F401  (a fixture)

from tbps_mm.apis import TBPSInferencer, init_model
from tbps_mm.models.checkpoint import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_checkpoint_file,
    load_tbps_weights,
    load_training_checkpoint,
    publish_weights,
    read_weights_file,
    training_checkpoint_globals,
)
from tbps_mm.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class OpenMarker:
    """Unpickled in full, creates the marker with ``open``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


class SystemMarker(OpenMarker):
    """Unpickled in full, creates the marker through a shell."""

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class MethodMarker(OpenMarker):
    """A bound method: pickled as ``getattr(Path(marker), 'touch')()``."""

    def __reduce__(self):
        return (pathlib.Path(self.marker).touch, ())


PAYLOADS = {
    'open': (OpenMarker, 'io.open'),
    'system': (SystemMarker, 'system'),
    'getattr': (MethodMarker, 'pathlib'),
    'object-array': (
        lambda m: np.array([OpenMarker(m)], dtype=object),
        'io.open',
    ),
}


def write_malicious(folder, kind='open', state_dict=None):
    """A file that looks like a training checkpoint; returns (path, marker)."""
    folder = pathlib.Path(folder)
    marker = folder / f'marker_{kind}'
    make, _ = PAYLOADS[kind]
    path = folder / f'evil_{kind}.pth'
    torch.save(
        {
            'meta': {'epoch': 1, 'hook': make(marker)},
            'state_dict': state_dict or {'w': torch.zeros(2)},
        },
        path,
    )
    return str(path), marker


def load_tool(relpath):
    spec = importlib.util.spec_from_file_location(
        'hostile_' + osp.basename(relpath)[:-3], osp.join(ROOT, relpath)
    )
    module = importlib.util.module_from_spec(spec)
    folder = osp.dirname(osp.join(ROOT, relpath))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('kind', sorted(PAYLOADS))
@pytest.mark.parametrize(
    'reader',
    [
        load_checkpoint_file,
        load_training_checkpoint,
        read_weights_file,
        lambda path: load_tbps_weights(MODELS.build(tiny_retriever_cfg()), path),
    ],
    ids=['load_checkpoint_file', 'training', 'weights', 'load_tbps_weights'],
)
def test_loaders_refuse_every_payload(tmp_path, kind, reader):
    path, marker = write_malicious(tmp_path, kind)
    with pytest.raises(UnsafeCheckpointError) as err:
        reader(path)
    assert not marker.exists()
    assert path in str(err.value) and PAYLOADS[kind][1] in str(err.value)
    assert '--trust-checkpoint' in str(err.value)


def test_getattr_and_encode_stand_ins_allow_only_their_one_use(tmp_path):
    from mmengine.logging import HistoryBuffer

    names = {g[1]: g[0] for g in training_checkpoint_globals() if isinstance(g, tuple)}
    getattr_, encode = names['builtins.getattr'], names['_codecs.encode']
    assert getattr_(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in [(HistoryBuffer, '__init__'), (os, 'system'), (str, 'join')]:
        with pytest.raises(pickle.UnpicklingError):
            getattr_(obj, name)
    assert encode('\x01\xff', 'latin1') == b'\x01\xff'
    with pytest.raises(pickle.UnpicklingError):
        encode('x', 'rot13')
    empty_bytes = names['builtins.bytes']
    assert empty_bytes() == b''
    for args in [(10**12,), ('x', 'utf-8'), ([1, 2],)]:
        with pytest.raises(pickle.UnpicklingError):
            empty_bytes(*args)


def test_real_training_checkpoint_loads_and_trust_opts_out(tmp_path):
    from mmengine.logging import HistoryBuffer

    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(
        {
            'meta': {'epoch': 1, 'eta': np.float64(3.5)},
            'state_dict': {'w': torch.ones(2)},
            'message_hub': {'log_scalars': {'train/loss': buffer}},
            'param_schedulers': [{'milestones': __import__('collections').Counter()}],
            'extra': np.arange(3, dtype=np.int16),
            # Empty arrays pickle their data as a call of bytes().
            'empty': np.array([], dtype=np.float32),
            'fresh_buffer': HistoryBuffer(),
        },
        path,
    )
    ckpt = load_training_checkpoint(path)
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() == 1.5
    assert ckpt['meta']['eta'] == 3.5 and ckpt['extra'].dtype == np.int16
    assert ckpt['empty'].shape == (0,) and ckpt['empty'].dtype == np.float32
    assert len(ckpt['fresh_buffer'].data[0]) == 0
    # The allow-list is scoped to the call: torch's default stays strict.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    evil, marker = write_malicious(tmp_path, 'open')
    load_training_checkpoint(evil, trust=True)  # the explicit opt-out
    assert marker.exists()


def _check_refused(code, capsys, marker, path):
    err = capsys.readouterr().err
    assert code != 0
    assert 'error:' in err and 'is refused' in err and path in err
    assert 'Traceback' not in err
    assert not marker.exists()


@pytest.mark.parametrize('tool', ['tools/search.py', 'tools/serve.py'])
def test_search_and_serve_refuse(search_setup, tmp_path, capsys, tool):
    path, marker = write_malicious(tmp_path, 'system')
    args = [search_setup['config'], path, '--images', search_setup['gallery']]
    args += ['--index', str(tmp_path / 'index.idx')]
    if tool.endswith('search.py'):
        args += ['--query', 'a man in a red shirt']
    _check_refused(load_tool(tool).main(args), capsys, marker, path)
    assert not (tmp_path / 'index.idx').exists()


def test_inferencer_refuses(search_setup, tmp_path):
    path, marker = write_malicious(tmp_path, 'getattr')
    with pytest.raises(UnsafeCheckpointError):
        TBPSInferencer(search_setup['config'], path, show_progress=False)
    assert not marker.exists()


def test_publish_refuses(tmp_path, capsys):
    path, marker = write_malicious(tmp_path, 'open')
    out = tmp_path / 'out.safetensors'
    code = load_tool('tools/model_converters/publish_model.py').main([path, str(out)])
    _check_refused(code, capsys, marker, path)
    assert not list(tmp_path.glob('out*'))
    with pytest.raises(UnsafeCheckpointError):
        publish_weights(path, str(out))
    assert not marker.exists()


def test_test_and_train_tools_refuse(tiny_run, tmp_path, capsys):  # noqa: F811
    config = tiny_run['config']
    path, marker = write_malicious(tmp_path, 'system')
    test_tool = load_tool('tools/test.py')
    code = test_tool.main([config, path, '--work-dir', str(tmp_path / 'w1')])
    _check_refused(code, capsys, marker, path)
    train_tool = load_tool('tools/train.py')
    for extra in (['--resume', path], ['--cfg-options', f'load_from={path}']):
        code = train_tool.main([config, '--work-dir', str(tmp_path / 'w2'), *extra])
        _check_refused(code, capsys, marker, path)


def test_onnx_export_converter_analysis_and_benchmark_refuse(tmp_path, capsys):
    path, marker = write_malicious(tmp_path, 'open')
    config = tmp_path / 'tiny.py'
    config.write_text(f'model = {tiny_retriever_cfg()!r}\n')
    code = load_tool('tools/deployment/pytorch2onnx.py').main(
        [str(config), path, str(tmp_path / 'onnx'), '--image-size', '32', '16']
    )
    _check_refused(code, capsys, marker, path)
    converter = load_tool('tools/model_converters/clip_to_tbps.py')
    with pytest.raises(UnsafeCheckpointError):
        converter.convert(path, str(tmp_path / 'clip'), tokenizer_dir=None)
    harness = load_tool('tools/analysis_tools/_harness.py')
    with pytest.raises(UnsafeCheckpointError):
        harness.load_model(str(config), path)
    # The benchmarks build their models through init_model.
    with pytest.raises(UnsafeCheckpointError):
        init_model(str(config), path)
    assert not marker.exists()


def test_mmengine_pretrained_init_goes_through_the_safe_reader(tmp_path):
    from mmengine.runner.checkpoint import load_checkpoint

    path, marker = write_malicious(tmp_path, 'open')
    model = MODELS.build(tiny_retriever_cfg())
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(model, path, map_location='cpu')
    image_only = MODELS.build(
        tiny_retriever_cfg(
            image_encoder=dict(
                init_cfg=dict(type='Pretrained', checkpoint=path, prefix='x.')
            )
        )
    )
    with pytest.raises(UnsafeCheckpointError):
        image_only.init_weights()
    assert not marker.exists()


def test_tools_exit_non_zero_on_a_checkpoint_that_does_not_fit(
    tiny_run,  # noqa: F811
    tmp_path,
    capsys,
):
    path = str(tmp_path / 'unrelated.pth')
    torch.save(
        {'meta': {'epoch': 1}, 'state_dict': {'foo.weight': torch.zeros(2)}}, path
    )
    code = load_tool('tools/test.py').main(
        [tiny_run['config'], path, '--work-dir', str(tmp_path / 'w')]
    )
    err = capsys.readouterr().err
    assert code == 2 and 'does not fit the model' in err
    assert 'foo.weight' in err and 'missing from the checkpoint' in err
    code = load_tool('tools/model_converters/publish_model.py').main(
        [path, str(tmp_path / 'p.safetensors'), '--config', tiny_run['config']]
    )
    assert code == 2 and 'does not fit the model' in capsys.readouterr().err
    with pytest.raises(CheckpointMismatchError, match='foo.weight'):
        load_tbps_weights(MODELS.build(tiny_retriever_cfg()), path)
