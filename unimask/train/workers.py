"""DataLoader workers that outlast a preemption signal but never a failed run.

Workers ignore SIGTERM/SIGINT so that a signal sent to the whole process group (as batch
schedulers do) reaches the main process, which finishes its step and checkpoints, instead of
killing a worker mid-batch. The price: at interpreter exit, multiprocessing terminates its
daemonic children with SIGTERM, which these ignore, and then joins them without a timeout, so
a run that fails while workers are alive would never exit. `close_loader` shuts a loader's
workers down explicitly, and an exit hook SIGKILLs any worker still alive before
multiprocessing's own hook runs (exit hooks run last-registered first).
"""
from __future__ import annotations

import atexit
import multiprocessing
import signal

JOIN_TIMEOUT_S = 5.0


def ignore_stop_signals(worker_id: int):
    """worker_init_fn: leave SIGTERM/SIGINT to the main process (see the module docstring)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def kill_processes(processes):
    """SIGKILL the live ones, then reap them all (bounded wait)."""
    processes = list(processes)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=JOIN_TIMEOUT_S)


def close_loader(iterator):
    """Stop a DataLoader iterator's workers now: torch's own shutdown (workers exit at their
    next poll), then SIGKILL for any that did not. A no-op for single-process iterators."""
    shutdown = getattr(iterator, "_shutdown_workers", None)  # torch: the DataLoader iterator
    if shutdown is not None:
        shutdown()
    kill_processes(getattr(iterator, "_workers", ()))  # torch


@atexit.register
def _kill_stray_workers():
    """Backstop at interpreter exit for loaders nobody closed (a traceback keeps them alive)."""
    kill_processes(child for child in multiprocessing.active_children() if child.daemon)
