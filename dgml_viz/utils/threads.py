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
"""
from __future__ import annotations

import logging
import os
import sys
import threading
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


def background_pool(workers: int, name: str, nice: int | None = None) -> ThreadPoolExecutor:
    """A :class:`~concurrent.futures.ThreadPoolExecutor` of ``workers`` threads named ``name_<i>`` whose
    threads run ``nice`` (default :data:`BACKGROUND_NICE`, read when the pool is made) steps below normal
    priority."""
    increment = BACKGROUND_NICE if nice is None else nice
    return ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix=name, initializer=lower_priority,
                              initargs=(increment,))
