"""One grading run of the solution in Gradescope's layout, under Gradescope-like CPU and memory limits.

    python build.py && python -m benchmarks.gradescope_limits [--runs N] [--only "0.5 CPU"]      (from the repository root)

Gradescope's default container has half a CPU and 768 MB of memory, a 10-minute timeout (40 at
most), and kills the run ("Killed" in its log) when memory runs out; a run that writes no
results.json scores 0. This script grades the executed solution notebook with the released autograder
zip exactly as Gradescope runs it (`build.grade`: the zip unpacked into
root/source, the submission into root/submission, `python root/source/run_otter.py root`) in six
configurations:

    2 cores, no limit | 1 core (taskset -c 0) | 1 core + 768 MB | 1 core + 700 MB | 0.5 CPU + 768 MB
    | 0.5 CPU + 768 MB with OMP_NUM_THREADS=1

The memory limits are a cgroup-v1 memory controller (memory.limit_in_bytes and, with no swap, the
same memsw limit), created inside this process's own memory cgroup; "0.5 CPU" is a cpu cgroup with a
CFS quota of 50 ms per 100 ms, both cores visible, which is how a container gets half a CPU (torch
then starts one thread per visible core). For each run it prints the wall time, the CPU time (user +
system of every process of the run: its cpuacct cgroup's usage, which holds the grader's kernel box
too, or without cgroups getrusage(RUSAGE_CHILDREN) before and after it: the wall time on an idle
core, whatever else runs here) and its ratio to the first run of this process, the
cgroup's peak (memory.max_usage_in_bytes: anonymous memory plus the page cache charged to
the run, what the kernel compares with the limit), the peak summed PSS and RSS over the run's processes
(sampled from /proc/<pid>/smaps_rollup every 200 ms), the OOM kills and the score; then a recommended
Gradescope setting. Page caches are dropped before each run (needs root) so that the libraries' pages
are read, and charged to the cgroup, as in a fresh container.

Wall times grow with whatever else runs on this machine; the CPU times do not, which is why the
recommended timeout is derived from them. One run takes 1 to 2 CPU minutes (`--only "0.5 CPU, 1 thread"`
runs Gradescope's default container alone); all six about 10.

`--baseline COMMIT` grades, in each chosen configuration and in turn (baseline, current, baseline,
...), the solution of COMMIT with the autograder zip of COMMIT (both as committed there) and the
current ones, and prints the current run's CPU time as a ratio of the baseline's: what a change of
the grader costs, measured in one process under the same conditions.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import build
from benchmarks.end_to_end import PeakMemory, children_cpu_seconds, descendants

ROOT = build.ROOT

MB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
GRADESCOPE_MB = 768  # Gradescope's default container
BUDGET_MB = 700  # the project's budget: leaves room below Gradescope's default
SAMPLE_SECONDS = 0.2  # reading smaps_rollup of a 2 GB process costs CPU: not more often
CONFIGS = [  # (label, CPU list for taskset, memory limit in MB, CPU quota, OMP_NUM_THREADS); None: none
    ("2 cores, no limit", None, None, None, None),
    ("1 core", "0", None, None, None),
    (f"1 core + {GRADESCOPE_MB} MB", "0", GRADESCOPE_MB, None, None),
    (f"1 core + {BUDGET_MB} MB", "0", BUDGET_MB, None, None),
    (f"0.5 CPU + {GRADESCOPE_MB} MB", None, GRADESCOPE_MB, 0.5, None),  # Gradescope's default container
    (f"0.5 CPU, 1 thread", None, GRADESCOPE_MB, 0.5, 1),  # the same, torch told to use one thread
]
_names = itertools.count()


def own_cgroup(controller: str) -> Path:
    """The cgroup (v1) of `controller` that this process is in: new cgroups go inside it, so that the
    machine's own accounting of this process tree still holds."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    return CGROUP_ROOT / controller


def cgroup_unavailable(controller: str = "memory") -> str | None:
    """Why a cgroup of `controller` ("memory" or "cpu") cannot be made here, or None when it can."""
    base = own_cgroup(controller)
    if not (base / "cgroup.procs").is_file():
        return f"no cgroup-v1 {controller} controller at {base}"
    probe = base / f"cgcnn-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        return f"cannot create a {controller} cgroup in {base}: {err}"
    return None


def drop_caches() -> bool:
    """Empty the page cache (root only), as in a fresh container; True when it was dropped."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


class GradingCgroup:
    """A cgroup-v1 memory cgroup limited to `limit_mb` (None: no limit, to measure only), and, when
    `cpu_share` is given, a cpu cgroup with that CFS quota (0.5: half a CPU, every CPU still visible,
    as in Gradescope's container). Commands run in them through `prefix()`; removed on exit."""

    def __init__(self, limit_mb: int | None = None, cpu_share: float | None = None):
        self.limit_mb, self.cpu_share = limit_mb, cpu_share
        name = f"cgcnn-gradescope-{os.getpid()}-{next(_names)}"
        self.path = own_cgroup("memory") / name
        self.cpu_path = own_cgroup("cpu") / name if cpu_share else None
        # CPU time of every task of the run, those in the grader's own nested cgroups (the kernel's box)
        # and those no one waited for included: getrusage(RUSAGE_CHILDREN) misses both
        acct = own_cgroup("cpuacct")
        self.acct_path = acct / name if (acct / "cpuacct.usage").is_file() else None

    def __enter__(self) -> "GradingCgroup":
        self.path.mkdir()
        if self.limit_mb is not None:
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit_mb * MB))
            memsw = self.path / "memory.memsw.limit_in_bytes"  # memory + swap: no swapping around the limit
            if memsw.exists():
                memsw.write_text(str(self.limit_mb * MB))
        if self.acct_path:
            self.acct_path.mkdir()
        if self.cpu_path:
            self.cpu_path.mkdir()
            (self.cpu_path / "cpu.cfs_period_us").write_text("100000")
            (self.cpu_path / "cpu.cfs_quota_us").write_text(str(int(self.cpu_share * 100000)))
        return self

    def prefix(self) -> list[str]:
        """A command prefix that moves the command into these cgroups, then runs it."""
        procs = [p / "cgroup.procs" for p in (self.path, self.cpu_path, self.acct_path) if p]
        return ["sh", "-c", " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in procs) + ' && exec "$@"', "sh"]

    def pids(self) -> list[int]:
        """The run's processes, those the grader moved into cgroups of its own (the kernel's) included."""
        pids = []
        for procs in self.path.rglob("cgroup.procs"):
            try:
                pids += [int(p) for p in procs.read_text().split()]
            except OSError:
                pass
        return pids

    def cpu_seconds(self) -> float | None:
        try:
            return int((self.acct_path / "cpuacct.usage").read_text()) / 1e9 if self.acct_path else None
        except OSError:
            return None

    def peak_mb(self) -> float:
        return int((self.path / "memory.max_usage_in_bytes").read_text()) / MB

    def oom_kills(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def __exit__(self, *exc):
        for _ in range(100):  # processes left behind (none, normally) end or are gone soon
            if not self.pids():
                break
            time.sleep(0.1)
        for path in (self.path, self.cpu_path, self.acct_path):
            try:
                if path:
                    path.rmdir()
            except OSError:
                pass


@dataclass
class Measurement:
    """One grading run: results.json (None when none was written), and what it used."""
    label: str
    limit_mb: int | None = None
    results: dict | None = None
    wall: float = 0.0
    cpu_seconds: float = 0.0  # user + system of the run's processes (cpuacct, or getrusage): wall time on an idle core
    cgroup_peak_mb: float | None = None  # None: no cgroup
    oom_kills: int | None = None
    peak_pss_mb: float = 0.0
    peak_anon_mb: float = 0.0  # the part of PSS that no memory limit can reclaim (no swap)
    peak_rss_mb: float = 0.0
    caches_dropped: bool = False
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(build.scores(self.results).values()) if self.results else 0.0

    def line(self) -> str:
        cg = f"{self.cgroup_peak_mb:5.0f} MB" if self.cgroup_peak_mb is not None else "   n/a  "
        oom = "n/a" if self.oom_kills is None else str(self.oom_kills)
        score = f"{self.score:g}/30" if self.results else "no results.json"
        return (f"{self.label:<18} {self.wall:6.1f} s wall, {self.cpu_seconds:6.1f} s CPU  cgroup peak {cg}  PSS {self.peak_pss_mb:4.0f} MB (anon {self.peak_anon_mb:3.0f})  "
                f"RSS {self.peak_rss_mb:5.0f} MB  OOM kills {oom}  {score}")


def measure(submission: Path, root: Path, label: str = "", cpus: str | None = None,
            limit_mb: int | None = None, cpu_share: float | None = None, threads: int | None = None,
            zip_path: Path = build.AUTOGRADER_ZIP, timeout: float = 1800) -> Measurement:
    """Grade `submission` with `build.grade` (Gradescope's layout and entry point, in a private
    temporary folder: `root` is not used and is kept for the callers), pinned to `cpus` (taskset) and,
    when cgroups can be made here, in a memory cgroup limited to `limit_mb` (None: unlimited, which
    still measures the cgroup's peak) and a CPU quota of `cpu_share` CPUs, with OMP_NUM_THREADS set
    to `threads` (None: the grader's choice, cgcnn_utils.cpu_budget). Without the cgroups a limited
    run is not made (see `error`). `cpu_seconds` is the run's cpuacct cgroup's usage (every task of
    the run, the kernel's box included), or without that cgroup the getrusage(RUSAGE_CHILDREN)
    difference around the run: other children of this process that end meanwhile would count too
    (grade one at a time), and a kernel that its box ended without a wait would not."""
    m = Measurement(label or f"cpus={cpus} limit={limit_mb}", limit_mb)
    prefix = ["taskset", "-c", cpus] if cpus is not None else []
    if cpus is not None and not shutil.which("taskset"):
        m.notes.append("taskset not found: not pinned to one core")
        prefix = []
    if threads is not None:
        prefix = ["env", f"OMP_NUM_THREADS={threads}", *prefix]
    reason = cgroup_unavailable()
    if reason and limit_mb is not None or cpu_share and cgroup_unavailable("cpu"):
        m.error = f"not run: {reason or cgroup_unavailable('cpu')}"
        return m
    m.caches_dropped = drop_caches()
    if not m.caches_dropped:
        m.notes.append("page cache not dropped (needs root): libraries already cached are not charged")
    start, cpu_start, cgroup_cpu = time.perf_counter(), children_cpu_seconds(), None
    try:
        if reason:
            m.notes.append(reason)
            me = os.getpid()
            with PeakMemory(lambda: [p for p in descendants(me) if p != me], SAMPLE_SECONDS) as peak:
                m.results = build.grade(zip_path, submission, prefix=prefix, timeout=timeout)
        else:
            with GradingCgroup(limit_mb, cpu_share) as cg, PeakMemory(cg.pids, SAMPLE_SECONDS) as peak:
                try:
                    m.results = build.grade(zip_path, submission, prefix=cg.prefix() + prefix, timeout=timeout)
                finally:
                    m.cgroup_peak_mb, m.oom_kills, cgroup_cpu = cg.peak_mb(), cg.oom_kills(), cg.cpu_seconds()
    except (AssertionError, build.BuildError, subprocess.TimeoutExpired) as err:  # no results.json, or too slow
        m.error = str(err)[-2000:]
    m.wall, m.cpu_seconds = time.perf_counter() - start, children_cpu_seconds() - cpu_start
    if cgroup_cpu is not None:
        m.cpu_seconds = cgroup_cpu
    m.peak_pss_mb, m.peak_anon_mb, m.peak_rss_mb = peak.pss, peak.anon, peak.rss
    return m


def recommend(runs: list[Measurement]) -> str:
    """Gradescope settings from the measurements: timeout from the 1-core runs' CPU time (what one
    idle core takes, whatever else ran here), doubled for half a CPU, plus 25 %, in whole minutes
    from 10 (the default) to 40 (the maximum); memory from the runs under a limit and the largest
    anonymous peak plus 25 %."""
    one_core = [m.cpu_seconds for m in runs if "1 core" in m.label and m.results] or [m.cpu_seconds for m in runs]
    timeout_min = min(40, max(10, math.ceil(2 * max(one_core) * 1.25 / 60)))
    half = [m for m in runs if "0.5 CPU" in m.label and m.results]
    # The cgroup's peak counts page cache and library pages, which the kernel reclaims (and reads
    # again) before it kills anything; anonymous memory it cannot reclaim without swap. The proof is
    # a full-marks run under a limit; the margin is what the anonymous peak leaves of the limit.
    anon = max((m.peak_anon_mb for m in runs if m.results), default=0.0)
    pss = max((m.peak_pss_mb for m in runs if m.results), default=0.0)
    passed = sorted(m.limit_mb for m in runs if m.limit_mb and m.score == 30 and m.oom_kills == 0)
    if passed and passed[0] <= GRADESCOPE_MB and anon * 1.25 <= passed[0]:
        memory = (f"Gradescope's default {GRADESCOPE_MB} MB: full marks under a {passed[0]} MB limit, no OOM "
                  f"kill; anonymous peak {anon:.0f} MB (PSS with libraries {pss:.0f} MB)")
    elif passed and passed[0] <= GRADESCOPE_MB:
        memory = (f"{GRADESCOPE_MB} MB passes (full marks under a {passed[0]} MB limit) but the anonymous peak "
                  f"of {anon:.0f} MB leaves less than 25 % margin: choose 1 GB to be safe")
    else:
        memory = f"at least {math.ceil(pss * 1.25 / 256) * 256} MB (PSS {pss:.0f} MB + 25 %)"
    measured = f"; measured at 0.5 CPU: {half[0].cpu_seconds:.0f} s CPU, {half[0].wall:.0f} s wall" if half else ""
    return (f"recommended Gradescope setting: autograder timeout {timeout_min} min "
            f"(2 x the 1-core CPU time for half a CPU, 25 % margin{measured}); memory: {memory}")


SOLUTION = Path("solutions") / f"{build.NAME}_solution.ipynb"
ZIP = build.AUTOGRADER_ZIP.relative_to(ROOT)


def committed(commit: str, folder: Path) -> tuple[Path, Path]:
    """The solution notebook and autograder zip as committed at `commit`, written into `folder`."""
    paths = []
    for rel in (SOLUTION, ZIP):
        data = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, check=True).stdout
        (folder / rel.name).write_bytes(data)
        paths.append(folder / rel.name)
    return paths[0], paths[1]


def compare(baseline: str, configs: list[tuple], runs: int) -> None:
    """Baseline and current gradings in turn, per configuration; CPU ratios current / baseline."""
    with tempfile.TemporaryDirectory(prefix="cgcnn-gs-baseline-") as tmp:
        old = committed(baseline, Path(tmp))
        for label, cpus, limit, share, threads in configs:
            cpu = {"baseline": [], "current": []}
            for r in range(runs):
                for name, (solution, zip_path) in (("baseline", old), ("current", (ROOT / SOLUTION, build.AUTOGRADER_ZIP))):
                    m = measure(solution, Path(tmp), f"{label} {name}"[:18], cpus, limit, share, threads, zip_path)
                    cpu[name].append(m.cpu_seconds)
                    print(f"{name:<8} {m.line()}" + (f"  ({m.error.splitlines()[0][:100]})" if m.error else ""), flush=True)
            b, c = (sum(v) / len(v) for v in cpu.values())
            print(f"{label}: current {c:.1f} s CPU vs baseline {baseline} {b:.1f} s: {c / b:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per configuration (default 1)")
    parser.add_argument("--only", default="", help="only the configurations whose label contains this")
    parser.add_argument("--baseline", help="a commit whose solution and autograder zip to compare with")
    args = parser.parse_args()
    solution = ROOT / SOLUTION
    if not solution.is_file() or not build.AUTOGRADER_ZIP.is_file():
        sys.exit("run `python build.py` first: the benchmark grades its releases")
    if args.baseline:
        return compare(args.baseline, [c for c in CONFIGS if args.only in c[0]], args.runs)
    reason = cgroup_unavailable()
    if reason:
        print(f"note: {reason}; the memory-limited configurations are not run")
    runs = []
    with tempfile.TemporaryDirectory(prefix="cgcnn-gs-limits-") as tmp:
        for n, (label, cpus, limit, share, threads) in enumerate(CONFIGS):
            for r in range(args.runs if args.only in label else 0):
                m = measure(solution, Path(tmp) / f"{n}-{r}", label, cpus, limit, share, threads)
                runs.append(m)
                ratio = f"  CPU {m.cpu_seconds / runs[0].cpu_seconds:.2f}x the first run's" if runs[0].cpu_seconds else ""
                print(m.line() + ratio + (f"  ({m.error.splitlines()[0][:100]})" if m.error else ""), flush=True)
                for note in m.notes:
                    print(f"    note: {note}")
    print(recommend(runs))


if __name__ == "__main__":
    main()
