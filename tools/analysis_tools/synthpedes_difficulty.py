"""SynthPedes difficulty: room left for part-level matching.

SynthPedes should be hard enough that a global-embedding-only model trained
with the quick-start recipe stays clearly below saturation on the ``small``
test split, while caption attributes stay recoverable from the images (a
model that matches parts does better). This analysis reads the ablation's
recorded results (``benchmarks/results/ablation.json``, written by
``benchmarks/ablation.py``; the ``global`` and ``full`` rows share one budget
and seeds) and prints the statement with its numbers:

- the global-only model's test R@1 / mAP (mean +- std over seeds) and its
  distance to saturation (100 %);
- the full model's numbers and the gain over global-only, with the spread;
- a verdict on each half: below saturation means R@1 at most
  ``--saturation`` (default 80), "does better" means a gain larger than the
  two rows' summed standard deviations;
- when ``tools/analysis_tools/attribute_probe.py`` has written its result
  (``--attribute-probe``, default ``benchmarks/results/attribute_probe.json``),
  the direct check that caption attributes are recoverable from the images:
  the probe's mean per-attribute test accuracy against the majority-class
  baseline, the attributes it reads no better than that baseline, and the
  R@1 of retrieval by its predicted attributes against the global-only model
  and the oracle.

Optionally ``--work-dirs LABEL=WORK_DIR ...`` adds single runs (e.g. the full
quick-start run of ``tools/train.py configs/tbps_synth.py --test``), read from
MMEngine's test JSON.

Example:
    python tools/analysis_tools/synthpedes_difficulty.py
    python tools/analysis_tools/synthpedes_difficulty.py \
        --work-dirs quick-start=work_dirs/tbps_synth
"""

import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

from tbps_mm.engine import read_test_metrics
from tbps_mm.evaluation import markdown_table

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: Where the benchmarks record their results.
RESULTS = osp.join(REPO, 'benchmarks', 'results')


def row_numbers(summary: Dict, row: str) -> Optional[Dict[str, tuple]]:
    """``{metric: (mean, std, n)}`` of an ablation row, or None if absent.

    Args:
        summary (dict): The ablation summary JSON.
        row (str): A row name (``'global'``, ``'full'``, ...).

    Returns:
        dict | None: Per metric key, its mean, std and number of seeds.
    """
    stats = summary['rows'].get(row, {}).get('stats')
    if not stats:
        return None
    return {k: (v['mean'], v['std'], v['n']) for k, v in stats.items()}


def difficulty_statement(
    summary: Dict, saturation: float, extra: Dict[str, Dict[str, float]]
) -> List[str]:
    """The difficulty statement, as lines of text (table first).

    Args:
        summary (dict): ``benchmarks/ablation.py``'s summary JSON.
        saturation (float): R@1 (%) at or below which the global-only model
            counts as below saturation.
        extra (dict): Label -> test metrics of single runs to list.

    Returns:
        list[str]: The table, then one verdict line per half.
    """
    rows = []
    for row, label in (('global', 'global-only'), ('full', 'full method')):
        numbers = row_numbers(summary, row)
        if numbers is None:
            continue
        rows.append(
            [label, f'{summary["epochs"]} epochs, {numbers["t2i/R1"][2]} seeds']
            + [
                f'{numbers[k][0]:.1f} ± {numbers[k][1]:.1f}'
                for k in ('t2i/R1', 't2i/R5', 't2i/R10', 't2i/mAP')
            ]
        )
    for label, metrics in extra.items():
        rows.append(
            [label, '1 run']
            + [f'{metrics[k]:.1f}' for k in ('t2i/R1', 't2i/R5', 't2i/R10', 't2i/mAP')]
        )
    lines = [markdown_table(['model', 'budget', 'R@1', 'R@5', 'R@10', 'mAP'], rows)]
    glob_ = row_numbers(summary, 'global')
    full = row_numbers(summary, 'full')
    if glob_ is None:
        lines.append('no global-only row in the ablation results: run it first')
        return lines
    r1, sd = glob_['t2i/R1'][:2]
    below = r1 <= saturation
    lines.append(
        f'Global-only model: test R@1 {r1:.1f} ± {sd:.1f} %, mAP '
        f'{glob_["t2i/mAP"][0]:.1f} %: {100 - r1:.1f} points below saturation; '
        f'{"clearly below" if below else "NOT below"} the {saturation:.0f} % bar.'
    )
    if full is not None:
        gain = full['t2i/R1'][0] - r1
        spread = full['t2i/R1'][1] + sd
        seeds = min(full['t2i/R1'][2], glob_['t2i/R1'][2])
        better = gain > spread and seeds > 1
        lines.append(
            f'Full method (part queries + L_CMR): R@1 {full["t2i/R1"][0]:.1f} ± '
            f'{full["t2i/R1"][1]:.1f} %, {gain:+.1f} points over global-only '
            f'(summed spread {spread:.1f}): part-level matching '
            + (
                'recovers more of the caption attributes from the images.'
                if better
                else 'does better, but one seed cannot tell it from noise.'
                if seeds < 2 and gain > 0
                else 'does NOT do clearly better at this budget.'
            )
        )
    return lines


def attribute_statement(probe: Dict, summary: Dict) -> List[str]:
    """The recoverability half, from ``attribute_probe.py``'s result.

    Args:
        probe (dict): ``attribute_probe.py --out``'s JSON.
        summary (dict): The ablation summary (for the global-only R@1).

    Returns:
        list[str]: Two lines: recognition, then retrieval.
    """
    attrs = probe['per_attribute']
    accuracy = sum(a['accuracy'] for a in attrs.values()) / len(attrs)
    majority = sum(a['majority'] for a in attrs.values()) / len(attrs)
    # Within 1 point of always answering the most frequent value.
    unread = sorted(n for n, a in attrs.items() if a['accuracy'] < a['majority'] + 1)
    retrieval = probe['retrieval']
    lines = [
        f'Attribute probe ({probe["steps"]} steps, the quick-start image encoder '
        f'from scratch): mean test accuracy {accuracy:.1f} % over '
        f'{len(attrs)} attributes against {majority:.1f} % for the '
        'majority class; '
        + (
            'every attribute is read above its majority baseline.'
            if not unread
            else 'at or near the majority baseline: ' + ', '.join(unread) + '.'
        )
    ]
    glob_ = row_numbers(summary, 'global')
    versus = (
        f' against {glob_["t2i/R1"][0]:.1f} for the global-only model'
        if glob_ is not None
        else ''
    )
    lines.append(
        "Retrieval by the probe's predicted attributes (the captions' mentioned "
        f'attributes from the generator): R@1 {retrieval["probe"]["R1"]:.1f}'
        f'{versus}; with the true attributes (oracle) '
        f'{retrieval["oracle"]["R1"]:.1f}.'
    )
    return lines


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--ablation',
        default=osp.join(RESULTS, 'ablation.json'),
        help="benchmarks/ablation.py's summary JSON",
    )
    parser.add_argument(
        '--attribute-probe',
        default=osp.join(RESULTS, 'attribute_probe.json'),
        help="tools/analysis_tools/attribute_probe.py's result JSON (skipped if "
        'absent)',
    )
    parser.add_argument(
        '--saturation',
        type=float,
        default=80.0,
        help='R@1 (%%) at or below which the global model counts as unsaturated',
    )
    parser.add_argument(
        '--work-dirs',
        nargs='+',
        default=[],
        metavar='LABEL=WORK_DIR',
        help='extra single runs to list (tools/train.py --test work dirs)',
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.ablation):
        print(
            f'error: {args.ablation} does not exist: run benchmarks/ablation.py '
            '(at least --rows global full)',
            file=sys.stderr,
        )
        return 2
    with open(args.ablation) as f:
        summary = json.load(f)
    extra = {}
    for item in args.work_dirs:
        label, sep, work_dir = item.partition('=')
        if not sep:
            print(f'error: --work-dirs entry {item!r} is not LABEL=WORK_DIR')
            return 2
        extra[label] = read_test_metrics(work_dir)
    print(f'SynthPedes, test split of the runs in {args.ablation}\n')
    lines = difficulty_statement(summary, args.saturation, extra)
    if osp.isfile(args.attribute_probe):
        with open(args.attribute_probe) as f:
            lines += attribute_statement(json.load(f), summary)
    else:
        lines.append(
            f'no attribute probe result at {args.attribute_probe}: run '
            'tools/analysis_tools/attribute_probe.py --out ' + args.attribute_probe
        )
    for line in lines:
        print(line + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
