"""tools/analysis_tools: the analyses on a tiny SynthPedes, their shared harness
and the work-dir readers they use.

The tools run in this process on the quick-start config pointed at a
generated ``tiny`` SynthPedes (24 identities) with loaders of batch 8 and no
workers; the model probe trains it for two steps with the Runner, and that
checkpoint feeds the analyses that need a trained model.
"""

import importlib.util
import json
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools', 'analysis_tools')
CONFIG = osp.join(ROOT, 'configs', 'tbps_synth.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# The quick-start config on the tiny preset: its relative data_root
# (data/synthpedes_small) resolves against TBPS_DATA_ROOT, set to the folder
# each tool runs in.
TINY_OPTIONS = [
    option
    for loader in LOADERS
    for option in (
        f'{loader}.dataset.size=tiny',
        f'{loader}.batch_size=8',
        f'{loader}.num_workers=0',
        f'{loader}.persistent_workers=False',
    )
]


def load_tool(name):
    """Import ``tools/analysis_tools/<name>.py`` (scripts that import _harness)."""
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location(
        f'analysis_{name}', osp.join(TOOLS, f'{name}.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def probe_run(tmp_path_factory):
    """Two Runner steps of the quick-start model on tiny SynthPedes."""
    base = tmp_path_factory.mktemp('analysis')
    work_dir = base / 'probe'
    out = base / 'probe.json'
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setenv('TBPS_DATA_ROOT', str(base))
        code = load_tool('model_probe').main(
            [CONFIG, '--steps', '2', '--log-every', '1', '--work-dir', str(work_dir)]
            + ['--out', str(out), '--cfg-options', *TINY_OPTIONS]
        )
    assert code == 0
    return dict(
        base=base,
        work_dir=work_dir,
        checkpoint=str(work_dir / 'iter_2.pth'),
        result=json.loads(out.read_text()),
    )


def run_in(base, tool, argv, monkeypatch):
    monkeypatch.chdir(base)
    monkeypatch.setenv('TBPS_DATA_ROOT', str(base))
    return load_tool(tool).main(argv)


def test_model_probe_trains_with_the_runner_and_tests_with_the_metric(probe_run):
    result = probe_run['result']
    assert result['arguments']['steps'] == 2 and result['batch_size'] == 8
    for task in ('t2i', 't2i-coarse', 't2i-parts'):
        for key in ('R1', 'R5', 'R10', 'mAP', 'mINP'):
            assert 0.0 <= result['metrics'][f'{task}/{key}'] <= 100.0
    assert result['metrics']['t2i/R1'] <= result['metrics']['t2i/R10']
    assert {'loss', 'loss_sdm', 'loss_cmr'} <= set(result['final_losses'])
    assert osp.isfile(probe_run['checkpoint'])
    assert 'environment' in result
    assert result['arguments']['config'] == CONFIG


def test_part_localisation_mass_sums_to_one_per_query(probe_run, monkeypatch):
    out = probe_run['base'] / 'localisation.json'
    figure = probe_run['base'] / 'localisation.png'
    code = run_in(
        probe_run['base'],
        'part_localisation',
        [CONFIG, probe_run['checkpoint'], '--out', str(out), '--split', 'val']
        + ['--figure', str(figure), '--figure-images', '3', '--cfg-options']
        + TINY_OPTIONS,
        monkeypatch,
    )
    assert code == 0
    # Three rows of image, mask and one heat map per query.
    width, height = Image.open(figure).size
    assert width > 6 * 48 and height > 3 * 128
    result = json.loads(out.read_text())
    mass, area = np.array(result['mass']), np.array(result['area'])
    assert mass.shape == (4, 6) and area.shape == (6,)
    np.testing.assert_allclose(mass.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(area.sum(), 1.0, atol=1e-4)
    assert set(result['best']) <= set(result['parts'][1:])
    assert result['table'].count('\n') == 4 + 2  # header, rule, 4 queries, uniform
    # The quick start's stripe priors alone: the top stripe's query sits on
    # the head more than the bottom one's, the bottom one on the feet.
    prior = np.array(result['prior']['mass'])
    assert prior.shape == (4, 6)
    np.testing.assert_allclose(prior.sum(axis=1), 1.0, atol=1e-4)
    head, feet = result['parts'].index('head'), result['parts'].index('feet')
    assert prior[0, head] > prior[3, head] and prior[3, feet] > prior[0, feet]


def test_commonality_sanity_pairs_and_correlations(probe_run, monkeypatch):
    from tbps_mm.datasets.synthpedes.generator import SIZES

    out = probe_run['base'] / 'commonality.json'
    code = run_in(
        probe_run['base'],
        'commonality_sanity',
        [CONFIG, probe_run['checkpoint'], '--batch', '8', '--out', str(out)]
        + ['--modes', 'pair', 'sample', 'image', 'text']
        + ['--cfg-options', *TINY_OPTIONS],
        monkeypatch,
    )
    assert code == 0
    result = json.loads(out.read_text())
    ids, per_id = SIZES['tiny']['splits']['test'], SIZES['tiny']['images_per_id']
    images = ids * per_id
    # Unordered pairs of test images of different identities.
    assert (
        result['num_pairs']
        == images * (images - 1) // 2 - ids * per_id * (per_id - 1) // 2
    )
    rho = np.array(result['spearman'])
    assert rho.shape == (4, 5) and np.all(np.abs(rho) <= 1.0)
    assert list(result['modes']) == ['pair', 'sample', 'image', 'text']
    for mode in result['modes'].values():
        for key in ('spearman_own', 'spearman_sample', 'spearman_score', 'ceiling'):
            assert len(mode[key]) == 4
    # The 'sample' estimator is the anchor's: every ordered pair counts.
    assert result['modes']['sample']['num_pairs'] == 2 * result['num_pairs']
    assert result['table'].count('\n') == 1 + 4 * 4  # header, rule, 16 rows
    # The breakdown covers each query's own part, attribute by attribute.
    from tbps_mm.datasets.synthpedes.attributes import ATTRIBUTE_PARTS

    for mode in result['modes'].values():
        assert len(mode['attributes']) == 4
        for part, by_name in zip(result['best'], mode['attributes']):
            assert set(by_name) == {a for a, p in ATTRIBUTE_PARTS.items() if p == part}
            for row in by_name.values():
                assert 0.0 <= row['agree'] <= 1.0
                for key in ('rho_estimate', 'rho_part'):
                    assert row[key] is None or abs(row[key]) <= 1.0
    rows = sum(len(by_name) for by_name in result['modes']['pair']['attributes'])
    assert result['attribute_table'].count('\n') == 1 + 4 * rows
    margins = result['margins']
    loss = load_tool('commonality_sanity').build_cmr_loss(Config.fromfile(CONFIG))
    for key in ('all', 'hardest'):
        assert loss.margin_min <= margins[key] <= loss.margin_max


def test_part_sharing_is_the_mean_agreement_over_the_parts_attributes():
    tool = load_tool('commonality_sanity')
    attributes = dict(
        attribute_parts=dict(hat='head', hair='head', shoes='feet'),
        identities=[
            dict(id=1, hat='none', hair='red', shoes='boots'),
            dict(id=2, hat='none', hair='black', shoes='boots'),
            dict(id=3, hat='cap', hair='black', shoes='trainers'),
        ],
    )
    assert tool.part_attribute_names(attributes, 'head') == ['hair', 'hat']
    agree = tool.attribute_agreement(attributes, [1, 2, 3, 1], ['hair', 'hat'])
    assert agree.shape == (2, 4, 4)
    np.testing.assert_array_equal(agree[1, 0], [1, 1, 0, 1])  # hat of id 1
    sharing = tool.part_sharing(attributes, [1, 2, 3, 1], parts=('head', 'feet'))
    np.testing.assert_allclose(sharing[0, 0], [1.0, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(sharing[0, 1, 2], 0.5)  # same hair, hat differs
    np.testing.assert_allclose(sharing[1, 0], [1.0, 1.0, 0.0, 1.0])
    with pytest.raises(KeyError, match='no attribute of part'):
        tool.part_attribute_names(attributes, 'upper')
    with pytest.raises(KeyError, match='no identity'):
        tool.attribute_agreement(attributes, [1, 9], ['hat'])


def test_attribute_probe_runs_with_the_runner(probe_run, monkeypatch):
    out = probe_run['base'] / 'attribute_probe.json'
    code = run_in(
        probe_run['base'],
        'attribute_probe',
        ['--config', CONFIG, '--steps', '2', '--batch-size', '8', '--out', str(out)]
        + ['--cfg-options', *TINY_OPTIONS],
        monkeypatch,
    )
    assert code == 0
    result = json.loads(out.read_text())
    from tbps_mm.datasets.synthpedes.attributes import ATTRIBUTE_PARTS

    assert set(result['per_attribute']) == set(ATTRIBUTE_PARTS)
    for row in result['per_attribute'].values():
        assert 0.0 <= row['accuracy'] <= 100.0 and 0.0 <= row['majority'] <= 100.0
    # The true attributes name every mentioned value: the oracle retrieves
    # far above chance (1 / 8 identities) even with ties counted against it.
    assert result['retrieval']['oracle']['R1'] > 50.0
    assert np.isfinite(result['final_loss'])


def test_plot_training_curves_reads_the_probe_work_dir(probe_run, tmp_path):
    out = tmp_path / 'curves.png'
    code = load_tool('plot_training_curves').main(
        [str(probe_run['work_dir']), '--out', str(out)]
    )
    assert code == 0
    with Image.open(out) as img:
        assert img.size[0] > 100 and img.size[1] > 100


def _ablation_summary(global_r1, full_r1, std=1.0, seeds=3):
    stats = {
        row: {
            k: dict(mean=r1 + offset, std=std, n=seeds)
            for k, offset in (('t2i/R1', 0), ('t2i/R5', 20), ('t2i/R10', 30))
        }
        | {'t2i/mAP': dict(mean=r1 - 1, std=std, n=seeds)}
        for row, r1 in (('global', global_r1), ('full', full_r1))
    }
    return dict(epochs=5, rows={row: dict(stats=s) for row, s in stats.items()})


@pytest.mark.parametrize(
    'global_r1, full_r1, expected',
    [
        (53.0, 58.0, ['clearly below', 'recovers more']),
        (85.0, 86.0, ['NOT below', 'does NOT do clearly better']),
    ],
)
def test_synthpedes_difficulty_statement(
    tmp_path, capsys, global_r1, full_r1, expected
):
    ablation = tmp_path / 'ablation.json'
    ablation.write_text(json.dumps(_ablation_summary(global_r1, full_r1)))
    code = load_tool('synthpedes_difficulty').main(
        ['--ablation', str(ablation), '--attribute-probe', str(tmp_path / 'none')]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for phrase in expected:
        assert phrase in printed
    assert f'{100 - global_r1:.1f} points below saturation' in printed
    assert 'no attribute probe result' in printed


def test_synthpedes_difficulty_missing_ablation_is_an_error(tmp_path, capsys):
    code = load_tool('synthpedes_difficulty').main(
        ['--ablation', str(tmp_path / 'absent.json')]
    )
    assert code == 2
    assert 'absent.json does not exist' in capsys.readouterr().err


def test_patch_part_shares_and_localisation(tmp_path):
    harness = load_tool('_harness')
    root = tmp_path / 'sp'
    (root / 'imgs' / 'test').mkdir(parents=True)
    (root / 'masks' / 'test').mkdir(parents=True)
    # 4x2 pixels on a 2x1 grid: the top cell is all head (1), the bottom cell
    # half upper (2), half background (0).
    mask = np.array([[1, 1], [1, 1], [2, 0], [2, 0]], dtype=np.uint8)
    Image.fromarray(mask).save(root / 'masks' / 'test' / 'a.png')
    img = str(root / 'imgs' / 'test' / 'a.jpg')
    shares = harness.patch_part_shares(str(root), [img], (2, 1))
    assert shares.shape == (1, 6, 2)
    np.testing.assert_allclose(shares[0, :, 0], [0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(shares[0, :, 1], [0.5, 0, 0.5, 0, 0, 0])
    # q0 looks at the top cell, q1 everywhere equally.
    attn = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    table = harness.localisation_table(attn, shares)
    assert harness.BODY_PARTS[table['best'][0]] == 'head'
    np.testing.assert_allclose(table['lift'][1, [0, 1, 2]], 1.0)
    np.testing.assert_allclose(table['mass'].sum(axis=1), 1.0)
    with pytest.raises(ValueError, match='does not tile'):
        harness.patch_part_shares(str(root), [img], (3, 1))
    with pytest.raises(FileNotFoundError, match='part mask'):
        harness.patch_part_shares(str(root), [str(root / 'imgs/test/b.jpg')], (2, 1))
    with pytest.raises(FileNotFoundError, match='attributes.json'):
        harness.load_attributes(str(root))


def test_iteration_schedule_spans_the_steps():
    harness = load_tool('_harness')
    warm, cosine = harness.iteration_schedule(50)
    assert (warm['begin'], warm['end']) == (0, 10)
    assert (cosine['begin'], cosine['end'], cosine['T_max']) == (10, 50, 40)
    assert not warm['by_epoch'] and not cosine['by_epoch']
    with pytest.raises(ValueError, match='at least 2'):
        harness.iteration_schedule(1)


def test_run_logs_read_scalars_and_newest_test_metrics(tmp_path):
    from tbps_mm.engine import list_test_metrics, read_scalars, read_test_metrics

    for stamp, r1 in (('20250101_000000', 10.0), ('20250102_000000', 20.0)):
        folder = tmp_path / stamp
        (folder / 'vis_data').mkdir(parents=True)
        (folder / 'vis_data' / 'scalars.json').write_text(
            json.dumps(dict(loss=1.0, epoch=1, step=5))
            + '\n'
            + json.dumps({'t2i/R1': r1 - 1, 'step': 1})
            + '\n'
        )
        (folder / f'{stamp}.json').write_text(json.dumps({'t2i/R1': r1, 'lr': 1}))
    (tmp_path / '20250103_000000').mkdir()
    (tmp_path / '20250103_000000' / '20250103_000000.json').write_text('{trunc')
    assert read_test_metrics(str(tmp_path)) == {'t2i/R1': 20.0}
    assert len(list_test_metrics(str(tmp_path))) == 2
    scalars = read_scalars(str(tmp_path))
    assert len(scalars['train']) == 2 and len(scalars['val']) == 2
    assert [t['t2i/R1'] for t in scalars['test']] == [10.0, 20.0]
    assert all(t['step'] == 1 for t in scalars['test'])
    with pytest.raises(FileNotFoundError, match='no test metrics'):
        read_test_metrics(str(tmp_path / '20250101_000000'))
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        read_scalars(str(tmp_path / 'none'))


def test_markdown_table_alignment():
    from tbps_mm.evaluation import markdown_table

    table = markdown_table(['a', 'b', 'c'], [[1, 2, 3]], align='lrl')
    assert table.splitlines()[1] == '|:--|--:|:--|'
    with pytest.raises(ValueError, match='2 letters for 3 columns'):
        markdown_table(['a', 'b', 'c'], [], align='lr')


def test_part_analyses_refuse_a_model_without_parts(tmp_path):
    import torch
    from mmengine.registry import init_default_scope

    from tbps_mm.registry import MODELS

    config = osp.join(ROOT, 'configs', 'ablations', 'synth_global.py')
    init_default_scope('tbps_mm')
    weights = tmp_path / 'global.pth'
    torch.save(MODELS.build(Config.fromfile(config).model).state_dict(), weights)
    for tool in ('part_localisation', 'commonality_sanity'):
        with pytest.raises(ValueError, match=r'no part queries \(K = 0\)'):
            load_tool(tool).main([config, str(weights)])


def test_record_run_writes_test_and_val_metrics(tmp_path, capsys):
    stamp = '20250101_000000'
    folder = tmp_path / 'run' / stamp
    (folder / 'vis_data').mkdir(parents=True)
    (folder / 'vis_data' / 'scalars.json').write_text(
        json.dumps(dict(loss=1.0, epoch=1, step=5))
        + '\n'
        + json.dumps({'t2i/R1': 71.5, 't2i/mAP': 60.0, 'step': 1})
        + '\n'
    )
    (folder / f'{stamp}.json').write_text(json.dumps({'t2i/R1': 70.0, 'lr': 1}))
    tool = load_tool('record_run')
    out = tmp_path / 'qs.json'
    argv = [str(tmp_path / 'run'), '--config', 'configs/tbps_synth.py']
    assert tool.main(argv + ['--minutes', '9.5', '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['test'] == {'t2i/R1': 70.0}
    assert result['val'] == {'t2i/R1': 71.5, 't2i/mAP': 60.0}
    assert result['minutes'] == 9.5 and result['config'] == 'configs/tbps_synth.py'
    # A work dir without test metrics is a user mistake, not a traceback.
    (tmp_path / 'empty').mkdir()
    argv = [str(tmp_path / 'empty'), '--config', 'c.py', '--out', str(out)]
    assert tool.main(argv) == 1
    assert 'error: no test metrics' in capsys.readouterr().err
    argv = [str(tmp_path / 'missing'), '--config', 'c.py', '--out', str(out)]
    assert tool.main(argv) == 1
