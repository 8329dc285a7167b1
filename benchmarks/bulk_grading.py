"""Submissions per hour of `python build.py grade`: copies of the solution graded one at a time and
side by side, in this process.

    sudo python -m benchmarks.bulk_grading [--copies 4] [--jobs 1 2]      (from the repository root)

For each -j, a fresh folder of `--copies` copies of the solution notebook (solutions/, as
`python build.py` wrote it) is graded with build.grade_folder, exactly as `python build.py grade
FOLDER -j N` grades it (each submission through the autograder zip's entry point as a grading user,
each worker pinned to a CPU). Prints, per -j: wall time, submissions per hour, CPU seconds per
submission (user + system of every process the gradings ran, from getrusage(RUSAGE_CHILDREN) before
and after), the scores, and the load average before and after (other work on the machine stretches
the wall times, not the CPU times); then the rate of each -j against the first. About 3 minutes at
-j 1 and 1.5 at -j 2 on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nbformat

import build

SOLUTION = build.ROOT / "solutions" / f"{build.NAME}_solution.ipynb"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(copies: int, jobs: int, work: Path) -> dict:
    folder = work / f"j{jobs}"
    folder.mkdir()
    solution = nbformat.read(SOLUTION, as_version=4)
    for k in range(copies):
        nbformat.write(solution, folder / f"student_{k:03d}.ipynb")
    load = os.getloadavg()[0]
    cpu, start = children_cpu_seconds(), time.perf_counter()
    rows = build.grade_folder(folder, work / f"scores-j{jobs}.csv", jobs=jobs)
    wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu
    return {"jobs": jobs, "wall": wall, "rate": copies / wall * 3600, "cpu": cpu / copies,
            "totals": sorted({r["total"] for r in rows}), "statuses": sorted({r["status"] for r in rows}),
            "load": (load, os.getloadavg()[0])}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="submissions per run (default 4)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="the -j values to compare (default 1 2)")
    args = parser.parse_args(argv)
    if not SOLUTION.is_file():
        print(f"{SOLUTION} not found: run `python build.py` first", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("grading switches to the grading users: run as root (sudo)", file=sys.stderr)
        return 1
    print(f"{args.copies} copies of the solution; {len(build.cpus())} CPUs; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="cgcnn-bulk-bench-") as tmp:
        results = [measure(args.copies, jobs, Path(tmp)) for jobs in args.jobs]
    print(f"\n{'-j':>3} {'wall s':>8} {'subs/hour':>10} {'CPU s/sub':>10}  {'load before/after':>18}  totals, statuses")
    for r in results:
        print(f"{r['jobs']:>3} {r['wall']:>8.0f} {r['rate']:>10.1f} {r['cpu']:>10.1f}  "
              f"{r['load'][0]:>8.2f} / {r['load'][1]:<7.2f}  {', '.join(r['totals'])}; {', '.join(r['statuses'])}")
    for r in results[1:]:
        print(f"-j {r['jobs']} grades {r['rate'] / results[0]['rate']:.2f}x as many submissions per hour as "
              f"-j {results[0]['jobs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
