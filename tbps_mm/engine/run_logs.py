"""Reading what MMEngine wrote into a work dir: scalars and test metrics.

A run of ``tools/train.py`` (or ``tools/test.py``) leaves, per start, a
``<work_dir>/<timestamp>/`` folder with

- ``vis_data/scalars.json``: every logged scalar, one JSON object per line
  (``LocalVisBackend``); training lines carry the losses and the iteration
  ``step``, validation lines the metrics (``t2i/R1``, ...) and the epoch;
- ``<timestamp>.json``: the metrics of a test run (``LoggerHook`` writes it
  after the test epoch, e.g. ``tools/train.py --test``).

This module owns reading them, for the sweep that collects test results
(``benchmarks/ablation.py``) and the analyses that summarise or plot runs
(``tools/analysis_tools/``). Written by hand: MMEngine writes these files but
has no reader, and MMPretrain's ``analyze_logs`` reads the older text logs.

Example:
    >>> metrics = read_test_metrics('work_dirs/tbps_synth')  # doctest: +SKIP
    >>> metrics['t2i/R1']  # doctest: +SKIP
    68.56
"""

import glob
import json
import os.path as osp
from typing import Dict, List, Tuple

__all__ = ['read_scalars', 'read_test_metrics', 'list_test_metrics']


def list_test_metrics(work_dir: str) -> List[Tuple[str, Dict]]:
    """Every test-metrics file of a work dir, oldest first.

    Args:
        work_dir (str): An MMEngine work dir.

    Returns:
        list[tuple[str, dict]]: ``(path, record)`` for every
        ``<timestamp>/<timestamp>.json`` that holds ``t2i/R1``. Files that are
        not JSON objects (a run stopped while writing) are passed over.
    """
    records = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', '*.json'))):
        stamp = osp.basename(osp.dirname(path))
        if osp.basename(path) != f'{stamp}.json':
            continue
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and 't2i/R1' in record:
            records.append((path, record))
    return records


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    """The newest test metrics MMEngine's ``LoggerHook`` wrote into a work dir.

    Args:
        work_dir (str): A ``tools/train.py --test`` or ``tools/test.py`` work
            dir.

    Returns:
        dict[str, float]: The ``t2i...`` and ``i2t...`` entries of the newest
        ``<timestamp>/<timestamp>.json`` holding ``t2i/R1``.

    Raises:
        FileNotFoundError: No such file (the run failed before testing).

    Example:
        >>> read_test_metrics('work_dirs/tbps_synth')['t2i/R1']  # doctest: +SKIP
        68.56
    """
    records = list_test_metrics(work_dir)
    if not records:
        raise FileNotFoundError(
            f'no test metrics (<timestamp>/<timestamp>.json with t2i/R1) in '
            f'{work_dir}; see its log'
        )
    record = records[-1][1]
    return {k: float(v) for k, v in record.items() if k.startswith(('t2i', 'i2t'))}


def read_scalars(work_dir: str) -> Dict[str, List[Dict]]:
    """Training, validation and test scalars of a work dir, in logging order.

    Every timestamp folder is read, oldest first, so a resumed run joins up.

    Args:
        work_dir (str): An MMEngine work dir with ``LocalVisBackend`` (tbps_mm's
            default runtime).

    Returns:
        dict: ``train``: the training lines (``step`` = iteration); ``val``:
        the validation lines (``step`` = epoch); ``test``: the test metrics
        files' records, each with ``step`` set to the last training epoch.

    Raises:
        FileNotFoundError: The work dir holds no ``vis_data/scalars.json``.
        ValueError: A line of a scalars file is not JSON (file and line named).

    Example:
        >>> scalars = read_scalars('work_dirs/tbps_synth')  # doctest: +SKIP
        >>> scalars['train'][-1]['loss']  # doctest: +SKIP
        12.3
    """
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        raise FileNotFoundError(
            f'{work_dir} holds no <timestamp>/vis_data/scalars.json: is it an '
            'MMEngine work dir with LocalVisBackend (tbps_mm default_runtime)?'
        )
    train, val = [], []
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f'{path}, line {number}: not JSON ({err})'
                    ) from err
                if any(k.startswith('loss') for k in record):
                    train.append(record)
                elif any(k.startswith('t2i') for k in record):
                    val.append(record)
    last_epoch = max((rec.get('epoch', 0) for rec in train), default=0)
    test = [dict(rec, step=last_epoch) for _, rec in list_test_metrics(work_dir)]
    return dict(train=train, val=val, test=test)
