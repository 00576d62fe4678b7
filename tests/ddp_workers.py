"""Forked gloo workers for the CPU DDP tests.

The tests start their ranks with ``fork`` so that the children inherit the
imported stack instead of importing it again (tens of seconds per process on
a small machine); each worker joins a gloo process group on a free local
port and writes its results under a folder the test reads back.

Example:
    >>> run_forked(worker, (free_port(), str(tmp_path)), nprocs=2)
"""

import socket
import time

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    """A local TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_forked(worker, args: tuple, nprocs: int = 2, timeout_s: float = 120) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` forked processes and wait.

    Args:
        worker (callable): The per-rank function.
        args (tuple): Its arguments after the rank.
        nprocs (int): Number of processes. Defaults to 2.
        timeout_s (float): Fail the test when they take longer. Defaults to
            120.

    Raises:
        ProcessRaisedException: A worker raised (re-raised by torch).
    """
    context = mp.start_processes(
        worker, args=args, nprocs=nprocs, join=False, start_method='fork'
    )
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=5):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f'DDP workers did not finish within {timeout_s} s')
