"""Shared fixtures: paths, and the releases built once per test session in a clean copy.

The repository's modules are imported as installed (`pip install --no-build-isolation -e .`);
pyproject.toml puts the repository root (build.py) and tests/ on pytest's path.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT / "assignment"

# Fixtures that build the releases, run the notebook or grade: a test that uses one is in the full
# tier only (marker `grading`); `python -m pytest -m "not grading"` is the fast tier.
GRADING_FIXTURES = {"built", "graded", "failing", "trip", "notebooks"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if GRADING_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.grading)


# How long the busy loops share the CPUs with the build: its first minutes, which grade the solution
# under time limits (what load once broke); the execution after, with generous cell timeouts, runs alone.
BUSY_SECONDS = 300


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A copy of the repository's tracked sources with `python build.py` run in it: what an
    instructor gets from a clean checkout. Returns the copy's root.

    The build starts while two CPU-bound loops keep both cores of this machine busy (for its first
    BUSY_SECONDS, its grading of the solution): a build must not fail because other work shares the CPUs.
    It runs with the Python of a virtual environment inside the copy (`.venv`, a newcomer's habit: it
    once made grading fail, and the build replaced the releases with an autograder that scored 0/0);
    the modes of the copy's folders before the build are in BUILT_MODES, next to the copy."""
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
    busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(2)]
    try:
        done = subprocess.run([str(venv / "bin" / "python"), "build.py"], cwd=work, capture_output=True, text=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert done.returncode == 0, f"build failed beside two busy loops:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    shutil.rmtree(venv)  # not a release: the releases are compared file by file
    return work


BUILT_MODES = "modes-before-build.json"


def folder_modes(root: Path) -> dict[str, str]:
    """The permission bits of `root` and of every folder under it (the virtual environment's aside)."""
    return {str(p.relative_to(root)): oct(p.stat().st_mode & 0o7777)
            for p in [root, *root.rglob("*")] if p.is_dir() and ".venv" not in p.relative_to(root).parts}
