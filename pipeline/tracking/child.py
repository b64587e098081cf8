"""How a recording process lives and dies: with the process that started it, quickly.

Both recorders (a sweep's `recorder`, `pipeline.train`'s `run_recorder`) start a spawned
process for MLflow. It must not outlive a training process killed without warning, and at its
exit it skips tearing down MLflow, matplotlib and SQLAlchemy: what it wrote is committed by then.
Imports nothing heavy: the training process imports it too.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys


def bind_to_parent(parent_pid: int) -> None:
    """Ctrl-C is the parent's to handle; the kernel kills this process when its parent dies
    (Linux; elsewhere it ends when its work queue closes); exit at once if it already died."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit.register(exit_now)
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died while this process was starting
        os._exit(0)


def exit_now() -> None:
    """Leave without the interpreter's teardown (output flushed first)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
