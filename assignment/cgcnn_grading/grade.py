"""Grading one submission, end to end: find and read the notebook, set up its sandbox, run it with
the probes, score the answers. Gradescope's entry point (`run_otter.py`, see `main`), `python build.py
grade` and the build's own check of the solution all come here.

The autograder's folder holds what the submission must never reach: `grading.json` (settings),
`heldout.json` (the held-out crystals and their labels), the master's tests (tests/) and solution
code (master_solution.py), this package,
and otter's files/ (the support module and data shipped to the kernel). Before the kernel starts,
that folder, the results folder and the upload are made root's alone, the kernel's box holds none
of them (where namespaces work), and the grading user is shown (by trying, as that user inside its
box) unable to read any of them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np

from . import execution, heldout as heldout_set, master_tests, remote, sandbox, scoring, wire
from .settings import MAE_QUESTION, Settings

HELDOUT = "heldout.json"
SHIPPED = ["cgcnn_utils.py", "data"]  # in otter's files/: they replace any copy in the submission
KERNEL_MODULE = "cgcnn_kernel.py"
SCRATCH_PREFIX = "cgcnn-grading-"  # the grading's folder in the temporary directory: the user's work directory
HELP = ("Export the notebook again with its last cell (grader.export), check that the zip holds "
        "cgcnn_perovskites.ipynb, and resubmit. If this persists, send this message to the course staff.")
# What a student reads when the grader itself failed: never its exception text (which could quote a
# file the grader read); that goes to the course staff (the log, and a staff-only entry of results.json).
RUN_FAILED = ("the autograder failed while grading it (a failure on the grader's side, not a verdict on your "
              "notebook; the course staff have its details)")
# Gradescope's files beside the submission that the grading user must never read: every earlier
# submission's results (hidden verdicts and test MAEs included), and the scripts that start grading.
GRADESCOPE_PRIVATE = ["submission_metadata.json", "run_autograder", "setup.sh"]


class GradingError(RuntimeError):
    """The submission cannot be graded; the message says why, in words a student can act on."""


@dataclass
class Report:
    results: dict
    notebook: nbformat.NotebookNode | None = None  # as executed, for the course staff
    events: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0


def find_notebook(upload: Path) -> Path:
    # a link could point root at the autograder's own files: links are never read, only copied as links
    notebooks = sorted(p for p in upload.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts and not p.is_symlink())
    if not notebooks:
        held = sorted(p.name for p in upload.iterdir()) if upload.is_dir() else []
        raise GradingError(f"no notebook (.ipynb) in it; it holds {', '.join(held) or 'nothing'}")
    if len(notebooks) > 1:
        raise GradingError(f"it holds {len(notebooks)} notebooks ({', '.join(p.name for p in notebooks)}): "
                           "upload one")
    return notebooks[0]


def read_notebook(path: Path, assignment: str) -> nbformat.NotebookNode:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several types for a broken file; its text stays in the log
        traceback.print_exc(file=sys.stdout)
        raise GradingError(f"the notebook in the submission could not be read ({type(err).__name__}): it is not "
                           "a Jupyter notebook of format 4 (cut off, or edited outside Jupyter?)") from err
    name = nb.metadata.get("otter", {}).get("assignment_name")
    if name != assignment:
        raise GradingError(f"Received submission for assignment {name!r}, but this autograder grades "
                           f"{assignment!r}: submit the notebook of this assignment")
    return nb


def probes(settings: Settings, parts: dict[str, master_tests.Part], solution, seeded) -> list[execution.Probe]:
    """One probe per part, at the part's check cell: the part's tests, run here against stand-ins of the
    notebook's objects; 4b's probe also reads the trained model."""
    out = []
    for question in settings.points:
        part = parts.get(question)

        def run(ask, deadline, part=part, question=question) -> scoring.PartAnswers:
            link = remote.Link(ask, deadline)
            found = scoring.PartAnswers(master_tests.run_part(part, link, solution, seeded) if part else [])
            if question == MAE_QUESTION:
                try:
                    found.model = link.request("trained")[0]  # as decoded: arrays stay arrays
                    found.pool, found.pool_error = heldout_set.pooling_of(link, solution)
                    found.graph, found.graph_note = heldout_set.graph_of(link, settings.graph)
                except remote.SubmissionRaised as err:
                    found.model_error = str(err)
                except (remote.LinkBroken, wire.Refused) as err:
                    found.model_error = f"{err}"
            try:
                link.request("release")  # the kernel forgets this part's objects
            except (remote.LinkBroken, wire.Refused, remote.SubmissionRaised):
                pass
            return found
        out.append(execution.Probe(question, run, settings.check_cells.get(question),
                                   reads_training=question == MAE_QUESTION))
    return out


def grade_submission(source: Path, upload: Path, secret: list[Path] = (), user_name: str = sandbox.USER,
                     lock_fd: int | None = None) -> Report:
    """Grade the upload in `upload` with the autograder unpacked in `source`, as the grading user
    `user_name`. `secret` adds paths that user must not be able to read (a course's repository, for
    local grading); `lock_fd`, the user's lock as the local grader that started this run holds it
    (sandbox.claimed_user)."""
    for path in (source, upload):
        sandbox.private(path)
    settings = Settings.load(source)
    notebook = read_notebook(find_notebook(upload), settings.assignment)
    embedding = json.loads((source / "files" / "data" / "atom_init.json").read_text())
    embedding = {int(z): np.asarray(v, dtype=np.float32) for z, v in embedding.items()}
    solution = master_tests.load_solution(source, embedding)
    parts = master_tests.load(source / master_tests.TESTS_DIR)
    heldout = heldout_set.load(source / HELDOUT, solution, settings.graph)

    with sandbox.grading_user(user_name, held=lock_fd) as user:
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        try:
            os.chmod(scratch, 0o711)  # the user may enter its two folders, not list this one
            work = sandbox.work_directory(user, scratch)
            for item in upload.iterdir():
                sandbox.copy_into(item, work / item.name)
            for name in SHIPPED:  # ours win over the submission's copies
                sandbox.remove(work / name)
                sandbox.copy_into(source / "files" / name, work / name)
            sandbox.give(user, work)
            kernel_dir = scratch / "kernel"
            kernel_dir.mkdir(mode=0o755)
            shutil.copy(Path(__file__).resolve().parents[1] / KERNEL_MODULE, kernel_dir / KERNEL_MODULE)
            sockets = sandbox.work_directory(user, scratch, "sockets")
            with sandbox.Box(user, work, kernel_dir, sockets, settings.limits) as box:
                print(f"grading sandbox: {box.mode} ({box.describe()})", file=sys.stderr)
                sandbox.cannot_read(box, [source, source / HELDOUT, upload, *secret])
                outcome = execution.run(notebook, box, probes(settings, parts, solution,
                                                              master_tests.seeded_factory(settings.term)),
                                        settings.limits, skip=set(settings.skip_cells))
                boxed = box.describe()
        finally:
            sandbox.end_all(user.pw_uid)
            shutil.rmtree(scratch, ignore_errors=True)
    trained = outcome.answers.get(MAE_QUESTION)
    if trained is not None and trained.graph and any(trained.graph[k] != settings.graph[k] for k in heldout_set.GRAPH_NAMES):
        heldout = heldout_set.load_as_trained(source / HELDOUT, solution, trained.graph, settings.graph)
    results = scoring.score(settings, parts, outcome.answers, outcome.missing, heldout, solution, outcome.events)
    # the time-limit stops, for the course's own tools (build.py grade's status): not parsed from the text
    results.setdefault("extra_data", {})["stopped"] = list(outcome.stopped)
    # staff-only (Gradescope never shows extra_data to students): which sandbox ran, its memory peak
    results["extra_data"]["sandbox"] = boxed
    # and what each cell cost: which cells come near their limits (a slower form of a part, a busy machine)
    results["extra_data"]["cells"] = outcome.cells
    return Report(results, outcome.notebook, outcome.events, outcome.stopped, outcome.cpu_seconds)


def write_results(path: Path, results: dict) -> None:
    """Write results.json whole (a reader never sees half a file), readable by root only."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_notebook(path: Path, notebook: nbformat.NotebookNode) -> None:
    """Write the notebook as executed (for the course staff: the build reads why a solution lost
    points from it) whole, readable by root only; Gradescope reads results.json alone."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(nbformat.writes(notebook))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def close_gradescope_files(root: Path) -> list[Path]:
    """Gradescope's own files under `root` (GRADESCOPE_PRIVATE) made root's alone, those that exist
    (links are left alone: root never follows one); returns them, for `sandbox.cannot_read`."""
    closed = []
    for name in GRADESCOPE_PRIVATE:
        path = root / name
        if path.exists() and not path.is_symlink():
            sandbox.private(path)
            closed.append(path)
    return closed


def main(root: Path, private: list[Path] = (), user_name: str = sandbox.USER, lock_fd: int | None = None) -> int:
    """Gradescope's layout under `root` (/autograder): grade submission/ with source/, write
    results/results.json and, where the notebook ran, results/notebook.ipynb (as executed). Whatever
    happens, the only results.json is the one written here."""
    source, upload, results_dir = root / "source", root / "submission", root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", execution.EXECUTED):  # never adopt a file this run did not write
        (results_dir / name).unlink(missing_ok=True)
    sandbox.private(results_dir)
    report = None
    try:
        closed = close_gradescope_files(root)
        report = grade_submission(source, upload, [results_dir, *closed, *private], user_name, lock_fd)
        results = report.results
    except GradingError as err:
        results = scoring.error_results(str(err), HELP)
    except BaseException as err:  # noqa: BLE001 - every failure must still produce a result
        traceback.print_exc(file=sys.stdout)
        results = scoring.error_results(RUN_FAILED, HELP, f"{type(err).__name__}: {err}"[:4000])
    write_results(results_dir / "results.json", results)
    if report is not None and report.notebook is not None:
        try:
            write_notebook(results_dir / execution.EXECUTED, report.notebook)
        except Exception:  # noqa: BLE001 - a copy for reading; the results are written already
            traceback.print_exc()
    print(json.dumps({t["name"]: t["score"] for t in results["tests"] if "score" in t}), file=sys.stderr)
    return 0
