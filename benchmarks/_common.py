"""Shared helpers of the benchmark scripts: machine record, statistics, memory.

Every benchmark in this folder prints a Markdown table and can write it, with
the machine and versions it ran on, as JSON (``--out``). This module owns what
they share:

- :func:`machine_info`: CPU model, cores, torch threads, load average and the
  versions of torch / MMEngine / MMPretrain / transformers / numpy, plus the
  command line, so that every recorded number says where it came from;
- :func:`median` / :func:`percentile` / :func:`time_runs`: wall-clock
  statistics after a warm-up;
- :func:`run_in_child`: run one configuration in a fresh *spawned* process,
  so that its peak memory is its own and not the sum of what earlier
  configurations left allocated (torch's caching allocator and glibc's heap
  never give everything back);
- :class:`PeakRSS`: the peak resident memory of a block of code *above* what
  the process already held (its inputs), from ``ru_maxrss`` of that process.
  On Linux the high-water mark is reset first through ``/proc/self/clear_refs``
  so that set-up temporaries do not count; elsewhere the block's peak is
  measured against the peak reached before it, which is exact as long as the
  set-up itself allocates nothing temporary above its result;
- :func:`write_json`; tables come from
  :func:`tbps_mm.evaluation.markdown_table`, re-exported here.

Written by hand: MMEngine and MMPretrain have no benchmark utilities for
arbitrary functions (``mmengine.utils.dl_utils`` has a timer only), and
tracemalloc does not see torch's allocations.

Example:
    >>> from _common import PeakRSS, median
    >>> with PeakRSS() as peak:
    ...     buf = bytearray(50 * 1024**2)
    >>> peak.extra_bytes > 40 * 1024**2
    True
"""

import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

from tbps_mm.evaluation.retrieval_table import markdown_table

MIB = 1024**2
GIB = 1024**3


def _cpu_model() -> str:
    """The CPU model name (Linux /proc/cpuinfo, else platform's guess)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return 'not installed'
    return str(getattr(mod, '__version__', 'unknown'))


def machine_info() -> Dict[str, Any]:
    """Where and with what a benchmark ran.

    Returns:
        dict: ``cpu``, ``cores`` (logical CPUs this process may use),
        ``torch_threads``, ``load_average`` (1/5/15 min, at the call),
        ``mem_available_gib``, ``gpu`` (name or None), ``python``, the
        versions of torch, mmengine, mmpretrain, transformers and numpy, and
        ``command`` (how the script was called).

    Example:
        >>> info = machine_info()
        >>> sorted(info)[:3]
        ['command', 'cores', 'cpu']
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(
        cpu=_cpu_model(),
        cores=cores,
        torch_threads=torch.get_num_threads(),
        load_average=load,
        mem_available_gib=round(mem_available_bytes() / GIB, 1),
        gpu=gpu,
        python=platform.python_version(),
        torch=torch.__version__,
        mmengine=_version('mmengine'),
        mmpretrain=_version('mmpretrain'),
        transformers=_version('transformers'),
        numpy=_version('numpy'),
        command='python ' + ' '.join(sys.argv),
    )


def format_machine(info: Dict[str, Any]) -> str:
    """One Markdown paragraph describing the machine and versions.

    Args:
        info (dict): :func:`machine_info`'s output.

    Returns:
        str: e.g. ``Machine: AMD EPYC, 2 cores, 2 torch threads, ...``.
    """
    load = info.get('load_average')
    load = '/'.join(str(x) for x in load) if load else 'n/a'
    gpu = f', GPU {info["gpu"]}' if info.get('gpu') else ''
    return (
        f'Machine: {info["cpu"]}, {info["cores"]} cores, '
        f'{info["torch_threads"]} torch threads{gpu}, load average {load} at start, '
        f'{info["mem_available_gib"]} GiB available. Versions: python '
        f'{info["python"]}, torch {info["torch"]}, mmengine {info["mmengine"]}, '
        f'mmpretrain {info["mmpretrain"]}, transformers {info["transformers"]}, '
        f'numpy {info["numpy"]}.\nCommand: `{info["command"]}`'
    )


def mem_available_bytes() -> int:
    """Memory the OS could give a new process now (MemAvailable), in bytes.

    Falls back to total physical memory where /proc/meminfo does not exist.
    """
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    if not values:
        raise ValueError('median of no values')
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between ranks.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not values:
        raise ValueError('percentile of no values')
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def time_runs(fn: Callable[[], Any], runs: int, warmup: int = 1) -> tuple:
    """Wall-clock seconds of ``runs`` calls of ``fn`` after ``warmup`` calls.

    Args:
        fn (callable): What to time (no arguments).
        runs (int): Timed calls (>= 1).
        warmup (int): Untimed calls first (first-touch allocations, lazy
            initialisation, caches). Defaults to 1.

    Returns:
        tuple[list[float], Any]: The per-call seconds and the last result.
    """
    if runs < 1:
        raise ValueError(f'runs must be >= 1, got {runs}')
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _ru_maxrss_bytes() -> int:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux statm; else the peak)."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return _ru_maxrss_bytes()


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); True if done."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _vm_hwm_bytes() -> Optional[int]:
    """VmHWM (peak RSS since the last reset) from /proc/self/status."""
    try:
        with open('/proc/self/status') as f:
            match = re.search(r'VmHWM:\s+(\d+) kB', f.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class PeakRSS:
    """Peak resident memory of a ``with`` block above what the process held.

    ``extra_bytes`` is ``peak RSS during the block - RSS at its start``: the
    memory the block itself needed at its worst moment (its temporaries and
    results), not its inputs. Use it in a fresh process (:func:`run_in_child`)
    so that memory freed by earlier work and re-used by the block cannot hide
    part of its need.

    Attributes:
        start_bytes (int): RSS when the block started.
        peak_bytes (int): Peak RSS during the block.
        extra_bytes (int): ``peak_bytes - start_bytes`` (>= 0).
        reset (bool): Whether the high-water mark could be reset at the start
            (else the peak since the process started is used, see module).

    Example:
        >>> with PeakRSS() as peak:
        ...     data = bytearray(20 * 1024**2)
        >>> peak.extra_bytes >= 20 * 1024**2
        True
    """

    def __enter__(self) -> 'PeakRSS':
        self.reset = _reset_peak()
        self.start_bytes = current_rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        hwm = _vm_hwm_bytes() if self.reset else None
        self.peak_bytes = hwm if hwm is not None else _ru_maxrss_bytes()
        self.extra_bytes = max(0, self.peak_bytes - self.start_bytes)


def _child_main(conn, fn: Callable, kwargs: dict) -> None:
    try:
        conn.send(('ok', fn(**kwargs)))
    except MemoryError as err:
        conn.send(('oom', f'MemoryError: {err}'))
    except BaseException as err:  # report any failure to the parent, then exit
        import traceback

        conn.send(('error', f'{type(err).__name__}: {err}\n{traceback.format_exc()}'))
    finally:
        conn.close()


def run_in_child(fn: Callable, timeout: Optional[float] = None, **kwargs) -> Dict:
    """Call ``fn(**kwargs)`` in a fresh spawned process and return its result.

    Args:
        fn (callable): A module-level function (picklable) returning
            something picklable (a dict of numbers).
        timeout (float, optional): Seconds to wait before killing the child.
        **kwargs: Arguments of ``fn``.

    Returns:
        dict: ``status`` (``'ok'``, ``'oom'`` when the child raised
        MemoryError or was killed by a signal such as the OOM killer's
        SIGKILL, ``'timeout'`` or ``'error'``), ``result`` (fn's return value
        or None) and ``message``.
    """
    ctx = mp.get_context('spawn')
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, kwargs))
    proc.start()
    child.close()
    status, payload = 'error', 'the child exited without a result'
    if parent.poll(timeout):
        try:
            status, payload = parent.recv()
        except EOFError:
            pass
    else:
        status, payload = 'timeout', f'no result after {timeout} s'
    if proc.is_alive():
        proc.kill()
    proc.join()
    if status == 'error' and proc.exitcode is not None and proc.exitcode < 0:
        status = 'oom'
        payload = f'killed by signal {-proc.exitcode} (out of memory?)'
    if status == 'ok':
        return dict(status='ok', result=payload, message='')
    return dict(status=status, result=None, message=str(payload))


def quiet_mmengine() -> None:
    """Make MMEngine's current logger print warnings and errors only.

    Building models and optimizers logs every parameter's initialisation and
    options at INFO level, which would bury the benchmark's table.
    """
    import logging

    from mmengine.logging import MMLogger

    MMLogger.get_instance('tbps_mm_benchmark', log_level='WARNING')
    logging.getLogger('transformers').setLevel(logging.ERROR)


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` (nothing when None)."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(payload, f, indent=2, default=str)
        f.write('\n')
    print(f'\nwrote {path}')


def fmt_bytes(num: Optional[float]) -> str:
    """Human-readable bytes (MiB below 1 GiB, else GiB)."""
    if num is None:
        return 'n/a'
    if num >= GIB:
        return f'{num / GIB:.2f} GiB'
    return f'{num / MIB:.0f} MiB'


__all__ = [
    'GIB',
    'MIB',
    'PeakRSS',
    'current_rss_bytes',
    'fmt_bytes',
    'format_machine',
    'machine_info',
    'markdown_table',
    'median',
    'mem_available_bytes',
    'percentile',
    'quiet_mmengine',
    'run_in_child',
    'time_runs',
    'write_json',
]
