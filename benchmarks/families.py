"""The commonality-margin experiment on SynthPedes families.

Does the commonality-based margin of L_CMR help where sharing matters? Every
run trains ``configs/ablations/synth_families.py`` (SynthPedes with
families of 4, batches of whole families, K = 4 part queries) from scratch
with one of these arms, all else equal:

==========  ================================================================
``none``    no part ranking loss (L_CMR off; the parts still train through
            the fused SDM)
``fixed``   L_CMR with one fixed margin, matched to the mean margin of the
            negatives the ``pair`` arm keeps (measured by ``--calibrate`` on
            another seed's data, never on the reported test split)
``pair``    L_CMR, commonality from intra-modal part similarity (default)
``sample``  L_CMR, commonality as the share of identities sharing the part
``oracle``  L_CMR, commonality from attributes.json: c^k(i, j) = 1 when i
            and j wear the same body part k (a diagnostic upper bound)
==========  ================================================================

Primary metric: within-family R@1 (``t2i-family/R1``: each query ranked
against its own family's 16 gallery images only; chance 25 %); secondary:
R@1 / mAP over the whole test gallery. The table reports per arm the mean
and its 95 % t-interval over seeds, and per arm the paired difference to
``fixed`` (same seed: same data order and initialisation) with its 95 %
interval, the paired t-test and the Wilcoxon signed-rank test, then the
verdict of docs/method.md ("The families experiment"). When seeds were added
after the result had been read, ``--verdict-level`` widens the intervals the
verdict reads (0.975 for a second look: Bonferroni over the two).

Each run is ``tools/train.py CONFIG --test --no-validate`` in a subprocess
(one thread by default); its record goes to
``benchmarks/results/families_runs/<arm>_seed<S>.json`` and a finished run is
skipped, so the script resumes. Runs go seed by seed (every arm of a seed,
then the next seed), so a partial sweep is still paired.

Written by hand: MMEngine runs one experiment, it has no sweep runner.

Example:
    # 1. the fixed arm's margin, on the data of seed 1 (test split of another seed)
    python benchmarks/families.py --calibrate --seeds 100
    # 2. the sweep and the table
    python benchmarks/families.py --seeds $(seq 0 11)
    python benchmarks/families.py --seeds $(seq 0 11) --report-only
"""

import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from _common import format_machine, machine_info, markdown_table, write_json

from tbps_mm.engine.run_logs import read_scalars, read_test_metrics

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(REPO, 'benchmarks', 'results')
RUNS = osp.join(RESULTS, 'families_runs')
CALIBRATION = osp.join(RESULTS, 'families_calibration.json')
CONFIG = 'configs/ablations/synth_families.py'
EPOCHS = 3
PRIMARY = 't2i-family/R1'

# arm -> (label, --cfg-options); the fixed arm's margin is added at run time.
ARMS: Dict[str, tuple] = {
    'none': ('no part ranking loss', ['model.losses.cmr=None']),
    'fixed': ('fixed margin (matched)', ['model.losses.cmr.margin_mode=fixed']),
    'pair': ('pair commonality', ['model.losses.cmr.commonality=pair']),
    'sample': ('sample commonality', ['model.losses.cmr.commonality=sample']),
    'oracle': ('oracle commonality', ['model.losses.cmr.commonality=oracle']),
}
COLUMNS = [
    ('family R@1', PRIMARY),
    ('family mAP', 't2i-family/mAP'),
    ('R@1', 't2i/R1'),
    ('mAP', 't2i/mAP'),
    ('parts family R@1', 't2i-family-parts/R1'),
]


def data_options(data_seed: int) -> List[str]:
    """``--cfg-options`` that point every split at the families data of a seed."""
    root = f'data/synthpedes_families4_n520_64x24_seed{data_seed}'
    out = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        out += [
            f'{loader}.dataset.data_root={root}',
            f'{loader}.dataset.seed={data_seed}',
        ]
    return out


def budget_options(epochs: int) -> List[str]:
    """The schedule (warm-up epoch + cosine to ``epochs``), one checkpoint,
    and a log line every 10 iterations averaging exactly those 10."""
    return [
        f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_interval={epochs}',
        f'default_hooks.checkpoint.interval={epochs}',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'default_hooks.checkpoint.save_best=None',
        'default_hooks.logger.interval=10',
        'log_processor.window_size=10',
    ]


def run_path(arm: str, seed: int, folder: str = RUNS) -> str:
    return osp.join(folder, f'{arm}_seed{seed}.json')


def git_commit() -> Optional[str]:
    out = subprocess.run(
        ['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip() or None


def run_one(
    arm: str,
    seed: int,
    epochs: int,
    data_seed: int,
    work_root: str,
    fixed_margin: Optional[float],
    threads: int,
) -> Dict:
    """Train + test one arm with one seed in a subprocess; return its record."""
    label, arm_options = ARMS[arm]
    options = [f'randomness.seed={seed}', *budget_options(epochs)]
    options += data_options(data_seed) + list(arm_options)
    if arm == 'fixed':
        if fixed_margin is None:
            raise ValueError('the fixed arm needs a margin: run --calibrate first')
        options.append(f'model.losses.cmr.margin_max={fixed_margin:.4f}')
    work_dir = osp.join(work_root, f'data{data_seed}_e{epochs}', arm, f'seed{seed}')
    os.makedirs(work_dir, exist_ok=True)
    cmd = [sys.executable, osp.join('tools', 'train.py'), CONFIG, '--test']
    cmd += ['--no-validate', '--work-dir', work_dir, '--cfg-options', *options]
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    print(f'[{time.strftime("%H:%M:%S")}] {arm} seed {seed}', flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with open(osp.join(work_dir, 'train.log'), 'w') as log:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(
            f'{arm} seed {seed} failed (exit {proc.returncode}); '
            f'see {work_dir}/train.log'
        )
    margins = [
        r['cmr_kept_margin']
        for r in read_scalars(work_dir)['train']
        if 'cmr_kept_margin' in r
    ]
    metrics = read_test_metrics(work_dir)
    record = dict(
        arm=arm,
        label=label,
        seed=seed,
        data_seed=data_seed,
        epochs=epochs,
        config=CONFIG,
        cfg_options=options,
        metrics=metrics,
        kept_margin=statistics.fmean(margins) if margins else None,
        cpu_seconds=round(
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1
        ),
        minutes=round((time.time() - start) / 60, 2),
        threads=threads,
        commit=git_commit(),
        finished=time.strftime('%Y-%m-%d %H:%M:%S'),
    )
    print(
        f'    family R@1 {metrics[PRIMARY]:.2f}  R@1 {metrics["t2i/R1"]:.2f}  '
        f'kept margin {record["kept_margin"]}  cpu {record["cpu_seconds"]} s',
        flush=True,
    )
    return record


# ---------------------------------------------------------------- statistics
def mean_ci(values: Sequence[float], level: float = 0.95) -> Dict:
    """Mean and two-sided t-interval of the mean at ``level`` (scipy.stats.t)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return dict(n=n, mean=mean, lo=None, hi=None, sd=None, level=level)
    sd = statistics.stdev(values)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / n**0.5
    return dict(n=n, mean=mean, lo=mean - half, hi=mean + half, sd=sd, level=level)


def paired(
    records: List[Dict],
    arm: str,
    other: str,
    key: str = PRIMARY,
    level: float = 0.95,
) -> Optional[Dict]:
    """``arm - other`` over shared seeds: mean, CI at ``level``, paired t,
    Wilcoxon."""
    from scipy import stats

    by = {
        a: {r['seed']: r['metrics'][key] for r in records if r['arm'] == a}
        for a in (arm, other)
    }
    seeds = sorted(set(by[arm]) & set(by[other]))
    if len(seeds) < 2:
        return None
    gaps = [by[arm][s] - by[other][s] for s in seeds]
    out = mean_ci(gaps, level)
    out['seeds'] = seeds
    out['t_p'] = float(
        stats.ttest_rel(
            [by[arm][s] for s in seeds], [by[other][s] for s in seeds]
        ).pvalue
    )
    try:
        out['wilcoxon_p'] = float(stats.wilcoxon(gaps).pvalue)
    except ValueError:  # every gap zero
        out['wilcoxon_p'] = 1.0
    return out


def beats(result: Optional[Dict]) -> Optional[bool]:
    """True when the paired interval lies above 0, False when it does not."""
    if result is None or result['lo'] is None:
        return None
    return result['lo'] > 0


def verdict(vs_fixed: Dict[str, Optional[Dict]]) -> str:
    """The rule of docs/method.md, applied to within-family R@1.

    The intervals are those of ``vs_fixed`` (95 %, or wider where a later
    look at the data asks for it: ``--verdict-level``).
    """
    oracle, learned = vs_fixed.get('oracle'), vs_fixed.get('pair')
    if oracle is None or learned is None:
        return 'no verdict: the oracle, pair and fixed arms need >= 2 shared seeds'
    ci = f'{100 * oracle.get("level", 0.95):g} % CI'
    if beats(oracle):
        if beats(learned):
            return (
                'CONFIRMS: the oracle beats fixed and the learned (pair) '
                'margin beats fixed'
            )
        return (
            'BLAMES THE ESTIMATOR: the oracle beats fixed, the learned (pair) '
            'margin does not'
        )
    if oracle['hi'] < 1.0:
        return (
            'REFUTES the idea as formulated: the oracle does not beat fixed '
            f'(upper {ci} {oracle["hi"]:+.2f} < +1)'
        )
    return (
        f'INCONCLUSIVE: the oracle does not beat fixed, but its {ci} '
        f'[{oracle["lo"]:+.2f}, {oracle["hi"]:+.2f}] does not rule out +1'
    )


def report(
    records: List[Dict], arms: Sequence[str], out: str, verdict_level: float = 0.95
) -> int:
    if not records:
        print('no results yet')
        return 1

    def fmt(s: Dict) -> str:
        if s['lo'] is None:
            return f'{s["mean"]:.2f}'
        return f'{s["mean"]:.2f} [{s["lo"]:.2f}, {s["hi"]:.2f}]'

    rows, summary = [], {}
    for arm in arms:
        runs = [r for r in records if r['arm'] == arm]
        if not runs:
            continue
        stats = {
            key: mean_ci([r['metrics'][key] for r in runs])
            for _, key in COLUMNS
            if all(key in r['metrics'] for r in runs)
        }
        margins = [r['kept_margin'] for r in runs if r.get('kept_margin') is not None]
        summary[arm] = dict(
            seeds=sorted(r['seed'] for r in runs),
            stats=stats,
            kept_margin=statistics.fmean(margins) if margins else None,
            cpu_seconds=statistics.fmean(r['cpu_seconds'] for r in runs),
        )
        rows.append(
            [ARMS[arm][0], len(runs)]
            + [fmt(stats[key]) if key in stats else '-' for _, key in COLUMNS]
            + [f'{summary[arm]["kept_margin"]:.3f}' if margins else '-']
        )
    table = markdown_table(
        ['arm', 'seeds'] + [c for c, _ in COLUMNS] + ['kept margin'], rows
    )
    vs_fixed, lines = {}, []
    for arm in arms:
        if arm == 'fixed':
            continue
        for key, name in ((PRIMARY, 'family R@1'), ('t2i/R1', 'R@1')):
            result = paired(records, arm, 'fixed', key)
            if result is None:
                continue
            if key == PRIMARY:
                vs_fixed[arm] = result
            lines.append(
                [
                    f'{ARMS[arm][0]} - fixed',
                    name,
                    result['n'],
                    f'{result["mean"]:+.2f} [{result["lo"]:+.2f}, {result["hi"]:+.2f}]',
                    f'{result["t_p"]:.3f}',
                    f'{result["wilcoxon_p"]:.3f}',
                ]
            )
    paired_table = markdown_table(
        ['difference', 'metric', 'seeds', 'mean [95 % CI]', 'paired t p', 'Wilcoxon p'],
        lines,
    )
    at_level = {
        arm: paired(records, arm, 'fixed', PRIMARY, verdict_level) for arm in vs_fixed
    }
    rule = verdict(at_level)
    commits = sorted({r.get('commit') for r in records})
    print('\nSynthPedes families (M = 4), test split of data seed 0; mean [95 % CI]\n')
    print(table)
    print('\nPaired differences to the fixed margin (same seeds)\n')
    print(paired_table)
    if verdict_level != 0.95:
        print(
            '\nFamily R@1 differences to fixed at the verdict level '
            f'({verdict_level:g}):'
        )
        for arm, result in at_level.items():
            if result is not None:
                print(
                    f'  {ARMS[arm][0]} - fixed: {result["mean"]:+.2f} '
                    f'[{result["lo"]:+.2f}, {result["hi"]:+.2f}]'
                )
    print(f'\nVerdict: {rule}')
    print(f'Commits of the runs: {", ".join(str(c) for c in commits)}')
    info = machine_info()
    print('\n' + format_machine(info))
    write_json(
        out,
        dict(
            arms=summary,
            table=table,
            paired=vs_fixed,
            paired_table=paired_table,
            verdict_level=verdict_level,
            paired_at_verdict_level=at_level,
            verdict=rule,
            commits=commits,
            runs=records,
            machine=info,
        ),
    )
    return 0


def calibrate(args) -> int:
    """Run the pair arm on another seed's data; record its mean kept margin."""
    margins = []
    for seed in args.seeds:
        folder = osp.join(RESULTS, 'families_calibration_runs', f'e{args.epochs}')
        path = run_path('pair', seed, folder)
        if osp.exists(path) and not args.force:
            with open(path) as f:
                record = json.load(f)
        else:
            record = run_one(
                'pair',
                seed,
                args.epochs,
                args.calibration_data_seed,
                args.work_root,
                None,
                args.threads,
            )
            write_json(path, record)
        margins.append(record['kept_margin'])
    margin = statistics.fmean(margins)
    write_json(
        CALIBRATION,
        dict(
            fixed_margin=round(margin, 4),
            per_seed=margins,
            seeds=list(args.seeds),
            data_seed=args.calibration_data_seed,
            epochs=args.epochs,
            note='mean margin of the 4 kept negatives per anchor and part over '
            'all training steps of the pair arm, on the data of another seed',
        ),
    )
    print(f'fixed margin for the sweep: {margin:.4f}')
    return 0


def fixed_margin(args) -> Optional[float]:
    """``--fixed-margin``, else the calibration's (read when a fixed run
    starts, so a sweep started beside the calibration picks it up)."""
    if args.fixed_margin is not None:
        return args.fixed_margin
    if not osp.exists(CALIBRATION):
        return None
    with open(CALIBRATION) as f:
        calibration = json.load(f)
    if calibration.get('epochs') != args.epochs:
        raise SystemExit(
            f'error: {CALIBRATION} was measured at {calibration.get("epochs")} '
            f'epochs, the sweep runs {args.epochs}: run --calibrate again'
        )
    return calibration['fixed_margin']


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arms', nargs='+', default=list(ARMS), choices=list(ARMS))
    parser.add_argument('--seeds', nargs='+', type=int, default=list(range(12)))
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--data-seed', type=int, default=0, help='data of the table')
    parser.add_argument(
        '--calibrate',
        action='store_true',
        help="measure the pair arm's mean kept margin (the fixed arm's margin) "
        'on the data of --calibration-data-seed',
    )
    parser.add_argument('--calibration-data-seed', type=int, default=1)
    parser.add_argument('--fixed-margin', type=float, help='override the calibration')
    parser.add_argument('--work-root', default=osp.join('work_dirs', 'families'))
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--force', action='store_true', help='rerun finished runs')
    parser.add_argument('--report-only', action='store_true')
    parser.add_argument(
        '--verdict-level',
        type=float,
        default=0.95,
        help='confidence level of the intervals the verdict reads (the tables '
        'stay at 95 %%); wider when the seeds were extended after a look at '
        'the result, e.g. 0.975 for a second look (Bonferroni)',
    )
    parser.add_argument('--out', default=osp.join(RESULTS, 'families.json'))
    args = parser.parse_args(argv)
    # Checked before any run starts: a sweep can take hours.
    if not 0.5 < args.verdict_level < 1:
        parser.error(f'--verdict-level must lie in (0.5, 1), got {args.verdict_level}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.calibrate:
        return calibrate(args)
    failures = []
    if not args.report_only:
        for seed in args.seeds:
            for arm in args.arms:
                path = run_path(arm, seed)
                if osp.exists(path) and not args.force:
                    continue
                margin = fixed_margin(args) if arm == 'fixed' else None
                try:
                    record = run_one(
                        arm,
                        seed,
                        args.epochs,
                        args.data_seed,
                        args.work_root,
                        margin,
                        args.threads,
                    )
                except RuntimeError as err:
                    print(f'error: {err}', file=sys.stderr)
                    failures.append(f'{arm}/{seed}')
                    continue
                record['fixed_margin'] = margin
                write_json(path, record)
    records = []
    for seed in args.seeds:
        for arm in args.arms:
            path = run_path(arm, seed)
            if osp.exists(path):
                with open(path) as f:
                    records.append(json.load(f))
    code = report(records, args.arms, args.out, args.verdict_level)
    if failures:
        print('failed runs (rerun to retry): ' + ', '.join(failures))
        return 1
    return code


if __name__ == '__main__':
    sys.exit(main())
