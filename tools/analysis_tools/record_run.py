"""Record a finished training run's test metrics as a JSON result.

``tools/train.py ... --test`` prints its test table and MMEngine's
``LoggerHook`` writes the metrics into ``<work_dir>/<timestamp>/
<timestamp>.json``; this tool turns the newest such file of a work dir (and
the last validation metrics, when the run validated) into one result file
with the config, the code version and the machine it ran on, so that a
number quoted in the docs has its run beside it in ``benchmarks/results/``.

Example:
    python tools/analysis_tools/record_run.py work_dirs/tbps_synth \\
        --config configs/tbps_synth.py --minutes 9.8 \\
        --out benchmarks/results/quick_start.json
"""

import argparse
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, Optional, Sequence

import mmengine

from tbps_mm.engine import read_scalars, read_test_metrics


def run_record(work_dir: str) -> Dict:
    """Test metrics and the last validation metrics of a work dir.

    Args:
        work_dir (str): A ``tools/train.py --test`` work dir.

    Returns:
        dict: ``test`` (metric -> value) and ``val`` (the last validation
        line's metrics, empty when the run did not validate).

    Raises:
        FileNotFoundError: The work dir holds no test metrics.
    """
    test = read_test_metrics(work_dir)
    val_lines = read_scalars(work_dir).get('val', [])
    val = {
        k: float(v)
        for k, v in (val_lines[-1] if val_lines else {}).items()
        if k.startswith(('t2i', 'i2t'))
    }
    return dict(test=test, val=val)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir', help='work dir of a tools/train.py --test run')
    parser.add_argument('--config', required=True, help='the config it trained')
    parser.add_argument(
        '--commit', help='code version it ran (default: git HEAD of this checkout)'
    )
    parser.add_argument('--minutes', type=float, help='wall time, if measured')
    parser.add_argument('--note', default='', help='how it ran (machine load, ...)')
    parser.add_argument('--out', required=True, help='the JSON result to write')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not osp.isdir(args.work_dir):
        print(f'error: work dir {args.work_dir} does not exist', file=sys.stderr)
        return 1
    try:
        record = run_record(args.work_dir)
    except FileNotFoundError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    commit = (
        args.commit
        or subprocess.run(
            ['git', 'rev-parse', 'HEAD'],
            cwd=osp.dirname(osp.abspath(__file__)),
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    result = dict(
        config=args.config,
        work_dir=args.work_dir,
        commit=commit or None,
        minutes=args.minutes,
        note=args.note,
        recorded=time.strftime('%Y-%m-%d %H:%M:%S'),
        machine=dict(cores=os.cpu_count()),
        **record,
    )
    mmengine.mkdir_or_exist(osp.dirname(osp.abspath(args.out)))
    mmengine.dump(result, args.out, indent=2)
    test = record['test']
    print(
        f'test R@1 {test.get("t2i/R1", float("nan")):.2f}, mAP '
        f'{test.get("t2i/mAP", float("nan")):.2f}; wrote {args.out}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
