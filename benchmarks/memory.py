"""Peak memory of a short sweep: the sweep process plus its recording process (and any worker
processes), summed at the moment of the peak, against the 1.5 GiB target.

    python benchmarks/memory.py [--trials 6] [--epochs 2000] [--interval 0.1] [overrides ...]

In a fresh temporary directory (its own MLflow store, Optuna journal and compile cache), one
`python -m pipeline.sweep` of the default shape (both objectives, the default search space and
tracking) with few trials and epochs runs as a new process. This script polls /proc every
`--interval` seconds for the sweep process and all its descendants: each one's resident set
(VmRSS) and private memory (USS: Private_Clean + Private_Dirty of smaps_rollup), and each
one's own high-water mark (VmHWM, read until it exits). It prints the peak of the summed RSS (an
upper bound: pages the processes share, such as Python's and NumPy's libraries, count once per
process) and of the largest RSS plus the others' USS (a lower bound of the pages counted once,
what a job's memory limit sees) with each process's share at that moment, and each process's
VmHWM. The kernel's PSS is no help on a shared machine: it divides a library's pages among
every process mapping them, other users' TensorFlow processes too.
Why: a scheduler's job (Slurm `mem_gb`, a Kubernetes memory limit) must hold one worker and its
recording process; the README sizes it from this figure. A sample between two polls can be
missed; the VmHWM column cannot miss its process's peak (the kernel keeps it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TARGET_GIB = 1.5  # the sweep process plus its recorder, together
REPO = Path(__file__).resolve().parents[1]
KIB_PER_GIB = 1024 * 1024
LABELS = ("summed RSS", "largest RSS + the others' USS")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="study.n_trials of each study")
    parser.add_argument("--epochs", type=int, default=2000, help="train.epochs of each trial")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between polls")
    parser.add_argument("overrides", nargs="*", help="extra overrides of pipeline.sweep")
    return parser.parse_args()


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (/proc/<pid>/status) and USS (Private_* of /proc/<pid>/smaps_rollup) in
    KiB; {} once the process is gone."""
    values: dict[str, int] = {"USS": 0}
    try:
        for name in ("status", "smaps_rollup"):
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    values["USS"] += int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return values


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (parents read from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def role(pid: int, root: int) -> str:
    """What a process of the sweep is, from its command line."""
    if pid == root:
        return "sweep process"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    if "spawn_main" in cmdline or "forkserver" in cmdline:
        return "spawned child (recorder or worker)"
    return cmdline[:60]


@dataclass
class Peaks:
    """What the polls saw: the highest summed RSS, and the highest largest-RSS-plus-the-others'-
    USS ("once"), each with every process's share then and when; each process's last VmHWM."""

    rss: tuple[int, dict[int, int], float] = (0, {}, 0.0)
    once: tuple[int, dict[int, int], float] = (0, {}, 0.0)
    hwm: dict[int, int] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)

    def sample(self, root: int, seconds: float) -> None:
        """One poll of `root`'s process tree, `seconds` after its start."""
        rss, uss = {}, {}
        for pid in descendants(root):
            values = status_kib(pid)
            if not values:
                continue
            self.roles.setdefault(pid, role(pid, root))
            rss[pid], uss[pid] = values.get("VmRSS", 0), values["USS"]
            self.hwm[pid] = max(self.hwm.get(pid, 0), values.get("VmHWM", 0))
        if sum(rss.values()) > self.rss[0]:
            self.rss = (sum(rss.values()), rss, seconds)
        if rss:
            largest = max(rss, key=rss.__getitem__)
            once = {pid: rss[pid] if pid == largest else uss[pid] for pid in rss}
            if sum(once.values()) > self.once[0]:
                self.once = (sum(once.values()), once, seconds)


def run_sweep(root: Path, args: argparse.Namespace) -> tuple[Peaks, float, int]:
    """The sweep as a new process in `root`, polled until it exits: (peaks, wall, exit code)."""
    command = [
        sys.executable,
        "-m",
        "pipeline.sweep",
        f"study.n_trials={args.trials}",
        f"train.epochs={args.epochs}",
        *args.overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "sweep.log").open("w")
    started = time.perf_counter()
    sweep = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    peaks = Peaks()
    while sweep.poll() is None:
        peaks.sample(sweep.pid, time.perf_counter() - started)
        time.sleep(args.interval)  # the sampling period, not a synchronisation
    wall = time.perf_counter() - started
    log.close()
    if sweep.returncode != 0:
        print((root / "sweep.log").read_text()[-3000:], file=sys.stderr)
    return peaks, wall, sweep.returncode


def gib(kib: int) -> str:
    return f"{kib / KIB_PER_GIB:.2f} GiB"


def report(peaks: Peaks) -> None:
    """The peaks, each process's share at the peak and its own high-water mark, the target."""
    for label, (total, shares, seconds) in zip(LABELS, (peaks.rss, peaks.once), strict=True):
        print(f"peak {label}: {gib(total)} ({len(shares)} processes, {seconds:.0f} s in)")
        for pid, kib in sorted(shares.items(), key=lambda item: -item[1]):
            print(f"  {peaks.roles[pid]:<36} pid {pid:<8} {kib / 1024:7.0f} MiB")
    print("each process's own peak (VmHWM, the kernel's high-water mark of its RSS):")
    for pid, kib in sorted(peaks.hwm.items(), key=lambda item: -item[1]):
        print(f"  {peaks.roles[pid]:<36} pid {pid:<8} {kib / 1024:7.0f} MiB")
    children = resource_children_kib()
    print(f"largest child's ru_maxrss (cross-check): {children / 1024:.0f} MiB")
    for label, (total, _, _) in zip(LABELS, (peaks.rss, peaks.once), strict=True):
        verdict = "meets" if total / KIB_PER_GIB <= TARGET_GIB else "ABOVE"
        print(f"sweep + recorder, {label} at its peak: {gib(total)}  "
              f"[{verdict} target <= {TARGET_GIB} GiB]")  # fmt: skip


def resource_children_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        peaks, wall, code = run_sweep(Path(scratch), args)
    if code != 0:
        sys.exit(f"the sweep exited {code}")
    command = f"study.n_trials={args.trials} train.epochs={args.epochs} {' '.join(args.overrides)}"
    print(f"python -m pipeline.sweep {command.strip()}: {wall:.1f} s wall, "
          f"polled every {args.interval} s")  # fmt: skip
    report(peaks)


if __name__ == "__main__":
    main()
