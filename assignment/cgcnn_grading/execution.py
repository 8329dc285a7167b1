"""Running the submission's notebook in its sandbox: cell by cell, with the time limits kept from
outside the kernel, and the grader's probes run where the notebook checks each part.

The kernel runs as the grading user in its box (see `sandbox`); this process only sends it cells and
reads what comes back on the Jupyter protocol, which is JSON, over Unix sockets in the box's socket
folder (TCP could not cross the box's network namespace, and any local user could subscribe to a
TCP kernel's output). The probe of a part runs in place of the part's released check cell
(`grader.check("q1a")`, recognised by its code: one call of grader.check with the part's name,
however quoted or spaced), so a part is judged on what the notebook had
defined when it checked it; a probe whose check cell is missing or was edited runs after the last
cell. A watchdog thread measures each cell's CPU time (the box's cgroup: every process and thread of
it, ended or not) and wall time; a cell past its limit is interrupted, and if it does not stop, every
process of the box is ended. Time limits are reported by name, never as the student's error.
A probe that reads the trained model (4b's) is not asked when a cell since the previous probe was
stopped: its answer would be a training cut off wherever the limit fell; the reason says which cell
and the time budget.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets import Any as AnyTrait

from cgcnn_kernel import MIME, SETUP
from . import remote, sandbox, wire
from .settings import Limits

IGNORE_TAG = "otter_ignore"  # cells otter's grading skips; the notebook tags Part 5 to 7 with it
# Per cell: a notebook that floods its output cannot exhaust the grader's memory (the largest answer,
# part 4b's, holds its input batches: about 6 MB).
OUTPUT_BYTES = 32_000_000
GRACE_SECONDS = 10  # after an interrupt, before the kernel is ended
SUBMITTED_CELL = "submitted_cell"  # metadata of a cell as executed: its index in the submitted notebook
EXECUTED = "notebook.ipynb"  # the notebook as executed, kept beside results.json for the course staff
# Passed from the grading process to the kernel: which float32 kernels torch and MKL use. Unset (as on
# Gradescope), each CPU uses its fastest, and trained models differ slightly from one CPU kind to
# another (docs/instructors.md, "Reproducible releases"); build.PORTABLE_KERNELS holds every CPU to the same ones.
KERNEL_CHOICES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR")


@dataclass
class Probe:
    """The grader's work for one part, done in place of the cell `after` (or at the end): `run(ask)`
    talks to the kernel through `ask(request) -> raw answer` (see cgcnn_kernel) and returns what
    scoring needs (the part's verdicts, the trained model)."""

    name: str
    run: Callable[[Callable[[dict], dict]], object]
    after: str | None = None
    reads_training: bool = False  # it reads what the cells before it trained (the model), not only definitions

    def source(self) -> str:
        return f"# the grader's tests of {self.name} ran here, in the grading process"


def checked_part(source: str) -> str | None:
    """The part a cell checks, if the cell is one `grader.check("q1a")` and nothing else, however it
    is quoted or spaced (a check cell typed again is still the check); else None."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "check"
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "grader" and not call.keywords
            and len(call.args) == 1 and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
        return call.args[0].value
    return None


def budget(limits: Limits) -> str:
    """The time limits, as a student plans a training run by them."""
    return (f"Each cell may use {limits.cell_cpu_seconds:.0f} s of CPU time and {limits.cell_wall_seconds:.0f} s "
            f"of wall-clock time, the whole notebook {limits.total_seconds:.0f} s, on {limits.threads} torch "
            f"thread{'s' if limits.threads != 1 else ''}: train for fewer epochs, and time your training cell "
            f"after torch.set_num_threads({limits.threads}).")


@dataclass
class Outcome:
    """What grading learned from the kernel: each probe's raw answers, or why it has none."""

    answers: dict[str, dict] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # time limits, a kernel that died, ...
    stopped: list[str] = field(default_factory=list)  # the time-limit messages alone
    requests: dict[str, int] = field(default_factory=dict)  # per part: requests to the kernel
    notebook: nbformat.NotebookNode | None = None
    cpu_seconds: float = 0.0
    # per notebook cell run: its first line, CPU seconds (the box's) and wall-clock seconds, for the staff
    cells: list[dict] = field(default_factory=list)


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel started in the box as the grading user, reading a connection file it is allowed to
    read; its messages read through wire.GuardedSession (its clients' sessions are clones of this one)."""

    box = AnyTrait()

    def _session_default(self):
        return wire.GuardedSession(parent=self)

    def format_kernel_cmd(self, extra_arguments=None):
        return self.box.command(super().format_kernel_cmd(extra_arguments))

    def write_connection_file(self, **kwargs):
        super().write_connection_file(**kwargs)
        # the kernel's key: its own user's alone, so that another grading's kernel cannot connect
        user = self.box.user
        os.chown(self.connection_file, user.pw_uid, user.pw_gid)
        os.chmod(self.connection_file, 0o600)


class CappedClient(NotebookClient):
    """nbclient, keeping at most OUTPUT_BYTES of output per cell."""

    def output(self, outs, msg, display_id, cell_index):
        size = self.__dict__.setdefault("_sizes", {})
        size[cell_index] = size.get(cell_index, 0) + len(json.dumps(msg.get("content", {})))
        if size[cell_index] > OUTPUT_BYTES:
            return None
        return super().output(outs, msg, display_id, cell_index)


class Watchdog(threading.Thread):
    """Stops the running cell at its CPU or wall-clock limit: SIGINT to the kernel first (its pid as
    seen from here, not bwrap's), then every process of the box."""

    def __init__(self, box: sandbox.Box, kernel_pid: int):
        super().__init__(daemon=True)
        self.box, self.kernel_pid = box, kernel_pid
        self.lock = threading.Lock()
        self.cell: dict | None = None
        self.done = threading.Event()

    def arm(self, label: str, cpu: float | None, wall: float, why: str) -> None:
        with self.lock:
            self.cell = {"label": label, "cpu": cpu, "wall": wall, "why": why, "start": time.monotonic(),
                         "cpu0": self.box.cpu_seconds(), "fired": None, "stop": None}

    def stopped(self) -> str | None:
        with self.lock:
            return self.cell and self.cell["stop"]

    def disarm(self) -> str | None:
        with self.lock:
            cell, self.cell = self.cell, None
        return cell and cell["stop"]

    def run(self) -> None:
        while not self.done.wait(0.25):
            with self.lock:
                cell = self.cell
                if cell is None:
                    continue
                wall = time.monotonic() - cell["start"]
                if cell["fired"] is None:
                    cpu = self.box.cpu_seconds() - cell["cpu0"]
                    if cell["cpu"] is not None and cpu > cell["cpu"]:
                        cell["stop"] = f"{cell['label']} was stopped after {cell['cpu']:.0f} s of CPU time (time limit)"
                    elif wall > cell["wall"]:
                        cell["stop"] = f"{cell['label']} was stopped after {cell['wall']:.0f} s ({cell['why']})"
                    if cell["stop"]:
                        cell["fired"] = wall
                        self._signal(signal.SIGINT)
                elif wall - cell["fired"] > GRACE_SECONDS:
                    cell["stop"] += "; it did not stop when interrupted, so the kernel was ended"
                    cell["fired"] = float("inf")
                    self.box.end()

    def _signal(self, signum: int) -> None:
        try:
            os.kill(self.kernel_pid, signum)
        except OSError:
            pass


def first_line(source: str) -> str:
    line = next((l for l in source.splitlines() if l.strip() and not l.startswith("#")), source.strip())
    return line.strip()[:60]


def _before(nb: nbformat.NotebookNode, index: int) -> str:
    """The first line of the last code cell before `index` that is not a check: how a student finds a cell."""
    for cell in reversed(nb.cells[:index]):
        if cell.cell_type == "code" and cell.source.strip() and not checked_part(cell.source.strip()):
            return first_line(cell.source)
    return ""


def run(nb: nbformat.NotebookNode, box: sandbox.Box, probes: list[Probe], limits: Limits,
        skip: set[str] = frozenset()) -> Outcome:
    """Execute `nb` in `box` (in its work directory, as its user), asking each probe in its place;
    cells whose source is in `skip` (the released export cell) and cells tagged otter_ignore do not
    run."""
    work, kernel_dir = box.work, box.kernel_dir
    outcome = Outcome()
    anchors = {checked_part(p.after): p for p in probes if p.after and checked_part(p.after)}
    plan: list[tuple[str, object]] = [("setup", SETUP)]
    origin: dict[int, int] = {}  # planned cell -> its index in `nb`
    used: set[str] = set()  # the parts whose check cell has its probe
    for index, cell in enumerate(nb.cells):
        source = cell.source.strip()
        if cell.cell_type != "code" or IGNORE_TAG in cell.metadata.get("tags", []) or source in skip:
            continue
        part = checked_part(source) if "grader.check" in source else None
        probe = anchors.pop(part, None) if part else None
        if part in used:
            outcome.events.append(f"Your notebook checks {part} twice: its tests ran at the first check cell, as the "
                                  f"part stood there; the later one (after the cell starting {_before(nb, index)!r}) "
                                  "is only the notebook's own check. Keep one check cell per part.")
        used |= {part} if probe else set()
        if not probe:
            origin[len(plan)] = index
        plan.append(("probe", probe) if probe else ("cell", cell.source))
    unanchored = [p for p in probes if p in anchors.values() or not (p.after and checked_part(p.after))]
    plan += [("probe", p) for p in unanchored]
    outcome.events += [f"Your notebook has no check cell for {p.name} (`grader.check(\"{p.name}\")`): its tests ran "
                       "after your last cell, with the names (a `model` too) as your last cells left them. Put the "
                       "check cell back right after the part." for p in unanchored if p.after]

    cells = [nbformat.v4.new_code_cell(SETUP if kind == "setup" else item.source() if kind == "probe" else item)
             for kind, item in plan]
    for planned, index in origin.items():  # the notebook as executed names each cell's place in the submission
        cells[planned].metadata[SUBMITTED_CELL] = index
    executed = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    km = SandboxedKernelManager(kernel_name="python3", box=box, transport="ipc",
                                connection_file=str(box.sockets / "kernel.json"))
    client = CappedClient(executed, km=km, allow_errors=True, interrupt_on_timeout=True,
                          timeout=limits.total_seconds + 2 * GRACE_SECONDS, startup_timeout=120,
                          resources={"metadata": {"path": str(work)}})
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work),
           "PYTHONPATH": f"{kernel_dir}:{work}", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(limits.threads),
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    # the grader's choice of CPU kernels, where it made one (the same test MAE on every CPU kind)
    env |= {k: os.environ[k] for k in KERNEL_CHOICES if k in os.environ}
    start, dead, kernel_pid = time.monotonic(), None, None
    window: list[str] = []  # the time limits hit since the last probe: by the cells it would read
    try:
        with client.setup_kernel(cwd=str(work), env=env):
            kernel_pid = box.kernel_pid(km.provisioner.process.pid)
            watchdog = Watchdog(box, kernel_pid)
            watchdog.start()
            try:
                for index, ((kind, item), cell) in enumerate(zip(plan, cells)):
                    name = item.name if kind == "probe" else None
                    left = limits.total_seconds - (time.monotonic() - start)
                    if kind == "probe" and window and item.reads_training:
                        # a model whose training (or graphs) cell was stopped is unfinished, and where it
                        # stopped depends on timing: not read, and the first line says why
                        outcome.missing[name] = (f"{window[-1]}, before the check of {name}, so your training "
                                                 f"did not finish. {budget(limits)}")
                        window = []
                        continue
                    window = [] if kind == "probe" else window
                    if dead or left <= 1:
                        if name:
                            outcome.missing[name] = dead or (f"the notebook used up the {limits.total_seconds} s "
                                                             "that grading allows it (time limit)")
                        continue
                    if kind == "cell":
                        label = f"the cell starting {first_line(item)!r}"
                        why = "time limit" if left > limits.cell_wall_seconds else \
                            f"time limit: {limits.total_seconds} s for the whole notebook"
                        watchdog.arm(label, limits.cell_cpu_seconds, min(limits.cell_wall_seconds, left), why)
                    else:
                        label = f"the check of {name}" if name else "the grader's setup"
                        watchdog.arm(label, None, min(limits.check_seconds, left), "time limit")
                    refused = len(client.kc.session.refused)
                    if kind == "probe":
                        deadline = time.monotonic() + min(limits.check_seconds, left)
                        ask = _asker(client, index, name, watchdog)
                        try:
                            outcome.answers[name] = item.run(ask, deadline)
                        except remote.LinkBroken as err:
                            outcome.missing[name] = str(err)
                        dead = dead or ask.dead
                        outcome.requests[name] = ask.count
                    else:
                        cpu0, wall0 = box.cpu_seconds(), time.monotonic()
                        try:
                            client.execute_cell(cell, index)
                        except DeadKernelError:
                            dead = f"the kernel died while running {label}"
                        outcome.cells.append({"cell": first_line(item), "cpu_seconds": round(box.cpu_seconds() - cpu0, 2),
                                              "wall_seconds": round(time.monotonic() - wall0, 2)})
                        _report_errors(cell, label, outcome, watchdog.stopped())
                    stop = watchdog.disarm()
                    refused = client.kc.session.refused[refused:]
                    if refused:  # dropped undecoded: the kernel sent what the grader does not read
                        outcome.events.append(f"Refused {len(refused)} message(s) of the kernel while running "
                                              f"{label}: {'; '.join(sorted(set(refused)))[:300]}.")
                    if stop:
                        outcome.stopped.append(stop)
                        window += [stop] if kind == "cell" else []
                        outcome.events.append(f"Time limit: {stop}.")
                        dead = dead and f"{stop}; the cells and checks after it could not run"
                    elif dead:
                        outcome.events.append(f"{dead[0].upper()}{dead[1:]} (out of memory, or os._exit?): "
                                              "the cells and checks after it could not run.")
                    if name and name not in outcome.answers and name not in outcome.missing:
                        outcome.missing[name] = stop or dead or "the check gave no answers"
            finally:
                watchdog.done.set()
                outcome.cpu_seconds = box.cpu_seconds()
    finally:
        # the kernel itself (nbclient leaves a kernel it did not start running) and whatever it left
        left = box.end() - {kernel_pid}
        _reap(km)
    if left:
        outcome.events.append(f"Ended {len(left)} process(es) that the notebook had left running (the grader "
                              "ends every process of the submission before it scores).")
    outcome.notebook = executed
    return outcome


def _reap(km) -> None:
    """Wait for the ended kernel (nbclient leaves a kernel it did not start to its manager): no zombie
    is left, and its CPU time counts for this process's children, where benchmarks measure it."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    try:
        if process is not None:
            process.wait(timeout=GRACE_SECONDS)
    except Exception:  # noqa: BLE001 - reaping is hygiene; grading goes on without it
        pass


CELL_ERRORS = 10  # the notebook's own errors reported in the results, at most


def _report_errors(cell, label: str, outcome: "Outcome", stopped: str | None) -> None:
    """An error a notebook cell raised, in the results the student reads (its own code's error, which
    a later check would otherwise hide behind what it could not find); not a time limit's interrupt."""
    for output in cell.get("outputs", []):
        if output.get("output_type") != "error" or (stopped and output.get("ename") == "KeyboardInterrupt"):
            continue
        count = sum(e.startswith("Your notebook's ") for e in outcome.events)
        if count < CELL_ERRORS:
            outcome.events.append(f"Your notebook's {label[4:]} raised {str(output.get('ename'))[:80]}: "
                                  f"{' '.join(str(output.get('evalue')).split())[:300]}")
        elif count == CELL_ERRORS:
            outcome.events.append(f"Your notebook's later cells raised more errors (the first {CELL_ERRORS} are shown).")


class _Asker:
    """ask(request) for one part's probe: one cell of the grader's in the kernel per request
    (`cgcnn_kernel.serve`), its answer read from the cell's output of type MIME. Raises
    remote.LinkBroken once the part's check was stopped, the kernel died or its answer never came."""

    def __init__(self, client, index: int, name: str, watchdog: Watchdog):
        self.client, self.index, self.name, self.watchdog = client, index, name, watchdog
        self.count = 0
        self.dead: str | None = None

    def __call__(self, request: dict) -> dict:
        if self.dead:
            raise remote.LinkBroken(self.dead)
        stop = self.watchdog.stopped()
        if stop:
            raise remote.LinkBroken(stop)
        self.count += 1
        tag = f"{self.name}/{self.count}"
        text = json.dumps({"probe": tag, "request": request}, separators=(",", ":"))
        cell = nbformat.v4.new_code_cell(f"import cgcnn_kernel; cgcnn_kernel.serve({text!r})")
        self.client.__dict__.setdefault("_sizes", {})[self.index] = 0
        refused = len(self.client.kc.session.refused)
        try:
            self.client.execute_cell(cell, self.index, store_history=False)
        except DeadKernelError:
            self.dead = f"the kernel died while running the check of {self.name}"
            raise remote.LinkBroken(self.dead) from None
        stop = self.watchdog.stopped()
        if stop:
            raise remote.LinkBroken(stop)
        found = [o["data"][MIME] for o in cell.outputs if o.get("output_type") == "display_data"
                 and isinstance(o.get("data", {}).get(MIME), dict) and o["data"][MIME].get("probe") == tag]
        if found and isinstance(found[-1].get("answer"), dict):
            return found[-1]["answer"]
        refused = self.client.kc.session.refused[refused:]
        if refused:
            raise remote.LinkBroken(f"the kernel's answers were refused ({refused[-1]}): the grader's probe, "
                                    "cgcnn_kernel, sends nothing of the kind")
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            raise remote.LinkBroken(f"the check could not run: {errors[-1].get('ename')}: "
                                    f"{str(errors[-1].get('evalue'))[:300]}")
        raise remote.LinkBroken("the check gave no answers (did the notebook replace the grader's probe, cgcnn_kernel?)")


def _asker(client, index: int, name: str, watchdog: Watchdog) -> _Asker:
    return _Asker(client, index, name, watchdog)
