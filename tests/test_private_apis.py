"""The one private attribute of another package the pipeline still reads (no public API does
its job): if a new version drops it, this fails loudly rather than a sweep's clean-up."""

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
