"""Helper threads that yield the CPU to the thread running the model.

A pipeline's critical path is its main thread (the batched forward, or feeding the GPU); decode and write
threads only have to keep up with it. On a machine with few cores the scheduler otherwise time-slices the
forward with them: on the 2-core CPU box the demo model's 1-thread forward took 4.4 s inside
``dgml-viz heatmaps`` for 1,024 images that it runs in 3.2 s alone, and the main thread then waited for
writers that had run in its place. :func:`background_pool` gives its threads a lower priority (Linux: a
per-thread nice value), so they run on the cores the forward leaves free and in its gaps; the CPU work is
the same, it is only ordered better.

Linux only: there ``setpriority(PRIO_PROCESS, tid)`` changes one thread. Elsewhere the pool runs at normal
priority (on macOS the same call would address a *process* with that number). Raising a nice value needs
no privilege; a failure is logged and ignored.

Fork safety: ``shutdown(wait=True)`` (leaving the ``with`` block) returns only once the pool's threads are
gone from the kernel, not only from Python, and no other thread has ended for 10 ms (the OpenMP team threads
the pool's threads started end just after them). A thread's last steps run after Python's join returns (its
thread-local destructors: MKL frees its per-thread buffers under a process-wide lock), and a process forked
during them inherits that lock held: the child's first MKL call (any matmul) spins forever. Seen here with
torch 2.14.1: 18 of 40 forks right after a pool of 2 matmul threads ended gave a hung child, 0 of 300 once
the pool's threads were gone; waiting only for those, one fork of ~225 in a test-suite run still hung (found as a hung ``dgml-viz heatmaps`` worker forked right after an in-process
pipeline's pools had ended).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

#: nice increment of :func:`background_pool` threads (CFS weight ~1/10 of a normal thread's: they still run
#: whenever a core is free, and get ~10 % of a busy one); 0 turns the lowering off
BACKGROUND_NICE = 10


def lower_priority(increment: int) -> bool:
    """Raise the calling thread's nice value by ``increment``; True when it was changed (Linux only)."""
    if increment <= 0 or not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:
        logger.debug("cannot lower the priority of thread %d (%s)", tid, exc)
        return False
    return True


#: longest wait for a finished pool thread to leave the kernel (it takes microseconds; a log line past this)
THREAD_EXIT_TIMEOUT_S = 2.0
#: ... and how long no other thread must have ended before the pool counts as settled (see _wait_settled)
THREAD_SETTLE_S = 0.01


class _BackgroundPool(ThreadPoolExecutor):
    """:class:`ThreadPoolExecutor` whose threads run below normal priority and whose ``shutdown(wait=True)``
    returns once they have exited in the kernel too (module docstring: fork safety)."""

    def __init__(self, workers: int, name: str, increment: int) -> None:
        self._tids: list[int] = []
        super().__init__(workers, thread_name_prefix=name, initializer=self._start, initargs=(increment,))

    def _start(self, increment: int) -> None:
        self._tids.append(threading.get_native_id())  # list.append is atomic
        lower_priority(increment)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        others = _task_ids() - set(self._tids)
        super().shutdown(wait, cancel_futures=cancel_futures)
        if wait:
            wait_thread_exit(self._tids)
            _wait_settled(others)


def _task_ids() -> set[int]:
    """Native ids of this process's threads (Linux ``/proc/self/task``; empty elsewhere)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _wait_settled(tids: set[int], quiet_s: float = THREAD_SETTLE_S, timeout_s: float = THREAD_EXIT_TIMEOUT_S) -> None:
    """Wait until no thread of ``tids`` has ended for ``quiet_s``: the OpenMP team threads a pool thread
    started for its matmuls (not Python threads, not in the pool's list) are released when it exits and end
    just after it, running the same destructors."""
    deadline = time.monotonic() + timeout_s
    alive = tids & _task_ids()
    quiet_until = time.monotonic() + quiet_s
    while time.monotonic() < min(quiet_until, deadline):
        time.sleep(0.0005)
        now = alive & _task_ids()
        if now != alive:
            alive, quiet_until = now, time.monotonic() + quiet_s


def wait_thread_exit(tids: list[int], timeout_s: float = THREAD_EXIT_TIMEOUT_S) -> bool:
    """Wait until none of these native thread ids of this process is still listed by the kernel
    (``/proc/self/task``; Linux only, elsewhere True at once); False when some outlived ``timeout_s``."""
    if not os.path.isdir("/proc/self/task"):
        return True
    deadline = time.monotonic() + timeout_s
    left = [t for t in tids if t != threading.get_native_id()]
    while left := [t for t in left if os.path.exists(f"/proc/self/task/{t}")]:
        if time.monotonic() > deadline:
            logger.debug("threads %s still exiting after %.1f s", left, timeout_s)
            return False
        time.sleep(0.0005)
    return True


def background_pool(workers: int, name: str, nice: int | None = None) -> ThreadPoolExecutor:
    """A :class:`~concurrent.futures.ThreadPoolExecutor` of ``workers`` threads named ``name_<i>`` whose
    threads run ``nice`` (default :data:`BACKGROUND_NICE`, read when the pool is made) steps below normal
    priority; leaving its ``with`` block waits until its threads are gone from the kernel (fork safety)."""
    increment = BACKGROUND_NICE if nice is None else nice
    return _BackgroundPool(max(1, int(workers)), name, increment)
