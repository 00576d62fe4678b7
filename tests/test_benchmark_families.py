"""benchmarks/families.py: the statistics and the verdict rule of the
families experiment (docs/method.md, "The families experiment")."""

import importlib.util
import os.path as osp
import sys

import pytest
from scipy import stats

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARKS = osp.join(ROOT, 'benchmarks')


@pytest.fixture(scope='module')
def families():
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(
        'benchmark_families', osp.join(BENCHMARKS, 'families.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(gaps, arm='oracle'):
    """Paired runs whose family R@1 differs from fixed by ``gaps``."""
    out = []
    for seed, gap in enumerate(gaps):
        base = 50.0 + seed % 3
        out.append(dict(arm='fixed', seed=seed, metrics={'t2i-family/R1': base}))
        out.append(dict(arm=arm, seed=seed, metrics={'t2i-family/R1': base + gap}))
    return out


def test_mean_ci_is_the_t_interval_at_its_level(families):
    values = [1.0, 2.0, 4.0, 7.0, 3.0]
    ci95 = families.mean_ci(values)
    ref = stats.t.interval(0.95, 4, loc=3.4, scale=stats.sem(values))
    assert ci95['lo'] == pytest.approx(ref[0]) and ci95['hi'] == pytest.approx(ref[1])
    ci975 = families.mean_ci(values, 0.975)
    assert ci975['lo'] < ci95['lo'] and ci975['hi'] > ci95['hi']
    assert ci975['level'] == 0.975
    assert families.mean_ci([2.0])['lo'] is None


def test_paired_differences_follow_the_seeds(families):
    gaps = [0.5, -0.25, 1.0, 0.0, 0.75, 0.25]
    result = families.paired(_records(gaps), 'oracle', 'fixed')
    assert result['seeds'] == list(range(6))
    assert result['mean'] == pytest.approx(sum(gaps) / 6)
    assert result['t_p'] == pytest.approx(stats.ttest_1samp(gaps, 0).pvalue)
    wide = families.paired(_records(gaps), 'oracle', 'fixed', level=0.975)
    assert wide['hi'] - wide['lo'] > result['hi'] - result['lo']
    assert families.paired(_records([1.0]), 'oracle', 'fixed') is None


def test_the_verdict_rule(families):
    def ci(lo, hi, level=0.95):
        return dict(lo=lo, hi=hi, level=level)

    rule = families.verdict
    assert rule({'oracle': ci(0.2, 2.0), 'pair': ci(0.1, 1.5)}).startswith('CONFIRMS')
    assert rule({'oracle': ci(0.2, 2.0), 'pair': ci(-0.5, 1.5)}).startswith('BLAMES')
    refutes = rule({'oracle': ci(-0.6, 0.9, 0.975), 'pair': ci(-1.0, 1.0)})
    assert refutes.startswith('REFUTES') and '97.5 % CI' in refutes
    # An interval that still reaches +1 settles nothing, however close.
    open_ = rule({'oracle': ci(-0.6, 1.01), 'pair': ci(-1.0, 1.0)})
    assert open_.startswith('INCONCLUSIVE') and '95 % CI' in open_
    assert rule({'oracle': None, 'pair': ci(0.1, 1.0)}).startswith('no verdict')
