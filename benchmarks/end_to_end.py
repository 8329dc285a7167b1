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


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, int]:
    """Run a command; return (wall seconds, peak MB over its process tree, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0

    def sample():
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    sampler.join()
    return time.perf_counter() - start, peak, proc.returncode


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
                                         str(work / NB)], Path(tmp))
        score = "no results.json"
        if (out / "results.json").is_file():
            import json
            res = json.loads((out / "results.json").read_text())
            score = f"score {sum(t.get('score', 0) for t in res['tests'])}/{sum(t.get('max_score', 0) for t in res['tests'])}"
        print(f"one grading run (otter run)       : {wall:6.1f} s, peak {peak:6.0f} MB, {score}")


if __name__ == "__main__":
    main()
