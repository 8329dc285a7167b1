"""CPU time and peak memory of what users wait for: the solution notebook, one grading run.

    python build.py && python -m benchmarks.end_to_end [--only graded|whole|grading]      (from the repository root)

Measures the releases that `python build.py` wrote: the solution notebook run top to bottom (with
build.execute, one torch thread, as graded) in a copy of the student release, first the graded path
(without the cells tagged otter_ignore, which the autograder skips: Parts 5 to 7) and then the whole
notebook; and one grading run of the solution with the autograder zip exactly as Gradescope runs it
(build.grade: the zip's entry point, Gradescope's folder layout, the kernel as the grading user). For
each: the CPU time (user + system of every process of the run, from getrusage(RUSAGE_CHILDREN)
before and after: on an idle core the wall time, and unlike wall time not inflated by other jobs),
the peak memory summed over the run's processes (PSS and RSS, sampled every 50 ms from /proc), and
ratios against the graded path, the baseline run in this process. Wall times are printed for
information only. Budgets: 120 CPU seconds for the notebook's graded path, 700 MB PSS for a grading
run (Gradescope's default container has 768 MB; see benchmarks/gradescope_limits.py for runs under
real limits). About 7 CPU minutes in all; --only runs one of the three.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import build

ROOT = Path(build.__file__).resolve().parent
NB = build.NB_NAME
NOTEBOOK_BUDGET_CPU = 120.0  # CPU seconds for the graded path of the solution notebook
GRADING_BUDGET_MB = 700  # peak PSS of a grading run


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every child process that ended and was waited for (with their own
    waited-for descendants): the difference around a subprocess is that subprocess's CPU time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def memory_mb(pids) -> tuple[float, float, float]:
    """(RSS, PSS, anonymous PSS) summed over processes, in MB, from /proc/<pid>/smaps_rollup. RSS
    counts a library page once per process that maps it; PSS splits it between them, so summed PSS is
    what the processes hold together. The anonymous part (heap, tensors) cannot be reclaimed without
    swap; the rest is file pages (libraries), which the kernel can drop and read again."""
    kb = {"Rss:": 0, "Pss:": 0, "Pss_Anon:": 0}
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key = line.split(maxsplit=1)[0] if line else ""
                if key in kb:
                    kb[key] += int(line.split()[1])
        except OSError:  # the process ended
            pass
    return kb["Rss:"] / 1024, kb["Pss:"] / 1024, kb["Pss_Anon:"] / 1024


class PeakMemory:
    """Samples summed RSS, PSS and anonymous PSS of the processes that `pids()` lists, every `interval`
    seconds, on a thread, while the `with` block runs, and keeps the peaks (MB). (CPU time is not
    sampled here: children_cpu_seconds() around the run counts every process, short-lived ones too.)"""

    def __init__(self, pids, interval: float = 0.05):
        self.pids, self.interval = pids, interval
        self.rss = self.pss = self.anon = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            rss, pss, anon = memory_mb(self.pids())
            self.rss, self.pss, self.anon = max(self.rss, rss), max(self.pss, pss), max(self.anon, anon)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run a command; return its CPU seconds (getrusage delta), wall seconds, peak PSS and RSS (MB)
    over its process tree, and exit code."""
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakMemory(lambda: descendants(proc.pid)) as peak:
        _, err = proc.communicate()
    return {"cpu": children_cpu_seconds() - cpu, "wall": time.perf_counter() - wall, "pss": peak.pss, "rss": peak.rss,
            "code": proc.returncode, "error": (err.strip().splitlines() or [""])[-1]}


def graded_path(source: Path, dest: Path) -> None:
    """The notebook without the cells the autograder skips (tagged otter_ignore)."""
    import nbformat
    nb = nbformat.read(source, as_version=4)
    nb.cells = [c for c in nb.cells if "otter_ignore" not in c.metadata.get("tags", [])]
    nbformat.write(nb, dest)


def grading_run(solution: Path) -> dict:
    """One build.grade of `solution` with the released zip, measured like run_measured."""
    me = os.getpid()
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    results, error = None, ""
    with PeakMemory(lambda: [p for p in descendants(me) if p != me]) as peak:
        try:
            results = build.grade(build.AUTOGRADER_ZIP, solution)
        except (build.BuildError, subprocess.TimeoutExpired) as err:
            error = str(err)
    return {"cpu": children_cpu_seconds() - cpu, "wall": time.perf_counter() - wall, "pss": peak.pss,
            "rss": peak.rss, "results": results, "error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["graded", "whole", "grading"], help="one of the three runs")
    parser.add_argument("--execute", type=Path, help=argparse.SUPPRESS)  # internal: run one notebook
    args = parser.parse_args()
    if args.execute:
        build.execute(args.execute)
        return
    solution = ROOT / "solutions" / f"{build.NAME}_solution.ipynb"
    if not solution.is_file() or not build.AUTOGRADER_ZIP.is_file():
        sys.exit("run `python build.py` first: the benchmark measures its releases")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="cgcnn-bench-") as tmp:
        for label in ("graded", "whole"):
            if args.only in (None, label):
                work = Path(tmp) / label
                shutil.copytree(ROOT / "student", work)
                if label == "graded":
                    graded_path(solution, work / NB)
                else:
                    shutil.copy(solution, work / NB)
                runs[label] = run_measured([sys.executable, "-m", "benchmarks.end_to_end", "--execute", str(work / NB)],
                                           ROOT)
        if args.only in (None, "grading"):
            runs["grading"] = grading_run(solution)
    names = {"graded": "solution notebook, graded path", "whole": "solution notebook, whole",
             "grading": "one grading run (build.grade)"}
    base = runs.get("graded")
    print("CPU seconds: user + system of every process of the run; wall for information only")
    for label, r in runs.items():
        if label == "grading":
            res = r["results"]
            extra = (res or {}).get("extra_data", {})
            what = (f"score {sum(build.scores(res).values()):g}" + (f", test MAE {extra['test_mae']:.3f} eV/atom"
                                                                    if "test_mae" in extra else "")
                    if res else f"no results ({r['error'][:100]})")
            budget = f"PSS budget {GRADING_BUDGET_MB} MB: {'within' if r['pss'] <= GRADING_BUDGET_MB else 'OVER'}"
        else:
            what = f"exit {r['code']}" + (f" ({r['error'][:100]})" if r["code"] else "")
            budget = (f"CPU budget {NOTEBOOK_BUDGET_CPU:.0f} s: {'within' if r['cpu'] <= NOTEBOOK_BUDGET_CPU else 'OVER'}"
                      if label == "graded" else "")
        ratio = f", {r['cpu'] / base['cpu']:.2f}x the graded path's CPU" if base and label != "graded" else ""
        print(f"  {names[label]:<31} {r['cpu']:6.1f} s CPU{ratio}, {r['wall']:6.1f} s wall, peak PSS {r['pss']:5.0f} MB "
              f"(RSS {r['rss']:5.0f} MB); {what}" + (f"; {budget}" if budget else ""), flush=True)


if __name__ == "__main__":
    main()
