"""The sandboxed grader (assignment/cgcnn_grading): the kernel runs as a user of its own, cannot
read the autograder's files, the held-out set or the results, ends with all its processes, is
stopped at its time limits by name; and whole submissions graded through Gradescope's entry point
(`build.grade`, the committed autograder zip) score what their honest code earns, whatever else
they try."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

import build
import submissions as S
from cgcnn_grading import execution, grade, sandbox, wire
from cgcnn_grading.settings import Limits

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the grading sandbox needs root")


@pytest.fixture
def kernel(tmp_path):
    """Run cells in the sandbox: returns run(sources, probes, limits) -> Outcome."""
    with sandbox.grading_user() as user:
        scratch = Path(tempfile.mkdtemp(prefix="cgcnn-test-"))
        os.chmod(scratch, 0o711)
        work = sandbox.work_directory(user, scratch)
        shutil.copy(build.ASSIGNMENT / "cgcnn_utils.py", work)
        sandbox.give(user, work)
        kernel_dir = scratch / "kernel"
        kernel_dir.mkdir(mode=0o755)
        shutil.copy(build.ASSIGNMENT / "cgcnn_kernel.py", kernel_dir)

        def run(sources, probes=(), limits=Limits(cell_cpu_seconds=3, cell_wall_seconds=5, check_seconds=5,
                                                   total_seconds=60)):
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
            return execution.run(nb, work, kernel_dir, user, list(probes), limits)

        yield run, user, tmp_path
        shutil.rmtree(scratch, ignore_errors=True)


def outputs(outcome) -> str:
    return "\n".join(str(o.get("text", "")) + str(o.get("evalue", "")) for c in outcome.notebook.cells
                     for o in c.outputs)


def test_the_kernel_runs_as_the_grading_user_and_cannot_read_roots_files(kernel):
    run, user, tmp = kernel
    secret = tmp / "secret"
    secret.mkdir()
    (secret / "labels.csv").write_text("id,label\n")
    sandbox.private(secret)
    outcome = run(["import os; print('uid', os.getuid(), os.getgroups())",
                   f"open({str(secret / 'labels.csv')!r}).read()"])
    text = outputs(outcome)
    assert f"uid {user.pw_uid} []" in text and user.pw_uid != 0
    assert "Permission denied" in text
    sandbox.cannot_read(user, [secret, secret / "labels.csv"])  # raises if the user could


def test_a_readable_secret_stops_grading_before_the_notebook_runs(kernel):
    _, user, _ = kernel
    folder = Path(tempfile.mkdtemp(prefix="cgcnn-open-"))  # /tmp is open to everyone
    try:
        os.chmod(folder, 0o755)
        (folder / "open.csv").write_text("x")
        os.chmod(folder / "open.csv", 0o644)
        with pytest.raises(sandbox.SandboxError, match="could read"):
            sandbox.cannot_read(user, [folder / "open.csv"])
    finally:
        shutil.rmtree(folder)


def test_no_process_of_the_submission_outlives_the_notebook(kernel):
    run, user, _ = kernel
    outcome = run(["import subprocess\nsubprocess.Popen(['sleep', '600'], start_new_session=True)"])
    assert sandbox.processes(user.pw_uid) == []
    assert any(e.startswith("Ended ") for e in outcome.events), outcome.events


def test_a_cell_past_its_cpu_time_is_stopped_by_name_and_the_next_cells_run(kernel):
    run, _, _ = kernel
    # a wall-clock limit far away: on a busy machine the loop gets its 3 CPU-seconds late, not never
    outcome = run(["while True:\n    pass", "def f(x):\n    return 2 * x", 'grader.check("q")'],
                  [execution.Probe("q", [{"id": "a", "op": "call", "function": "f", "args": [3]}], 'grader.check("q")')],
                  Limits(cell_cpu_seconds=3, cell_wall_seconds=300, check_seconds=60, total_seconds=600))
    assert outcome.stopped == ["the cell starting 'while True:' was stopped after 3 s of CPU time (time limit)"]
    assert outcome.answers == {"q": {"a": 6}}


def test_a_stopped_training_cell_leaves_no_model_to_score(kernel):
    """A model cut off wherever the limit fell is not read: 4b says which cell stopped and why."""
    run, _, _ = kernel
    outcome = run(["model = 1\nwhile True:\n    pass", 'grader.check("q4b")'],
                  [execution.Probe("q4b", [{"id": "model", "op": "trained_model"}], 'grader.check("q4b")')],
                  Limits(cell_cpu_seconds=3, cell_wall_seconds=300, check_seconds=60, total_seconds=600))
    assert "q4b" not in outcome.answers
    assert outcome.missing["q4b"].startswith("the cell starting 'model = 1' was stopped after 3 s of CPU time "
                                             "(time limit), before the check of q4b"), outcome.missing["q4b"]


# The kernel's own session packs every message it sends: from this cell on, the text "DEEP" in one
# becomes 5,000 nested lists (a kernel holds the key, so it signs whatever it sends).
DEEP = ("session = get_ipython().kernel.session\npack = session.pack\n"
        "session.pack = lambda obj: pack(obj).replace(b'\"DEEP\"', b'[' * 5000 + b']' * 5000)\n")


def test_a_message_too_deep_to_decode_is_dropped_and_grading_goes_on(kernel):
    """Issue 24: a message nested 5,000 deep (a cell's output, then a probe's answers) made the grader's
    JSON decoding raise RecursionError: Autograder Error, 0 points for parts that had passed. Now each
    is dropped undecoded, said in the results, and the other probes are answered."""
    run, _, _ = kernel
    ask = [{"id": "a", "op": "call", "function": "f", "args": [3]}]
    outcome = run([DEEP + "from IPython.display import display\ndisplay({'application/json': 'DEEP'}, raw=True)",
                   "def f(x):\n    return 2 * x", 'grader.check("q")',
                   "import cgcnn_kernel\ncgcnn_kernel.encode = lambda value: 'DEEP'", 'grader.check("r")'],
                  [execution.Probe("q", ask, 'grader.check("q")'), execution.Probe("r", ask, 'grader.check("r")')],
                  Limits(cell_cpu_seconds=60, cell_wall_seconds=120, check_seconds=120, total_seconds=600))
    assert outcome.answers == {"q": {"a": 6}}
    depth = f"a message nested 500{{}} levels deep (at most {wire.MESSAGE_DEPTH})"
    assert outcome.missing == {"r": f"the kernel's answers were refused ({depth.format(4)}): the grader's probe, "
                                    "cgcnn_kernel, sends nothing of the kind"}
    assert outcome.events == [f"Refused 1 message(s) of the kernel while running the cell starting 'session = "
                              f"get_ipython().kernel.session': {depth.format(2)}.",
                              f"Refused 1 message(s) of the kernel while running the check of r: {depth.format(4)}."]


def test_a_cell_that_waits_is_stopped_at_its_wall_clock_limit(kernel):
    run, _, _ = kernel
    outcome = run(["import time\ntime.sleep(3600)"])
    assert len(outcome.stopped) == 1 and re.search(r"stopped after 5 s \(time limit\)", outcome.stopped[0])


def test_a_cell_that_ignores_interrupts_is_ended_with_the_kernel(kernel):
    run, user, _ = kernel
    outcome = run(["import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
                   'grader.check("q")'], [execution.Probe("q", [], 'grader.check("q")')])
    assert "kernel was ended" in outcome.stopped[0]
    assert "time limit" in outcome.missing["q"] and sandbox.processes(user.pw_uid) == []


def test_gradescopes_own_files_are_closed_and_proven_unreadable():
    """Issue 24: /autograder/submission_metadata.json holds every earlier submission's results (hidden
    verdicts, test MAEs); it, run_autograder and setup.sh become root's alone, those that exist, and
    the grading user is shown unable to read them."""
    user = sandbox.ensure_user()
    root = Path(tempfile.mkdtemp(prefix="cgcnn-layout-"))  # in /tmp, open to every user as /autograder may be
    try:
        os.chmod(root, 0o755)
        (root / "submission_metadata.json").write_text('{"previous_submissions": [{"results": {"extra_data": '
                                                       '{"test_mae": 0.0512}}}]}')
        (root / "run_autograder").write_text("#!/usr/bin/env bash\ncd /autograder/source && python3 run_otter.py\n")
        (root / "setup.sh").write_text("pip install -r requirements.txt\n")
        for name, mode in (("submission_metadata.json", 0o644), ("run_autograder", 0o755), ("setup.sh", 0o644)):
            os.chmod(root / name, mode)
        with pytest.raises(sandbox.SandboxError, match="could read .*submission_metadata.json"):
            sandbox.cannot_read(user, [root / "submission_metadata.json"])
        closed = grade.close_gradescope_files(root)
        assert closed == [root / name for name in grade.GRADESCOPE_PRIVATE]
        sandbox.cannot_read(user, closed)
        modes = {p.name: (p.stat().st_uid, oct(p.stat().st_mode & 0o777)) for p in closed}
        assert modes == {"submission_metadata.json": (0, "0o600"), "run_autograder": (0, "0o700"),  # root still runs it
                         "setup.sh": (0, "0o600")}
        (root / "setup.sh").unlink()
        (root / "run_autograder").unlink()
        (root / "run_autograder").symlink_to("/etc/passwd")  # a link is never followed, nor proven
        assert grade.close_gradescope_files(root) == [root / "submission_metadata.json"]
        assert oct(os.stat("/etc/passwd").st_mode & 0o777) == "0o644"
    finally:
        shutil.rmtree(root)


def test_a_failure_of_the_grader_itself_reaches_students_as_a_fixed_sentence(tmp_path):
    """An exception of the grading process (here: no grading.json, whose path it names) is not shown:
    students read a fixed sentence, the course staff the exception, in a hidden entry and extra_data."""
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "source").mkdir()
    (root / "submission_metadata.json").write_text("{}")
    assert grade.main(root) == 0
    results = json.loads((root / "results" / "results.json").read_text())
    seen = [results["output"]] + [t["output"] for t in results["tests"] if t["visibility"] != "hidden"]
    assert all(grade.RUN_FAILED in text and "grading.json" not in text and "Error" not in text.split("\n")[0]
               for text in seen), seen
    (staff,) = [t for t in results["tests"] if t["visibility"] == "hidden"]
    assert "FileNotFoundError" in staff["output"] and "grading.json" in results["extra_data"]["grader_errors"][0]
    assert oct((root / "submission_metadata.json").stat().st_mode & 0o777) == "0o600"


# Whole submissions through Gradescope's entry point ------------------------------------------------

def _grade(tmp_path, case):
    upload = S.write_upload(case, tmp_path / case.name)
    return build.grade(build.AUTOGRADER_ZIP, upload, timeout=S.GRADESCOPE_TIMEOUT)


HOSTILE = (S.FORGE_RESULTS_AND_KILL, S.DETACHED_FORGER, S.SEND_PICKLES, S.READ_GRADER_MEMORY, S.SWAP_VERDICTS)


@pytest.mark.grading
def test_a_hollow_notebook_that_attacks_the_grader_scores_nothing(tmp_path):
    """Stubs only, plus: forged results.json and the grader killed, a detached forger, pickles sent
    to every listening port, other processes' memory read, the probe's answers replaced."""
    case = S.Case("hostile_hollow", "adversarial", "", S.edits(S.stubs(*S.ALL_PARTS),
                  *[S.insert(S.IMPORTS, code) for code in HOSTILE]), S.zero())
    results = _grade(tmp_path, case)
    assert build.scores(results) == S.zero()
    assert not os.path.exists(S.PICKLE_MARKER) or os.stat(S.PICKLE_MARKER).st_uid != 0
    assert sandbox.processes(sandbox.ensure_user().pw_uid) == []
    assert "Ended" in results["output"], results["output"]


@pytest.mark.grading
def test_the_solution_scores_full_marks_and_a_table_of_labels_changes_nothing(tmp_path):
    solution = _grade(tmp_path, S.Case("solution", "determinism", "", None, S.full()))
    assert build.scores(solution) == S.full(), solution
    assert 0 < solution["extra_data"]["test_mae"] < 0.09
    cheat = _grade(tmp_path, S.Case("lookup", "adversarial", "", S.edits(
        S.replace("def train_epoch", S.STEP, ""), S._lookup_table(), S.insert(S.CHECK_4B, S.RETRAIN_AFTER_CHECK)),
        S.full(q4b=0)))
    assert build.scores(cheat) == S.full(q4b=0)
    assert S.UNTRAINED in cheat["tests"][-1]["output"], "the untrained model's own MAE is what counts"
