"""tools/dataset_converters/check_dataset.py reports every bad entry at once."""

import importlib.util
import json
from pathlib import Path

import pytest
from fixtures_tbps import make_tbps_fixture

TOOL = (
    Path(__file__).resolve().parents[1]
    / 'tools'
    / 'dataset_converters'
    / 'check_dataset.py'
)


@pytest.fixture(scope='module')
def check_dataset():
    spec = importlib.util.spec_from_file_location('check_dataset', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _break(fx):
    """Five different problems in a CUHK-PEDES fixture; returns the paths."""
    records = fx['records']
    imgs = Path(fx['data_root'], 'imgs')
    missing = imgs / records[0]['file_path']
    missing.unlink()
    corrupt = imgs / records[3]['file_path']
    corrupt.write_bytes(b'this is not a jpeg')
    empty = imgs / records[7]['file_path']
    empty.write_bytes(b'')
    records[4]['captions'][1] = '  '
    del records[9]['id']
    records[12]['split'] = 'dev'
    Path(fx['ann_file']).write_text(json.dumps(records))
    return missing, corrupt, empty


def test_reports_every_problem_and_exits_1(tmp_path, capsys, check_dataset):
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    missing, corrupt, empty = _break(fx)
    status = check_dataset.main(['CUHKPEDES', '--data-root', fx['data_root']])
    out = capsys.readouterr().out
    assert status == 1
    assert f"entry 0: image '{missing}' does not exist" in out
    assert f"entry 3: image '{corrupt}' cannot be decoded" in out
    assert f"entry 7: image '{empty}' is empty" in out
    assert "entry 4 (CUHK01/0001002.jpg): field 'captions'[1] is empty" in out
    assert "entry 9: missing field 'id'" in out
    assert "entry 12: field 'split' is 'dev'" in out
    assert 'CUHKPEDES: 6 problem(s)' in out


def test_split_and_no_decode_options(tmp_path, capsys, check_dataset):
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    missing, corrupt, _ = _break(fx)
    status = check_dataset.main(
        ['CUHKPEDES', '--data-root', fx['data_root'], '--split', 'train', '--no-decode']
    )
    out = capsys.readouterr().out
    assert status == 1
    assert str(missing) in out  # entry 0 is a train image
    assert str(corrupt) not in out  # undecodable, but decoding is off
    assert "missing field 'id'" in out  # malformed entries: whole file
    with pytest.raises(SystemExit, match='unknown'):
        check_dataset.main(
            ['ICFGPEDES', '--data-root', fx['data_root'], '--split', 'val']
        )


@pytest.mark.parametrize('fmt', ['cuhk', 'icfg', 'rstp'])
def test_clean_dataset_exits_0(tmp_path, capsys, check_dataset, fmt):
    fx = make_tbps_fixture(tmp_path, fmt)
    assert check_dataset.main([fx['type'], '--data-root', fx['data_root']]) == 0
    assert f'{fx["type"]}: 0 problem(s)' in capsys.readouterr().out


def test_missing_annotation_is_reported(tmp_path, capsys, check_dataset):
    assert check_dataset.main(['RSTPReid', '--data-root', str(tmp_path)]) == 1
    assert 'data_captions.json' in capsys.readouterr().out


def test_config_form(tmp_path, capsys, check_dataset):
    fx = make_tbps_fixture(tmp_path, 'rstp')
    records = fx['records']
    records[-1]['captions'] = []
    Path(fx['ann_file']).write_text(json.dumps(records))
    config = tmp_path / 'rstp_config.py'
    config.write_text(
        "data_root = 'somewhere/else'\n"
        "ds = dict(type='RSTPReid', data_root=data_root, pipeline=[])\n"
        "train_dataloader = dict(dataset=dict(ds, split='train'))\n"
        "val_dataloader = dict(dataset=dict(ds, split='val'))\n"
        "test_dataloader = dict(dataset=dict(type='RepeatDataset', times=2,\n"
        "                                    dataset=dict(ds, split='test')))\n"
    )
    status = check_dataset.main([str(config), '--data-root', fx['data_root']])
    out = capsys.readouterr().out
    assert status == 1
    assert out.count('Checking RSTPReid') == 1  # one annotation, checked once
    assert f"entry {len(records) - 1}: field 'captions' must be a non-empty list" in out
