"""One grading cannot see, outlive or starve another: two attacks of issue 24 graded the way a course
meets them, through `python build.py grade` (build.grade_folder) with the committed autograder zip.

- Side by side (-j 2): a hollow notebook subscribes to every Jupyter socket it can reach while an
  honest notebook is graded beside it, to take the code that kernel runs (over TCP on 127.0.0.1 it
  once heard every cell of the other grading and scored its 30/30).
- One after the other by the same grading user (-j 1): a hollow notebook leaves a process whose main
  thread exited (state Z, unseen by a scan of /proc) to plant an untrained fit() in the next
  grading's support module (it once turned an honest 30/30 into 23/30).

Both submissions train with the catalogue's short recipe (about 12 CPU-seconds each): the honest one's
test MAE is the catalogue's recorded solution_run_1, and a planted untrained fit() would move it.
"""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

import build
import submissions as S

pytestmark = [pytest.mark.grading,
              pytest.mark.skipif(os.geteuid() != 0, reason="grading switches to the grading users: needs root")]

HONEST = S.Case("honest", "determinism", "", None, S.full())  # the solution, short recipe


# The first grading user of these gradings: one that the suite's other gradings, beside them in the other
# worker, never reach (a grader takes the first free user), so that -j 1 grades both as this user.
FIRST_USER = 20


def _grade(tmp_path: Path, notebooks: dict[str, S.Case], jobs: int) -> dict[str, dict]:
    """Grade the cases (file name -> case) as `python build.py grade -j jobs` does; return, per file,
    its CSV row with the results.json and the notebook as executed that its run kept."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    base = S.base_notebook()
    for name, case in notebooks.items():
        nbformat.write(S.notebook(case, base), folder / name)
    rows = build.grade_folder(folder, tmp_path / "marks.csv", jobs=jobs, first_user=FIRST_USER)
    out = {}
    for row in rows:
        kept = tmp_path / row["results"]
        out[row["submission"]] = {"row": row, "results": json.loads(kept.read_text()),
                                  "notebook": nbformat.read(kept.with_name("notebook.ipynb"), as_version=4)}
    return out


def _printed(nb, prefix: str) -> str:
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    found = re.search(rf"^{prefix}.*$", text, re.M)
    assert found, f"the attack printed no line starting {prefix!r}"
    return found.group(0)


def _honest_as_alone(graded: dict) -> None:
    """The honest submission scores what it scores graded alone: the short recipe's marks and MAE."""
    assert graded["row"]["status"] == "graded", graded["row"]
    assert build.scores(graded["results"]) == HONEST.expected
    mae, recorded = S.test_mae(graded["results"]), S.MEASURED_MAE["solution_run_1"]
    assert S.same_mae(mae, recorded), f"test MAE {mae}, graded alone {recorded}"


def test_a_grading_cannot_hear_the_grading_beside_it(tmp_path):
    attacker = S.Case("eavesdrops", "adversarial", "", S.edits(S.stubs(*S.ALL_PARTS), S.insert(S.IMPORTS, S.EAVESDROP)),
                      S.zero())
    graded = _grade(tmp_path, {"a_eavesdrops.ipynb": attacker, "b_honest.ipynb": HONEST}, jobs=2)
    spy, honest = graded["a_eavesdrops.ipynb"], graded["b_honest.ipynb"]
    assert build.scores(spy["results"]) == S.zero(), "the hollow notebook took credit for code it did not write"
    line = _printed(spy["notebook"], "EAVESDROP:")
    assert re.search(r"heard 0 messages .* took 0 cells", line), line
    _honest_as_alone(honest)


def test_a_grading_leaves_nothing_running_for_the_next_grading_of_its_user(tmp_path):
    Path(S.SURVIVOR_MARKER).unlink(missing_ok=True)
    attacker = S.Case("survives", "adversarial", "", S.edits(S.stubs(*S.ALL_PARTS), S.insert(S.IMPORTS, S.SURVIVOR)),
                      S.zero())
    graded = _grade(tmp_path, {"a_survives.ipynb": attacker, "b_honest.ipynb": HONEST}, jobs=1)
    survivor, honest = graded["a_survives.ipynb"], graded["b_honest.ipynb"]
    assert _printed(survivor["notebook"], "SURVIVOR:") == "SURVIVOR: started"
    assert build.scores(survivor["results"]) == S.zero()
    _honest_as_alone(honest)  # an untrained fit() planted in its support module would have moved its MAE
    # -j 1: both ran as the first worker's user
    left = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) == _grading_uid(f"cgcnn-student-{FIRST_USER}")]
    assert not left, f"processes of the grading user outlived both gradings: {left}"


def _grading_uid(name: str) -> int:
    import pwd
    return pwd.getpwnam(name).pw_uid


def _uid(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
