"""Every setting of grading, stated once: the time limits here, the points, thresholds and the
released check cells in the `grading.json` that the build writes into the autograder zip (from the
master notebook's question configs and assignment/calibration.json)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

GRADESCOPE_TIMEOUT = 600  # s: Gradescope's default limit for a whole run, after which it scores 0
SETTINGS_FILE = "grading.json"
MAE_QUESTION = "q4b"  # the part scored by its test-set MAE, in tiers:
MAE_TIERS = [  # (check, MAE limit as a factor of the full-credit threshold, points)
    ("test_mae_within_twice_the_threshold", 2.0, 3),
    ("test_mae_within_one_and_a_half_the_threshold", 1.5, 2),
    ("test_mae_within_the_threshold", 1.0, 2),
]
# 4b's predictions are the grader's own: the trained model's parameters, pooling and normalizer
# evaluated in the master's CGCNN (heldout.py) on graphs the grader builds from the held-out
# crystals, which never reach the kernel. Those parameters must be the notebook's own network's:
# 4b is scored only when the parts that make that network pass (a hollow notebook cannot answer
# with weights trained elsewhere).
FORWARD_PARTS = ["q2b", "q3", "q4a"]


@dataclass(frozen=True)
class Limits:
    """Time limits of a grading run, kept from outside the kernel (see execution.Watchdog).

    Measured with one torch thread (results.json's extra_data.cells, on the 2-core Xeon): the solution's
    training cell takes 26 s of CPU time, all its cells 31 s; with torch's portable kernels
    (ATEN_CPU_CAPABILITY=default, as slow as an older CPU) 57 s and 63 s; 2b's literal concatenation
    48 s and 53 s (75 s and 82 s), under half of every limit at half a CPU. CPU time does not grow when other
    work shares the machine, so a busy machine does not stop a cell that an idle one lets finish; the
    wall-clock limits only catch cells that wait (a sleep, a lock) and keep the run inside Gradescope's
    timeout: total_seconds + the grace after an interrupt + start-up and scoring < GRADESCOPE_TIMEOUT.
    """

    cell_cpu_seconds: float = 240  # CPU time of one notebook cell (the training cell: 26-57 s)
    cell_wall_seconds: float = 360  # wall-clock time of one notebook cell
    check_seconds: float = 60  # wall-clock time of one part's check (the solution's: under 2 s)
    total_seconds: float = 480  # wall-clock time of all cells and checks together
    threads: int = 1  # torch threads in the kernel: Gradescope's half CPU, and deterministic sums
    # Memory of the kernel and everything it starts (its cgroup; its /tmp counts): below Gradescope's 768
    # MB container, which the grader shares (it runs the master's tests: with torch, the solution, the
    # tests and the held-out graphs loaded, about 155 MB anonymous). Measured on the solution: the
    # kernel's cgroup peaks at about 517 MB (extra_data.sandbox's memory_peak_mb); the whole run's
    # anonymous peak is about 696 MB (benchmarks/gradescope_limits.py: 30/30 in 768 MB, a thin margin).
    # Should both peak at once, the kernel is the out-of-memory killer's first choice.
    memory_mb: int = 600
    # Where no cgroup can be made: each process's address space (RLIMIT_AS; the solution's kernel maps
    # 2.0 GB at most, torch alone 600 MB). The size of any one file the kernel writes (RLIMIT_FSIZE).
    address_space_mb: int = 4096
    file_mb: int = 1024


@dataclass(frozen=True)
class Settings:
    assignment: str  # the notebook metadata's otter assignment_name
    points: dict[str, float]  # per part, in notebook order
    check_cells: dict[str, str]  # part -> the released source of its check cell
    skip_cells: list[str]  # released cells that grading does not run (the export cell)
    mae_full: float  # 4b: full credit up to this test MAE (eV/atom), from calibration.json
    graph: dict  # the crystal graph's settings (cgcnn_utils.GRAPH): radius, max_num_nbr, step
    term: str = ""  # the course term whose seed the hidden tests' inputs take ("": the default inputs)
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def load(cls, folder: Path) -> "Settings":
        raw = json.loads((Path(folder) / SETTINGS_FILE).read_text())
        # a zip may state other limits (a course whose Gradescope timeout is longer; the tests' short
        # limits for the cells that run into them); a zip built before they were written has the defaults
        return cls(**{**raw, "limits": Limits(**raw.get("limits", {}))})

    def dump(self) -> str:
        raw = {**self.__dict__, "limits": dataclasses.asdict(self.limits)}
        return json.dumps(raw, indent=1, sort_keys=True) + "\n"
