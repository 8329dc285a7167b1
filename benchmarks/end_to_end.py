"""Wall time and peak memory of what users wait for: the solution notebook, one grading run.

    python build.py && python benchmarks/end_to_end.py

Prints, for the solution notebook run top to bottom in a copy of the student release: the graded path
(the cells the autograder runs) and the whole notebook (with the experiments of Part 5); and for one
`otter run` of the solution with the autograder zip: wall time and peak resident memory summed over
every process of the run (sampled every 50 ms from /proc). The budgets are 120 s for the notebook and
700 MB for a grading run (Gradescope's default container has 768 MB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build  # noqa: E402

NB = f"{build.NAME}.ipynb"


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
    seconds, on a thread, while the `with` block runs; keeps the peaks (MB), and the CPU time (user + system)
    of every process seen, as last sampled (`cpu_seconds`): unlike wall time, it does not grow when
    other work shares the machine."""

    def __init__(self, pids, interval: float = 0.05):
        self.pids, self.interval = pids, interval
        self.rss = self.pss = self.anon = 0.0
        self._ticks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            pids = self.pids()
            rss, pss, anon = memory_mb(pids)
            self.rss, self.pss, self.anon = max(self.rss, rss), max(self.pss, pss), max(self.anon, anon)
            for p in pids:
                try:
                    fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                    self._ticks[p] = max(self._ticks.get(p, 0), int(fields[11]) + int(fields[12]))
                except (OSError, IndexError, ValueError):
                    pass
            self._stop.wait(self.interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._ticks.values()) / os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, int]:
    """Run a command; return (wall seconds, peak RSS in MB over its process tree, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with PeakMemory(lambda: descendants(proc.pid)) as peak:
        proc.wait()
    return time.perf_counter() - start, peak.rss, proc.returncode


def main() -> None:
    solution = ROOT / "solutions" / f"{build.NAME}_solution.ipynb"
    zip_path = ROOT / "autograder" / build.ZIP_NAME
    if not solution.is_file() or not zip_path.is_file():
        sys.exit("run `python build.py` first: the benchmark measures its releases")
    with tempfile.TemporaryDirectory(prefix="cgcnn-bench-") as tmp:
        work = Path(tmp) / "student"
        shutil.copytree(ROOT / "student", work)
        shutil.copy(solution, work / NB)
        runner = ("import sys; sys.path.insert(0, %r); import build; from pathlib import Path; "
                  "build.execute(Path(%r), graded_only=%s)")
        for label, graded in [("graded path", True), ("whole notebook", False)]:
            wall, peak, code = run_measured([sys.executable, "-c", runner % (str(ROOT), str(work / NB), graded)], work)
            print(f"solution notebook, {label:>14}: {wall:6.1f} s, peak {peak:6.0f} MB (exit {code})")
        out = Path(tmp) / "grade"
        out.mkdir()
        wall, peak, code = run_measured([sys.executable, "-m", "otter", "run", "-a", str(zip_path), "-o", str(out),
                                         str(work / NB)], Path(tmp), env=build.plugin_env(zip_path.parent))
        score = "no results.json"
        if (out / "results.json").is_file():
            import json
            res = json.loads((out / "results.json").read_text())
            score = f"score {sum(t.get('score', 0) for t in res['tests'])}/{sum(t.get('max_score', 0) for t in res['tests'])}"
        print(f"one grading run (otter run)       : {wall:6.1f} s, peak {peak:6.0f} MB, {score}")


if __name__ == "__main__":
    main()
