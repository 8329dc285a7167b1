"""Shared fixtures: paths, and the releases built once per test session in a clean copy.

The repository's modules are imported as installed (`pip install --no-build-isolation -e .`);
pyproject.toml puts the repository root (build.py) and tests/ on pytest's path.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT / "assignment"

# Fixtures that build the releases, run the notebook or grade: a test that uses one is in the full
# tier only (marker `grading`); `python -m pytest -m "not grading"` is the fast tier.
GRADING_FIXTURES = {"built", "graded", "gradescope_graded", "failing", "trip", "notebooks"}


# The suite runs in two worker processes (pyproject.toml: pytest-xdist, -n 2 --dist loadgroup), each
# taking one group of tests at a time: a group is a file, except the files that share the student's round
# trip (its run, its grading, the PDF user): one group, one worker. The groups start longest first, so
# that the catalogue (two gradings at a time) and the build (one core) run beside each other, and the
# short files fill in at the end; the rest keep their order. In the round trip's group the tests of its
# Gradescope grading (those using the fixture GRADESCOPE_RUN) come last: that grading runs in the
# background, at half a CPU, while the tests that need only the round trip's run go on.
SHARED_GROUPS = {"test_roundtrip": "roundtrip", "test_gradescope": "roundtrip", "test_pdf_export": "roundtrip",
                 "test_pdf_hostile": "roundtrip"}
FIRST = ["test_submissions", "test_assignment", "roundtrip", "test_isolation", "test_bulk_grading",
         "test_sandbox", "test_build_errors"]
GRADESCOPE_RUN = "gradescope_graded"  # test_roundtrip's fixture of the round trip's Gradescope grading


def group(item) -> str:
    stem = item.path.stem
    return SHARED_GROUPS.get(stem, stem)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if GRADING_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.grading)
        item.add_marker(pytest.mark.xdist_group(group(item)))
    rank = {name: k for k, name in enumerate(FIRST)}
    # stable: the rest keep their order
    items.sort(key=lambda item: (rank.get(group(item), len(FIRST)), GRADESCOPE_RUN in item.fixturenames))


# The busy loops share the CPUs with the build while it grades the solution and the unwritten notebook
# under time limits (what load once broke), beside its execution of the solution, until it prints this;
# the rest of the execution, with generous cell timeouts, runs beside whatever else the suite runs.
# The loops end after BUSY_SECONDS in any case.
GRADED = "the unwritten notebook scores 0"
BUSY_SECONDS = 600


@pytest.fixture(scope="session")
def built(request, tmp_path_factory):
    """A copy of the repository's tracked sources with `python build.py` run in it: what an
    instructor gets from a clean checkout. Returns the copy's root.

    The build grades the solution while other work keeps both cores of this machine busy (the other
    worker's gradings, or two CPU-bound loops when no other worker runs): a build must not fail because
    other work shares the CPUs. It runs with the Python of a virtual environment inside the copy
    (`.venv`, a newcomer's habit: it once made grading fail, and the build replaced the releases with an
    autograder that scored 0/0); the modes of the copy's folders before the build are in BUILT_MODES,
    and what it printed in BUILT_OUTPUT, next to the copy."""
    work = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:  # the sources and the committed executed solution (the build keeps it within rounding)
        if rel.split("/")[0] in ("assignment", "build.py", "solutions"):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, work / rel)
    venv = work / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    (work.parent / BUILT_MODES).write_text(json.dumps(folder_modes(work)))
    loop = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end:\n    pass"
    # Where the catalogue runs in the other worker (it starts with the build, two gradings at a time),
    # its gradings are that load; else two loops are.
    beside = (int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= 2
              and any(item.path.stem == "test_submissions" for item in request.session.items))
    busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(0 if beside else 2)]
    output = []
    try:
        with subprocess.Popen([str(venv / "bin" / "python"), "build.py"], cwd=work, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}) as run:
            for line in run.stdout:
                output.append(line)
                if GRADED in line:
                    _end(busy)
    finally:
        _end(busy)
    (work.parent / BUILT_OUTPUT).write_text("".join(output))
    assert run.returncode == 0, f"build failed beside other work:\n{''.join(output)[-6000:]}"
    assert any(GRADED in line for line in output), "the build no longer says when it has graded: see GRADED"
    shutil.rmtree(venv)  # not a release: the releases are compared file by file
    return work


def _end(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


BUILT_MODES = "modes-before-build.json"
BUILT_OUTPUT = "build-output.txt"


def folder_modes(root: Path) -> dict[str, str]:
    """The permission bits of `root` and of every folder under it (the virtual environment's aside)."""
    return {str(p.relative_to(root)): oct(p.stat().st_mode & 0o7777)
            for p in [root, *root.rglob("*")] if p.is_dir() and ".venv" not in p.relative_to(root).parts}
