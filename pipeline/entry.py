"""What entry points share at their edge: the one-line error for bad input and a quiet TF start."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

from pipeline.settings import ConfigError


def fail(error: ConfigError | str, code: int = 2) -> NoReturn:
    """Print `error: <key>=<value>: <what is allowed>` (or a message) and exit with `code`."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(code)


def exit_now(code: int) -> NoReturn:
    """End the process with `code` at once: exit handlers run, interpreter teardown skipped.

    Everything is written and closed by then; tearing down TensorFlow's and MLflow's modules
    only kept the user (or a sweep waiting for its workers) 1-2 s after the last line. The
    exit handlers (logging, multiprocessing's semaphores) take well under a millisecond.
    """
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_exit_handlers() -> None:
    """Run the handlers registered with `atexit` now, as a normal exit would.

    CPython has no public way to (checked against 3.11): this calls the private
    `atexit._run_exitfuncs`, and `tests/test_private_apis.py` fails if it goes. Calling
    `logging.shutdown()` and joining child processes instead is not enough: multiprocessing
    unlinks its named semaphores only in its own exit handler, and without it the resource
    tracker warns of leaked semaphores at the end of every sweep.
    """
    atexit._run_exitfuncs()


def import_tensorflow_quietly(compile_cache: str | None, threads: int = 1) -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, oneDNN notes) silenced.

    TF 2.21 writes those lines to file descriptor 2 before its log level applies; they say
    nothing a user of this tool can act on. Python-level errors still surface after the import.
    `threads` sizes TF's thread pools (only possible before the first op runs). One is fastest
    for one graph call at a time on these small networks (two made it 5-70% slower); a sweep
    worker training on `study.n_jobs` threads gets that many, which two graph calls need to
    run side by side (with one pool thread they take turns).
    `compile_cache` (`train.compile_cache`; None: off) is the directory of XLA's persistent
    compilation cache, set up here because XLA reads its flags once (`core.compile_cache`).
    """
    if "tensorflow" in sys.modules:
        return
    if compile_cache is not None:
        from pipeline.core import compile_cache as cache

        cache.enable(compile_cache)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        # A new network depth is a new trace by design; TF's "excessive retracing" note is noise.
        tf.get_logger().setLevel("ERROR")
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.constant(0.0)  # the device probe happens on first use
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
