"""Shared fixtures: paths, and the releases built once per test session in a clean copy.

The repository's modules are imported as installed (`pip install --no-build-isolation -e .`);
pyproject.toml puts the repository root (build.py) and tests/ on pytest's path.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT / "assignment"

# Not yet ported to the sandboxed grader of issues 11 and 13 (they graded through `otter run` and
# the old plugin): the catalogue of submissions, the Gradescope-limit runs, the round trip and the
# clean-copy build checks. tests/test_sandbox.py grades through the new entry point meanwhile.
collect_ignore = ["test_submissions.py", "test_gradescope.py", "test_roundtrip.py", "test_assignment.py"]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A copy of the repository's tracked sources with `python build.py` run in it: what an
    instructor gets from a clean checkout. Returns the copy's root."""
    work = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.split("/")[0] in ("assignment", "build.py"):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, work / rel)
    done = subprocess.run([sys.executable, "build.py"], cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, f"build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return work
