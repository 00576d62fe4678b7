"""Plot training curves (losses, validation R@1) from MMEngine work dirs.

MMEngine's ``LocalVisBackend`` writes every logged scalar of a run to
``<work_dir>/<timestamp>/vis_data/scalars.json``, which
:func:`tbps_mm.engine.read_scalars` reads (every timestamp of a work dir, in
order, so resumed runs join up). This script draws, for one or several work
dirs side by side:

- left: every ``loss*`` scalar against the iteration (total loss bold);
- right: validation ``t2i/R1`` (and the coarse-only / parts-only R@1 when
  logged) against the epoch.

Written by hand: MMEngine has a scalar logger but no plotting tool, and
MMPretrain's ``analyze_logs`` reads the old text logs, not ``scalars.json``.

Example:
    python tools/analysis_tools/plot_training_curves.py work_dirs/tbps_synth \\
        --out docs/images/training_curves.png
"""

import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

from tbps_mm.engine import read_scalars

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VAL_KEYS = ('t2i/R1', 't2i-coarse/R1', 't2i-parts/R1')


def plot_curves(
    runs: Dict[str, Dict[str, List[Dict]]], out: str, title: Optional[str] = None
) -> None:
    """Draw the losses and validation R@1 of several runs into one PNG.

    Args:
        runs (dict): Label -> ``read_scalars`` output.
        out (str): The PNG to write.
        title (str, optional): Figure title.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    styles = ['-', '--', ':', '-.']
    for r, (label, scalars) in enumerate(runs.items()):
        colour = colours[r % len(colours)]
        train = scalars['train']
        keys = sorted({k for rec in train for k in rec if k.startswith('loss')})
        for s, key in enumerate(keys):
            points = [(rec['step'], rec[key]) for rec in train if key in rec]
            if not points:
                continue
            xs, ys = zip(*points)
            ax_loss.plot(
                xs,
                ys,
                styles[s % len(styles)] if key != 'loss' else '-',
                color=colour,
                linewidth=2.0 if key == 'loss' else 1.0,
                label=f'{label}: {key}',
            )
        for s, key in enumerate(VAL_KEYS):
            points = [(rec['step'], rec[key]) for rec in scalars['val'] if key in rec]
            if not points:
                continue
            xs, ys = zip(*points)
            ax_val.plot(
                xs,
                ys,
                styles[s % len(styles)],
                marker='o',
                color=colour,
                label=f'{label}: {key}',
            )
        for s, key in enumerate(VAL_KEYS):
            points = [(rec['step'], rec[key]) for rec in scalars['test'] if key in rec]
            if points:
                xs, ys = zip(*points)
                ax_val.scatter(
                    xs,
                    ys,
                    marker='*^v'[s],
                    s=80,
                    color=colour,
                    label=f'{label}: test {key}',
                )
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel('loss')
    ax_loss.set_yscale('log')
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    ax_val.set_xlabel('epoch')
    ax_val.set_ylabel('R@1, % (lines: validation, stars: final test)')
    ax_val.grid(alpha=0.3)
    if ax_val.has_data():
        ax_val.legend(fontsize=7)
    else:
        ax_val.text(0.5, 0.5, 'no evaluation logged', ha='center', va='center')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f'wrote {out}')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='MMEngine work dirs')
    parser.add_argument(
        '--labels', nargs='+', help='legend label per work dir (default: its name)'
    )
    parser.add_argument(
        '--out', default=osp.join(REPO, 'docs', 'images', 'training_curves.png')
    )
    parser.add_argument('--title')
    return parser.parse_args(argv)


def summarise(label: str, scalars: Dict[str, List[Dict]]) -> str:
    """One line: iterations, first and last total loss, last validation R@1."""
    train, val = scalars['train'], scalars['val']
    losses = [rec['loss'] for rec in train if 'loss' in rec]
    text = f'{label}: {len(train)} training records'
    if losses:
        text += f', loss {losses[0]:.3f} -> {losses[-1]:.3f}'
        text += f' (iteration {train[-1]["step"]})'
    r1 = [rec for rec in val if 't2i/R1' in rec]
    if r1:
        text += f', val R@1 {r1[-1]["t2i/R1"]:.2f} at epoch {r1[-1]["step"]}'
    if scalars['test']:
        text += f', test R@1 {scalars["test"][-1]["t2i/R1"]:.2f}'
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    labels = args.labels or [osp.basename(osp.normpath(d)) for d in args.work_dirs]
    if len(labels) != len(args.work_dirs):
        print(
            f'error: {len(labels)} labels for {len(args.work_dirs)} work dirs',
            file=sys.stderr,
        )
        return 2
    runs = {}
    for label, work_dir in zip(labels, args.work_dirs):
        runs[label] = read_scalars(work_dir)
        print(summarise(label, runs[label]))
    plot_curves(runs, args.out, args.title)
    return 0


if __name__ == '__main__':
    sys.exit(main())
