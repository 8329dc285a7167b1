"""The master notebook's tests, run in the grading process: one place for every test, public or hidden.

The build's `otter assign` writes each part's test cells (otter's exception format: `# BEGIN TESTS`,
a TEST CONFIG with `points` and `hidden`) into the autograder's `tests/<part>.py`; the grader reads
them as otter's `ExceptionTestFile` reads them (`read_test_file`, without importing otter: see there)
and calls each test function here, never in the kernel.
A test's arguments are resolved by name:

    solution     the master's own solution code (`SOLUTION_MODULE`, written by the build from the
                 master's code cells: its imports, functions and classes), with the grader's copy of
                 the element `embedding`: expected values for hidden tests
    seeded       seeded(seed) -> numpy Generator: a hidden test's random inputs, with the course term's
                 name mixed in (`python build.py --term NAME`), so that one term's leaked inputs and
                 answers are not the next term's
    any other    the notebook's variable of that name, as a stand-in (`remote`); None where the
                 notebook does not define it, as otter passes it

In the student's notebook the public tests run as otter runs them, on the real objects; they may not
take `solution` or `seeded` (the build refuses). In the build's own run of the solution notebook,
`define_in_notebook` gives the kernel both names (the notebook's own definitions are the solution).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import remote, wire

SOLUTION_MODULE = "master_solution.py"  # in the autograder's top level, beside this package
TESTS_DIR = "tests"  # otter's test files in the autograder
RESERVED = ("solution", "seeded")
TERM_VARIABLE = "CGCNN_TERM"  # the build's run of the solution: the term, for define_in_notebook
# What a student reads when a test fails inside the grader's own code (not an assertion, not the
# submission's exception): the details go to the course staff alone.
GRADER_FAILED = ("the grader could not run this test to the end (a failure on the grader's side, reported to the "
                 "course staff): check that the function returns what the task asks (type, shape, dtype); if it "
                 "does, ask the course staff")
MESSAGE_CHARS = 600
# What a test's own code raises when the submission's values are not what the task asks (wrong type,
# shape, length): a failed test, reported to the student, not a grader error.
USED_WRONGLY = (TypeError, AttributeError, ValueError, IndexError, KeyError, LookupError, ArithmeticError)


@dataclass(frozen=True)
class Test:
    """One test of one part, as the master wrote it."""

    question: str
    name: str
    hidden: bool
    points: float
    function: object  # the test function
    summary: str  # what a failing hidden test tells the student: its docstring, never its source

    @property
    def parameters(self) -> list[str]:
        return list(inspect.signature(self.function).parameters)


@dataclass(frozen=True)
class Verdict:
    test: Test
    message: str | None  # None: passed
    staff: str | None = None  # the grader's own failure, for the course staff


@dataclass(frozen=True)
class Part:
    """A part's test file: its tests, and whether it scores all or nothing."""

    question: str
    tests: list[Test]
    all_or_nothing: bool


def load(folder: Path) -> dict[str, Part]:
    """The parts' tests from otter's test files in `folder` (the autograder's tests/)."""
    parts = {}
    for path in sorted(Path(folder).glob("*.py")):
        name, all_or_nothing, cases = read_test_file(path)
        # named by their functions (otter numbers unnamed tests: "q1a - 1")
        tests = [Test(name, case.test_func.__name__, bool(case.hidden), points, case.test_func,
                      summary(case.test_func, case.failure_message)) for case, points in cases]
        parts[name] = Part(name, tests, all_or_nothing)
    return parts


class TestFileError(ValueError):
    """A test file otter's exception format does not describe; the message says what to change."""


class test_case:  # noqa: N801 - the name the test files import
    """The test files' decorator, `otter.test_files.test_case`, with otter's arguments: it keeps them and
    the function it decorates."""

    def __init__(self, name: str | None = None, points: float | None = None, hidden: bool = False,
                 success_message: str | None = None, failure_message: str | None = None):
        self.name, self.points, self.hidden = name, points, hidden
        self.success_message, self.failure_message = success_message, failure_message
        self.test_func = None

    def __call__(self, test_func):
        self.test_func = test_func
        return self


OTTER_MODULE = "otter.test_files"  # the one import of a test file that the grader gives itself


def read_test_file(path: Path) -> tuple[str, bool, list[tuple[test_case, float]]]:
    """(part, all_or_nothing, [(test, points)]) of an exception-format test file, read as otter's
    ExceptionTestFile.from_file reads it: the file executed, its `test_case` objects in the order it
    defines them, points resolved by `resolved_points` (tests/test_master_tests.py compares the two
    readers). Otter itself is not imported: its package brings its API, exporters and nbconvert into
    the grading process, 64 MB and a second of CPU in a container of 768 MB that the kernel shares."""
    path = Path(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    ours = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == OTTER_MODULE]
    if any([(a.name, a.asname) for a in node.names] != [("test_case", None)] for node in ours):
        raise TestFileError(f"{path.name} imports more than test_case from {OTTER_MODULE}: write test cells "
                            "with `@test_case(...)` alone (the grader reads them without otter)")
    tree.body = [node for node in tree.body if node not in ours]
    env = {"test_case": test_case}
    exec(compile(tree, str(path), "exec"), env)  # noqa: S102 - the master's own tests, from the autograder zip
    if "name" not in env:
        raise TestFileError(f"test file {path.name} does not define 'name'")
    cases = [value for value in env.values() if isinstance(value, test_case)]
    return env["name"], bool(env.get("all_or_nothing", False)), list(zip(cases, resolved_points(
        env.get("points"), [case.points for case in cases], path.name)))


def resolved_points(total, points: list, where: str = "a test file") -> list[float]:
    """Each test's points as otter resolves them (TestFile.resolve_test_file_points): a list `total`
    gives each test its own; otherwise a test without points gets an equal share of what the file's
    `total` leaves, or of one point when nothing anywhere says more than 0."""
    if isinstance(total, list):
        if len(total) != len(points):
            raise TestFileError(f"{where}: {len(total)} points listed for {len(points)} tests")
        points, total = list(total), None
    elif total is not None and not isinstance(total, (int, float)):
        raise TestFileError(f"{where}: points is {type(total).__name__}, not a number or a list")
    if any(p is not None and type(p) not in (int, float) for p in points):
        raise TestFileError(f"{where}: a test's points are not a number: {points}")
    given, missing = sum(p for p in points if p is not None), sum(p is None for p in points)
    if total is not None:
        if given > total:
            raise TestFileError(f"{where}: its tests give {given} points, more than its {total}")
        share = (total - given) / missing if missing else 0.0
    elif given == 0 and all(p in (0, None) for p in points):
        share = 1 / missing if missing else 0.0
    else:
        share = 0.0
    return [float(share if p is None else p) for p in points]


def defined(path: Path) -> list[str]:
    """The test functions a test file defines, in order, repeated names included: otter keeps only the
    last function of a name (the build refuses a repeated one)."""
    import ast
    tree = ast.parse(Path(path).read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.decorator_list]


def summary(function, failure_message: str | None = None) -> str:
    """A hidden test's description for students: its failure_message, else its docstring's first
    paragraph, else its name."""
    text = failure_message or (inspect.getdoc(function) or "").split("\n\n")[0]
    return " ".join(text.split()) or function.__name__.removeprefix("test_").replace("_", " ")


def seeded_factory(term: str = ""):
    """seeded(seed): the random inputs of a hidden test, from its seed and the course term's name."""
    mix = int.from_bytes(hashlib.sha256(term.encode()).digest()[:8], "big") if term else None

    def seeded(seed: int) -> np.random.Generator:
        return np.random.default_rng(seed if mix is None else [seed, mix])
    return seeded


def load_solution(source: Path, embedding: dict) -> types.ModuleType:
    """The master's solution code, as the build wrote it into the autograder, with the grader's own
    element embedding ({Z: float32 vector})."""
    spec = importlib.util.spec_from_file_location("master_solution", Path(source) / SOLUTION_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.embedding = embedding
    return module


def define_in_notebook(namespace: dict) -> None:
    """The build's run of the solution notebook: `solution` (the notebook's own definitions) and
    `seeded` (the term in CGCNN_TERM) for the hidden tests that otter runs in that notebook."""
    namespace["solution"] = _Namespace(namespace)
    namespace["seeded"] = seeded_factory(os.environ.get(TERM_VARIABLE, ""))


class _Namespace:
    """Attribute reads of a dict: the notebook's namespace as `solution`."""

    def __init__(self, namespace: dict):
        self._namespace = namespace

    def __getattr__(self, name: str):
        try:
            return self._namespace[name]
        except KeyError:
            raise AttributeError(f"the solution defines no {name!r}") from None


def run_part(part: Part, link: remote.Link, solution, seeded) -> list[Verdict]:
    """Each test of `part`, called here with its arguments resolved (see the module's docstring)."""
    names = sorted({p for t in part.tests for p in t.parameters if p not in RESERVED})
    verdicts = []
    try:
        notebook, missing = remote.standins(link, names)
    except (remote.LinkBroken, wire.Refused, remote.SubmissionRaised) as err:
        return [Verdict(test, f"not checked: {err}") for test in part.tests]
    for test in part.tests:
        args = {p: solution if p == "solution" else seeded if p == "seeded" else notebook[p] for p in test.parameters}
        verdicts.append(_verdict(test, args, [m for m in missing if m in test.parameters]))
    return verdicts


def _verdict(test: Test, args: dict, missing: list[str]) -> Verdict:
    undefined = (f" (your notebook does not define {', '.join(missing)}: did the cell that defines "
                 f"{'it' if len(missing) == 1 else 'them'} raise an error?)") if missing else ""
    try:
        test.function(**args)
        return Verdict(test, None)
    except remote.LinkBroken as err:
        return Verdict(test, f"not checked: {err}")
    except wire.Refused as err:
        return Verdict(test, f"the kernel's answer was refused: {err} (the grader's probe, cgcnn_kernel, sends "
                             "nothing else: do not change it)")
    except remote.SubmissionRaised as err:
        return Verdict(test, f"your code raised {type(err).type_name}: {_short(str(err))}{undefined}")
    except AssertionError as err:
        return Verdict(test, (_short(str(err)) or "(no message)") + undefined)
    except USED_WRONGLY as err:
        # the test's code could not use what the submission gave (None for an array, a list for a
        # tensor): the submission's mistake, since the build proves every test on the solution
        # (its type only: the text is the grader's, and could quote what the grader read)
        return Verdict(test, f"the test could not use what your code gave ({type(err).__name__}): check that it "
                             f"returns what the task asks (type, shape, dtype){undefined}")
    except Exception as err:  # noqa: BLE001 - anything else is the grader's own failure
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-4))[-2000:]
        return Verdict(test, GRADER_FAILED, f"{test.question} {test.name}: {detail}")


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def report(verdicts: dict[str, list[Verdict]]) -> dict:
    """Every test by name with its verdict, for the course staff and the build's proof."""
    return {question: {v.test.name: "passed" if v.message is None else f"failed: {v.message}"[:300]
                       for v in part} for question, part in verdicts.items()}


def dumps(verdicts: dict[str, list[Verdict]]) -> str:
    return json.dumps(report(verdicts), indent=1)
