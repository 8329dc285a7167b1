"""Otter grading plugin: what the notebook's own kernel cannot be trusted with.

A submission runs in a Jupyter kernel that also runs the tests, and its code can read and write
whatever the grader can. This plugin, which runs in otter's process around that kernel, makes sure that:

1. **No cell can hang grading.** otter-grader has no time limit (otter issue 469); a cell that loops
   forever would run until Gradescope kills the container, and a killed run scores 0 on every part.
   A first cell arms an alarm around every cell (IPython's pre/post_run_cell events). A cell of the
   notebook that runs past `cell_seconds`, or once the notebook's cells have used `notebook_seconds`
   in all, gets a TimeoutError, like any error in a student's cell: grading goes on, and the parts
   that do not depend on the stopped cell are still scored. A grader's check cell gets
   `check_seconds` (a function under test that never returns fails its test), and all cells but
   otter's last one (which must run to write the results) end within `grading_seconds` of the first
   cell, so that the whole run ends inside Gradescope's time limit (see GRADESCOPE_TIMEOUT).
2. **The held-out labels never exist while the notebook runs.** Before the kernel starts they are read
   into this process and deleted from disk; the test MAE of part 4b is computed here afterwards, from
   the `test_predictions.csv` the notebook wrote. (The notebook's own copies of these tests always
   fail, so that grading without this plugin gives no credit.)
3. **Only the notebook counts.** The support module and data shipped with the autograder replace any
   copy in the submission. The test files are on disk only while otter reads one (the guard removes
   them before the notebook's first cell, writes them back at the start of each of the grader's
   cells and removes each again once otter has read it), so neither a cell nor a function under test
   can read the hidden tests or change them. And
   functions of numpy, torch, math and builtins that a notebook replaced (say `np.abs = ...`), and
   otter's own checker and test classes, are put back at the start of each of the grader's cells. The restoring is a line the guard's input
   transformer puts first in those cells, so it runs after every `pre_run_cell` hook, including hooks
   a notebook registers to patch again just before the checks. What was restored is reported.

A kernel can still defeat these in-process guards on purpose: a thread that keeps patching, or code
that removes the guard's transformer or hooks. Otter runs the tests inside the submission's kernel,
so no guard inside that kernel is proof against it; such a submission is cheating in plain sight in
its notebook, which course staff can read (docs/submissions.md lists what is and is not resisted).

Settings (the master notebook's assignment config, under `plugins`): cell_seconds, notebook_seconds,
check_seconds, grading_seconds (the time limits above, defaults in LIMITS), mae_full (full-credit test
MAE, eV/atom), mae_question (q4b), mae_factors (one per hidden test of that question, in file order:
MAE limit = factor * mae_full).

The build ships this file at the top of the autograder zip, where Gradescope's `run_otter.py`
imports it; for local `otter run`, put its folder on PYTHONPATH (`python build.py grade` does).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
from pathlib import Path

import nbformat
from otter.plugins import AbstractOtterPlugin

LABELS = "test_labels.csv"
PREDICTIONS = "test_predictions.csv"
SHIPPED = ["cgcnn_utils.py", "data"]
TIMEOUT_MARKER = "the grader stopped this cell"
GRADESCOPE_TIMEOUT = 600  # s: Gradescope's default limit for a whole grading run (it kills the run: no score)
# Seconds. Measured at half a CPU with one torch thread (as graded): the solution's training cell
# takes 78 s, all its cells 92 s, the whole run 104 s (otter, the kernel, checks and scoring: 12 s).
LIMITS = {"cell_seconds": 240, "notebook_seconds": 360, "check_seconds": 60, "grading_seconds": 450}
RESTORED_MARKER = "the grader restored"

# What the tests compute with (and what a notebook might replace to pass them). Only these: libraries
# replace some of their own attributes as they run (ipykernel swaps builtins.input on every request).
GUARDED = {
    "numpy": ["abs", "absolute", "all", "allclose", "any", "array", "array_equal", "asarray", "concatenate",
              "exp", "isclose", "isfinite", "logaddexp", "max", "mean", "min", "sort", "stack", "sum"],
    "numpy.testing": ["assert_allclose", "assert_array_equal", "assert_array_almost_equal"],
    "torch": ["abs", "all", "allclose", "equal", "isclose", "isfinite", "tensor", "zeros"],
    "math": ["isclose", "isfinite", "exp", "fabs"],
    "builtins": ["abs", "all", "any", "float", "int", "isinstance", "len", "max", "min", "round", "set",
                 "sorted", "sum", "zip"],
}

# Runs in the student's kernel before any of its cells. Its names start with an underscore and are
# deleted at the end, so the notebook's namespace is unchanged. The alarm fires again every few
# seconds if a cell swallows the TimeoutError.
GUARD_CELL = '''\
def _cgcnn_guard(cell_seconds, notebook_seconds, check_seconds, grading_seconds, test_paths):
    import builtins, math, os, signal, sys, time, types, numpy, numpy.testing, torch
    import otter.execute.checker, otter.test_files
    import otter.test_files.abstract_test as abstract_test, otter.test_files.exception_test as exception_test
    from IPython import get_ipython
    start = time.monotonic()
    test_files = {{}}
    for path in test_paths:  # read now, before any cell of the notebook has run
        with open(path) as f:
            test_files[os.path.abspath(path)] = f.read()
    modules = {{"numpy": numpy, "numpy.testing": numpy.testing, "torch": torch, "math": math,
               "builtins": builtins}}
    pristine = {{name: {{attr: getattr(modules[name], attr) for attr in attrs if hasattr(modules[name], attr)}}
                for name, attrs in {guarded!r}.items()}}

    def expired(signum, frame):
        signal.alarm(5)
        raise TimeoutError(f"{timeout_marker}: it ran past its time limit ({{cell_seconds}} s per cell, "
                           f"{{notebook_seconds}} s for the notebook's cells, {{check_seconds}} s per check, "
                           f"{{grading_seconds}} s in all)")

    def restore():
        changed = []
        for part, saved in otter_pristine:  # otter's own test machinery, which runs in this kernel
            now = callables(part)
            for attr, value in saved.items():
                if now.get(attr) is not value:
                    setattr(part, attr, value)
                    changed.append(f"{{part.__name__}}.{{attr}}")
            for attr in set(now) - set(saved) if isinstance(part, type) else ():  # would shadow a base method
                delattr(part, attr)
                changed.append(f"{{part.__name__}}.{{attr}}")
        for name, m in modules.items():
            for attr, value in pristine[name].items():
                if getattr(m, attr, None) is not value:
                    setattr(m, attr, value)
                    changed.append(f"{{name}}.{{attr}}")
        changed += sorted(written)
        written.clear()
        for path, text in test_files.items():
            with open(path, "w") as f:
                f.write(text)
        if changed:
            print("{restored_marker} what the notebook had replaced:", ", ".join(changed))

    def hide(*paths):
        for path in map(os.path.abspath, paths or test_files):
            if path in test_files:
                try:
                    with open(path) as f:
                        if f.read() != test_files[path]:
                            written.add(path)  # the notebook wrote a test file of its own
                    os.remove(path)
                except OSError:
                    pass

    # The tests exist on disk only while otter reads one: not while the notebook's cells run, nor
    # while the functions under test run.
    written = set()
    create_test_file = otter.execute.checker.create_test_file

    def read_then_hide(path, *args, **kwargs):
        try:
            return create_test_file(path, *args, **kwargs)
        finally:
            hide(path)

    otter.execute.checker.create_test_file = read_then_hide
    hide()

    def callables(part):
        return {{k: v for k, v in vars(part).items() if callable(v) or isinstance(v, (classmethod, staticmethod, property))}}

    otter_pristine = [(part, callables(part)) for part in (
        otter.execute.checker, otter.execute.checker.Checker, otter.test_files, otter.test_files.GradingResults,
        abstract_test, abstract_test.TestFile, abstract_test.TestCaseResult, exception_test,
        exception_test.ExceptionTestFile)]

    def graders(source):
        return ".check(" in source or "from otter.execute import Checker" in source

    def before(info):
        source = getattr(info, "raw_cell", "") or ""
        used = time.monotonic() - start
        if "from otter.execute import Checker" in source:
            limit = check_seconds  # otter's last cell: it writes the results, so it always gets its time
        elif graders(source):
            limit = min(check_seconds, grading_seconds - used)
        else:
            limit = min(cell_seconds, notebook_seconds - used, grading_seconds - used)
        signal.alarm(int(max(1, limit)))

    # Input transformers run after all pre_run_cell hooks: a hook of the notebook's cannot patch after this.
    def restore_first(lines):
        if graders("".join(lines)):
            return ['__import__("_cgcnn_guard").restore()\\n'] + lines
        return lines

    module = types.ModuleType("_cgcnn_guard")
    module.restore = restore
    sys.modules["_cgcnn_guard"] = module
    shell = get_ipython()
    shell.input_transformers_post.append(restore_first)
    signal.signal(signal.SIGALRM, expired)
    shell.events.register("pre_run_cell", before)
    shell.events.register("post_run_cell", lambda result: (signal.alarm(0), hide()))


_cgcnn_guard({cell_seconds}, {notebook_seconds}, {check_seconds}, {grading_seconds}, {test_paths!r})
del _cgcnn_guard
'''


class Guard(AbstractOtterPlugin):
    """See the module docstring."""

    def _config(self, key, default):
        return (self.plugin_config or {}).get(key, default)

    @property
    def _submission_dir(self) -> Path:
        return Path(self.submission_path).resolve().parent

    def before_grading(self, config):
        """Runs in the submission directory after otter copied the autograder's files into it and
        before the kernel starts."""
        here = self._submission_dir
        source = here.parent / "source"
        self._labels, self._notes, self._report = None, [], []
        for path in (here / LABELS, source / "files" / LABELS, source / LABELS):
            if path.is_file():
                if self._labels is None:
                    with open(path, newline="") as f:
                        self._labels = {r["id"]: float(r["formation_energy_per_atom"]) for r in csv.DictReader(f)}
                path.unlink()
        for name in SHIPPED:  # otter keeps a submission's own directories: ours must win
            ours, theirs = source / "files" / name, here / name
            if ours.is_dir():
                shutil.rmtree(theirs, ignore_errors=True)
                shutil.copytree(ours, theirs)
            elif ours.is_file():
                shutil.copy(ours, theirs)
        self._tests = {str(p): p.read_text() for p in sorted((here / "tests").glob("*.py"))}
        # The autograder's own copy (Gradescope's /autograder/source/tests) is readable by the kernel
        # too: off disk until grading is over.
        self._source_tests = {str(p): p.read_text() for p in sorted((source / "tests").glob("*.py"))}
        for path in self._source_tests:
            Path(path).unlink()

    def before_execution(self, submission):
        if isinstance(submission, str):  # a .py submission: otter wraps it in one cell later
            return submission
        submission.cells.insert(0, nbformat.v4.new_code_cell(GUARD_CELL.format(
            **{key: int(self._config(key, default)) for key, default in LIMITS.items()},
            test_paths=sorted(getattr(self, "_tests", {})), guarded=GUARDED, timeout_marker=TIMEOUT_MARKER,
            restored_marker=RESTORED_MARKER)))
        return submission

    def after_grading(self, results):
        self._report = getattr(self, "_report", [])
        hidden = getattr(self, "_tests", {}) | getattr(self, "_source_tests", {})
        for path, text in hidden.items():  # leave the directories as otter made them
            Path(path).write_text(text)
        self._score_mae(results)
        nb = getattr(results, "notebook", None)
        for cell in getattr(nb, "cells", []):
            first = (cell.get("source", "").strip().splitlines() or [""])[0][:70]
            for out in cell.get("outputs", []):
                if out.get("ename") == "TimeoutError" and TIMEOUT_MARKER in out.get("evalue", ""):
                    self._report.append(f"Time limit: the cell starting {first!r} was stopped: {out['evalue']}")
                if RESTORED_MARKER in out.get("text", ""):
                    self._report.append(out["text"].strip())
        if self._report:  # otter prints plugin reports on stdout only: this is what students see
            results.set_output("\n".join(self._report))

    def _mae(self) -> tuple[float | None, str]:
        """The test MAE of the predictions the notebook saved, or None and why not."""
        if not self._labels:
            return None, "the held-out labels are missing from the autograder: tell the course staff"
        path = self._submission_dir / PREDICTIONS
        try:
            with open(path, newline="") as f:
                pred = {r["id"]: float(r["prediction"]) for r in csv.DictReader(f)}
        except FileNotFoundError:
            return None, (f"{PREDICTIONS} not found: the training cell of part 4b writes it with "
                          "cgcnn_utils.save_predictions; run the notebook top to bottom")
        except (KeyError, ValueError, TypeError) as err:
            return None, f"{PREDICTIONS} is not an id,prediction table of numbers ({err})"
        missing = sorted(set(self._labels) - set(pred))
        if missing:
            return None, f"{PREDICTIONS} has no prediction for {len(missing)} test crystals, e.g. {missing[0]}"
        err = sum(abs(pred[i] - y) for i, y in self._labels.items()) / len(self._labels)
        if not math.isfinite(err):
            return None, f"the predictions in {PREDICTIONS} are not all finite numbers"
        return err, ""

    def _score_mae(self, results):
        question = self._config("mae_question", "q4b")
        if question not in getattr(results, "results", {}):
            return
        test_file = results.results[question]
        mae, why = self._mae()
        full = float(self._config("mae_full", 0.0))
        factors = list(self._config("mae_factors", []))
        hidden = [k for k, r in enumerate(test_file.test_case_results) if r.test_case.hidden]
        failed = [r for r in test_file.test_case_results if not r.test_case.hidden and not r.passed]
        if mae is not None and failed:  # e.g. predictions that the notebook's model did not make
            lines = str(failed[0].message or "").strip().splitlines() or ["(no message)"]
            why, mae = f"a public check of {question} failed: {lines[-1]}", None
        for k, factor in zip(hidden, factors):
            r = test_file.test_case_results[k]
            limit = factor * full
            if mae is None:
                message, passed = f"not scored: {why}", False
            else:
                passed = mae <= limit
                message = f"test MAE {mae:.4f} eV/atom {'<=' if passed else '>'} {limit:.3f} eV/atom"
            test_file.test_case_results[k] = dataclasses.replace(r, message=None if passed else message,
                                                                 passed=passed)
        self._report.append(f"Part {question}: " + (f"test MAE {mae:.4f} eV/atom" if mae is not None else why))

    def generate_report(self):
        return "\n".join(getattr(self, "_report", []))
