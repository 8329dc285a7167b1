"""The student's round trip, end to end: the student release filled in with the solution's code and
with written answers, run top to bottom in a Jupyter kernel (nbclient) including the export cell (Part
5's experiments stated short: SHORT_EXPERIMENTS), on a machine with no LaTeX, pandoc or browser; the
zip it writes graded as Gradescope grades it (30/30), and the written answers readable by the course
staff. Also: grading a folder of submissions with
`python build.py grade`.

The round trip and its grading run once per test session (`roundtrip`, `graded_roundtrip`): the
grading is the Gradescope-limits run that tests/test_gradescope.py checks (half a CPU, 768 MB), started
in the background when the run ends.
Everything uses the committed releases (student/, solutions/, autograder/), not a fresh build.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement

from conftest import GRADESCOPE_RUN, ROOT

import build
import submissions as S
from benchmarks import gradescope_limits
from test_assignment import POINTS as POINTS_PER_QUESTION

NB = build.NB_NAME
POINTS = sum(POINTS_PER_QUESTION.values())  # 30: the autograded parts
STUDENT, SOLUTION = ROOT / "student" / NB, ROOT / "solutions" / f"{build.NAME}_solution.ipynb"
# What a student types for the hand-graded questions: distinctive, to be found again downstream.
ANSWERS = {
    "Question 5": "ROUNDTRIP-Q5: the gated convolution wins; without convolutions only composition is seen.",
    "Question 6": "ROUNDTRIP-Q6: sums over neighbours do not depend on the order of atoms in the CIF.",
}
NOT_HERE = ["pandoc", "xelatex", "pdflatex", "chromium", "chromium-browser", "google-chrome"]
_memo: dict = {}  # one round trip and one grading run per session, shared with test_gradescope.py
# Part 5's experiments in the round trip, stated short: two seeds of every variant, two epochs on 100
# crystals (the notebook's 15 on 400, three seeds, are four times the main training; grading skips Part 5,
# and the build's execution of the solution runs it in full). Each line must be in the notebook as written.
SHORT_EXPERIMENTS = {"EXPERIMENT_EPOCHS, EXPERIMENT_TRAIN = 15, 400": "EXPERIMENT_EPOCHS, EXPERIMENT_TRAIN = 2, 100",
                     "EXPERIMENT_SEEDS = (0, 1, 2)": "EXPERIMENT_SEEDS = (0, 1)"}


def first_line(cell) -> str:
    return next((line for line in cell.source.splitlines() if line.strip()), "")


def fill_solution(student_nb, solution_nb) -> tuple[nbformat.NotebookNode, list[str]]:
    """The student notebook with each stub cell replaced by the solution cell that starts with the
    same line (e.g. `def atom_features(...)`); returns it and the first lines replaced."""
    nb = nbformat.from_dict(json.loads(json.dumps(student_nb)))
    solutions = {}
    for cell in solution_nb.cells:
        if cell.cell_type == "code":
            solutions.setdefault(first_line(cell), cell.source)
    replaced = []
    for cell in nb.cells:
        source = solutions.get(first_line(cell)) if cell.cell_type == "code" else None
        if source is not None and source != cell.source:
            cell.source = source
            replaced.append(first_line(cell))
    return nb, replaced


def shorten_experiments(nb) -> None:
    """Part 5 as SHORT_EXPERIMENTS states it (each a line's start, before its comment)."""
    for line, short in SHORT_EXPERIMENTS.items():
        cells = [c for c in nb.cells if c.cell_type == "code"
                 and any(code.startswith(line) for code in c.source.splitlines())]
        assert len(cells) == 1, f"Part 5 no longer has a line starting {line!r}: see SHORT_EXPERIMENTS"
        cells[0].source = re.sub(rf"(?m)^{re.escape(line)}", short, cells[0].source)


def fill_answers(nb, answers: dict[str, str]) -> None:
    """Type the written answers into the answer cell that follows each question."""
    for question, text in answers.items():
        at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and f"**{question}" in c.source)
        cell = nb.cells[at + 1]
        assert cell.cell_type == "markdown" and "otter_answer_cell" in cell.metadata.get("tags", []), question
        cell.source = text


def offline_env(tmp: Path) -> dict:
    """The environment of a laptop without LaTeX, pandoc or a browser: PATH without the directories
    that hold them, and no browser for playwright."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any(shutil.which(tool, path=d) for tool in NOT_HERE)]
    (tmp / "no-browsers").mkdir(exist_ok=True)
    return {**os.environ, "PATH": os.pathsep.join(keep), "PLAYWRIGHT_BROWSERS_PATH": str(tmp / "no-browsers")}


def run_like_a_student(path: Path, env: dict, timeout: int = 900) -> nbformat.NotebookNode:
    """Run every code cell in order in one kernel, as "Run All" does; before the export cell, save
    the notebook with its outputs ("Save your notebook first"). Raises on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    export = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "grader.export(" in c.source)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.reset_execution_trackers()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if index == export:
                nbformat.write(nb, path)
            client.execute_cell(cell, index)
    return nb


def once(key: str, make):
    """`make()` once per session; a failure is kept too, and raised again, not rerun."""
    if key not in _memo:
        try:
            _memo[key] = make()
        except Exception as err:
            _memo[key] = err
            raise
    if isinstance(_memo[key], Exception):
        pytest.fail(f"{key} failed earlier in this session: {_memo[key]!r}"[:3000])
    return _memo[key]


def roundtrip(tmp_path_factory, request=None) -> dict:
    """The student's round trip, once per session: {work, zips, zip, nb (as run), replaced, env, seconds}.

    With the `request` of a fixture whose session has a test of the Gradescope grading (GRADESCOPE_RUN), the
    grading of its zip starts as soon as the run ends, beside the tests that need only the run (it takes
    four minutes of wall-clock time at half a CPU; those tests come first: tests/conftest.py)."""
    def make():
        work = tmp_path_factory.mktemp("roundtrip") / "student"
        shutil.copytree(ROOT / "student", work)
        nb, replaced = fill_solution(nbformat.read(STUDENT, as_version=4), nbformat.read(SOLUTION, as_version=4))
        shorten_experiments(nb)
        fill_answers(nb, ANSWERS)
        nbformat.write(nb, work / NB)
        env = offline_env(work.parent)
        start = time.perf_counter()
        ran = run_like_a_student(work / NB, env)
        zips = sorted(work.glob(f"{build.NAME}_*.zip"))
        trip = {"work": work, "zips": zips, "zip": zips[-1] if zips else None, "nb": ran,
                "replaced": replaced, "env": env, "seconds": time.perf_counter() - start}
        # in the background only where its CPU time is its cgroup's: else the other tests' would count
        if (trip["zip"] and request is not None and gradescope_limits.cgroup_unavailable() is None
                and any(GRADESCOPE_RUN in item.fixturenames for item in request.session.items)):
            _memo["grading"] = _background.submit(grade_like_gradescope, trip["zip"],
                                                  tmp_path_factory.mktemp("gradescope"))
        return trip
    return once("roundtrip", make)


_background = ThreadPoolExecutor(1, thread_name_prefix="gradescope-grading")


def grade_like_gradescope(upload: Path, work: Path) -> gradescope_limits.Measurement:
    """`upload` graded in Gradescope's layout as its default container runs it: a CPU quota of half a
    CPU with every core visible, inside a memory cgroup of 768 MB, page caches dropped first. Where no
    CPU cgroup can be made, on one core (taskset -c 0) in the memory cgroup; without cgroups on one core
    with no limit (the Measurement's `notes` say why)."""
    limit = None if gradescope_limits.cgroup_unavailable() else gradescope_limits.GRADESCOPE_MB
    half = limit is not None and gradescope_limits.cgroup_unavailable("cpu") is None
    label = ("0.5 CPU" if half else "1 core") + (f" + {limit} MB" if limit else "")
    return gradescope_limits.measure(upload, work, label, cpus=None if half else "0", limit_mb=limit,
                                     cpu_share=0.5 if half else None)


def graded_roundtrip(tmp_path_factory, request=None) -> gradescope_limits.Measurement:
    """The round-trip zip graded as Gradescope's default container grades it (grade_like_gradescope),
    once per session: the grading the round trip started, or one started now."""
    def make():
        trip = roundtrip(tmp_path_factory, request)
        assert trip["zip"], "the export cell wrote no zip"
        started = _memo.get("grading")
        m = (started.result() if started is not None
             else grade_like_gradescope(trip["zip"], tmp_path_factory.mktemp("gradescope")))
        print(f"\nround trip {trip['seconds']:.0f} s; Gradescope run: {m.line()}")
        return m
    return once("graded", make)


@pytest.fixture(scope="module")
def trip(tmp_path_factory, request):
    return roundtrip(tmp_path_factory, request)


@pytest.fixture(scope="module")
def gradescope_graded(tmp_path_factory, request):
    return graded_roundtrip(tmp_path_factory, request)


def test_every_stub_is_filled_from_the_solution(trip):
    replaced = trip["replaced"]
    assert len(replaced) == 9, replaced  # the eight graded parts students write, and Part 6's train_classifier
    assert any(line.startswith("CLASSIFIER_EPOCHS") for line in replaced)
    assert any(line.startswith("def atom_features") for line in replaced)
    assert any(line.startswith("class CGCNN") for line in replaced)


def test_export_works_offline_and_writes_one_zip(trip):
    for tool in NOT_HERE:
        assert shutil.which(tool, path=trip["env"]["PATH"]) is None, f"{tool} is on the kernel's PATH"
    assert len(trip["zips"]) == 1, trip["zips"]
    export = next(c for c in trip["nb"].cells if c.cell_type == "code" and "grader.export(" in c.source)
    assert not [o for o in export.outputs if o.output_type == "error"]
    with zipfile.ZipFile(trip["zip"]) as z:
        names = z.namelist()
        assert z.testzip() is None
    assert NB in names and ".OTTER_LOG" in names, names
    assert not [n for n in names if n.endswith(".pdf")], "pdf: false in the config: no PDF is made"


def test_the_zip_holds_the_saved_notebook_with_outputs_and_answers(trip):
    """Questions 5 and 6 are graded by hand from the notebook in the zip: it must hold the student's
    answers and the outputs they discuss (the experiments' table, the plots)."""
    with zipfile.ZipFile(trip["zip"]) as z:
        nb = nbformat.reads(z.read(NB).decode(), as_version=4)
    assert nb.metadata["otter"]["assignment_name"] == build.NAME
    text = "\n".join(c.source for c in nb.cells)
    for answer in ANSWERS.values():
        assert answer in text
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 4, "the saved notebook shows its plots"
    experiments = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("variants = {"))
    assert experiments.outputs, "the experiments of Part 5 ran and their output was saved"


def test_staff_read_the_written_answers_as_html_without_latex(trip, monkeypatch):
    """The route for questions 5 and 6: nbconvert's HTML export of the notebook in the zip (no
    LaTeX, pandoc or browser needed), with the answers, the experiments' output and the plots."""
    from nbconvert import HTMLExporter
    monkeypatch.setenv("PATH", trip["env"]["PATH"])
    with zipfile.ZipFile(trip["zip"]) as z:
        nb = nbformat.reads(z.read(NB).decode(), as_version=4)
    html, _ = HTMLExporter().from_notebook_node(nb)
    for answer in ANSWERS.values():
        assert answer in html
    assert html.count("data:image/png;base64") >= 4


@pytest.mark.grading
def test_the_exported_zip_gets_full_marks_on_gradescope(gradescope_graded):
    m = gradescope_graded
    assert m.results is not None, f"no results.json: {m.error}"
    scores = build.scores(m.results)
    assert sum(scores.values()) == pytest.approx(POINTS), scores
    assert all(t.get("score", 0) == t.get("max_score", 0) for t in m.results["tests"] if "max_score" in t)
    assert m.results["output"] == "", f"nothing to report for a clean run: {m.results['output']}"


# The requirement files' pins (the Colab setup cell: tests/test_install.py) ------------------------

def _pins(path: Path) -> dict[str, Requirement]:
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            req = Requirement(line)
            reqs[req.name.lower()] = req
    return reqs


# Grading a folder of submissions locally ------------------------------------------------------------

def test_build_grade_writes_one_csv_row_per_submission(trip, tmp_path):
    """`python build.py grade DIR scores.csv` (the flat folder the command has always taken) on the
    round trip's zip with the training cut to the catalogue's short recipe (23: all but 4b, whose full
    marks the Gradescope grading of this zip shows), the untouched notebook (0), a notebook with only the
    pooling part (4) and an unreadable one (status error with the reason, no scores); other files are
    left alone. Gradescope's export layout and gradings side by side: tests/test_bulk_grading.py."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    with zipfile.ZipFile(trip["zip"]) as z, zipfile.ZipFile(folder / "a_full_solution.zip", "w") as short:
        for info in z.infolist():
            data = z.read(info)
            if info.filename.endswith(".ipynb"):
                nb = nbformat.reads(data.decode(), as_version=4)
                S.shorten(nb)
                data = nbformat.writes(nb).encode()
            short.writestr(info, data)
    shutil.copy(STUDENT, folder / "b_untouched.ipynb")
    solution = nbformat.read(SOLUTION, as_version=4)
    solution.cells = [c for c in solution.cells if first_line(c).startswith("def mean_pool")]  # mean and max
    nbformat.write(fill_solution(nbformat.read(STUDENT, as_version=4), solution)[0], folder / "c_pooling_only.ipynb")
    (folder / "d_unreadable.ipynb").write_text("{ not a notebook")
    (folder / "notes.txt").write_text("not a submission")
    done = subprocess.run([sys.executable, "build.py", "grade", str(folder), str(tmp_path / "scores.csv")],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = {r["submission"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["a_full_solution.zip", "b_untouched.ipynb", "c_pooling_only.ipynb", "d_unreadable.ipynb"]
    assert rows["b_untouched.ipynb"]["name"] == "b_untouched"  # a flat folder names the student by the file
    errors = {name: r["reason"] for name, r in rows.items() if r["status"] != "graded"}
    assert list(errors) == ["d_unreadable.ipynb"] and "could not be read" in errors["d_unreadable.ipynb"], errors
    assert rows["d_unreadable.ipynb"]["status"] == "error"
    header = list(rows["a_full_solution.zip"])
    assert header == ["submission", "name", "email", "sid", *POINTS_PER_QUESTION, "total", "possible", "test_mae",
                      "status", "reason", "results"]
    totals = {name: float(r["total"]) for name, r in rows.items()}
    assert totals == {"a_full_solution.zip": 23, "b_untouched.ipynb": 0, "c_pooling_only.ipynb": 4,
                      "d_unreadable.ipynb": 0}, rows
    assert float(rows["c_pooling_only.ipynb"]["q3"]) == 4
    assert not re.search(r"\d", "".join(rows["d_unreadable.ipynb"][q] for q in POINTS_PER_QUESTION))


def test_export_is_refused_on_colab(tmp_path, monkeypatch):
    """otter 7's `grader.export` raises on Colab ("not compatible with Google Colab"), and a Colab
    notebook is not saved to the file the export would read anyway: on Colab students download the
    notebook (File > Download > .ipynb) and upload that file to Gradescope, which grades a bare
    .ipynb like a zip (tests/test_gradescope.py grades one)."""
    import otter.check.utils

    class ColabShell:
        def __str__(self):
            return "<google.colab._shell.Shell object>"

    shutil.copytree(ROOT / "student" / "tests", tmp_path / "tests")
    shutil.copy(STUDENT, tmp_path / NB)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(otter.check.utils, "get_ipython", lambda: ColabShell())
    import otter
    grader = otter.Notebook(NB)
    with pytest.raises(RuntimeError, match="Google Colab"):
        grader.export(pdf=False)
    assert not list(tmp_path.glob("*.zip"))
