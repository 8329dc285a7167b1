"""Grading as users grade: `otter run` (instructors, locally) and Gradescope's own layout.

Gradescope unpacks the autograder zip into /autograder/source and the student's upload into
/autograder/submission, then runs `run_autograder`, which runs `python /autograder/source/run_otter.py`
and reads /autograder/results/results.json. `gradescope_run` reproduces that under any root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build  # noqa: E402

AUTOGRADER_ZIP = ROOT / "autograder" / build.ZIP_NAME
NB_NAME = f"{build.NAME}.ipynb"


def otter_run(submission: Path, out: Path, zip_path: Path = AUTOGRADER_ZIP) -> dict:
    """Grade a submission (.ipynb or .zip) with `otter run`, as `python build.py grade` does."""
    return build.grade(zip_path, submission, out)


def gradescope_run(submission: Path, root: Path, zip_path: Path = AUTOGRADER_ZIP,
                   prefix: list[str] | None = None, timeout: float = 1800) -> dict:
    """Lay out `root` as Gradescope does and run the zip's entry point; return results.json.

    `submission` is the student's upload: a .zip (unpacked, as Gradescope does with a zip upload),
    an .ipynb, or a directory whose files are the upload. `prefix` wraps the command (for example
    `["taskset", "-c", "0"]`)."""
    for sub in ("source", "submission", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    if submission.is_dir():
        shutil.copytree(submission, root / "submission", dirs_exist_ok=True)
    elif submission.suffix == ".zip":
        with zipfile.ZipFile(submission) as z:
            z.extractall(root / "submission")
    else:
        shutil.copy(submission, root / "submission")
    (root / "submission_metadata.json").write_text("{}")
    cmd = [*(prefix or []), sys.executable, str(root / "source" / "run_otter.py"), str(root)]
    done = subprocess.run(cmd, cwd=root / "source", capture_output=True, text=True, timeout=timeout)
    results = root / "results" / "results.json"
    assert results.is_file(), f"no results.json:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(results.read_text())


def scores(results: dict) -> dict[str, float]:
    """{question: score} from a results.json (otter's 'Public Tests' summary entry left out)."""
    return {t["name"]: t.get("score", 0) for t in results["tests"]
            if "max_score" in t and t["name"] != "Public Tests"}
