"""Relative paths in configs resolve against one documented root, and search
checks its inputs before encoding, from any working directory."""

import importlib.util
import os.path as osp
import re
import shutil

import pytest

from tbps_mm.config_paths import config_root, resolve_config_paths
from tbps_mm.engine import load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_root_rule(tmp_path, monkeypatch):
    monkeypatch.delenv('TBPS_DATA_ROOT', raising=False)
    assert config_root(osp.join(ROOT, 'configs', 'tbps_synth.py')) == ROOT
    nested = tmp_path / 'proj' / 'configs' / '_base_' / 'datasets' / 'x.py'
    assert config_root(str(nested)) == str(tmp_path / 'proj')
    assert config_root(str(tmp_path / 'loose' / 'x.py')) == str(tmp_path / 'loose')
    monkeypatch.setenv('TBPS_DATA_ROOT', str(tmp_path / 'elsewhere'))
    assert config_root(str(nested)) == str(tmp_path / 'elsewhere')


def test_paths_resolve_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv('TBPS_DATA_ROOT', raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(osp.join(ROOT, 'configs', 'tbps_synth.py'))
    data_root = osp.join(ROOT, 'data', 'synthpedes_small')
    assert cfg.train_dataloader.dataset.data_root == data_root
    steps = cfg.test_dataloader.dataset.pipeline
    tokenize = next(t for t in steps if t['type'] == 'TokenizeCaption')
    assert tokenize['tokenizer'] == osp.join(data_root, 'tokenizer')
    # Absolute paths, URLs and non-path keys are left alone.
    cfg = dict(
        a=dict(data_root='/abs/x', pretrained='https://host/w.pth', name='data/y'),
        hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
    )
    resolve_config_paths(cfg, str(tmp_path / 'c.py'))
    assert cfg['a'] == dict(
        data_root='/abs/x', pretrained='https://host/w.pth', name='data/y'
    )


def _search_tool():
    spec = importlib.util.spec_from_file_location(
        'search_tool_paths', osp.join(ROOT, 'tools', 'search.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def project(search_setup, tmp_path, monkeypatch):
    """The search model's config in a project folder, its tokenizer relative."""
    monkeypatch.delenv('TBPS_DATA_ROOT', raising=False)
    proj = tmp_path / 'proj'
    (proj / 'configs').mkdir(parents=True)
    text = open(search_setup['config']).read()
    text, count = re.subn(r'(?m)^tokenizer = .*$', "tokenizer = 'tok'", text)
    assert count == 1
    config = proj / 'configs' / 'search.py'
    config.write_text(text)
    tokenizer = osp.join(osp.dirname(search_setup['config']), 'tokenizer')
    shutil.copytree(tokenizer, proj / 'tok')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return dict(config=str(config), proj=proj, elsewhere=elsewhere)


def test_search_works_from_another_working_directory(search_setup, project, capsys):
    index = project['elsewhere'] / 'g.idx'
    query = search_setup['people'][3]['captions'][0]
    argv = [project['config'], search_setup['checkpoint']]
    argv += ['--images', search_setup['gallery'], '--index', str(index)]
    assert _search_tool().main(argv + ['--query', query, '--topk', '1']) == 0
    out = capsys.readouterr().out
    assert f'person_{search_setup["people"][3]["pid"]}_' in out


def test_search_fails_before_encoding_when_an_input_is_missing(
    search_setup, project, capsys
):
    shutil.rmtree(project['proj'] / 'tok')
    index = project['elsewhere'] / 'g.idx'
    argv = [project['config'], search_setup['checkpoint']]
    argv += ['--images', search_setup['gallery'], '--index', str(index)]
    code = _search_tool().main(argv + ['--query', 'a man'])
    err = capsys.readouterr().err
    assert code == 2 and 'error:' in err and 'Traceback' not in err
    assert str(project['proj'] / 'tok') in err
    assert not index.exists()  # nothing was encoded or written
    out_dir = project['elsewhere'] / 'missing' / 'r.png'
    shutil.copytree(  # the tokenizer is back; now --out's folder is missing
        osp.join(osp.dirname(search_setup['config']), 'tokenizer'),
        project['proj'] / 'tok',
    )
    code = _search_tool().main(argv + ['--query', 'a man', '--out', str(out_dir)])
    assert code == 2 and 'missing' in capsys.readouterr().err
    assert not index.exists()
