"""The private attributes of other packages the pipeline still uses (no public API does their
job): if a new version drops one, this fails loudly rather than a sweep's clean-up."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from pipeline.tracking.recorder import pool_processes


def test_a_process_pool_still_names_its_processes():
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        assert pool.submit(int, "7").result(timeout=60) == 7
        processes = pool_processes(pool)
        assert len(processes) == 1 and all(p.is_alive() for p in processes)
    finally:
        pool.shutdown()


def test_exit_handlers_can_still_be_run_before_a_quick_exit():
    """`entry.run_exit_handlers` calls it (running it here would end this session's logging)."""
    import atexit

    assert callable(getattr(atexit, "_run_exitfuncs", None))
