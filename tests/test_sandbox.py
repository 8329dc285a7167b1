"""The sandboxed grader (assignment/cgcnn_grading): the kernel runs as a user of its own, cannot
read the autograder's files, the held-out set or the results, ends with all its processes, is
stopped at its time limits by name; and whole submissions graded through Gradescope's entry point
(`build.grade`, the committed autograder zip) score what their honest code earns, whatever else
they try."""

import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

import build
import submissions as S
from cgcnn_grading import execution, sandbox
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
