"""The grading plugin (assignment/cgcnn_grading.py) on its own, in seconds: its guard cell in a real
IPython shell, and its file handling and 4b scoring in a directory laid out as otter lays it out.
The catalogue of submissions (test_submissions.py) covers the same through the real autograder."""

import csv
import dataclasses
import os

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from otter.test_files import abstract_test as otter_tests

import cgcnn_grading as grading
from conftest import ASSIGNMENT


@pytest.fixture
def shell(tmp_path):
    """An IPython shell with the guard cell run first, as the plugin makes the kernel do."""
    test_file = tmp_path / "q1a.py"
    test_file.write_text("name = 'q1a'\n")
    sh = InteractiveShell.instance()
    cell = grading.GUARD_CELL.format(cell_seconds=2, notebook_seconds=4, check_seconds=2, grading_seconds=8,
                                     test_paths=[str(test_file)],
                                     guarded=grading.GUARDED, timeout_marker=grading.TIMEOUT_MARKER,
                                     restored_marker=grading.RESTORED_MARKER)
    import otter.execute.checker
    create_test_file = otter.execute.checker.create_test_file
    assert sh.run_cell(cell).success
    yield sh, test_file
    otter.execute.checker.create_test_file = create_test_file
    import signal
    signal.alarm(0)
    sh.events.callbacks["pre_run_cell"].clear()
    sh.events.callbacks["post_run_cell"].clear()
    sh.input_transformers_post.clear()
    InteractiveShell.clear_instance()


def test_endless_cell_is_stopped_and_the_next_cell_runs(shell):
    sh, _ = shell
    result = sh.run_cell("while True:\n    pass")
    assert isinstance(result.error_in_exec, TimeoutError)
    assert grading.TIMEOUT_MARKER in str(result.error_in_exec)
    assert sh.run_cell("x = 1 + 1").success and sh.user_ns["x"] == 2


def test_a_cell_that_swallows_the_timeout_is_stopped_again(shell):
    sh, _ = shell
    result = sh.run_cell("import time\nfor _ in range(1):\n    try:\n        time.sleep(60)\n"
                         "    except TimeoutError:\n        pass\ntime.sleep(60)")
    assert isinstance(result.error_in_exec, TimeoutError)


def test_notebook_budget_limits_later_cells(shell):
    sh, _ = shell
    sh.run_cell("import time\ntime.sleep(60)")  # stopped at 2 s per cell
    sh.run_cell("time.sleep(60)")  # stopped at 2 s: 4 s used of the notebook's 4
    result = sh.run_cell("time.sleep(3)")  # gets the 1 s minimum
    assert isinstance(result.error_in_exec, TimeoutError)


def test_checks_have_their_own_limit_and_all_end_within_the_grading_budget(shell):
    sh, _ = shell
    import time
    started = time.monotonic()
    result = sh.run_cell("import time\ntime.sleep(60)  # grader.check(")  # a check: 2 s
    assert isinstance(result.error_in_exec, TimeoutError)
    assert 1.5 < time.monotonic() - started < 4
    for _ in range(3):  # 2 s each: 8 s of the grading budget used in all
        sh.run_cell("time.sleep(60)  # grader.check(")
    started = time.monotonic()
    result = sh.run_cell("time.sleep(60)  # grader.check(")  # over budget: the 1 s minimum
    assert isinstance(result.error_in_exec, TimeoutError) and time.monotonic() - started < 1.8
    # otter's last cell, which writes the results, still gets its 2 s
    result = sh.run_cell("from otter.execute import Checker\ntime.sleep(1.5)\ndone = True")
    assert result.success and sh.user_ns["done"], result.error_in_exec


def test_limits_keep_a_run_inside_gradescopes_timeout():
    """Worst case: every cell but otter's last stops by grading_seconds, that one gets check_seconds,
    and otter, the kernel and scoring take about 12 s at half a CPU (cgcnn_grading.LIMITS): 60 s allowed."""
    limits = grading.LIMITS
    assert limits["cell_seconds"] <= limits["notebook_seconds"] <= limits["grading_seconds"]
    assert limits["grading_seconds"] + limits["check_seconds"] + 60 <= grading.GRADESCOPE_TIMEOUT
    nb = nbformat.read(ASSIGNMENT / "cgcnn_perovskites.ipynb", as_version=4)
    config = nb.cells[0].source  # the master notebook's assignment config sets the same limits
    for key, value in limits.items():
        assert f"{key}: {value}" in config, key


def test_replaced_functions_and_test_files_are_restored_before_grader_cells(shell, capsys):
    sh, test_file = shell
    import numpy as np
    original = np.allclose
    sh.run_cell("import numpy as np, math\nnp.allclose = lambda *a, **k: True\nmath.isclose = lambda *a, **k: True\n"
                f"open({str(test_file)!r}, 'w').write('points = 0')")
    assert np.allclose is not original  # a student's cell may do this ...
    sh.run_cell(f"inside = open({str(test_file)!r}).read()  # grader.check( marks the grader's cells")
    assert np.allclose is original  # ... but the grader's cells see the real functions
    assert sh.user_ns["inside"] == "name = 'q1a'\n"  # and the test as shipped
    import math
    assert math.isclose(1.0, 1.5) is False
    assert not test_file.exists()  # hidden again once the grader's cell is over
    out = capsys.readouterr().out
    assert grading.RESTORED_MARKER in out and str(test_file) in out and "math.isclose" in out


def test_hidden_tests_exist_only_while_otter_reads_them(shell):
    sh, test_file = shell
    assert not test_file.exists()  # the guard hid them before the notebook's first cell
    assert sh.run_cell(f"import os\nseen = os.path.exists({str(test_file)!r})").success
    assert sh.user_ns["seen"] is False
    # a grader cell: the file is back for otter to read, and gone again while the code under test runs
    sh.run_cell(f"import otter.execute.checker as c, os\nbefore = os.path.exists({str(test_file)!r})\n"
                f"text = open({str(test_file)!r}).read()\n"
                f"try:\n    c.create_test_file({str(test_file)!r}, None)\nexcept Exception:\n    pass\n"
                f"during = os.path.exists({str(test_file)!r})  # grader.check( marks the grader's cells")
    assert sh.user_ns["before"] is True and sh.user_ns["text"] == "name = 'q1a'\n"
    assert sh.user_ns["during"] is False and not test_file.exists()


def test_a_hook_that_patches_before_the_checks_comes_too_late(shell, capsys):
    """A notebook's own pre_run_cell hook runs after the guard's: the restoring must come later still."""
    sh, _ = shell
    import numpy as np
    original = np.abs
    sh.run_cell("import numpy\nfrom IPython import get_ipython\n"
                "def _cheat(info):\n    numpy.abs = lambda *a, **k: numpy.zeros(1)\n"
                "get_ipython().events.register('pre_run_cell', _cheat)")
    sh.run_cell("seen = numpy.abs(numpy.array([-3.0]))")
    assert sh.user_ns["seen"][0] == 0.0  # the student's own cells see the patch ...
    sh.run_cell("seen = numpy.abs(numpy.array([-3.0]))  # grader.check( marks the grader's cells")
    assert sh.user_ns["seen"][0] == 3.0  # ... the grader's cells do not
    assert "numpy.abs" in capsys.readouterr().out
    np.abs = original


def test_otters_checker_is_restored_before_grader_cells(shell, capsys):
    sh, _ = shell
    from otter.execute import Checker
    from otter.test_files.exception_test import ExceptionTestFile
    check = Checker.__dict__["check"]
    sh.run_cell("from otter.execute import Checker\nfrom otter.test_files.exception_test import ExceptionTestFile\n"
                "Checker.check = classmethod(lambda cls, *a, **k: None)\n"
                "ExceptionTestFile.score = property(lambda self: 1e9)")
    assert Checker.__dict__["check"] is not check and "score" in ExceptionTestFile.__dict__
    sh.run_cell("x = 0  # grader.check( marks the grader's cells")
    assert Checker.__dict__["check"] is check and "score" not in ExceptionTestFile.__dict__
    out = capsys.readouterr().out
    assert "Checker.check" in out and "ExceptionTestFile.score" in out


def test_the_guard_leaves_student_cells_as_written(shell):
    sh, _ = shell
    assert sh.transform_cell("x = 1\n") == "x = 1\n"
    assert sh.transform_cell("grader.check('q1a')\n").startswith('__import__("_cgcnn_guard").restore()')


def _layout(tmp_path, labels, predictions):
    """otter's grading directories after it copied the autograder's files into the submission."""
    sub, src = tmp_path / "submission", tmp_path / "source"
    for d in (sub / "data", src / "files" / "data", sub / "tests", src / "tests"):
        d.mkdir(parents=True)
    (src / "tests" / "q4b.py").write_text("name = 'q4b'")
    (src / "files" / "data" / "x.csv").write_text("shipped")
    (sub / "data" / "x.csv").write_text("the student's own copy")
    (src / "files" / "cgcnn_utils.py").write_text("# shipped")
    (sub / "tests" / "q4b.py").write_text("name = 'q4b'")
    for d in (sub, src / "files"):
        with open(d / grading.LABELS, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "formation_energy_per_atom"])
            w.writerows(labels.items())
    if predictions is not None:
        with open(sub / grading.PREDICTIONS, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "prediction"])
            w.writerows(predictions.items())
    (sub / "nb.ipynb").write_text("{}")
    return sub / "nb.ipynb"


class _Results:
    """The part of otter's GradingResults the plugin uses."""

    def __init__(self, public_passed=True):
        cases = [otter_tests.TestCase(f"q4b - {k}", None, k > 1, p, None, None) for k, p in enumerate([0, 3, 2, 2], 1)]
        failing = [otter_tests.TestCaseResult(c, "placeholder", False) for c in cases]
        failing[0] = otter_tests.TestCaseResult(cases[0], None if public_passed else "AssertionError: not the model's", public_passed)
        self.results = {"q4b": type("TF", (), {"test_case_results": failing})()}
        self.notebook = nbformat.v4.new_notebook()
        self.output = None

    def set_output(self, output):
        self.output = output


def _guard(path):
    return grading.Guard(str(path), {}, {"mae_full": 0.1, "mae_factors": [2.0, 1.5, 1.0], "mae_question": "q4b"})


@pytest.mark.parametrize("error, passed", [(0.05, [True, True, True]), (0.12, [True, True, False]),
                                           (0.18, [True, False, False]), (0.5, [False, False, False])])
def test_4b_tiers_from_the_saved_predictions(tmp_path, error, passed):
    labels = {"a": -3.0, "b": -2.0}
    nb = _layout(tmp_path, labels, {i: y + error for i, y in labels.items()})
    cwd = os.getcwd()
    os.chdir(nb.parent)
    try:
        guard = _guard(nb)
        guard.before_grading(None)
        # while the notebook runs: no labels on disk, the shipped data and module in place
        assert not list(tmp_path.rglob(grading.LABELS))
        assert (nb.parent / "data" / "x.csv").read_text() == "shipped"
        assert (nb.parent / "cgcnn_utils.py").read_text() == "# shipped"
        assert not (tmp_path / "source" / "tests" / "q4b.py").exists()  # the autograder's copy of the tests
        results = _Results()
        guard.after_grading(results)
        assert (tmp_path / "source" / "tests" / "q4b.py").read_text() == "name = 'q4b'"  # back afterwards
    finally:
        os.chdir(cwd)
    got = [r.passed for r in results.results["q4b"].test_case_results[1:]]
    assert got == passed
    assert results.results["q4b"].test_case_results[0].passed  # the public test is left alone
    assert f"test MAE {error:.4f}" in guard.generate_report()
    assert results.output == guard.generate_report()  # shown to students in results.json


def test_4b_is_not_scored_when_a_public_check_fails(tmp_path):
    labels = {"a": -3.0, "b": -2.0}
    nb = _layout(tmp_path, labels, labels)  # perfect predictions, but not the notebook's model's
    guard = _guard(nb)
    guard.before_grading(None)
    results = _Results(public_passed=False)
    guard.after_grading(results)
    cases = results.results["q4b"].test_case_results[1:]
    assert not any(r.passed for r in cases)
    assert all("a public check of q4b failed: AssertionError: not the model's" in r.message for r in cases)


def test_4b_without_predictions_says_why(tmp_path):
    nb = _layout(tmp_path, {"a": -3.0}, None)
    guard = _guard(nb)
    guard.before_grading(None)
    results = _Results()
    guard.after_grading(results)
    cases = results.results["q4b"].test_case_results[1:]
    assert not any(r.passed for r in cases)
    assert all(grading.PREDICTIONS in r.message and "not found" in r.message for r in cases)


def test_guard_cell_is_first_and_plain_python_submissions_pass_through(tmp_path):
    nb_path = _layout(tmp_path, {"a": -3.0}, None)
    guard = _guard(nb_path)
    guard.before_grading(None)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    out = guard.before_execution(nb)
    limits = ", ".join(str(v) for v in grading.LIMITS.values())  # the defaults, in the guard's order
    assert f"_cgcnn_guard({limits}, [" in out.cells[0].source and out.cells[1].source == "x = 1"
    assert guard.before_execution("print(1)") == "print(1)"
    assert dataclasses.is_dataclass(otter_tests.TestCaseResult)
