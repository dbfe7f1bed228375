"""Forked worker processes for a CPU-bound loop over work units (Linux only).

Why: a light model on a few CPU cores scales badly inside one process. On the 2-core box the demo
model's 2-thread forward needs ~4.0 ms of CPU per 128 px image against ~3.3 ms on one thread (the
OpenMP team waits at every barrier), and decode threads beside it stall that team further. Two
single-threaded processes that each decode and forward their own images keep both cores on useful
work: one such serial loop runs at ~0.5 of the 2-thread bare forward, two of them ~1.0 (see
``bench/RESULTS.md``).

:func:`iter_forked` forks ``processes`` children after the caller has loaded its model, so they share
its weights copy-on-write (no reload, no re-import). Each child runs torch on **one** thread — GNU OpenMP is
not fork-safe: a child that enters a 2-thread parallel region after its parent used OpenMP hangs (seen here
with torch 2.14.1: a forked ``Conv2d`` forward at 2 threads never returned; at 1 thread it runs) — then pulls
unit numbers from a shared counter (dynamic balancing) and calls ``work(unit, send)``; what it sends comes
back to the parent through its own pipe (records for a manifest; :func:`run_forked`: progress counts).
A child dies with its parent (``PR_SET_PDEATHSIG``), so a killed run leaves no orphan still writing. A
child that fails ends the run: the others are stopped and :class:`~dgml_viz.errors.WorkerError` names the
failure (what the units wrote stays). Threads that ended just before a fork must be gone from the kernel
(:func:`dgml_viz.utils.threads.background_pool` waits for that), or MKL can hang the child.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from typing import Any, Callable, Iterator

from dgml_viz.errors import ConfigError, DgmlVizError, WorkerError

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: exit codes of a child: an expected failure (its one-line message was logged), Ctrl-C, a bug (traceback logged)
EXIT_EXPECTED, EXIT_INTERRUPTED, EXIT_BUG = 3, 130, 1
#: default worker processes (CPU model, Linux): one per torch thread, at most this many, ...
MAX_AUTO_PROCESSES = 16
#: ... and only when each gets at least this many batches (a smaller job stays in this process)
MIN_BATCHES_PER_PROCESS = 4
#: work units per worker process (see :func:`unit_size`)
UNITS_PER_PROCESS = 4

Work = Callable[[int, Callable[[Any], None]], None]


def can_fork() -> bool:
    """True where :func:`run_forked` can run: Linux with the ``fork`` start method."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def choose_processes(requested: int | None, model: Any, items: int, batch_size: int) -> int:
    """Worker processes for ``items`` inputs in batches of ``batch_size``: ``requested`` when given (1 = in this
    process; at most one per batch), else one per torch thread (at most :data:`MAX_AUTO_PROCESSES`, and one
    per :data:`MIN_BATCHES_PER_PROCESS` batches) for a CPU model on Linux, 1 otherwise (a GPU model, a small
    job, no fork)."""
    import torch

    from dgml_viz.inference import model_device

    if requested is not None and requested < 1:
        raise ConfigError(f"processes must be >= 1 (1 = in this process), got {requested}")
    if model_device(model).type != "cpu" or not can_fork():
        if requested is not None and requested > 1:
            logger.warning("worker processes need a CPU model on Linux; running in this process")
        return 1
    if requested is not None:
        return max(1, min(requested, -(-items // batch_size)))  # no more processes than batches
    return max(1, min(torch.get_num_threads(), MAX_AUTO_PROCESSES, items // (MIN_BATCHES_PER_PROCESS * batch_size)))


def unit_size(items: int, processes: int, batch_size: int, cap: int) -> int:
    """Inputs per work unit: whole batches, at most ``cap``, small enough for ~:data:`UNITS_PER_PROCESS`
    units per process (the last units balance the load)."""
    per = -(-items // (processes * UNITS_PER_PROCESS))
    return max(1, min(cap, -(-per // batch_size) * batch_size))


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits; exit now when the
    parent is already gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux's libc: no guard, the parent still stops its children
        pass
    if os.getppid() != parent:
        os._exit(EXIT_INTERRUPTED)


def _child(work: Work, units: int, next_unit: Any, pipes: list[tuple[Any, Any]], mine: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopped by the parent: end quietly (not the CLI's handler)
    import torch

    torch.set_num_threads(1)  # never more after fork (module docstring)
    for i, (reader, writer) in enumerate(pipes):  # keep only this child's writer: when it dies, its pipe ends
        reader.close()
        if i != mine:
            writer.close()
    send = pipes[mine][1].send
    try:
        while True:
            with next_unit.get_lock():
                unit = next_unit.value
                next_unit.value += 1
            if unit >= units:
                return
            work(unit, send)
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


def iter_forked(work: Work, units: int, processes: int, *, name: str = "worker",
                poll_s: float = 0.2) -> Iterator[Any]:
    """Run ``work(unit, send)`` for every ``unit`` in ``range(units)`` across ``processes`` forked children;
    yields, in arrival order, every object a child passed to ``send`` (pickled through its own pipe).

    Args:
        work: called in a child; ``send(obj)`` hands ``obj`` (plain data) to the parent. Results that
            must survive a failed run are written by the work itself (files), not only sent.
        units: number of work units (pulled in order, each by one child).
        processes: children to fork (at most ``units``), one torch thread each.
        name: children's process names (``name-<i>``), used in messages.

    Raises:
        WorkerError: a child exited with an error (the message names it and how it ended); what it sent
            before was yielded, the other children are stopped. ConfigError: fork is not available here.
    Closing the generator early stops the children.
    """
    if not can_fork():
        raise ConfigError("worker processes need Linux (fork); use one process on this platform")
    if units <= 0:
        return
    ctx = multiprocessing.get_context("fork")
    next_unit = ctx.Value("q", 0)
    n = max(1, min(processes, units))
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]  # (reader, writer) per child
    procs = [ctx.Process(target=_child, args=(work, units, next_unit, pipes, i, os.getpid()),
                         name=f"{name}-{i}", daemon=True) for i in range(n)]
    for stream in (sys.stdout, sys.stderr):  # a child flushes its copy of these buffers when it ends
        if stream is not None:
            stream.flush()
    try:
        for p in procs:
            p.start()
        for _, writer in pipes:
            writer.close()  # the children hold theirs
        running = {p: reader for p, (reader, _) in zip(procs, pipes)}
        while running:
            multiprocessing.connection.wait([*running.values(), *(p.sentinel for p in running)], timeout=poll_s)
            for p, reader in list(running.items()):
                ended = p.exitcode is not None  # read before draining: all it sent is in the pipe then
                yield from _drain(reader)
                if ended:
                    del running[p]
                    if p.exitcode != 0:
                        raise WorkerError(f"{p.name} (pid {p.pid}) {_how(p.exitcode)}; the other workers were stopped")
    finally:
        for p in procs:
            if p.exitcode is None and p.pid is not None:
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join()
        for reader, _ in pipes:
            reader.close()


def _drain(reader: Any) -> Iterator[Any]:
    """Every object waiting in ``reader`` (stops at the end of the pipe, or at a message cut by a killed child)."""
    while reader.poll():
        try:
            yield reader.recv()
        except (EOFError, OSError):
            return


def run_forked(work: Callable[[int, Callable[[int], None]], None], units: int, processes: int, *,
               progress: Callable[[int], None] | None = None, name: str = "worker", poll_s: float = 0.2) -> None:
    """:func:`iter_forked` for work that keeps its results itself: ``work(unit, report)``, ``report(n)``
    counts ``n`` finished items, passed on to ``progress`` in the parent."""
    for n in iter_forked(work, units, processes, name=name, poll_s=poll_s):
        if progress is not None:
            progress(n)


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return {EXIT_EXPECTED: "stopped on the error logged above", EXIT_INTERRUPTED: "was interrupted",
            EXIT_BUG: "failed (traceback logged above)"}.get(exitcode, f"exited with code {exitcode}")


__all__ = ["can_fork", "choose_processes", "iter_forked", "run_forked", "unit_size"]
