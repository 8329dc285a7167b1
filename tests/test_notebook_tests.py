"""The master notebook's own tests, run in-process in seconds as otter runs them in a notebook (on
the real objects; hidden tests with `solution` and `seeded` as the build's run of the solution gives
them): every test passes on the solution and fails on the released stub (nbgrader's `validate
--invert` idea), before any grading run."""

import copy
import inspect
import os
import re

import nbformat
import pytest
from otter.assign.solutions import replace_solutions

import submissions as S
from conftest import ASSIGNMENT

NB = ASSIGNMENT / "cgcnn_perovskites.ipynb"
TRAINING = ("test_the_model",)  # needs the one-minute training: covered by the graded solution


def _cells():
    nb = nbformat.read(NB, as_version=4)
    defs, tests = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.source.startswith('""" # BEGIN TEST CONFIG'):
            tests.append(cell.source)
        elif cell.source.startswith(("def ", "class ")):
            defs.append(cell.source)
    return defs, tests


def _environment(stub: bool, defs=None) -> dict:
    import numpy as np
    import torch
    from torch import nn
    import cgcnn_utils
    from cgcnn_grading.master_tests import define_in_notebook
    env = {"np": np, "torch": torch, "nn": nn, "embedding": cgcnn_utils.load_embedding()}
    for source in defs if defs is not None else _cells()[0]:
        if stub:
            source = "\n".join(replace_solutions(source.split("\n"), "python"))
        exec(source, env)
    define_in_notebook(env)  # the hidden tests' `solution` (this namespace) and `seeded`
    return env


def _test_functions():
    out = []
    for source in _cells()[1]:
        namespace = {}
        exec(source, {"__name__": "tests"}, namespace)
        out.extend(v for k, v in namespace.items() if k.startswith("test_") and not k.startswith(TRAINING))
    return out


def _call(fn, env):
    cwd = os.getcwd()
    try:
        fn(**{p: env.get(p) for p in inspect.signature(fn).parameters})
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def functions():
    fns = _test_functions()
    assert len(fns) >= 15  # the public and hidden tests of parts 1a to 4a
    return fns


def test_solution_passes_every_test(functions):
    env = _environment(stub=False)
    for fn in functions:
        _call(fn, env)  # raises with the test's own message


def test_released_stub_fails_every_test(functions):
    env = _environment(stub=True)
    passed = []
    for fn in functions:
        try:
            _call(fn, env)
            passed.append(fn.__name__)
        except Exception:
            pass
    assert not passed, f"tests that the unanswered notebook passes: {passed}"


# ------------------------------------------------------------------ the catalogue's code, part by part

VALUE_PARTS = ("q2a", "q2b", "q3", "q4a")  # the parts whose public tests check values on a small example


def _public_tests_by_part() -> dict[str, list]:
    """{part: its public test functions}, from the master notebook."""
    out, question = {}, None
    for cell in nbformat.read(NB, as_version=4).cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            question = re.search(r"name: (\w+)", cell.source).group(1)
        elif cell.cell_type == "code" and cell.source.startswith('""" # BEGIN TEST CONFIG') and \
                re.search(r"^hidden: false", cell.source, re.M):
            namespace = {}
            exec(cell.source, {"__name__": "tests"}, namespace)
            out.setdefault(question, []).extend(
                v for k, v in namespace.items() if k.startswith("test_") and not k.startswith(TRAINING))
    return out


def _case_definitions(case) -> list[str]:
    """The definition cells of the solution notebook after the catalogue case's edit."""
    nb = copy.deepcopy(S.base_notebook())
    case.edit(nb)
    return [c.source for c in nb.cells if c.cell_type == "code" and c.source.startswith(("def ", "class "))]


def _failing(tests, env) -> list[str]:
    failed = []
    for fn in tests:
        try:
            _call(fn, env)
        except Exception:
            failed.append(fn.__name__)
    return failed


# A wrong case's part is the prefix of its name (q2b_missing_residual: q2b); a mistake may cost later
# parts too (4a runs the layers, 4b trains them), but it is its own part's public tests that must show it.
WRONG_VALUES = [c for c in S.CASES if c.category == "wrong" and c.edit is not None and c.name.split("_")[0] in VALUE_PARTS]


@pytest.mark.parametrize("case", WRONG_VALUES, ids=lambda c: c.name)
def test_every_wrong_case_of_parts_2_to_4a_fails_a_public_test_of_its_part(case):
    part = case.name.split("_")[0]
    assert case.expected[part] < S.POINTS[part], f"{case.name}: its own part {part} is expected to fail"
    env = _environment(stub=False, defs=_case_definitions(case))
    assert _failing(_public_tests_by_part()[part], env), f"{case.name} ({case.what}) passes every public test of {part}"


@pytest.mark.parametrize("case", [c for c in S.CASES if c.category == "alternative" and c.edit is not None],
                         ids=lambda c: c.name)
def test_alternative_correct_code_passes_every_public_test(case):
    env = _environment(stub=False, defs=_case_definitions(case))
    failed = {part: _failing(tests, env) for part, tests in _public_tests_by_part().items()}
    assert not any(failed.values()), f"{case.name} ({case.what}) fails public tests: {failed}"


def test_an_in_place_residual_is_named_by_the_small_example_in_eval_mode_already():
    """Issue 26: `atom_fea += ...` once failed the small example in train mode only, with values that
    pointed at batch norm; the test now names the in-place change at its first call."""
    case = next(c for c in S.CASES if c.name == "q2b_inplace_residual")
    env = _environment(stub=False, defs=_case_definitions(case))
    (small,) = [fn for fn in _public_tests_by_part()["q2b"] if fn.__name__ == "test_small_example"]
    with pytest.raises(AssertionError, match=r"^eval mode: GatedConv changed its input atom_fea in place"):
        _call(small, env)


def test_a_sum_for_a_mean_is_named_for_what_it_is():
    """Issue 28: mean pooling that sums was told only its values and, in the test's source, not to
    assume crystal_idx sorted; the public test now names the sum."""
    case = next(c for c in S.CASES if c.name == "q3_sum_instead_of_mean")
    env = _environment(stub=False, defs=_case_definitions(case))
    (test,) = [fn for fn in _public_tests_by_part()["q3"] if fn.__name__ == "test_interleaved_crystals_and_gradients"]
    with pytest.raises(AssertionError, match=r"^mean pooling gave each crystal's sum of atom features, not their mean"):
        _call(test, env)
