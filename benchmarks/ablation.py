"""The SynthPedes ablation: which parts of the method carry accuracy.

Rows (every one trains the quick-start model of ``configs/tbps_synth.py`` with
one change, at one budget, from scratch):

============  ==============================================================
``global``    global-only: no part queries, no L_CMR, coarse score only
``fixed``     parts (K = 4) with a fixed-margin part ranking loss (0.3, the
              commonality margin's maximum)
``fixed015``  ... at 0.15: near the commonality margin's mean over the 4
              hardest negatives at the end of training (which
              ``tools/analysis_tools/commonality_sanity.py`` reports), so the
              control for "a smaller margin" alone
``full``      the full method: parts (K = 4), SDM on the coarse and the
              fused embedding (ours), ID, the commonality margin over the 4
              hardest negatives, BN neck, part diversity loss
``k2``        the full method with K = 2 part queries
``k6``        ... K = 6
``k8``        ... K = 8
``slot``      the full method with slot-style (competitive) attention
``layers1``   the full method with a 1-layer part decoder (the step-cost
              lever of docs/benchmarks.md; the quick start has 2)
============  ==============================================================

Each run is ``tools/train.py CONFIG --test --no-validate --work-dir ...
--cfg-options randomness.seed=S train_cfg.max_epochs=N ...`` in a subprocess,
one at a time. The test metrics come back from the JSON that MMEngine's
``LoggerHook`` writes after the test epoch (``<work_dir>/<timestamp>/
<timestamp>.json``); each run's result is kept in
``benchmarks/results/ablation_runs/e<N>/<row>_seed<S>.json`` so the benchmark
resumes where it stopped (a run whose result exists is skipped; ``--force``
runs the selected rows and seeds again and replaces their results). The script
then prints the table of mean +- std over the seeds, writes
``benchmarks/results/ablation.json`` and plots ``docs/images/ablation.png``.

The budget (``--epochs``) is the one thing that changes from the quick start:
the warm-up epoch stays, the cosine decay is stretched over the remaining
epochs, and validation during training is off (the test split is evaluated
once at the end), so every row gets exactly the same schedule.

Written by hand: MMEngine runs one experiment, it has no sweep runner.

Example:
    python benchmarks/ablation.py --epochs 2 --seeds 0 1 2
    python benchmarks/ablation.py --epochs 2 --seeds 0 --rows global fixed full
    python benchmarks/ablation.py --epochs 2 --seeds 0 1 2 --report-only
    python benchmarks/ablation.py --epochs 5 --seeds 0 1 2 --rows full --force
"""

import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from _common import format_machine, machine_info, markdown_table, write_json

from tbps_mm.engine.run_logs import read_test_metrics as find_test_metrics

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(REPO, 'benchmarks', 'results')

# name -> (table label, config relative to the repo, extra --cfg-options)
ROWS: Dict[str, tuple] = {
    'global': ('global-only (K=0)', 'configs/ablations/synth_global.py', []),
    'fixed': (
        'parts K=4, fixed margin',
        'configs/ablations/synth_fixed-margin.py',
        [],
    ),
    'fixed015': (
        'parts K=4, fixed margin 0.15',
        'configs/ablations/synth_fixed-margin.py',
        ['model.losses.cmr.margin_max=0.15'],
    ),
    'full': ('parts K=4, commonality margin (full)', 'configs/tbps_synth.py', []),
    'k2': (
        'full, K=2',
        'configs/ablations/synth_parts-k.py',
        ['model.head.num_parts=2'],
    ),
    'k6': (
        'full, K=6',
        'configs/ablations/synth_parts-k.py',
        ['model.head.num_parts=6'],
    ),
    'k8': (
        'full, K=8',
        'configs/ablations/synth_parts-k.py',
        ['model.head.num_parts=8'],
    ),
    'slot': ('full, slot attention', 'configs/ablations/synth_slot.py', []),
    'layers1': (
        'full, 1 decoder layer',
        'configs/tbps_synth.py',
        ['model.head.num_layers=1'],
    ),
}

# Table column -> metric key in the test JSON.
COLUMNS = [
    ('R@1', 't2i/R1'),
    ('R@5', 't2i/R5'),
    ('R@10', 't2i/R10'),
    ('mAP', 't2i/mAP'),
    ('mINP', 't2i/mINP'),
    ('coarse R@1', 't2i-coarse/R1'),
    ('parts R@1', 't2i-parts/R1'),
]


def budget_options(epochs: int) -> List[str]:
    """``--cfg-options`` that shrink the quick-start schedule to ``epochs``.

    The schedule is one linear warm-up epoch then cosine decay to the end
    (``configs/_base_/schedules/synth_cpu.py``); the cosine phase ends at
    ``train_cfg.max_epochs`` (the Runner sets its end), so the epochs are
    the one schedule option. Only the final checkpoint is kept (the
    commonality / localisation benchmarks load it).

    Args:
        epochs (int): Training epochs, at least 2 (warm-up + cosine).

    Returns:
        list[str]: ``key=value`` strings for ``tools/train.py --cfg-options``.
    """
    if epochs < 2:
        raise ValueError(f'--epochs must be >= 2 (one warm-up epoch), got {epochs}')
    return [
        f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_interval={epochs}',
        f'default_hooks.checkpoint.interval={epochs}',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'default_hooks.checkpoint.save_best=None',
    ]


def run_path(epochs: int, row: str, seed: int) -> str:
    return osp.join(RESULTS, 'ablation_runs', f'e{epochs}', f'{row}_seed{seed}.json')


def run_one(
    row: str,
    seed: int,
    epochs: int,
    work_root: str,
    extra: Sequence[str],
    threads: Optional[int] = None,
) -> Dict:
    """Train + test one row with one seed in a subprocess; return its record."""
    label, config, row_options = ROWS[row]
    work_dir = osp.join(work_root, f'e{epochs}', row, f'seed{seed}')
    os.makedirs(work_dir, exist_ok=True)
    options = [f'randomness.seed={seed}', *budget_options(epochs), *row_options]
    options += list(extra)
    cmd = [
        sys.executable,
        osp.join('tools', 'train.py'),
        config,
        '--test',
        '--no-validate',
        '--work-dir',
        work_dir,
        '--cfg-options',
        *options,
    ]
    log_path = osp.join(work_dir, 'train.log')
    env = dict(os.environ)
    if threads:
        # One knob for torch's intra-op pool and the BLAS / OpenMP pools.
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    print(f'[{time.strftime("%H:%M:%S")}] {row} seed {seed}: {" ".join(cmd[1:])}')
    # The code version the run starts with (the training process imports it now).
    commit = subprocess.run(
        ['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    minutes = (time.time() - start) / 60
    if proc.returncode != 0:
        raise RuntimeError(
            f'{row} seed {seed} failed (exit {proc.returncode}); see {log_path}'
        )
    metrics = find_test_metrics(work_dir)
    checkpoints = sorted(glob.glob(osp.join(work_dir, 'epoch_*.pth')))
    record = dict(
        row=row,
        label=label,
        seed=seed,
        epochs=epochs,
        config=config,
        cfg_options=options,
        metrics=metrics,
        minutes=round(minutes, 2),
        threads=threads,
        work_dir=osp.relpath(work_dir, REPO),
        checkpoint=osp.relpath(checkpoints[-1], REPO) if checkpoints else None,
        finished=time.strftime('%Y-%m-%d %H:%M:%S'),
        commit=commit or None,
    )
    print(
        f'    R@1 {metrics["t2i/R1"]:.2f}  mAP {metrics["t2i/mAP"]:.2f}  '
        f'({minutes:.1f} min)'
    )
    return record


def mean_std(values: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def aggregate(records: List[Dict], rows: Sequence[str]) -> Dict[str, Dict]:
    """Per row: seeds and mean / std of every table column and of minutes."""
    out = {}
    for row in rows:
        runs = [r for r in records if r['row'] == row]
        if not runs:
            continue
        stats = {}
        for _, key in COLUMNS:
            values = [r['metrics'][key] for r in runs if key in r['metrics']]
            if values:
                stats[key] = dict(zip(('mean', 'std'), mean_std(values)), n=len(values))
        stats['minutes'] = dict(
            zip(('mean', 'std'), mean_std([r['minutes'] for r in runs])), n=len(runs)
        )
        out[row] = dict(
            label=ROWS[row][0], seeds=sorted(r['seed'] for r in runs), stats=stats
        )
    return out


def format_table(summary: Dict[str, Dict]) -> str:
    """The Markdown table: row | seeds | each column as mean +- std | minutes."""

    def cell(stats: Dict, key: str, digits: int = 1) -> str:
        if key not in stats:
            return '-'
        s = stats[key]
        if s['n'] == 1:
            return f'{s["mean"]:.{digits}f}'
        return f'{s["mean"]:.{digits}f} ± {s["std"]:.{digits}f}'

    headers = ['row', 'seeds'] + [c for c, _ in COLUMNS] + ['minutes']
    lines = []
    for summary_row in summary.values():
        stats = summary_row['stats']
        lines.append(
            [summary_row['label'], len(summary_row['seeds'])]
            + [cell(stats, key) for _, key in COLUMNS]
            + [cell(stats, 'minutes')]
        )
    return markdown_table(headers, lines)


def paired_gaps(records: List[Dict], row: str, other: str) -> Dict[int, float]:
    """Per seed, R@1 of ``row`` minus R@1 of ``other`` (seeds both have run).

    One seed gives both rows the same data order and the same initialisation
    of the modules they share, so the per-seed gap removes much of the
    seed-to-seed spread that the rows' own standard deviations carry.
    """
    by_seed = {
        name: {r['seed']: r['metrics']['t2i/R1'] for r in records if r['row'] == name}
        for name in (row, other)
    }
    seeds = sorted(set(by_seed[row]) & set(by_seed[other]))
    return {s: by_seed[row][s] - by_seed[other][s] for s in seeds}


def target_lines(
    summary: Dict[str, Dict], records: Optional[List[Dict]] = None
) -> List[str]:
    """The targets: full vs global-only (>= 3 R@1) and vs fixed margins."""

    def r1(row: str) -> Optional[tuple]:
        stats = summary.get(row, {}).get('stats', {}).get('t2i/R1')
        return (stats['mean'], stats['std'], stats['n']) if stats else None

    lines = []
    full = r1('full')
    for row, target in (('global', 3.0), ('fixed', None), ('fixed015', None)):
        other = r1(row)
        if full is None or other is None:
            continue
        gap = full[0] - other[0]
        verdict = ''
        if target is not None:
            verdict = ' (target >= 3: ' + ('met' if gap >= target else 'NOT met') + ')'
        seeds = min(full[2], other[2])
        spread = (
            f'std of the two rows: {full[1]:.2f} / {other[1]:.2f}'
            if seeds > 1
            else 'one seed: spread unknown'
        )
        lines.append(f'full - {ROWS[row][0]}: {gap:+.2f} R@1 ({spread}){verdict}')
        gaps = paired_gaps(records or [], 'full', row)
        if len(gaps) > 1:
            mean, std = mean_std(list(gaps.values()))
            per_seed = ', '.join(f'seed {s}: {g:+.2f}' for s, g in gaps.items())
            lines.append(
                f'    paired by seed: {per_seed}; mean {mean:+.2f}, std {std:.2f}, '
                f'standard error {std / len(gaps) ** 0.5:.2f}'
            )
    return lines


def paired_stats(records: List[Dict], row: str, other: str) -> Optional[Dict]:
    """Paired R@1 difference ``row - other`` over the seeds both have run.

    Returns the per-seed gaps, their mean, standard deviation and standard
    error, and a two-sided paired t-test (``scipy.stats.ttest_rel``: the
    mean gap over its standard error, n - 1 degrees of freedom); ``None``
    with fewer than two shared seeds.
    """
    from scipy import stats

    gaps = paired_gaps(records, row, other)
    if len(gaps) < 2:
        return None
    by_seed = {
        name: {r['seed']: r['metrics']['t2i/R1'] for r in records if r['row'] == name}
        for name in (row, other)
    }
    seeds = sorted(gaps)
    test = stats.ttest_rel(
        [by_seed[row][s] for s in seeds], [by_seed[other][s] for s in seeds]
    )
    mean, std = mean_std(list(gaps.values()))
    return dict(
        seeds=seeds,
        gaps=[round(gaps[s], 4) for s in seeds],
        mean=mean,
        std=std,
        standard_error=std / len(seeds) ** 0.5,
        t=float(test.statistic),
        p=float(test.pvalue),
    )


def format_paired(records: List[Dict], rows: Sequence[str]) -> tuple:
    """Markdown table of the full method's paired R@1 gaps to every other row."""
    headers = ['full minus', 'seeds', 'per-seed gaps', 'mean', 'SE', 't', 'p']
    lines, out = [], {}
    for other in rows:
        if other == 'full':
            continue
        result = paired_stats(records, 'full', other)
        if result is None:
            continue
        out[other] = result
        lines.append(
            [
                ROWS[other][0],
                len(result['seeds']),
                ', '.join(f'{g:+.1f}' for g in result['gaps']),
                f'{result["mean"]:+.2f}',
                f'{result["standard_error"]:.2f}',
                f'{result["t"]:.2f}',
                f'{result["p"]:.3f}',
            ]
        )
    return markdown_table(headers, lines), out


def plot(summary: Dict[str, Dict], records: List[Dict], path: str, epochs: int) -> None:
    """Bars of mean R@1 / mAP per row, with the std and each seed's value."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = list(summary)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 4.2))
    width = 0.38
    for offset, (key, name, colour) in enumerate(
        (('t2i/R1', 'R@1', '#3b6ea5'), ('t2i/mAP', 'mAP', '#d08c2e'))
    ):
        xs = [i + (offset - 0.5) * width for i in range(len(rows))]
        means = [summary[r]['stats'][key]['mean'] for r in rows]
        stds = [summary[r]['stats'][key]['std'] for r in rows]
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=colour, label=name)
        for x, row in zip(xs, rows):
            seeds = [r['metrics'][key] for r in records if r['row'] == row]
            ax.scatter([x] * len(seeds), seeds, s=9, color='black', zorder=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([summary[r]['label'] for r in rows], rotation=20, ha='right')
    ax.set_ylabel('text-to-image, % (SynthPedes small test)')
    seeds = sorted({s for r in summary.values() for s in r['seeds']})
    ax.set_title(
        f'Ablation, {epochs} epochs per run, mean ± std over seeds {seeds} '
        '(dots: single seeds)',
        fontsize=9,
    )
    ax.legend(loc='upper left', fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    os.makedirs(osp.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f'wrote {path}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--rows', nargs='+', default=list(ROWS), choices=list(ROWS), help='rows to run'
    )
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument(
        '--epochs',
        type=int,
        default=9,
        help='training epochs of every run (the budget; 9 = the quick start)',
    )
    parser.add_argument(
        '--work-root',
        default=osp.join('work_dirs', 'ablation'),
        help='work dirs go to WORK_ROOT/e<epochs>/<row>/seed<S> (relative to the '
        'repository)',
    )
    parser.add_argument(
        '--threads',
        type=int,
        help="OMP/MKL threads of each training process (default: torch's own "
        'choice); 1 is faster on a shared 2-core machine',
    )
    parser.add_argument(
        '--force',
        action='store_true',
        help='run the selected rows and seeds even where a result exists and '
        'replace it (a rerun at the current code)',
    )
    parser.add_argument(
        '--report-only',
        action='store_true',
        help='train nothing: aggregate the results that exist',
    )
    parser.add_argument(
        '--out', default=osp.join(RESULTS, 'ablation.json'), help='summary JSON'
    )
    parser.add_argument(
        '--plot', default=osp.join(REPO, 'docs', 'images', 'ablation.png')
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides for every run (e.g. data roots)',
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    work_root = args.work_root
    if not osp.isabs(work_root):
        work_root = osp.join(REPO, work_root)
    info = machine_info()
    failures: List[str] = []
    # Run order: seed-major, so that every row has a first seed early.
    for seed in args.seeds:
        for row in args.rows:
            path = run_path(args.epochs, row, seed)
            if args.report_only or (osp.exists(path) and not args.force):
                continue
            try:
                record = run_one(
                    row, seed, args.epochs, work_root, args.cfg_options, args.threads
                )
            except (RuntimeError, FileNotFoundError) as err:
                # One failed run must not cost the rest of the sweep.
                print(f'    FAILED: {err}')
                failures.append(f'{row} seed {seed}')
                continue
            record['machine'] = machine_info()
            write_json(path, record)
    records = []
    for seed in args.seeds:
        for row in args.rows:
            path = run_path(args.epochs, row, seed)
            if osp.exists(path):
                with open(path) as f:
                    records.append(json.load(f))
    if not records:
        print('no results yet')
        return 1
    summary = aggregate(records, args.rows)
    table = format_table(summary)
    targets = target_lines(summary, records)
    print(
        f'\nSynthPedes small, test split (200 ids, 800 images, 1600 queries); '
        f'{args.epochs} epochs per run; text-to-image, %\n'
    )
    print(table)
    for line in targets:
        print(line)
    paired_table, paired = format_paired(records, args.rows)
    if paired:
        print('\nPaired R@1 gaps (same seed), two-sided paired t-test:\n')
        print(paired_table)
    if failures:
        print('failed runs (rerun to retry): ' + ', '.join(failures))
    print('\n' + format_machine(info))
    write_json(
        args.out,
        dict(
            epochs=args.epochs,
            seeds=args.seeds,
            rows=summary,
            targets=targets,
            table=table,
            paired=paired,
            paired_table=paired_table,
            runs=records,
            machine=info,
        ),
    )
    plot(summary, records, args.plot, args.epochs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
