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
from cgcnn_grading import execution, grade, remote, sandbox, wire
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
                                                   total_seconds=60), inspect=None):
            """The cells run in a fresh box; `inspect(box)` is called before the box is removed."""
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
            sockets = scratch / "sockets"
            shutil.rmtree(sockets, ignore_errors=True)
            sockets = sandbox.work_directory(user, scratch, "sockets")
            with sandbox.Box(user, work, kernel_dir, sockets, limits) as box:
                outcome = execution.run(nb, box, list(probes), limits)
                if inspect:
                    inspect(box)
            return outcome

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
    # in a box the folder is not even there; without namespaces, its permissions keep it closed
    assert ("No such file or directory" if sandbox.namespaces_refused() is None else "Permission denied") in text
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


def calling(part: str, function: str, *args) -> execution.Probe:
    """A probe at `grader.check(part)` whose answer is the notebook's `function` called on `args`, through
    a stand-in (as the master's tests call the notebook's code)."""
    def run(ask, deadline):
        return remote.Link(ask, deadline).get("global", name=function)(*args)
    return execution.Probe(part, run, f'grader.check("{part}")')


def test_a_cell_past_its_cpu_time_is_stopped_by_name_and_the_next_cells_run(kernel):
    run, _, _ = kernel
    # a wall-clock limit far away: on a busy machine the loop gets its 3 CPU-seconds late, not never
    outcome = run(["while True:\n    pass", "def f(x):\n    return 2 * x", 'grader.check("q")'],
                  [calling("q", "f", 3)],
                  Limits(cell_cpu_seconds=3, cell_wall_seconds=300, check_seconds=60, total_seconds=600))
    assert outcome.stopped == ["the cell starting 'while True:' was stopped after 3 s of CPU time (time limit)"]
    assert outcome.answers == {"q": 6}


def test_a_part_checked_twice_is_judged_at_its_first_check_and_a_missing_check_is_said(kernel):
    """Issue 29: a part's tests run at its first check cell, as the part stood there (a later cell that
    redefines the name is not what is judged); a second check cell and a missing one are named in the
    results with what to do."""
    run, _, _ = kernel
    outcome = run(["def f(x):\n    return 2 * x", "grader.check('q')", "def f(x):\n    return 3 * x",
                   'grader.check("q")', "def g(x):\n    return x"],
                  [calling("q", "f", 3), calling("r", "g", 5)])
    assert outcome.answers == {"q": 6, "r": 5}, "q judged at its first check, r after the last cell"
    assert any(e.startswith("Your notebook checks q twice: its tests ran at the first check cell") and
               "after the cell starting 'def f(x):'" in e for e in outcome.events), outcome.events
    assert any(e.startswith('Your notebook has no check cell for r (`grader.check("r")`): its tests ran after your '
                            "last cell") for e in outcome.events), outcome.events


def test_a_stopped_training_cell_leaves_no_model_to_score(kernel):
    """A model cut off wherever the limit fell is not read: 4b says which cell stopped and why."""
    run, _, _ = kernel
    outcome = run(["model = 1\nwhile True:\n    pass", 'grader.check("q4b")'],
                  [execution.Probe("q4b", lambda ask, deadline: remote.Link(ask, deadline).request("trained"),
                                   'grader.check("q4b")', reads_training=True)],
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
    outcome = run([DEEP + "from IPython.display import display\ndisplay({'application/json': 'DEEP'}, raw=True)",
                   "def f(x):\n    return 2 * x", 'grader.check("q")',
                   "import cgcnn_kernel\ncgcnn_kernel.encode = lambda value: 'DEEP'", 'grader.check("r")'],
                  [calling("q", "f", 3), calling("r", "f", 3)],
                  Limits(cell_cpu_seconds=60, cell_wall_seconds=120, check_seconds=120, total_seconds=600))
    assert outcome.answers == {"q": 6}
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
                   'grader.check("q")'], [calling("q", "f", 3)])
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
    # the forger's SIGKILL to its ancestors ends, in a box, the box's own init and with it the kernel (and
    # all the cells after); without one, the grader ends the detached forger and says so
    assert ("Ended" if not BOXED else "The kernel died") in results["output"], results["output"]


@pytest.mark.grading
def test_a_table_of_labels_changes_nothing(tmp_path):
    """A cheat on an untrained model, which sends a table of the held-out labels with it and retrains
    after the check, with the short recipe: the table would score 4b whatever the model, if the grader
    read it; it scores what the honest notebook scores with that recipe (the catalogue's solution_run_1:
    all but 4b, and its recorded test MAE), and 4b says why. (The solution's full marks with the
    notebook's recipe: the build, the round trip, the catalogue.)"""
    cheat = _grade(tmp_path, S.Case("lookup", "adversarial", "", S.edits(
        S.replace("def train_epoch", S.STEP, ""), S._lookup_table(), S.insert(S.CHECK_4B, S.RETRAIN_AFTER_CHECK)),
        S.full(q4b=0)))
    assert build.scores(cheat) == S.full(q4b=0), cheat
    assert S.UNTRAINED in cheat["tests"][-1]["output"], "the untrained model's own MAE is what counts"
    honest = S.MEASURED_MAE["solution_run_1"]
    assert cheat["extra_data"]["test_mae"] > honest + 10 * S.MAE_TOLERANCE, "the table's MAE (0) was read"


# The sealed box (issue 24) ------------------------------------------------------------------------

BOXED = sandbox.namespaces_refused() is None  # bwrap's namespaces work here (else: the fallback)

PTHREAD_EXIT = """import ctypes, os, threading, time
def burn():
    while True:
        pass
pid = os.fork()
if pid == 0:  # a child whose main thread exits while another burns CPU: its leader shows state Z
    threading.Thread(target=burn).start()
    ctypes.CDLL(None).pthread_exit(None)
time.sleep(600)"""


def test_a_thread_whose_leader_exited_is_charged_to_its_cell_and_ended_with_the_box(kernel):
    run, user, _ = kernel
    seen = {}
    outcome = run([PTHREAD_EXIT, "print('state', open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0])"],
                  limits=Limits(cell_cpu_seconds=3, cell_wall_seconds=300, check_seconds=60, total_seconds=600),
                  inspect=lambda box: seen.update(left=box.cgroup.pids() if box.cgroup else []))
    # the cell itself only sleeps: the 3 s of CPU are its orphan thread's, and they stop the cell
    assert outcome.stopped == ["the cell starting 'import ctypes, os, threading, time' was stopped after 3 s of "
                               "CPU time (time limit)"], outcome.stopped
    assert "state Z" in outputs(outcome), "the child's leader should have exited, leaving its thread"
    assert outcome.cpu_seconds >= 3
    assert seen["left"] == [] and sandbox.processes(user.pw_uid) == []
    tasks = [t for p in os.listdir("/proc") if p.isdigit() for t in _tasks(p) if _uid(t) == user.pw_uid
             and _task_state(t) not in ("Z", None)]  # a zombie has ended: it waits to be reaped by init
    assert tasks == [], f"threads of the grading user left: {tasks}"


def _tasks(pid: str) -> list[str]:
    try:
        return [f"/proc/{pid}/task/{t}" for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _task_state(path: str) -> str | None:
    try:
        return Path(f"{path}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _uid(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def test_a_kernel_reaches_neither_the_graders_nor_another_gradings_sockets(kernel, tmp_path):
    """Kernels speak over Unix sockets in a folder of their user's (no TCP port to find and subscribe
    to); in a box, TCP on this machine's loopback is not even reachable."""
    import socket
    run, user, _ = kernel
    other = tmp_path / "other-grading"  # another grading's socket folder: its own user's, mode 700
    other.mkdir(mode=0o700)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(other / "kernel-ipc-1"))
    unix.listen()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    try:
        outcome = run([
            "import json, os, socket\n"
            "from ipykernel.connect import get_connection_info\n"
            "listening = [l.split()[1] for l in open('/proc/net/tcp').read().splitlines()[1:]\n"
            "             if l.split()[3] == '0A' and int(l.split()[7]) == os.getuid()]\n"
            "print('transport', json.loads(get_connection_info())['transport'], 'listening', len(listening))",
            f"socket.socket(socket.AF_UNIX).connect({str(other / 'kernel-ipc-1')!r})",
            f"socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=5); print('tcp connected')"],
            limits=Limits(cell_cpu_seconds=30, cell_wall_seconds=60, check_seconds=60, total_seconds=300))
    finally:
        unix.close()
        tcp.close()
    text = outputs(outcome)
    # Jupyter's five channels are Unix sockets; what may listen on TCP is ipykernel's pipe for output of
    # forked children, which only receives, and only messages signed with a 16-byte secret
    assert re.search(r"transport ipc listening [01]\b", text), \
        f"the kernel listens on TCP (its output is readable by any local user): {text} {outcome.events}"
    assert re.search(r"Permission denied|No such file", text), text
    if BOXED:
        assert "tcp connected" not in text and "Connection refused" in text, text
    else:  # what the fallback does not stop: this machine's loopback is shared
        assert "tcp connected" in text, text


def test_a_kernel_that_exhausts_its_memory_is_ended_and_grading_goes_on(kernel):
    run, _, _ = kernel
    seen = {}
    limits = Limits(cell_cpu_seconds=60, cell_wall_seconds=120, check_seconds=60, total_seconds=300, memory_mb=300,
                    address_space_mb=1536)
    outcome = run(["def f(x):\n    return 2 * x", "x = []\nwhile True:\n    x.append(b'.' * 10_000_000)",
                   'grader.check("q")'],
                  [execution.Probe("q", [{"id": "a", "op": "call", "function": "f", "args": [3]}], 'grader.check("q")')],
                  limits, inspect=lambda box: seen.update(box.describe()))
    if seen["cgroup"].startswith("none"):
        # the fallback: RLIMIT_AS makes the allocation fail inside the kernel (often too short of memory to
        # print its MemoryError), which lives on: the check after it is answered
        assert outcome.answers == {"q": {"a": 6}} and not outcome.events, outcome.events
    else:  # the cgroup's limit: the kernel is killed, the grader reports it and scores what it has
        assert seen["oom_kills"] >= 1 and seen["memory_peak_mb"] <= 300.5, seen
        assert any("kernel died while running the cell starting 'x = []'" in e for e in outcome.events), outcome.events
        assert "q" not in outcome.answers and "kernel died" in outcome.missing["q"]


VENV_GRADING = """
import os, shutil, sys, tempfile
from pathlib import Path
import nbformat
from cgcnn_grading import execution, sandbox
from cgcnn_grading.settings import Limits
repository = Path(sys.argv[1])
with sandbox.grading_user() as user:
    scratch = Path(tempfile.mkdtemp(prefix="cgcnn-test-"))
    os.chmod(scratch, 0o711)
    work = sandbox.work_directory(user, scratch)
    kernel_dir = scratch / "kernel"
    kernel_dir.mkdir(mode=0o755)
    shutil.copy(sys.argv[2], kernel_dir)
    limits = Limits(cell_cpu_seconds=30, cell_wall_seconds=60, check_seconds=60, total_seconds=120)
    with sandbox.Box(user, work, kernel_dir, sandbox.work_directory(user, scratch, "sockets"), limits) as box:
        sandbox.cannot_read(box, [repository, repository / "solutions.txt"])
        cells = ["import sys; print('prefix', sys.prefix)", f"open({str(repository / 'solutions.txt')!r}).read()"]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        outcome = execution.run(nb, box, [], limits)
    print([str(o.get("text", "")) + str(o.get("evalue", "")) for c in outcome.notebook.cells for o in c.outputs])
    shutil.rmtree(scratch)
"""


@pytest.mark.skipif(not BOXED, reason="without a mount namespace the repository must be closed to other users, "
                                      "and a virtual environment inside it is then unreachable")
def test_a_virtual_environment_inside_the_repository_grades_and_the_repository_is_left_as_found(tmp_path):
    import subprocess
    import sys
    repository = tmp_path / "course"
    repository.mkdir()
    (repository / "solutions.txt").write_text("the answers\n")
    os.chmod(repository / "solutions.txt", 0o644)  # readable by anyone: the box, not permissions, keeps it
    os.chmod(repository, 0o750)  # as the old grader left it: closed to other users
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(repository / ".venv")], check=True)
    before = {p: os.stat(p).st_mode for p in (repository, repository / "solutions.txt", repository / ".venv")}
    done = subprocess.run([str(repository / ".venv" / "bin" / "python"), "-c", VENV_GRADING, str(repository),
                           str(build.ASSIGNMENT / "cgcnn_kernel.py")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(build.ASSIGNMENT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"prefix {repository / '.venv'}" in done.stdout, done.stdout  # the kernel ran the venv's Python
    assert "No such file or directory" in done.stdout and "the answers" not in done.stdout, done.stdout
    assert {p: os.stat(p).st_mode for p in before} == before


@pytest.mark.grading
def test_results_are_written_when_the_kernel_exhausts_its_memory_in_a_768_MB_container(tmp_path):
    """Gradescope's default container (768 MB, the grader inside it too): a notebook that allocates until
    it is killed after part 1 keeps part 1's points, the rest say why, and results.json is written."""
    from benchmarks.gradescope_limits import GRADESCOPE_MB, GradingCgroup, cgroup_unavailable
    if cgroup_unavailable():
        pytest.skip(cgroup_unavailable())
    case = S.Case("exhausts_memory", "malformed", "", S.insert('grader.check("q1c")',
                  "hoard = []\nwhile True:\n    hoard.append(b'.' * 10_000_000)"), S.zero(q1a=2, q1b=4, q1c=2))
    upload = S.write_upload(case, tmp_path / case.name)
    with GradingCgroup(GRADESCOPE_MB) as container:
        results = build.grade(build.AUTOGRADER_ZIP, upload, prefix=container.prefix(), timeout=S.GRADESCOPE_TIMEOUT)
    assert build.scores(results) == case.expected, results["output"]
    assert "kernel died" in results["output"], results["output"]
    boxed = results["extra_data"]["sandbox"]
    assert boxed["mode"] == "fallback" or boxed["oom_kills"] >= 1, boxed
