"""Forked worker processes for a CPU-bound loop over work units (Linux only).

Why: a light model on a few CPU cores scales badly inside one process. On the 2-core box the demo
model's 2-thread forward needs ~4.0 ms of CPU per 128 px image against ~3.3 ms on one thread (the
OpenMP team waits at every barrier), and decode threads beside it stall that team further. Two
single-threaded processes that each decode and forward their own images keep both cores on useful
work: one such serial loop runs at ~0.5 of the 2-thread bare forward, two of them ~1.0 (see
``bench/RESULTS.md``).

:func:`run_forked` forks ``processes`` children after the caller has loaded its model, so they share
its weights copy-on-write (no reload, no re-import). Each child runs torch on **one** thread — GNU OpenMP is
not fork-safe: a child that enters a 2-thread parallel region after its parent used OpenMP hangs (seen here
with torch 2.14.1: a forked ``Conv2d`` forward at 2 threads never returned; at 1 thread it runs) — then pulls
unit numbers from a shared counter (dynamic balancing) and calls ``work(unit, report)``; ``report(n)``
adds to a shared progress counter the parent shows. A child dies with its parent (``PR_SET_PDEATHSIG``),
so a killed run leaves no orphan still writing. A child that fails ends the run: the others are
stopped and :class:`~dgml_viz.errors.WorkerError` names the failure (what the units wrote stays).
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from typing import Any, Callable

from dgml_viz.errors import DgmlVizError, WorkerError

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: exit codes of a child: an expected failure (its one-line message was logged), Ctrl-C, a bug (traceback logged)
EXIT_EXPECTED, EXIT_INTERRUPTED, EXIT_BUG = 3, 130, 1

Work = Callable[[int, Callable[[int], None]], None]


def can_fork() -> bool:
    """True where :func:`run_forked` can run: Linux with the ``fork`` start method."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits; exit now when the
    parent is already gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux's libc: no guard, the parent still stops its children
        pass
    if os.getppid() != parent:
        os._exit(EXIT_INTERRUPTED)


def _child(work: Work, units: int, next_unit: Any, done: Any, parent: int) -> None:
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)  # never more after fork (module docstring)

    def report(n: int) -> None:
        with done.get_lock():
            done.value += n

    try:
        while True:
            with next_unit.get_lock():
                unit = next_unit.value
                next_unit.value += 1
            if unit >= units:
                return
            work(unit, report)
    except DgmlVizError as exc:
        logger.error("%s", exc)
        sys.exit(EXIT_EXPECTED)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:  # disk full, permissions: expected, one line
        logger.error("%s", exc)
        sys.exit(EXIT_EXPECTED)
    except Exception:
        logger.exception("worker process %d failed", os.getpid())
        sys.exit(EXIT_BUG)


def run_forked(work: Work, units: int, processes: int, *, progress: Callable[[int], None] | None = None,
               name: str = "worker", poll_s: float = 0.2) -> None:
    """Run ``work(unit, report)`` for every ``unit`` in ``range(units)`` across ``processes`` forked children.

    Args:
        work: called in a child; ``report(n)`` counts ``n`` finished items for ``progress``. It must
            keep its results itself (files): nothing is returned to the parent.
        units: number of work units (pulled in order, each by one child).
        processes: children to fork (at most ``units``), one torch thread each.
        progress: called in the parent with the items reported since its last call.
        name: children's process names (``name-<i>``), used in messages.

    Raises:
        WorkerError: a child exited with an error (the message names it and how it ended);
            the other children are stopped first. ConfigError: fork is not available here.
    """
    from dgml_viz.errors import ConfigError

    if not can_fork():
        raise ConfigError("worker processes need Linux (fork); use one process on this platform")
    if units <= 0:
        return
    ctx = multiprocessing.get_context("fork")
    next_unit, done = ctx.Value("q", 0), ctx.Value("q", 0)
    procs = [ctx.Process(target=_child, args=(work, units, next_unit, done, os.getpid()),
                         name=f"{name}-{i}", daemon=True) for i in range(max(1, min(processes, units)))]
    shown = 0
    for stream in (sys.stdout, sys.stderr):  # a child flushes its copy of these buffers when it ends
        if stream is not None:
            stream.flush()
    try:
        for p in procs:
            p.start()
        running = list(procs)
        while running:
            multiprocessing.connection.wait([p.sentinel for p in running], timeout=poll_s)
            if progress is not None and done.value > shown:
                progress(done.value - shown)
                shown = done.value
            for p in [p for p in running if p.exitcode is not None]:
                running.remove(p)
                if p.exitcode != 0:
                    raise WorkerError(f"{p.name} (pid {p.pid}) {_how(p.exitcode)}; the other workers were stopped")
        if progress is not None and done.value > shown:
            progress(done.value - shown)
    finally:
        for p in procs:
            if p.exitcode is None and p.pid is not None:
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join()


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return {EXIT_EXPECTED: "stopped on the error logged above", EXIT_INTERRUPTED: "was interrupted",
            EXIT_BUG: "failed (traceback logged above)"}.get(exitcode, f"exited with code {exitcode}")


__all__ = ["can_fork", "run_forked"]
