"""Results as Markdown tables: the field's table and any other.

:func:`format_retrieval_table` renders the field's table (task | R1 | R5 |
R10 | mAP | mINP); the metric logs it after every evaluation and
``tools/test.py`` prints it, so both show the same table.
:func:`markdown_table` renders any rows, for the benchmark and analysis
scripts whose tables go to docs/benchmarks*.md.

Metric keys look like ``t2i/R1`` or, with an evaluator prefix,
``val/t2i/R1``: the task is everything before the last ``/``.

Example:
    >>> print(format_retrieval_table({'t2i/R1': 50.0, 't2i/mAP': 40.0}))
    | task | R1    | mAP   |
    | ---- | ----- | ----- |
    | t2i  | 50.00 | 40.00 |
"""

from typing import Any, Dict, List, Sequence

__all__ = ['format_retrieval_table', 'markdown_table']


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


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = ''
) -> str:
    """A GitHub Markdown table of any cells.

    Args:
        headers (Sequence[str]): Column titles.
        rows (Sequence[Sequence]): Cells (converted with ``str``).
        align (str): One of ``'l'`` / ``'r'`` per column; default: the first
            column left, the others right.

    Returns:
        str: The table, one row per line.

    Example:
        >>> print(markdown_table(['a', 'b'], [[1, 2]]))
        | a | b |
        |:--|--:|
        | 1 | 2 |
    """
    align = align or 'l' + 'r' * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(
            f'align {align!r} has {len(align)} letters for {len(headers)} columns'
        )
    rule = ['--:' if a == 'r' else ':--' for a in align]
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join(rule) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
