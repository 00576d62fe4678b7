"""The field's results table (task | R1 | R5 | R10 | mAP | mINP) as text.

The metric logs it after every evaluation and ``tools/test.py`` prints it, so
both show the same table. Metric keys look like ``t2i/R1`` or, with an
evaluator prefix, ``val/t2i/R1``: the task is everything before the last
``/``.

Example:
    >>> print(format_retrieval_table({'t2i/R1': 50.0, 't2i/mAP': 40.0}))
    | task | R1    | mAP   |
    | ---- | ----- | ----- |
    | t2i  | 50.00 | 40.00 |
"""

from typing import Dict, List

__all__ = ['format_retrieval_table']


def _column_key(name: str):
    """R@K columns by K, then mAP, then mINP, then anything else."""
    if name.startswith('R') and name[1:].isdigit():
        return (0, int(name[1:]), name)
    order = {'mAP': 1, 'mINP': 2}
    return (order.get(name, 3), 0, name)


def format_retrieval_table(metrics: Dict[str, float], digits: int = 2) -> str:
    """Format retrieval metrics as a Markdown table, one row per task.

    Args:
        metrics (dict[str, float]): Keys ``<task>/<metric>`` (values in
            percent); keys without a ``/`` are ignored.
        digits (int): Decimals shown. Defaults to 2.

    Returns:
        str: The table (empty string when no key has a task).

    Example:
        >>> format_retrieval_table({'t2i/R1': 1.0}).splitlines()[0]
        '| task | R1   |'
    """
    rows: Dict[str, Dict[str, float]] = {}
    columns: List[str] = []
    for key, value in metrics.items():
        if '/' not in key:
            continue
        task, name = key.rsplit('/', 1)
        rows.setdefault(task, {})[name] = value
        if name not in columns:
            columns.append(name)
    if not rows:
        return ''
    columns.sort(key=_column_key)
    header = ['task'] + columns
    body = [
        [task] + [f'{values[c]:.{digits}f}' if c in values else '-' for c in columns]
        for task, values in rows.items()
    ]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def fmt(cells: List[str]) -> str:
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'

    lines = [fmt(header), fmt(['-' * w for w in widths])]
    lines += [fmt(line) for line in body]
    return '\n'.join(lines)
