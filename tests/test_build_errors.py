"""A failed build names its cause: a syntax error with its cell, a check that fails on the solution
with its assertion message and the cell that raised, otter assign's own error with its full log
kept, a calibration measured on another recipe or data set with the command to run. Each breakage
is made in a copy of assignment/ (build.ROOT, ASSIGNMENT, MASTER, CALIBRATION and FAILURES point
into it), so the repository is untouched."""

import copy
import json
import re
import shutil
import threading
from types import SimpleNamespace

import nbformat
import pytest

import build
import submissions as S
from conftest import ASSIGNMENT


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of assignment/ that the build reads; what a failure keeps goes to its build-failures/."""
    work = tmp_path / "assignment"
    shutil.copytree(ASSIGNMENT, work, ignore=shutil.ignore_patterns(".cache", ".tmp", "*.egg-info", "__pycache__"))
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "ASSIGNMENT", work)
    monkeypatch.setattr(build, "MASTER", work / build.MASTER.name)
    monkeypatch.setattr(build, "CALIBRATION", work / build.CALIBRATION.name)
    monkeypatch.setattr(build, "FAILURES", tmp_path / "build-failures")
    return work


def forbid(monkeypatch, *steps):
    """Make the build fail the test if it reaches one of these steps (it should stop before them)."""
    for step in steps:
        monkeypatch.setattr(build, step, lambda *a, _step=step, **k: pytest.fail(f"the build reached {_step}"))


class _Kernel:
    """The execution's kernel process as `build.end_execution` kills it."""

    def __init__(self):
        self.killed = threading.Event()

    def kill(self):
        self.killed.set()


def executing_until_ended(monkeypatch) -> _Kernel:
    """build.execute replaced by an execution that runs until its kernel is killed, as the build must
    kill it when a grading beside it fails; returns that kernel."""
    kernel = _Kernel()

    def execute(notebook, term="", timeout=1800, running=None):
        running.append(SimpleNamespace(km=SimpleNamespace(provisioner=SimpleNamespace(process=kernel))))
        if not kernel.killed.wait(900):
            raise AssertionError("the build let the execution run on after its grading failed")
        raise build.BuildError("executing the notebook failed: DeadKernelError: Kernel died")
    monkeypatch.setattr(build, "execute", execute)
    return kernel


def edit_master(change):
    nb = nbformat.read(build.MASTER, as_version=nbformat.NO_CONVERT)
    change(nb)
    nbformat.write(nb, build.MASTER)


def code_cell(nb, start: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(start)]
    return cell


def replace_in(nb, start: str, old: str, new: str):
    cell = code_cell(nb, start)
    assert cell.source.count(old) == 1, f"{old!r} is not once in the cell starting {start!r}"
    cell.source = cell.source.replace(old, new)


def stamp_calibration():
    """The copy's calibration.json as if measured on the copy's recipe and data."""
    calibration = json.loads(build.CALIBRATION.read_text())
    calibration["fingerprint"] = build.fingerprint()
    build.CALIBRATION.write_text(json.dumps(calibration, indent=1) + "\n")


def failure_of(run) -> str:
    with pytest.raises(build.BuildError) as err:
        run()
    return str(err.value)


def test_a_syntax_error_in_a_solution_cell_is_named_with_its_cell_before_otter_runs(tree, monkeypatch):
    forbid(monkeypatch, "otter_assign", "grade")
    edit_master(lambda nb: replace_in(nb, "class SharedConv", "def forward(self, atom_fea", "def forward(self,, atom_fea"))
    message = failure_of(build.build)
    assert message.startswith("SyntaxError: invalid syntax"), message
    assert "in the solution cell of q2a starting `class SharedConv(nn.Module):`" in message, message
    assert "`def forward(self,, atom_fea, nbr_fea, nbr_idx):`" in message, "the line in error is shown"
    # what IPython runs compiles: a magic is no syntax error
    build.check_code(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%time x = 1")]))


def test_otter_assign_rejecting_the_master_gives_otters_last_line_and_keeps_its_log(tree, monkeypatch):
    forbid(monkeypatch, "grade")

    def drop_first_end_solution(nb):
        ends = [i for i, c in enumerate(nb.cells) if c.cell_type == "raw" and c.source.strip() == "# END SOLUTION"]
        del nb.cells[ends[0]]  # q1a's: its tests now open inside its solution block

    edit_master(drop_first_end_solution)
    message = failure_of(build.build)
    text, log_line = message.rsplit("\n", 1)
    assert text.startswith("otter assign rejected the master notebook cgcnn_perovskites.ipynb"), text
    assert "Found a begin tests cell inside a solution block (question q1a" in text, text
    assert len(text) < 600 and "Traceback" not in text, text
    log = build.ROOT / re.fullmatch(r"\s*full log: (\S+) .*", log_line).group(1)
    assert log.is_file() and "Traceback" in log.read_text() and "AssignNotebookFormatException" in log.read_text()
    assert (log.parent / build.MASTER.name).is_file(), "the notebook as otter read it is kept beside the log"


def test_the_committed_calibration_was_measured_on_this_recipe_and_data():
    build.check_calibration(json.loads(build.CALIBRATION.read_text()))


@pytest.mark.parametrize("change,what,named", [
    ("epochs", "the training recipe", "the cell starting `RADIUS, MAX_NUM_NBR = "),
    ("learning rate", "the training recipe", "cgcnn_utils.py: fit"),
    ("data", "the data set", "data/perovskites"),
])
def test_a_stale_calibration_is_refused_before_anything_is_built(tree, monkeypatch, change, what, named):
    forbid(monkeypatch, "otter_assign", "grade")
    if change == "epochs":
        edit_master(lambda nb: replace_in(nb, "RADIUS, MAX_NUM_NBR", "BATCH_SIZE, EPOCHS = 64, 60",
                                          "BATCH_SIZE, EPOCHS = 64, 30"))
    elif change == "learning rate":
        utils = tree / "cgcnn_utils.py"
        assert utils.read_text().count("lr: float = 3e-3") == 1
        utils.write_text(utils.read_text().replace("lr: float = 3e-3", "lr: float = 1e-3"))
    else:
        id_prop = tree / "data" / "perovskites" / "id_prop.csv"
        first, rest = id_prop.read_text().split("\n", 1)
        crystal, label = first.split(",")
        id_prop.write_text(f"{crystal},{float(label) + 0.01}\n{rest}")
    message = failure_of(build.build)
    assert message.startswith(f"{what} changed since calibration (differs or is new: {named}"), message
    assert "run `python build.py calibrate`" in message


def test_edits_outside_the_recipe_keep_the_calibration(tree):
    """Markdown, a question, a public test, a plot cell, the Colab set-up cell, comments and docstrings
    of the solution, a plot of the support module: none is what the model is trained with."""
    def edit(nb):
        markdown = next(c for c in nb.cells if c.cell_type == "markdown")
        markdown.source += "\n\nAnother sentence."
        replace_in(nb, "class GatedConv", "residual connection, Eq. 4", "residual connection (edited), Eq. 4")
        replace_in(nb, "def mean_pool", "return summed / counts[:, None]", "return summed / counts[:, None]  # a comment")
        tests = [c for c in nb.cells if c.cell_type == "code" and "# BEGIN TEST CONFIG" in c.source]
        tests[0].source += "\n    assert True, 'one more public assertion'"
        code_cell(nb, "# The polymorphs").source += "\nprint('one more plot line')"
        code_cell(nb, "# Setup for Google Colab").source += "\nprint('set up')"
    before = build.fingerprint()
    edit_master(edit)
    utils = tree / "cgcnn_utils.py"
    utils.write_text(utils.read_text().replace("def plot_parity(", "def _unused():\n    return 1\n\n\ndef plot_parity(", 1))
    assert build.fingerprint() == before


def test_the_notebooks_text_quotes_the_recipe_from_its_code(tree):
    """The text's numbers of the recipe follow its code: EPOCHS changed in the settings, the text says so."""
    thresholds = json.loads(build.CALIBRATION.read_text())["thresholds"]
    text = "\n".join(c.source for c in nbformat.reads(build.fill(build.MASTER.read_text(), thresholds), 4).cells)
    assert "learning rate 3e-3 with cosine decay, 60 epochs" in text and "batches of 64." in text
    edit_master(lambda nb: replace_in(nb, "RADIUS, MAX_NUM_NBR", "BATCH_SIZE, EPOCHS = 64, 60",
                                      "BATCH_SIZE, EPOCHS = 32, 30"))
    text = "\n".join(c.source for c in nbformat.reads(build.fill(build.MASTER.read_text(), thresholds), 4).cells)
    assert "learning rate 3e-3 with cosine decay, 30 epochs" in text and "batches of 32." in text
    assert "60 epochs" not in text and not re.search(r"__[A-Z][A-Z0-9_]*__", text)


def test_a_cell_that_fails_when_the_notebook_is_executed_is_named_and_the_notebook_kept(tree, tmp_path):
    path = tmp_path / "run" / "small.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                                   nbformat.v4.new_code_cell("raise ValueError('boom')")]), path)
    message = failure_of(lambda: build.execute(path))
    assert message.startswith("executing small.ipynb failed: ValueError: boom in the cell starting "
                              "`raise ValueError('boom')`"), message
    kept = build.FAILURES / "execution" / "small.ipynb"
    assert kept.is_file() and "ValueError" in kept.read_text()


@pytest.mark.grading
def test_a_check_failing_on_the_solution_is_named_with_its_assertion_and_the_results_kept(tree):
    """One grading with the short recipe: q2a's solution broken so that its public small example
    fails, and the cell raising once SharedConv is defined."""
    def damage(nb):
        replace_in(nb, "class SharedConv", "summed + self.fc_self(atom_fea)", "summed - self.fc_self(atom_fea)")
        code_cell(nb, "class SharedConv").source += "\n\nSharedConv.check_me_later()"
        S.shorten(nb)  # the catalogue's short recipe: its 4b then fails, not the point

    edit_master(damage)
    stamp_calibration()  # the broken solution is the recipe now: the test is about the grading
    message = failure_of(build.build)
    points = build.question_points(nbformat.read(build.MASTER, as_version=4))
    assert message.startswith("the solution scores "), message
    assert re.search(rf"\n  q2a 0/{points['q2a']:g}:\n +test_small_example: got \[\[.*\], expected \[\[.*\]\] "
                     r"\(within 1e-4\)", message), message
    assert ("AttributeError: type object 'SharedConv' has no attribute 'check_me_later' in the solution cell of q2a "
            "starting `class SharedConv(nn.Module):`") in message, message
    kept = build.ROOT / re.search(r"are kept in (\S+)/", message).group(1)
    results = json.loads((kept / "results.json").read_text())
    assert build.scores(results)["q2a"] == 0
    executed = nbformat.read(kept / "notebook.ipynb", as_version=4)
    assert any(o.get("ename") == "AttributeError" for c in executed.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("results,missing", [
    ({"score": 0, "output": "SandboxError: the grading user could read /repo", "tests": []},  # 0/0
     "q1a, q1b, q1c, q2a, q2b, q3, q4a, q4b"),
    ({"score": 2, "tests": [{"name": "q1a", "score": 2, "max_score": 2}]},  # the other parts not reported
     "q1b, q1c, q2a, q2b, q3, q4a, q4b"),
])
def test_an_autograder_that_cannot_grade_fails_the_build_and_replaces_nothing(tree, monkeypatch, results, missing):
    """0/0 is not full marks: a grading that reports fewer parts or points than the master's fails the
    build (as a grader that could not start did, counted as full marks), and no release is replaced."""
    monkeypatch.setattr(build, "grade", lambda *args, **kwargs: results)
    forbid(monkeypatch, "_swap")
    kernel = executing_until_ended(monkeypatch)
    message = failure_of(build.build)
    assert kernel.killed.is_set(), "the execution beside the failed grading was not ended"
    assert message.startswith("grading the solution reported "), message
    assert "not the master's 30 for q1a, q1b, q1c, q2a, q2b, q3, q4a, q4b" in message, message
    assert f"(missing: {missing})" in message, message


def add_test(question: str, source: str, points: float, hidden: bool = True):
    """A test cell added to the master's `question`, before its # END TESTS."""
    def edit(nb):
        part, at = None, None
        for index, cell in enumerate(nb.cells):
            found = re.search(r"^name: (\w+)", cell.source, re.M) if "BEGIN QUESTION" in cell.source else None
            part = found.group(1) if found else part
            if part == question and cell.cell_type == "raw" and cell.source.strip() == "# END TESTS":
                at = index
                break
        config = f'""" # BEGIN TEST CONFIG\npoints: {points:g}\nhidden: {str(hidden).lower()}\n""" # END TEST CONFIG\n'
        nb.cells.insert(at, nbformat.v4.new_code_cell(config + source))
    edit_master(edit)


SCALAR_TEST = """def test_a_scalar_distance(gaussian_expand, solution):
    \"\"\"One distance, not in an array, gives one row of Gaussians.\"\"\"
    import numpy as np
    got, want = np.asarray(gaussian_expand(2.5)), solution.gaussian_expand(2.5)
    assert got.shape == want.shape, f"shape {got.shape} for one distance, expected {want.shape}"
"""


@pytest.mark.grading
def test_a_hidden_test_that_the_solution_fails_stops_the_build_naming_it(tree, monkeypatch):
    """One grading of the solution (the short recipe): the hidden test added to q1c (the otter way, in the master) is run,
    fails on the solution, and the build stops, ending the execution of the solution beside it, before
    it replaces a release."""
    add_test("q1c", SCALAR_TEST.replace("assert got.shape == want.shape", "assert got.shape == (40,)"), 0)
    edit_master(S.shorten)  # 4b's 7 points lost too, and named after q1c's test
    stamp_calibration()
    forbid(monkeypatch, "_swap")
    kernel = executing_until_ended(monkeypatch)
    message = failure_of(build.build)
    assert kernel.killed.is_set(), "the execution beside the failed grading was not ended"
    assert message.startswith("the solution scores 21/30:\n  the solution fails q1c's hidden test "
                              "test_a_scalar_distance (the test cell of q1c defining test_a_scalar_distance, cell "), message
    assert "cgcnn_perovskites.ipynb): shape (41,) for one distance, expected (41,)" in message, message


@pytest.mark.grading
def test_a_hidden_test_added_in_the_master_is_graded_and_costs_exactly_its_points(tree, tmp_path):
    """q1c made worth 3 points, not all or nothing, with a third test (1 point, hidden) written in the
    master: the autograder reports it by name for the solution, and a notebook that breaks only what it
    tests (a scalar distance) loses exactly that point. Both graded with the short recipe (2 epochs):
    4b is not what this is about."""
    def scored_per_test(nb):
        (config,) = [c for c in nb.cells if c.cell_type == "raw" and "name: q1c" in c.source]
        config.source = config.source.replace("points: 2", "points: 3").replace("all_or_nothing: true", "all_or_nothing: false")
    edit_master(scored_per_test)
    add_test("q1c", SCALAR_TEST, 1)
    stamp_calibration()
    thresholds = json.loads(build.CALIBRATION.read_text())["thresholds"]
    zip_path, dist = build.assemble(tmp_path / "assemble", thresholds)
    solution = nbformat.read(dist / "autograder" / build.MASTER.name, as_version=4)
    S.shorten(solution)  # the catalogue's short recipe: its 4b then fails, not the point
    broken = copy.deepcopy(solution)
    replace_in(broken, "def gaussian_expand", "d = np.asarray(distances, dtype=np.float64)[..., None]",
               "d = np.atleast_1d(np.asarray(distances, dtype=np.float64))[..., None]")
    got = {}
    for name, nb in (("solution", solution), ("broken", broken)):
        path = tmp_path / name / build.MASTER.name
        path.parent.mkdir()
        nbformat.write(nb, path)
        got[name] = build.grade(zip_path, path, tmp_path / f"{name}-results")
    assert build.solution_test_failures(got["solution"], dist / "autograder" / "tests") == []  # every test, by name, passed
    assert got["solution"]["extra_data"]["tests"]["q1c"]["test_a_scalar_distance"] == "passed"
    assert got["broken"]["extra_data"]["tests"]["q1c"]["test_a_scalar_distance"].startswith(
        "failed: shape (1, 41) for one distance, expected (41,)")
    solution_scores, broken_scores = build.scores(got["solution"]), build.scores(got["broken"])
    assert solution_scores["q1c"] == 3
    assert broken_scores == {**solution_scores, "q1c": 2}, broken_scores
