"""Shared fixtures: paths, and the releases built once per test session in a clean copy."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT / "assignment"
sys.path.insert(0, str(ASSIGNMENT))
sys.path.insert(0, str(ROOT))


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
