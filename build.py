"""Build the releases of the CGCNN assignment from the master notebook.

    python build.py install [--data] [pip options]
                                 install what the project needs, torch's CPU build first on Linux
                                 (--data: also CHGNet, for `python build.py data` and its tests)
    python build.py              student/, solutions/ and autograder/ from assignment/
    python build.py calibrate    train the solution over several seeds; writes the MAE thresholds
    python build.py answers      the figures Part 5's model answer quotes (the solution executed, with
                                 its polymorph energy differences on the held-out formulas too)
    python build.py data         regenerate the data set with CHGNet (needs requirements-data.txt)
    python build.py pdf SUBMISSIONS... [-o DIR] [--seconds N]
                                 the PDF of the written questions of each submission, offline
                                 (Debian's chromium-headless-shell and libjs-mathjax; chromium as
                                 its own user inside bubblewrap), each within N s
    python build.py grade SUBMISSIONS [-o scores.csv] [-j N] [--results DIR]
                                 grade Gradescope's export (or a folder of .ipynb/.zip) side by side,
                                 as Gradescope does; a CSV to import (`python build.py grade -h`)

The build stages the master notebook with the student copy of the data (no held-out labels) in a
temporary directory, runs `otter assign` there (the master's test cells become the autograder's
tests/, its solution cells master_solution.py), grades the solution with the new autograder zip
(every test of the master must be reported by name and pass), grades the student notebook as
released (every test must fail), executes the solution notebook, and only then replaces the three
release directories (docs/writing-tests.md).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import symtable
import sys
import tempfile
import textwrap
import threading
import time
import tokenize
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ASSIGNMENT = ROOT / "assignment"
NAME = "cgcnn_perovskites"
MASTER = ASSIGNMENT / f"{NAME}.ipynb"
CALIBRATION = ASSIGNMENT / "calibration.json"
SUPPORT = "cgcnn_utils"  # the support module: loading, batching, the training loop
SHIPPED = [f"{SUPPORT}.py", "autograder_requirements.txt"]
# The grader, at the top level of the autograder zip (on the sys.path of Gradescope's entry point):
GRADER = ["run_otter.py", "cgcnn_kernel.py", "cgcnn_grading"]
HELDOUT = "heldout.json"  # the held-out crystals and their labels: only in the zip, never in student/
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entry times: the same commit builds the same bytes
DATA_FILES = ["id_prop.csv", "split.csv", "metadata.csv", "atom_init.json"]
ZIP_NAME = f"{NAME}-autograder.zip"
AUTOGRADER_ZIP = ROOT / "autograder" / ZIP_NAME
NB_NAME = f"{NAME}.ipynb"
CALIBRATION_SEEDS = [0, 1, 2]
MARGIN = 1.5  # full credit up to 1.5 times the worst solution seed's test MAE
# What a calibration measured, besides the master's cells that 4b's model depends on and the support
# module's code they call (build.fingerprint): the grader's CGCNN, which computes the test MAE, and
# the data set (training, validation and held-out crystals, their labels, the element embedding).
MEASURED_BY = {"cgcnn_grading/heldout.py": ["load", "_collate", "model_for", "mae"]}  # what scoring calls
CALIBRATION_DATA = "data/perovskites"
# What a failed build leaves for reading (git-ignored): one folder per step, replaced at its next failure.
FAILURES = ROOT / "build-failures"
# student/ in one file as well: Colab's uploader takes files, not folders (about 1,300 of them)
STUDENT_ZIP = f"{NAME}-student.zip"
# PyTorch's index of CPU-only builds. PyPI's Linux torch is the CUDA build, which pulls nvidia-* and
# triton wheels (gigabytes) that a course without GPUs never uses; this index's torch is the same code
# without CUDA. macOS and Windows wheels on PyPI are CPU-only already.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CPU_MACHINES = ("x86_64", "aarch64")  # the Linux machines that index has wheels for
# The solution notebook is executed with torch's portable ATen kernels: torch picks its float32 kernels
# by the CPU's instruction set (default, avx2, avx512), and sums rounded otherwise train a slightly
# different model. With these, an AVX2 AMD EPYC and an AVX-512 Intel Xeon executed it to the same bytes
# (docs/instructors.md, "Reproducible releases"); native kernels differed in the 3rd decimal.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
# What a CPU whose portable kernels still round otherwise (another architecture) may change in the
# executed solution: within these, the committed solution is kept byte for byte.
NUMBER_TOLERANCE = 0.004  # a printed decimal (eV/atom, accuracies): absolute difference
FIGURE_RMS = 8.0  # a figure: root-mean-square pixel difference (0-255), matplotlib.testing's measure


class BuildError(RuntimeError):
    """A problem with the inputs of the build; the message says what to fix."""


def check_inputs() -> None:
    import nbformat
    if not MASTER.is_file():
        raise BuildError(f"master notebook {MASTER} not found")
    try:
        nb = nbformat.read(MASTER, as_version=4)
        nbformat.validate(nb)
    except Exception as err:
        raise BuildError(f"master notebook {MASTER.name} is not a valid notebook: {err}") from err
    if not any(c.cell_type == "raw" and c.source.startswith("# ASSIGNMENT CONFIG") for c in nb.cells):
        raise BuildError(f"master notebook {MASTER.name} has no '# ASSIGNMENT CONFIG' raw cell")
    for rel in SHIPPED + GRADER + [f"data/perovskites/{f}" for f in DATA_FILES] + ["data/classification/id_prop.csv"]:
        if not (ASSIGNMENT / rel).exists():
            raise BuildError(f"assignment/{rel} is missing (run `python build.py data` for the data set)")
    check_rubrics(nb)


def keep_failure(step: str, files: list[Path]) -> Path:
    """FAILURES/<step>, emptied, holding copies of those of `files` that exist: what a failed step
    leaves for reading once its temporary folder is gone. Root's alone, as the repository is."""
    dest = FAILURES / step
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.chmod(FAILURES, 0o700)
    for file in files:
        if file.is_file():
            shutil.copy(file, dest / file.name)
    return dest


def _shown(path: Path) -> str:
    """A path as messages give it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _first_line(source: str) -> str:
    """A cell's first line of code (comments aside): how messages name a cell."""
    line = next((l for l in source.splitlines() if l.strip() and not l.lstrip().startswith("#")), source.strip())
    return line.strip()[:60]


def _ipython(source: str) -> str:
    """A cell's source as IPython compiles it (magics and shell escapes become calls)."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(source)


def _layout(nb) -> list[tuple[str | None, str | None]]:
    """Each cell's place among otter's annotations: (its question or None, "solution", "tests" or None)."""
    places, question, part = [], None, None
    for cell in nb.cells:
        marker = cell.source.strip().split("\n", 1)[0].strip() if cell.cell_type == "raw" else ""
        if marker == "# BEGIN QUESTION":
            found = re.search(r"^name:\s*(\S+)", cell.source, re.M)
            question = found.group(1) if found else "an unnamed question"
        elif marker in ("# BEGIN SOLUTION", "# BEGIN TESTS"):
            part = marker.split()[-1].lower()
        places.append((question, part))
        if marker == "# END QUESTION":
            question = part = None
        elif marker in ("# END SOLUTION", "# END TESTS"):
            part = None
    return places


def where(nb, index: int) -> str:
    """Cell `index` of the master notebook `nb` in words: its question block and its first line."""
    places = _layout(nb)
    question, part = places[index]
    if question:
        kind = {"solution": "the solution cell", "tests": "a test cell"}.get(part, "the cell")
        block = f"{kind} of {question}"
    else:
        before = [q for q, _ in places[:index] if q]
        block = f"the cell after {before[-1]}'s block" if before else "the cell before the first question"
    return f"{block} starting `{_first_line(nb.cells[index].source)}` (cell {index} of {MASTER.name})"


def in_master(source: str) -> str:
    """Where a cell of a notebook made from the master (its solution or student version) is in the
    master, found by its first line of code; else that first line alone."""
    import nbformat
    master = nbformat.read(MASTER, as_version=4)
    first = _first_line(source)
    same = [i for i, c in enumerate(master.cells) if c.cell_type == "code" and _first_line(c.source) == first]
    return where(master, same[0]) if len(same) == 1 else f"the cell starting `{first}`"


def check_code(nb) -> None:
    """Every code cell of the master compiles as IPython runs it. A syntax error is named here with its
    cell, before otter assign, rather than through the points a grading of the solution would lose."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            compile(_ipython(cell.source), f"<cell {index}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True)
        except (SyntaxError, ValueError) as err:  # ValueError: a null byte
            line = (f" (line {err.lineno} of the cell: `{(err.text or '').strip()[:80]}`)"
                    if isinstance(err, SyntaxError) and err.lineno else "")
            raise BuildError(f"{type(err).__name__}: {getattr(err, 'msg', err)}{line} in {where(nb, index)}: "
                             "fix it in the master notebook") from None


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def stage_student_data(dest: Path) -> dict:
    """Copy the data set without the held-out test crystals (structures and labels: a student who
    had the structures could compute their labels elsewhere); return those as {id: {cif, label}}."""
    src = ASSIGNMENT / "data"
    shutil.copytree(src, dest / "data", ignore=shutil.ignore_patterns(".*", "references.json",
                                                                      "generation.json", "rejected.csv"))
    pv = dest / "data" / "perovskites"
    test_ids = {r["id"] for r in _rows(pv / "split.csv") if r["split"] == "test"}
    labels = {r["id"]: r["formation_energy_per_atom"] for r in _rows(pv / "metadata.csv")}
    heldout = {i: {"cif": (pv / f"{i}.cif").read_text(), "label": float(labels[i])} for i in sorted(test_ids)}
    for folder in (pv, dest / "data" / "classification"):  # the classification set shares some crystals
        _drop(folder, test_ids)
    cl = dest / "data" / "classification"
    meta = _rows(cl / "metadata.csv")
    keep = [c for c in meta[0] if "energy" not in c]  # these would leak perovskite labels
    _write_rows(cl / "metadata.csv", meta, keep)
    data = dest / "data"
    (data / "DATACARD.md").write_text(student_card(data, data_counts(src)))
    import baselines
    staged = json.loads((data / "baselines.json").read_text())
    staged["classification"] = baselines.classification_baselines(cl)  # this folder's split, not the full set's
    (data / "baselines.json").write_text(json.dumps(staged, indent=1) + "\n")
    return heldout


def _drop(folder: Path, ids: set[str]) -> None:
    """Remove entries from a CGCNN data directory: their CIFs and their rows in every table."""
    for i in ids:
        (folder / f"{i}.cif").unlink(missing_ok=True)
    for name in ("split.csv", "metadata.csv"):
        rows = _rows(folder / name)
        _write_rows(folder / name, [r for r in rows if r["id"] not in ids], list(rows[0]))
    id_prop = (folder / "id_prop.csv").read_text().splitlines()
    (folder / "id_prop.csv").write_text("".join(l + "\n" for l in id_prop if l.split(",")[0] not in ids))


def _exponent(value: float) -> str:
    """3e-3, as the notebook's text writes a learning rate."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# The training recipe's numbers that the notebook's text quotes, as __NAME__, and how it writes them:
# each is read from its assignment in the master's code (the learning rate from cgcnn_utils.fit).
QUOTED = {"SEED": str, "EPOCHS": str, "BATCH_SIZE": str, "LR": _exponent, "EXPERIMENT_TRAIN": str,
          "EXPERIMENT_EPOCHS": str}


def recipe_numbers(nb) -> dict[str, str]:
    """The QUOTED numbers of master notebook `nb`, as its text writes them: each from its one top-level
    assignment of a literal (`BATCH_SIZE, EPOCHS = 64, 60` included); LR from the `lr=` of the
    training's cgcnn_utils.fit call, else from fit's default."""
    values = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.parse(_ipython(cell.source)).body:
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                         and isinstance(node.value, ast.Tuple) else [(target, node.value)])
                for name, value in pairs:
                    if not (isinstance(name, ast.Name) and name.id in QUOTED):
                        continue
                    try:
                        number = ast.literal_eval(value)
                    except ValueError:
                        raise BuildError(f"{name.id} = {ast.unparse(value)} in the master notebook: the notebook's "
                                         "text quotes it, so it must be a number written out") from None
                    if values.setdefault(name.id, number) != number:
                        raise BuildError(f"{name.id} is set to {values[name.id]} and to {number} in the master "
                                         "notebook: its text quotes one value; set it once")
    values.setdefault("LR", _training_lr(nb))
    return {key: QUOTED[key](value) for key, value in values.items()}


def _training_lr(nb) -> float:
    """The learning rate of 4b's training: its cgcnn_utils.fit call's `lr=`, else fit's default."""
    recipe = recipe_cells(nb)
    given = set()
    for i in recipe:
        for node in ast.walk(ast.parse(_ipython(nb.cells[i].source))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "fit":
                for keyword in (k for k in node.keywords if k.arg == "lr"):
                    try:
                        given.add(ast.literal_eval(keyword.value))
                    except ValueError:
                        raise BuildError(f"4b's training calls fit with lr={ast.unparse(keyword.value)}: the notebook's "
                                         "text quotes the learning rate, so write it out as a number") from None
    if len(given) > 1:
        raise BuildError(f"4b's training calls fit with several learning rates {sorted(given)}: the text quotes one")
    if given:
        return given.pop()
    tree = ast.parse((ASSIGNMENT / f"{SUPPORT}.py").read_text())
    fit = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    positional = fit.args.args[len(fit.args.args) - len(fit.args.defaults):]
    defaults = dict(zip([a.arg for a in positional], fit.args.defaults))
    defaults.update({a.arg: d for a, d in zip(fit.args.kwonlyargs, fit.args.kw_defaults) if d is not None})
    return ast.literal_eval(defaults["lr"])


def data_counts(data: Path = ASSIGNMENT / "data") -> dict[str, str]:
    """The data set's counts that the notebook's text quotes (as __NAME__): the perovskite set's in
    full and as the student release holds it (stage_student_data holds back part 4b's test crystals),
    and the classification set's as the student release holds it (it drops the crystals it shares
    with that test set: perovskites of the test formulas) and in full."""
    perovskites = _rows(data / "perovskites" / "split.csv")
    formula = {r["id"]: r["formula"] for r in _rows(data / "perovskites" / "metadata.csv")}
    test = {r["id"] for r in perovskites if r["split"] == "test"}
    rows = _rows(data / "classification" / "split.csv")
    labels = dict(line.split(",")[:2] for line in (data / "classification" / "id_prop.csv").read_text().split())
    kept = [r for r in rows if r["id"] not in test]
    counts = {"PEROVSKITES": len(perovskites), "FORMULAS": len(set(formula.values())),
              "STUDENT_PEROVSKITES": len(perovskites) - len(test), "HELDOUT_PEROVSKITES": len(test),
              "HELDOUT_FORMULAS": len({formula[i] for i in test}),
              "CLASSIFICATION_ENTRIES": len(kept), "CLASSIFICATION_TEST": sum(r["split"] == "test" for r in kept),
              "CLASSIFICATION_PEROVSKITES": sum(labels[r["id"]].strip() == "1" for r in kept),
              "CLASSIFICATION_ALL": len(rows)}
    return {key: str(value) for key, value in counts.items()}


def _count_table(title: str, groups: list[str], rows: list[tuple[str, str]]) -> list[str]:
    """A Markdown table of (group, split) pairs counted by group and split, as the card's tables are."""
    splits = ("train", "val", "test")
    table = [f"| {title} | {' | '.join(splits)} | total |", "|---|---|---|---|---|"]
    for group in [*groups, "all"]:
        n = [sum(s == split and group in (g, "all") for g, s in rows) for split in splits]
        table.append(f"| {group} | {' | '.join(map(str, n))} | {sum(n)} |")
    return table


def student_card(data: Path, full: dict[str, str]) -> str:
    """The data card of the student release's folder `data` (as stage_student_data left it): a section
    of the folder's own counts, said why they differ from the full set's (`full`, data_counts), then
    the card of the full set."""
    pv, cl = data / "perovskites", data / "classification"
    split = {r["id"]: r["split"] for r in _rows(pv / "split.csv")}
    polymorphs = [(r["prototype"], split[r["id"]]) for r in _rows(pv / "metadata.csv")]
    cl_split = {r["id"]: r["split"] for r in _rows(cl / "split.csv")}
    types = [("perovskite" if r["is_perovskite"] == "1" else r["prototype"], cl_split[r["id"]])
             for r in _rows(cl / "metadata.csv")]
    shared = int(full["CLASSIFICATION_ALL"]) - len(types)
    section = [
        "## This folder",
        *textwrap.wrap(f"This is the student release's copy. It holds part 4b's training and validation crystals only: "
        f"the {full['HELDOUT_PEROVSKITES']} test crystals ({full['HELDOUT_FORMULAS']} formulas) are held back, "
        "structures and labels (whoever had the structures could compute their labels), and the autograder "
        f"scores 4b on them; the classification set leaves out with them its {shared} perovskites of those "
        "formulas. The counts here are this folder's. The rest of the card, from *Contents* on, describes "
        f"the full data set as generated ({full['PEROVSKITES']} perovskites, {full['CLASSIFICATION_ALL']} "
        "oxides), whose files `references.json`, `rejected.csv` and `generation.json` stay with the course "
        "staff. In `baselines.json` the regression baselines are measured on the held-out test set; the "
        "classification rules on this folder's own split.", width=100), "",
        *_count_table("perovskites", sorted({g for g, _ in polymorphs}), polymorphs), "",
        *_count_table("classification", sorted({g for g, _ in types}), types), ""]
    card = (data / "DATACARD.md").read_text()
    head, contents = card.split("\n## Contents\n", 1)
    return f"{head}\n" + "\n".join(section) + f"\n## Contents\n{contents}"


def fill(text: str, thresholds: dict) -> str:
    """The master notebook's text with the build's values in place of its __NAME__ placeholders: the
    calibrated thresholds, the training recipe's numbers (recipe_numbers: its text never repeats
    them), the data set's counts, in full and as the student release holds it (data_counts),
    and the names the Colab setup cell uses (stated here only)."""
    import nbformat
    for key, value in thresholds.items():
        text = text.replace(f"__{key.upper()}__", f"{value:.3f}")
    for key, value in {**recipe_numbers(nbformat.reads(text, as_version=4)), **data_counts()}.items():
        text = text.replace(f"__{key}__", value)
    for key, value in {"student_zip": STUDENT_ZIP, "torch_cpu_index": TORCH_CPU_INDEX}.items():
        text = text.replace(f"__{key.upper()}__", value)
    return text


def stage(dest: Path, thresholds: dict) -> tuple[Path, dict]:
    """The master notebook, with calibrated thresholds filled in, and what it ships, in `dest`;
    returns its path and the held-out set."""
    dest.mkdir(parents=True)
    (dest / MASTER.name).write_text(fill(MASTER.read_text(), thresholds))
    for rel in SHIPPED:
        shutil.copy(ASSIGNMENT / rel, dest / rel)
    return dest / MASTER.name, stage_student_data(dest)


def otter_assign(notebook: Path, run_tests: bool) -> Path:
    dist = notebook.parent / "dist"
    cmd = [sys.executable, "-m", "otter", "assign", notebook.name, "dist"]
    if not run_tests:
        cmd.append("--no-run-tests")
    done = subprocess.run(cmd, cwd=notebook.parent, capture_output=True, text=True)
    if done.returncode != 0:
        log = notebook.parent / "otter-assign.log"
        log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
        kept = keep_failure("otter-assign", [log, notebook])
        # otter's own error is its output's last line; the traceback above it is otter's code, not ours
        last = next((l.strip() for l in reversed((done.stderr + done.stdout).splitlines()) if l.strip()),
                    f"no message, exit status {done.returncode}")
        why = " or the solution scored below 100 %" if run_tests else ""
        raise BuildError(f"otter assign rejected the master notebook {MASTER.name} (its otter annotations: the "
                         f"# BEGIN / # END QUESTION, SOLUTION, TESTS and PROMPT markers{why}): {last[:400]}\n"
                         f"  full log: {_shown(kept / log.name)} (beside the notebook as otter read it)")
    return dist


def with_seed(nb, seed: int):
    """The notebook with `SEED = seed` in its settings cell."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.source = re.sub(r"^SEED = \d+", f"SEED = {seed}", cell.source, flags=re.M)
    return nb


def execute(notebook: Path, term: str = "", timeout: int = 1800, running: list | None = None) -> "nbformat.NotebookNode":
    """Run a notebook top to bottom in its own directory, on one torch thread as graded and with
    PORTABLE_KERNELS, so that the same commit gives the same outputs on every CPU kind measured (see
    `keep_if_equivalent` for others), without its export cell (which would grade the notebook as saved
    and overwrite this run's outputs). `running` gets the NotebookClient, for `end_execution`."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if "grader.export(" not in c.source]
    # Its own support module and data first: a PYTHONPATH naming assignment/ would otherwise give the
    # kernel that copy of cgcnn_utils, whose data directory holds the held-out crystals.
    # assignment/ after it, for the startup file that gives the hidden tests `solution` and `seeded`
    # (cgcnn_grading.master_tests.define_in_notebook): otter runs them in this notebook too.
    from cgcnn_grading.master_tests import TERM_VARIABLE
    ipython = Path(tempfile.mkdtemp(prefix="cgcnn-ipython-"))
    startup = ipython / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-master-tests.py").write_text(
        "from cgcnn_grading.master_tests import define_in_notebook\ndefine_in_notebook(globals())\n"
        "del define_in_notebook\n")
    env = dict(os.environ, **PORTABLE_KERNELS, PYTHONPATH=f"{notebook.parent.resolve()}:{ASSIGNMENT}",
               IPYTHONDIR=str(ipython), **{TERM_VARIABLE: term})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    if running is not None:
        running.append(client)
    try:
        client.execute(env=env, cwd=str(notebook.parent))
    except CellExecutionError as err:
        failed = [c for c in nb.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        kept = keep_failure("execution", [])
        nbformat.write(nb, kept / notebook.name)
        place = in_master(failed[0].source) if failed else "one of its cells"
        raise BuildError(f"executing {notebook.name} failed: {err.ename}: {_one_line(err.evalue)[:300]} in {place}\n"
                         f"  the notebook as executed, with the traceback: {_shown(kept / notebook.name)}") from None
    finally:
        shutil.rmtree(ipython, ignore_errors=True)
    return normalise(nb)


def end_execution(running: list, execution) -> None:
    """End an `execute` running in another thread (its future `execution`): kill its kernel, which the
    client then reports dead, until the thread has returned."""
    while not execution.done():
        for client in running:
            process = getattr(getattr(getattr(client, "km", None), "provisioner", None), "process", None)
            if process is not None:
                process.kill()
        time.sleep(0.2)


def normalise(nb):
    """What changes from run to run taken out of an executed notebook: fixed cell ids, no execution
    timestamps, no progress bars (stderr or widgets), consecutive stdout outputs merged (where the
    kernel flushed between two prints depends on timing: a cell's one print came out as two outputs);
    cells tagged `varies` (timings) keep no outputs. (The notebook seeds `random` too, for otter's
    choice of emoji after "passed!".)"""
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor
    for index, cell in enumerate(nb.cells):
        cell.id = f"c{index:03d}-{hashlib.sha1(cell.source.encode()).hexdigest()[:8]}"
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            if "varies" in cell.metadata.get("tags", []):
                cell.outputs = []
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")
                            and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    return CoalesceStreamsPreprocessor().preprocess(nb, {})[0]


def close_to_others(path: Path, why: str) -> None:
    """chmod o-rwx `path`: no other user (a grading user) can enter it or read it."""
    mode = path.stat().st_mode
    if mode & 0o007:
        os.chmod(path, mode & ~0o007)
        print(f"closed {path} to other users (chmod o-rwx): {why}")


def grade(zip_path: Path, submission: Path, out: Path | None = None, prefix: list[str] = (),
          timeout: float = 1800, user: str | None = None, private: list[Path] = ()) -> dict:
    """Grade one submission (.ipynb, .zip or a folder) with the autograder zip, as Gradescope does: the
    zip's entry point in Gradescope's layout (the zip unpacked into source/, the upload into
    submission/), in a private temporary folder; return results.json. `prefix` wraps the command (for
    example `["taskset", "-c", "0"]`); a run longer than `timeout` is ended with every process of its
    grading user and raises subprocess.TimeoutExpired. The run grades as a user no other grading on this
    machine holds (sandbox.claimed_user: `user` when it is free, else the first free cgcnn-student-N),
    claimed before its clock starts: waiting for a user, behind another course's or TA's gradings, is
    never the submission's time. `private`: more paths the submission must
    not be able to read (other students' uploads). With `out`, what the entry point wrote in results/
    (results.json, the notebook as executed) and what it printed (grader.log, also when it wrote no
    results) are kept there. The repository is left as found: the kernel's box does not hold it (where
    namespaces work; elsewhere the grader refuses to run while the grading user could read it)."""
    with tempfile.TemporaryDirectory(prefix="cgcnn-grade-") as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(root / "source")
        upload = root / "submission"
        uploaded = _uploaded_zip(submission) if submission.is_dir() else None
        if uploaded is not None:  # a zip as the student uploaded it (Gradescope's export keeps it so)
            submission = uploaded
        if submission.is_dir():
            shutil.copytree(submission, upload, symlinks=True)
        elif submission.suffix == ".zip":
            try:
                with zipfile.ZipFile(submission) as z:  # unpacked, as Gradescope unpacks an uploaded zip
                    z.extractall(upload)
            except zipfile.BadZipFile as err:
                raise BuildError(f"{submission.name} is not a readable zip ({err}): the student should "
                                 "export it again or upload the notebook itself") from err
        else:
            upload.mkdir()
            shutil.copy(submission, upload)
        (root / "submission_metadata.json").write_text("{}")
        from cgcnn_grading import sandbox
        entry = root / "source" / "run_otter.py"
        if "--lock-fd" in entry.read_text(errors="replace"):
            claim = sandbox.claimed_user(user)
        else:  # a zip built before claimed users: its run takes (and may wait for) its user's lock itself
            claim = contextlib.nullcontext((user or sandbox.USER, None))
        with claim as (name, lock):
            command = [sys.executable, str(entry), "--user", name, *(["--lock-fd", str(lock)] if lock is not None else []),
                       str(root), str(ROOT), *map(str, private)]
            try:
                done = subprocess.run([*prefix, *command], cwd=root / "source", capture_output=True, text=True,
                                      timeout=timeout, pass_fds=(lock,) if lock is not None else ())
            except subprocess.TimeoutExpired as err:
                _keep_log(out, err.stdout, err.stderr, f"ended after {timeout:.0f} s (the time allowed for a run)")
                _end_ended_run(name, lock)
                raise
        _keep_log(out, done.stdout, done.stderr, f"exit status {done.returncode}")
        results = root / "results" / "results.json"
        if not results.is_file():
            why = (done.stderr.strip().splitlines() or ["no error message"])[-1]
            raise BuildError(f"the autograder wrote no results for {submission.name}: {why}")
        if out is not None:  # results.json and what else the entry point wrote (the notebook as executed)
            for kept in (root / "results").iterdir():
                if kept.is_file() and not kept.is_symlink():
                    shutil.copy(kept, out / kept.name)
        return json.loads(results.read_text())


def _uploaded_zip(folder: Path) -> Path | None:
    """The one zip in a submission folder that holds no notebook (the export cell's zip, uploaded), or None."""
    if any(p.suffix == ".ipynb" for p in folder.rglob("*")):
        return None
    zips = [p for p in folder.iterdir() if p.suffix == ".zip" and p.is_file() and not p.is_symlink()]
    return zips[0] if len(zips) == 1 else None


def _end_ended_run(user: str, lock: int | None) -> None:
    """After a run was killed at its timeout: with its grading user's lock (which this process holds,
    and shared with the run), every process the run left is ended, and its scratch folder removed; the
    user's next grading, another student's, would otherwise find that student's files in its own user's
    work directory."""
    from cgcnn_grading import sandbox
    from cgcnn_grading.grade import SCRATCH_PREFIX
    with sandbox.grading_user(user, held=lock) as owner:  # entering it ends the user's processes
        for scratch in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
            work = scratch / "work"  # the user's: no grading of this user runs while we hold its lock
            if work.is_dir() and not work.is_symlink() and work.stat().st_uid == owner.pw_uid:
                shutil.rmtree(scratch, ignore_errors=True)


def _keep_log(out: Path | None, stdout, stderr, end: str) -> None:
    """grader.log in `out`: what the entry point printed (its traceback, when it failed), and how it ended."""
    if out is None:
        return
    text = [s.decode(errors="replace") if isinstance(s, bytes) else s or "" for s in (stdout, stderr)]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "grader.log"
    log.write_text(f"--- stdout\n{text[0]}\n--- stderr\n{text[1]}\n--- {end}\n")
    os.chmod(log, 0o600)  # the grader's own errors, for the course staff


def scores(results: dict) -> dict[str, float]:
    """{part: score} from a results.json."""
    return {t["name"]: t.get("score", 0) for t in results.get("tests", []) if "max_score" in t}


def question_configs(nb) -> list[dict[str, str]]:
    """The master notebook's question configs (otter's `# BEGIN QUESTION` cells), as {key: value}."""
    return [dict(re.findall(r"^(\w+): *([^#\n]*?) *(?:#.*)?$", cell.source, re.M)) for cell in nb.cells
            if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION")]


def question_points(nb) -> dict[str, float]:
    """{part: points} of the master notebook's autograded parts."""
    return {config["name"]: float(config["points"]) for config in question_configs(nb)
            if config.get("manual", "false") != "true"}


def grading_settings(student_nb, points: dict[str, float], mae_full: float, term: str = "") -> str:
    """grading.json: the settings the grader reads from the zip (see cgcnn_grading.settings)."""
    import dataclasses
    import cgcnn_utils
    from cgcnn_grading.settings import MAE_QUESTION, MAE_TIERS, Settings
    tiers = sum(p for _, _, p in MAE_TIERS)
    if tiers != points.get(MAE_QUESTION):
        raise BuildError(f"{MAE_QUESTION} is worth {points.get(MAE_QUESTION)} points in the master notebook, "
                         f"but its MAE tiers (cgcnn_grading.settings.MAE_TIERS) add up to {tiers}")
    checks = {}
    for cell in student_nb.cells:
        found = re.fullmatch(r'grader\.check\("(\w+)"\)', cell.source.strip())
        if cell.cell_type == "code" and found:
            checks[found.group(1)] = cell.source.strip()
    if set(checks) != set(points):
        raise BuildError(f"the student notebook's check cells {sorted(checks)} do not match its parts {sorted(points)}")
    export = [c.source.strip() for c in student_nb.cells if c.cell_type == "code" and "grader.export(" in c.source]
    return Settings(NAME, points, checks, export, mae_full, dataclasses.asdict(cgcnn_utils.GRAPH), term).dump()


SOLUTION_TAG = "otter_assign_solution_cell"  # otter assign's tag on the solution notebook's solution cells


def solution_module(solution_nb) -> str:
    """The master's solution code as a module for the grader (cgcnn_grading.master_tests.SOLUTION_MODULE):
    the functions and classes of the solution notebook's solution cells, each name defined once, after
    the notebook's import statements that they use. Hidden tests take their expected values from it."""
    definitions, defined, used = [], {}, set()
    for index, cell in enumerate(solution_nb.cells):
        if cell.cell_type != "code" or SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        lines = cell.source.splitlines()
        for node in ast.parse(_ipython(cell.source)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                if node.name in defined:
                    raise BuildError(f"{in_master(cell.source)} defines {node.name}, as {defined[node.name]} does: "
                                     "the solution must define each name once (the grader's copy of the solution "
                                     "could not say which one the tests mean)")
                defined[node.name] = in_master(cell.source)
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                definitions.append(_without_markers(lines[first - 1:node.end_lineno]))
                used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    imports = []
    for cell in solution_nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_ipython(cell.source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound = {(a.asname or a.name).split(".")[0] for a in node.names}
                text = ast.unparse(node)
                if bound & used and text not in imports:
                    imports.append(text)
    header = ('"""The master notebook\'s solution code (written by build.py from its solution cells): the hidden '
              'tests\' expected values, computed in the grading process."""')
    return "\n\n".join([header, "\n".join(imports)] + definitions) + "\n"


def _without_markers(lines: list[str]) -> str:
    """Solution code without otter's markers: the # BEGIN / # END SOLUTION comments and the prompt
    blocks (the student version's `raise NotImplementedError`, kept in a string)."""
    kept, prompt = [], False
    for line in lines:
        marker = line.strip()
        if marker.startswith('""" # BEGIN PROMPT'):
            prompt = True
        elif prompt:
            prompt = not marker.startswith('""" # END PROMPT')
        elif not re.fullmatch(r"# (BEGIN|END) SOLUTION( NO PROMPT)?", marker):
            kept.append(line)
    return "\n".join(kept)


def check_tests(tests_dir: Path, points: dict[str, float]) -> None:
    """The master's tests as otter wrote them: every autograded part has tests, public tests take none
    of the names only the grader gives (master_tests.RESERVED: a student's notebook has none), and a
    part's tests' points add up to the part's."""
    from cgcnn_grading.master_tests import RESERVED, TestFileError, defined, load
    from cgcnn_grading.settings import MAE_QUESTION
    for path in sorted(tests_dir.glob("*.py")):
        names = defined(path)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise BuildError(f"part {path.stem} has two tests named {repeated[0]} ({test_cell(path.stem, repeated[0])} and another): "
                             "otter would keep only the last; give each test function its own name")
    try:
        parts = load(tests_dir)
    except TestFileError as err:
        raise BuildError(f"the master's tests as otter wrote them cannot be read: {err}") from err
    for question, worth in points.items():
        part = parts.get(question)
        if part is None or not part.tests:
            raise BuildError(f"part {question} has no tests in the master notebook: add a test cell between its "
                             "# BEGIN TESTS and # END TESTS (docs/writing-tests.md)")
        for test in part.tests:
            reserved = [p for p in test.parameters if p in RESERVED]
            if reserved and not test.hidden:
                raise BuildError(f"{question}'s public test {test.name} ({test_cell(question, test.name)}) takes {', '.join(reserved)}, "
                                 "which only the grader gives: public tests also run in the student's notebook, "
                                 "where there is no solution. Make it hidden (hidden: true) or compare with fixed "
                                 "values")
        total = sum(t.points for t in part.tests)
        if question != MAE_QUESTION and not math.isclose(total, worth, abs_tol=1e-9):
            raise BuildError(f"{question}'s tests are worth {total:g} points together ("
                             f"{', '.join(f'{t.name} {t.points:g}' for t in part.tests)}), the part {worth:g}: set "
                             "the points of its TEST CONFIGs to add up to the question's points")


def test_cell(question: str, name: str) -> str:
    """Where part `question`'s test function `name` is defined in the master notebook."""
    import nbformat
    master = nbformat.read(MASTER, as_version=4)
    part = None
    for index, cell in enumerate(master.cells):
        found = re.search(r"^name: (\w+)", cell.source, re.M) if cell.cell_type == "raw" and "BEGIN QUESTION" in cell.source else None
        part = found.group(1) if found else part
        if part == question and cell.cell_type == "code" and re.search(rf"^def {re.escape(name)}\(", cell.source, re.M):
            return f"the test cell of {question} defining {name}, cell {index} of {MASTER.name}"
    return f"the test cell defining {name}"


def solution_test_failures(results: dict, tests_dir: Path) -> list[str]:
    """Each test of the master that grading the solution did not pass, named with its cell and why; a
    test it did not run at all raises: the autograder would never score it."""
    from cgcnn_grading.master_tests import load
    reported = (results.get("extra_data") or {}).get("tests") or {}
    failures = []
    for question, part in load(tests_dir).items():
        for test in part.tests:
            verdict = (reported.get(question) or {}).get(test.name)
            kind = "hidden" if test.hidden else "public"
            if verdict is None:
                raise BuildError(f"grading the solution did not run {question}'s {kind} test {test.name} "
                                 f"({test_cell(question, test.name)}): the autograder would not score it")
            if verdict != "passed":
                failures.append(f"the solution fails {question}'s {kind} test {test.name} ({test_cell(question, test.name)}): "
                                f"{verdict.removeprefix('failed: ')}")
    return failures


def check_tests_can_fail(unwritten: dict, tests_dir: Path) -> None:
    """Grading the student notebook as released (`unwritten`) failed every test that takes a name of
    the notebook's: a test that passes without the student's code cannot fail, and is refused."""
    from cgcnn_grading.master_tests import RESERVED, load
    reported = (unwritten.get("extra_data") or {}).get("tests") or {}
    for question, part in load(tests_dir).items():
        for test in part.tests:
            if [p for p in test.parameters if p not in RESERVED] and (reported.get(question) or {}).get(test.name) == "passed":
                raise BuildError(f"{question}'s {'hidden' if test.hidden else 'public'} test {test.name} "
                                 f"({test_cell(question, test.name)}) passes on the student notebook as released, "
                                 "before any part is written: it cannot fail")


def finish_zip(path: Path, extra: dict[str, bytes]) -> None:
    """Add the grader and its settings at the top level of the autograder zip (on the sys.path of
    Gradescope's `python /autograder/source/run_otter.py`), every entry sorted and with a fixed time."""
    for name in GRADER:
        source = ASSIGNMENT / name
        for file in sorted(source.rglob("*.py")) if source.is_dir() else [source]:
            extra[str(file.relative_to(ASSIGNMENT))] = file.read_bytes()
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info) for info in z.infolist() if not info.is_dir()}
    members.update(extra)
    _write_zip(path, members)


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    """`members` ({name: bytes}) as the zip `path`: sorted, one fixed time and mode, so that the same
    files give the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, members[name])


def student_zip(folder: Path) -> Path:
    """The student release `folder` as one zip inside it (STUDENT_ZIP), holding every other file of
    the folder at the zip's top level: what students upload to Colab, whose setup cell unpacks it."""
    path = folder / STUDENT_ZIP
    _write_zip(path, {p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in folder.rglob("*") if p.is_file() and p != path})
    return path


RUBRIC_LINE = re.compile(r"^- \*\*(\d+(?:\.\d+)?) points?\.\*\*", re.M)  # a rubric's element: "- **1 point.** ..."


def written_answers(nb) -> str:
    """The prompts, model answers and rubrics of the manually graded questions, as markdown."""
    parts, in_q = ["# Model answers and rubrics of the written questions\n",
                   "Graded by hand on Gradescope, from the PDF each student uploads (docs/instructors.md): "
                   "each rubric element below is one rubric item of its question, worth the points it names."], False
    for cell in nb.cells:
        text = re.sub(r"<!--.*?-->", "", cell.source).strip()  # otter marks manual questions with comments
        if cell.cell_type == "markdown" and re.match(r"\*\*Question \d", text):
            parts.append(text)
            in_q = True
        elif in_q and cell.cell_type == "markdown" and text.startswith(("*Model answer", "*Rubric")):
            parts.append(text)
    return "\n\n".join(parts) + "\n"


def check_rubrics(nb) -> None:
    """Every hand-graded question of the master notebook `nb` has one rubric in its solution block (so
    that it never reaches students), whose elements' points add up to the question's points."""
    places = _layout(nb)
    for config in question_configs(nb):
        if config.get("manual", "false") != "true":
            continue
        name = config.get("name", "an unnamed question")
        rubrics = [(i, c) for i, c in enumerate(nb.cells) if places[i][0] == name and c.cell_type == "markdown"
                   and c.source.lstrip().startswith("*Rubric")]
        if len(rubrics) != 1:
            raise BuildError(f"{name} is graded by hand and needs one rubric (a markdown cell starting `*Rubric` in "
                             f"its solution block, one `- **N points.**` line per element), found {len(rubrics)}")
        at, rubric = rubrics[0]
        if places[at][1] != "solution":
            raise BuildError(f"{name}'s rubric (cell {at} of {MASTER.name}) is outside its solution block, so it "
                             "would reach students: move it between `# BEGIN SOLUTION` and `# END SOLUTION`")
        elements = [float(p) for p in RUBRIC_LINE.findall(rubric.source)]
        points = float(config.get("points", "nan"))
        if not elements or not math.isclose(sum(elements), points):
            raise BuildError(f"{name}'s rubric gives {' + '.join(f'{e:g}' for e in elements) or 'no element'} "
                             f"= {sum(elements):g} points, its `# BEGIN QUESTION` config {points:g}: make them agree")


_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def _image(data: str):
    import base64
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(float)


def output_difference(before, after) -> str | None:
    """Why two outputs of one cell differ by more than a CPU kind explains (None: they do not): the
    same kind and text with each decimal number within NUMBER_TOLERANCE, each figure of the same size
    within FIGURE_RMS."""
    from matplotlib.testing.compare import calculate_rms
    if before.get("output_type") != after.get("output_type") or before.get("name") != after.get("name"):
        return "another kind of output"
    texts = [o.get("text", "") for o in (before, after)]
    datas = [o.get("data", {}) for o in (before, after)]
    if set(datas[0]) != set(datas[1]):
        return "another kind of output"
    for mime in datas[0]:
        if mime == "image/png":
            images = [_image(d[mime]) for d in datas]
            if images[0].shape != images[1].shape:
                return f"a figure of another size ({images[0].shape} against {images[1].shape})"
            rms = calculate_rms(*images)
            if rms > FIGURE_RMS:
                return f"a figure that moved by RMS {rms:.1f} > {FIGURE_RMS}"
        elif mime.startswith("text/"):
            texts += ["".join(d[mime]) if isinstance(d[mime], list) else str(d[mime]) for d in datas]
        elif datas[0][mime] != datas[1][mime]:
            return f"another {mime}"
    for old, new in zip(texts[0::2], texts[1::2]):
        if _NUMBER.split(old) != _NUMBER.split(new):
            return f"other text: {_one_line(old)[:80]!r} against {_one_line(new)[:80]!r}"
        for a, b in zip(_NUMBER.findall(old), _NUMBER.findall(new)):
            if abs(float(a) - float(b)) > NUMBER_TOLERANCE:
                return f"{a} became {b} (more than {NUMBER_TOLERANCE})"
    return None


def keep_if_equivalent(committed: Path, executed) -> tuple[bool, str]:
    """Whether the committed executed solution may stay byte for byte instead of `executed`: the same
    cells (sources, kinds, order) whose outputs differ only as another CPU's rounding explains. torch
    and MKL round float32 sums by the CPU's instruction set, so the same commit prints slightly other
    numbers on another CPU kind; the release stays the one committed unless something really changed.
    Returns (keep, what to tell the instructor)."""
    import nbformat
    try:
        before = nbformat.read(committed, as_version=4)
    except (OSError, ValueError):
        return False, ""
    if [(c.cell_type, c.source) for c in before.cells] != [(c.cell_type, c.source) for c in executed.cells]:
        return False, ""  # the master changed: the new execution is the release
    moved = 0
    for old, new in zip(before.cells, executed.cells):
        if old.cell_type != "code" or old.outputs == new.outputs:
            continue
        if len(old.outputs) != len(new.outputs):
            return False, f"{in_master(new.source)} printed {len(new.outputs)} outputs, not {len(old.outputs)}"
        for a, b in zip(old.outputs, new.outputs):
            why = output_difference(a, b)
            if why:
                return False, f"{in_master(new.source)}: {why}"
        moved += 1
    if not moved:
        return True, ""
    return True, (f"the executed solution agrees with the committed one within a CPU kind's rounding ({moved} cells "
                  f"moved by at most {NUMBER_TOLERANCE} per number and RMS {FIGURE_RMS:g} per figure): kept as committed")


def _swap(new: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(new), str(target))


def assemble(tmp: Path, thresholds: dict, term: str = "") -> tuple[Path, Path]:
    """otter assign on the staged master, then the zip finished with the grader; returns the zip and
    otter's dist folder."""
    import nbformat
    master, heldout = stage(tmp / "stage", thresholds)
    dist = otter_assign(master, run_tests=False)
    zips = sorted((dist / "autograder").glob(f"{NAME}-autograder_*.zip"))
    if len(zips) != 1:
        raise BuildError(f"expected one autograder zip from otter assign, found {len(zips)}")
    from cgcnn_grading.master_tests import SOLUTION_MODULE
    student = nbformat.read(dist / "student" / MASTER.name, as_version=4)
    points = question_points(nbformat.read(master, as_version=4))
    check_tests(dist / "autograder" / "tests", points)
    settings = grading_settings(student, points, thresholds["mae_full"], term)
    solution = solution_module(nbformat.read(dist / "autograder" / MASTER.name, as_version=4))
    finish_zip(zips[0], {"grading.json": settings.encode(), HELDOUT: json.dumps(heldout, indent=0).encode(),
                         SOLUTION_MODULE: solution.encode()})
    nbformat.write(normalise(student), dist / "student" / MASTER.name)
    return zips[0], dist


def failure(results: dict, errors: list[str] = ()) -> str:
    """Why a graded notebook lost points: each failing part's whole account (every failed check with
    its assertion message), the errors its cells raised (cell_errors) and what stopped a cell."""
    parts = [f"{t['name']} {t['score']:g}/{t['max_score']:g}:\n" + textwrap.indent(
        (t.get("output") or "(no output)").strip(), "      ") for t in results["tests"]
        if t.get("score", 0) < t.get("max_score", 0)]
    if errors:
        parts.append("errors raised by the notebook's cells as graded:\n" + textwrap.indent("\n".join(errors), "      "))
    return "\n  ".join(parts + ([results["output"]] if results.get("output") else []))


def cell_errors(graded_dir: Path, submitted) -> list[str]:
    """The errors the cells of notebook `submitted` raised in its grading, read from the notebook as
    executed that the grader leaves in `graded_dir`, each named by where its cell is in the master."""
    import nbformat
    from cgcnn_grading.execution import EXECUTED, SUBMITTED_CELL
    if not (graded_dir / EXECUTED).is_file():
        return []
    errors = []
    for cell in nbformat.read(graded_dir / EXECUTED, as_version=4).cells:
        index = cell.metadata.get(SUBMITTED_CELL)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and isinstance(index, int) and 0 <= index < len(submitted.cells):
                errors.append(f"{out.get('ename')}: {_one_line(out.get('evalue'))[:300]} in "
                              f"{in_master(submitted.cells[index].source)}")
    return errors


def calibrated_thresholds() -> dict:
    """The thresholds of calibration.json, once the master, the data and the calibration are checked."""
    import nbformat
    check_inputs()
    check_code(nbformat.read(MASTER, as_version=4))
    if not CALIBRATION.is_file():
        raise BuildError(f"{_shown(CALIBRATION)} is missing: run `python build.py calibrate`")
    calibration = json.loads(CALIBRATION.read_text())
    check_calibration(calibration)
    return calibration["thresholds"]


def prove_autograder(zip_path: Path, dist: Path, tmp: Path) -> None:
    """The new autograder, proven on the master: the solution scores every point, each hidden and public
    test by name, and the student notebook as released none, every test failing; BuildError otherwise,
    with the grading's results kept."""
    import nbformat
    solution_nb = dist / "autograder" / MASTER.name
    try:
        results = grade(zip_path, solution_nb, tmp / "grade")
    except BuildError as err:
        kept = keep_failure("grading", [tmp / "grade" / "grader.log", solution_nb])
        raise BuildError(f"{err}\n  the grader's output: {_shown(kept / 'grader.log')}") from None
    score = sum(t.get("score", 0) for t in results["tests"])
    possible = sum(t.get("max_score", 0) for t in results["tests"])
    points = question_points(nbformat.read(MASTER, as_version=4))
    graded = scores(results)
    if set(graded) != set(points) or not math.isclose(possible, sum(points.values()), abs_tol=1e-6):
        # an autograder that could not grade (0/0, a part missing) is no autograder, whatever it wrote
        kept = keep_failure("grading", [tmp / "grade" / "results.json", tmp / "grade" / "grader.log"])
        missing = ", ".join(sorted(set(points) - set(graded))) or "none"
        raise BuildError(f"grading the solution reported {possible:g} points possible for parts "
                         f"{', '.join(graded) or 'none'}, not the master's {sum(points.values()):g} for "
                         f"{', '.join(points)} (missing: {missing}):\n  {_one_line(results.get('output', ''))[:600]}"
                         f"\n  the grading's results and log are kept in {_shown(kept)}/")
    try:
        failed_tests = solution_test_failures(results, dist / "autograder" / "tests")
    except BuildError as err:
        kept = keep_failure("grading", [tmp / "grade" / "results.json", tmp / "grade" / "grader.log"])
        raise BuildError(f"{err}\n  the grading's results are kept in {_shown(kept)}/") from None
    if failed_tests or not math.isclose(score, possible, abs_tol=1e-6):
        from cgcnn_grading.execution import EXECUTED
        kept = keep_failure("grading", [tmp / "grade" / name for name in ("results.json", EXECUTED, "grader.log")]
                            + [solution_nb])
        errors = cell_errors(tmp / "grade", nbformat.read(solution_nb, as_version=4))
        raise BuildError(f"the solution scores {score:g}/{possible:g}:\n  " + "".join(f"{f}\n  " for f in failed_tests)
                         + f"{failure(results, errors)}\n"
                         f"  the grading's results (results.json, {EXECUTED}: the notebook as graded, with its "
                         f"outputs; grader.log) are kept in {_shown(kept)}/")
    print(f"solution scores {score:g}/{possible:g}; grading the student notebook as released (every test must "
          "fail before its part is written) ...")
    unwritten = grade(zip_path, dist / "student" / MASTER.name, tmp / "grade-student")
    check_tests_can_fail(unwritten, dist / "autograder" / "tests")
    earned = sum(t.get("score", 0) for t in unwritten["tests"])
    if earned:
        raise BuildError(f"the student notebook as released scores {earned:g} points before any part is written: "
                         f"{failure(unwritten)[:600]}")


def build(term: str = "") -> None:
    """The three releases; `term` (a course term's name) reseeds the hidden tests' inputs."""
    import nbformat
    thresholds = calibrated_thresholds()
    unfilled = sorted(set(re.findall(r"__[A-Z][A-Z0-9_]*__", fill(MASTER.read_text(), thresholds))))
    if unfilled:
        raise BuildError(f"the master notebook quotes {', '.join(unfilled)}, which nothing fills: the build fills "
                         f"the thresholds of {_shown(CALIBRATION)} (__MAE_FULL__ ...) and the recipe's numbers "
                         f"({', '.join(f'__{k}__' for k in QUOTED)})")
    with tempfile.TemporaryDirectory(prefix="cgcnn-build-") as tmp:
        tmp = Path(tmp)
        zip_path, dist = assemble(tmp, thresholds, term)
        solution_nb = dist / "autograder" / MASTER.name
        # The execution (one core: torch's portable kernels, one thread) runs beside the gradings (a core
        # each, one at a time); a failed grading ends it.
        print("executing the solution notebook; beside it, grading the solution with the new autograder ...")
        running = []
        with ThreadPoolExecutor(1) as pool:
            execution = pool.submit(execute, solution_nb, term, running=running)
            try:
                prove_autograder(zip_path, dist, tmp)
            except BaseException:
                end_execution(running, execution)
                raise
            print("the unwritten notebook scores 0; waiting for the execution of the solution notebook ...")
            executed = execution.result()
        out = {name: tmp / "out" / name for name in ("student", "solutions", "autograder")}
        shutil.copytree(dist / "student", out["student"])
        shutil.copy(ASSIGNMENT / "student_requirements.txt", out["student"] / "requirements.txt")
        shutil.copy(ASSIGNMENT / "student_requirements_pdf.txt", out["student"] / "requirements-pdf.txt")
        shutil.copy(ASSIGNMENT / "student_README.md", out["student"] / "README.md")
        student_zip(out["student"])
        out["solutions"].mkdir(parents=True)
        nbformat.write(executed, out["solutions"] / f"{NAME}_solution.ipynb")
        (out["solutions"] / "written_answers.md").write_text(written_answers(executed))
        out["autograder"].mkdir()
        shutil.copy(zip_path, out["autograder"] / ZIP_NAME)
        committed = ROOT / "solutions" / f"{NAME}_solution.ipynb"
        keep, note = keep_if_equivalent(committed, executed)
        if keep:
            shutil.copy(committed, out["solutions"] / committed.name)
        elif note:
            note = f"the executed solution differs from the committed one beyond a CPU kind's rounding: {note}"
        for name, path in out.items():
            _swap(path, ROOT / name)
        os.chmod(ROOT / "autograder", 0o700)  # the held-out labels are in the zip: root's alone
    if note:
        print(note)
    print(f"""
wrote
  student/     {MASTER.name}, public tests, cgcnn_utils.py, data/ (no held-out crystals), requirements.txt, README.md,
               and all of them in {STUDENT_ZIP} (for Colab): give to students
  solutions/   {NAME}_solution.ipynb (executed), written_answers.md: keep for the course staff
  autograder/  {ZIP_NAME}: upload to Gradescope ("Configure Autograder", zip upload); it holds the
               grader (cgcnn_grading/), the held-out crystals and their labels: keep it private""")


# Grading a course's submissions --------------------------------------------------------------------

METADATA = "submission_metadata.yml"  # in Gradescope's "Export Submissions": who submitted each submission_N/
GRADING_MEMORY_MB = 1024  # memory the default -j leaves each grading (a grading's peak: about 840 MB)
STATUSES = ("graded", "time limit", "error")


def cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask)."""
    return sorted(os.sched_getaffinity(0))


def default_jobs() -> int:
    """Gradings side by side by default: one per CPU (the kernel trains on one thread), and no more than
    the available memory holds at GRADING_MEMORY_MB each."""
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        available = GRADING_MEMORY_MB
    return max(1, min(len(cpus()), available // GRADING_MEMORY_MB))


def side_by_side(items: list, work, workers: int, pin: bool = True, first_user: int = 1) -> list:
    """[work(item, user, prefix) for item in items], `workers` at a time, in the order of `items`.
    Worker k (0, 1, ...) grades as the user cgcnn-student-(k+first_user), which no other worker uses
    (one grading per user at a time), and with `pin` on one CPU (prefix `taskset -c`: the k-th of this
    process's CPUs, modulo their number), so that gradings side by side neither share nor swap cores.
    `work` catches its own errors; on an interrupt the items not started are dropped."""
    if pin and not shutil.which("taskset"):
        raise BuildError("taskset not found: install util-linux (which also gives setpriv and prlimit, "
                         "needed for grading)")
    slots, mine = queue.Queue(), cpus()
    for k in range(workers):
        slots.put(k)

    def run(item):
        k = slots.get()
        try:
            return work(item, f"cgcnn-student-{k + first_user}",
                        ["taskset", "-c", str(mine[k % len(mine)])] if pin else [])
        finally:
            slots.put(k)

    pool = ThreadPoolExecutor(workers)
    try:
        futures = [pool.submit(run, item) for item in items]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Submission:
    """One row of the CSV: an upload (a Gradescope submission folder, an .ipynb or a .zip) and who made it."""

    key: str  # the CSV's `submission`: Gradescope's folder name, or the file's name
    path: Path | None  # the upload; None when it cannot be graded (see `problem`)
    folder: str  # its folder in the results folder
    name: str = ""  # group submissions: every submitter, joined with "; "
    email: str = ""
    sid: str = ""
    problem: str = ""  # why it cannot be graded at all
    people: tuple[tuple[str, str, str], ...] = ()  # each submitter's (name, email, sid): the gradebook's rows


def read_metadata(path: Path) -> dict:
    """Gradescope's submission_metadata.yml: {folder name: record}, with Ruby-symbol keys as Gradescope
    writes them (`:submitters:` reads as ":submitters")."""
    try:
        import yaml
    except ImportError as err:
        raise BuildError(f"reading {METADATA} needs PyYAML: pip install -r requirements.txt") from err

    class Loader(yaml.SafeLoader):
        """SafeLoader (no Python objects), reading Ruby's own tags (!ruby/object:...) as plain values."""

    def plain(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", plain)
    try:
        records = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{err.problem}, line {mark.line + 1}, column {mark.column + 1}" if mark else _one_line(err)
        raise BuildError(f"{path} could not be read ({type(err).__name__}: {where}): download the export from "
                         "Gradescope again (Review Grades, Export Submissions)") from err
    if not isinstance(records, dict) or not records:
        raise BuildError(f"{path} lists no submissions (expected one `submission_N:` record per submission): "
                         "download the export from Gradescope again")
    return records


def _people(record) -> tuple[tuple[str, str, str], ...]:
    """Each submitter of a Gradescope metadata record as (name, email, sid)."""
    people = record.get(":submitters", record.get("submitters")) if isinstance(record, dict) else None
    return tuple(tuple(str(p.get(f":{key}", p.get(key)) or "") for key in ("name", "email", "sid"))
                 for p in people or [] if isinstance(p, dict))


def _submitters(record, key: str) -> str:
    values = [person[("name", "email", "sid").index(key)] for person in _people(record)]
    return "; ".join(values) if any(values) else ""


def _export_root(folder: Path) -> Path | None:
    """Where METADATA is: at the top of `folder`, or in its one folder (Gradescope's zip, unpacked)."""
    if (folder / METADATA).is_file():
        return folder
    inner = [d for d in folder.iterdir() if d.is_dir()]
    return inner[0] if len(inner) == 1 and (inner[0] / METADATA).is_file() else None


def _gradescope_submissions(export: Path) -> list[Submission]:
    records = {str(key): record for key, record in read_metadata(export / METADATA).items()}
    subs = []
    for key in sorted(records):
        who = {k: _submitters(records[key], k) for k in ("name", "email", "sid")} | {"people": _people(records[key])}
        if not re.fullmatch(r"[\w.-]+", key) or key in (".", ".."):
            subs.append(Submission(key, None, "", **who, problem=f"{key!r} in {METADATA} is not a folder name"))
        elif not (export / key).is_dir():
            subs.append(Submission(key, None, key, **who, problem=f"listed in {METADATA}, but the export has no "
                                                                 f"folder {key}/: download the export again"))
        else:
            subs.append(Submission(key, export / key, key, **who))
    listed = {s.key for s in subs}
    for extra in sorted(d.name for d in export.iterdir() if d.is_dir() and d.name.startswith("submission_")):
        if extra not in listed:  # graded all the same; the CSV cannot say whose it is
            print(f"note: {extra}/ is not in {METADATA}: graded without a name")
            subs.append(Submission(extra, export / extra, extra))
    return subs


def find_submissions(source: Path, unpack: Path) -> tuple[list[Submission], Path]:
    """The submissions in `source`, and the folder holding them (which the grading users must not read):
    Gradescope's export (its folder, or its zip, unpacked into `unpack`), or a folder of .ipynb and .zip
    files, one per student (named by the file)."""
    if not source.exists():
        raise BuildError(f"{source} not found: give the folder (or zip) of Gradescope's Export Submissions, "
                         "or a folder of .ipynb / .zip submissions")
    if source.is_file():
        if source.suffix != ".zip":
            raise BuildError(f"{source} is a file: give a folder of submissions, or Gradescope's export (zip or folder)")
        try:
            with zipfile.ZipFile(source) as z:
                z.extractall(unpack)
        except zipfile.BadZipFile as err:
            raise BuildError(f"{source} is not a readable zip ({err}): download the export again") from err
        export = _export_root(unpack)
        if export is None:
            raise BuildError(f"{source} holds no {METADATA}, so it is not Gradescope's export: to grade one "
                             "student's zip, put it in a folder and grade the folder")
        return _results_folders(_gradescope_submissions(export)), unpack
    export = _export_root(source)
    if export is not None:
        return _results_folders(_gradescope_submissions(export)), source
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in (".ipynb", ".zip"))
    if not files:
        raise BuildError(f"no submissions in {source}: expected Gradescope's export ({METADATA} and a "
                         "submission_N folder per submission) or .ipynb / .zip files")
    stems = [p.stem for p in files]
    return _results_folders([Submission(p.name, p, p.stem if stems.count(p.stem) == 1 else p.name, name=p.stem,
                                        people=((p.stem, "", ""),)) for p in files]), source


def results_folder(name: str, taken: set[str]) -> str:
    """The folder of an upload's results, from its name: anything but letters, digits, '.', '_' and '-'
    replaced by '_' (no path separator, no control character), no leading dot (never '.', '..' nor a
    hidden folder: an upload named `...ipynb` has the stem '..'), at most 100 characters, and unique
    among `taken` (to which it is added)."""
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100] or "submission"
    base, k = folder, 2
    while folder in taken:
        folder, k = f"{base}-{k}", k + 1
    taken.add(folder)
    return folder


def _results_folders(subs: list[Submission]) -> list[Submission]:
    taken: set[str] = set()
    for sub in subs:
        if sub.folder:
            sub.folder = results_folder(sub.folder, taken)
    return subs


# OWASP's rule for CSV injection: a cell that starts with one of these is a formula to a spreadsheet
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value) -> str:
    """A text cell of the course CSV as plain text: control and format characters (terminal escapes,
    right-to-left overrides) as '?', and a leading single quote where a spreadsheet would read a
    formula (`=HYPERLINK(...)`, `@SUM(1+1)`, `-2+3`)."""
    text = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\r" else ch for ch in str(value))
    return "'" + text if text.startswith(FORMULA_START) else text


def autograder_points(zip_path: Path) -> dict[str, float]:
    """{part: points}, in notebook order, from the autograder zip's grading.json."""
    return autograder_settings(zip_path)["points"]


def autograder_settings(zip_path: Path) -> dict:
    """The autograder zip's grading.json (points, 4b's mae_full, ...), as stored."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            settings = json.loads(z.read("grading.json"))
        settings["points"]  # noqa: B018 - the one key every zip of this project states
        return settings
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise BuildError(f"{zip_path} is not this project's autograder zip (no grading.json with points: {err}): "
                         "build it with `python build.py`") from err


def _one_line(text) -> str:
    return " ".join(str(text or "").split())


def outcome(results: dict, parts: list[str]) -> dict:
    """The CSV's columns from one results.json: each part's score, the total, the test MAE, the status
    (graded, time limit, error) and the reason."""
    got = scores(results)
    error = next((t for t in results.get("tests", []) if t.get("name") == "Autograder Error"), None)
    extra = results.get("extra_data") or {}
    # the grader's own failures, which students never see: the CSV is the course staff's
    staff = f" [grader: {_one_line('; '.join(map(str, extra['grader_errors'])))[:500]}]" if extra.get("grader_errors") else ""
    if error is not None or not any(p in got for p in parts):  # nothing graded: the grader says why
        return {"total": 0.0, "status": "error",
                "reason": _one_line(str((error or results).get("output") or "no results").split("\n\n")[0]) + staff}
    row = {p: float(got.get(p, 0.0)) for p in parts}
    stopped = extra.get("stopped")
    if stopped is None:  # results of an autograder zip built before extra_data["stopped"] existed
        stopped = [l.removeprefix("Time limit: ").removesuffix(".") for l in str(results.get("output", "")).splitlines()
                   if l.startswith("Time limit: ")]
    events = [l for l in str(results.get("output") or "").splitlines() if l.strip()]
    row.update(total=sum(row[p] for p in parts), test_mae=extra.get("test_mae"),
               status="time limit" if stopped else "graded",
               reason=_one_line("; ".join(stopped) if stopped else " ".join(events)) + staff)
    return row


TEXT_COLUMNS = ("submission", "name", "email", "sid", "status", "reason", "results")


def grade_folder(source: Path, csv_path: Path, jobs: int | None = None, results_root: Path | None = None,
                 zip_path: Path = AUTOGRADER_ZIP, timeout: float | None = None, first_user: int = 1) -> list[dict]:
    """Grade every submission in `source` (see find_submissions) with the autograder zip, each as
    Gradescope grades it (build.grade), `jobs` side by side (side_by_side, from the grading user
    cgcnn-student-`first_user` on), each in at most `timeout` seconds (Gradescope's run limit by
    default). Keeps each submission's results.json and grader.log in `results_root` (default: next to
    the CSV, NAME-results/; it must be new or empty), and writes the CSV whole at the end: one row per
    submission; beside it the gradebook and the course report (staff_files, course_report)."""
    import course_report
    from cgcnn_grading.settings import GRADESCOPE_TIMEOUT
    timeout = GRADESCOPE_TIMEOUT if timeout is None else timeout
    if not Path(zip_path).is_file():
        raise BuildError(f"{zip_path} not found: run `python build.py` first")
    settings = autograder_settings(zip_path)
    points = settings["points"]
    parts, possible = list(points), sum(points.values())
    if os.geteuid() != 0:
        raise BuildError("grading runs each submission as an unprivileged user of its own, which only root can "
                         "create and switch to: run it as root (sudo python build.py grade ...)")
    csv_path = Path(csv_path).absolute()
    results_root = Path(results_root or csv_path.with_name(f"{csv_path.stem}-results")).absolute()
    if results_root.exists() and (not results_root.is_dir() or any(results_root.iterdir())):
        raise BuildError(f"{results_root} already exists (an earlier run's results?): move it away, or give "
                         "another folder with --results")
    jobs = jobs or default_jobs()
    csv_path.parent.mkdir(parents=True, exist_ok=True)  # now, not after hours of grading
    with tempfile.TemporaryDirectory(prefix="cgcnn-export-") as unpack:
        subs, holder = find_submissions(Path(source), Path(unpack))
        close_to_others(holder, "the grading users must not read other students' submissions")
        results_root.mkdir(parents=True, exist_ok=True)
        os.chmod(results_root, 0o700)  # every student's results: root's alone
        workers = min(jobs, len(subs))
        print(f"grading {len(subs)} submissions, {workers} at a time ({len(cpus())} CPUs); results in {results_root}")
        done, lock, start, checks = [0], threading.Lock(), time.monotonic(), {}

        def work(sub: Submission, user: str, prefix: list[str]) -> dict:
            row, began = {"submission": sub.key, "name": sub.name, "email": sub.email, "sid": sub.sid}, time.monotonic()
            out = results_root / sub.folder if sub.folder else None
            if out is not None and out.resolve().parent != results_root.resolve():  # results_folder makes none such
                row.update(total=0.0, status="error", reason=f"its results folder {sub.folder!r} is not inside "
                                                             f"{results_root}: rename the upload")
                out = None
            elif sub.problem:
                row.update(total=0.0, status="error", reason=sub.problem)
            else:
                try:
                    results = grade(Path(zip_path), sub.path, out, prefix, timeout, user, private=[holder, results_root])
                    row.update(outcome(results, parts))
                    checks[sub.key] = (results.get("extra_data") or {}).get("tests") or {}
                except subprocess.TimeoutExpired:
                    row.update(total=0.0, status="error", reason=f"grading took longer than {timeout:.0f} s (a run's "
                                                                 "time limit, Gradescope's) and was ended")
                except Exception as err:  # noqa: BLE001 - one submission's failure must not stop the others
                    row.update(total=0.0, status="error", reason=_one_line(str(err) if isinstance(err, BuildError)
                                                                           else f"{type(err).__name__}: {err}"))
            # results.json where the run wrote one, else the folder with its grader.log
            kept = next((p for p in (out / "results.json", out) if p.exists()), None) if out else None
            row["results"] = os.path.relpath(kept, csv_path.parent) if kept else ""
            with lock:
                done[0] += 1
                print(f"[{done[0]}/{len(subs)}] {spreadsheet_text(sub.key)}: {row['status']}, {row['total']:g}/{possible:g} "
                      f"({time.monotonic() - began:.0f} s){': ' + row['reason'][:200] if row['status'] != 'graded' else ''}",
                      flush=True)
            return row

        rows = side_by_side(subs, work, workers, first_user=first_user)
    hours = (time.monotonic() - start) / 3600
    raw = copy.deepcopy(rows)  # numbers as numbers, for the gradebook and the report
    for row in rows:  # numbers as numbers; every text cell as text (names, ids, file names and reasons come from uploads)
        row.update({p: f"{row[p]:g}" for p in parts if p in row}, total=f"{row['total']:g}", possible=f"{possible:g}",
                   test_mae="" if row.get("test_mae") is None else f"{row['test_mae']:.4f}")
        row.update({k: spreadsheet_text(row.get(k, "")) for k in TEXT_COLUMNS})
    columns = ["submission", "name", "email", "sid", *parts, "total", "possible", "test_mae", "status", "reason", "results"]
    _write_private(csv_path, lambda path: _write_rows(path, rows, columns))
    counts = ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in STATUSES)
    print(f"wrote {csv_path}: {len(rows)} submissions ({counts}); {len(rows) / hours:.0f} submissions per hour "
          f"with {workers} at a time")
    book_path, report_path = staff_files(csv_path)
    try:  # the CSV holds the marks: a fault in what is derived from it must not cost the run
        book = course_report.gradebook(raw, {sub.key: list(sub.people) for sub in subs}, possible)
        write_gradebook(book_path, book)
        print(f"  {book_path.name}: one row per student, for a gradebook import (an error has no score)")
        shared = course_report.shared_identities(book)
        if shared:
            print(f"note: {len(shared)} emails or student ids are on more than one row of {book_path.name} (in "
                  f"two submissions): {', '.join(map(spreadsheet_text, shared[:5]))}{' ...' if len(shared) > 5 else ''}")
        report = course_report.report_html(raw, checks, points, settings.get("mae_full"))
        _write_private(report_path, lambda path: path.write_text(report, encoding="utf-8"))
        print(f"  {report_path.name}: pass rates per part and check, common messages, test MAEs")
    except Exception as err:  # noqa: BLE001 - said, and the marks are written
        print(f"warning: {book_path.name} or {report_path.name} not written ({type(err).__name__}: {err}); "
              f"the marks are in {csv_path.name}", file=sys.stderr)
    return rows


def staff_files(csv_path: Path) -> tuple[Path, Path]:
    """Beside grade's CSV: the gradebook (NAME-students.csv) and the course report (NAME-report.html)."""
    return csv_path.with_name(f"{csv_path.stem}-students.csv"), csv_path.with_name(f"{csv_path.stem}-report.html")


def write_gradebook(path: Path, book: list[dict]) -> None:
    """The gradebook (course_report.gradebook) as a CSV, every cell as text a spreadsheet shows as such."""
    import course_report
    rows = [{k: spreadsheet_text(v) for k, v in row.items()} for row in book]
    _write_private(path, lambda tmp: _write_rows(tmp, rows, course_report.GRADEBOOK_COLUMNS))


def _write_private(path: Path, write) -> None:
    """`write(tmp)`, then tmp renamed to `path`, root's alone (names, emails and marks of every student):
    whole or not at all, so that an interrupted run leaves nothing half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


TRAINING_LINE = "model = CGCNN(nbr_fea_len=train_batches[0].nbr_fea.shape[-1])"


def with_conv(nb, conv: str):
    """The notebook with its trained model built with `conv` ("none": the same network without
    convolutions, which sees each crystal as a bag of element vectors)."""
    nb = copy.deepcopy(nb)
    hits = [c for c in nb.cells if c.cell_type == "code" and TRAINING_LINE in c.source]
    if len(hits) != 1:
        raise BuildError(f"the master notebook's training cell must hold `{TRAINING_LINE}` once "
                         f"(found {len(hits)}): calibrate builds its no-convolution baseline from it")
    hits[0].source = hits[0].source.replace(TRAINING_LINE, TRAINING_LINE[:-1] + f", conv={conv!r})")
    return nb


def _graded_maes(zip_path: Path, notebook, tmp: Path, what: str) -> dict[int, float]:
    """Test MAE of `notebook` graded with each of CALIBRATION_SEEDS."""
    import nbformat
    maes = {}
    for seed in CALIBRATION_SEEDS:
        path = tmp / f"{what}-seed{seed}" / MASTER.name
        path.parent.mkdir()
        nbformat.write(with_seed(notebook, seed), path)
        results = grade(zip_path, path, path.parent / "graded")
        if "test_mae" not in results.get("extra_data", {}):
            from cgcnn_grading.execution import EXECUTED
            kept = keep_failure("calibration", [path.parent / "graded" / name for name in
                                                ("results.json", EXECUTED, "grader.log")] + [path])
            raise BuildError(f"{what}, seed {seed}: part 4b was not scored:\n  "
                             f"{failure(results, cell_errors(path.parent / 'graded', nbformat.read(path, as_version=4)))}\n"
                             f"  the grading's results are kept in {_shown(kept)}/")
        maes[seed] = results["extra_data"]["test_mae"]
        print(f"{what}, seed {seed}: test MAE {maes[seed]:.4f} eV/atom")
    return maes


def _code_text(code: str) -> str:
    """Python code as it behaves: comments, docstrings and other bare strings, blank lines and trailing
    spaces taken out, so that editing those keeps a calibration."""
    lines = code.split("\n")
    spans = [(t.start, t.end) for t in tokenize.generate_tokens(io.StringIO(code).readline)
             if t.type == tokenize.COMMENT]

    def column(line: int, offset: int) -> int:  # ast's columns count UTF-8 bytes, tokenize's characters
        return len(lines[line - 1].encode()[:offset].decode(errors="ignore"))

    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            spans.append(((node.lineno, column(node.lineno, node.col_offset)),
                          (node.end_lineno, column(node.end_lineno, node.end_col_offset))))
    for (first, start), (last, end) in sorted(spans, reverse=True):  # from the end: earlier spans keep their place
        lines[first - 1:last] = [lines[first - 1][:start] + lines[last - 1][end:]]
    return "\n".join(line.rstrip() for line in lines if line.strip())


def _scope(code: str) -> tuple[set[str], set[str]]:
    """The global names `code` binds (assigns, imports, defines, or changes an attribute or item of)
    and those it reads, in its functions and classes too (their own local names aside)."""
    table = symtable.symtable(code, "<code>", "exec")
    binds = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    reads = set()
    tables = [table]
    while tables:
        scope = tables.pop()
        tables += scope.get_children()
        for s in scope.get_symbols():
            if s.is_referenced() and (scope is table or s.is_global()):
                reads.add(s.get_name())
            if scope is not table and s.is_declared_global() and s.is_assigned():
                binds.add(s.get_name())
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, ast.Store):
            root = node.value
            while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
                root = root.func if isinstance(root, ast.Call) else root.value
            if isinstance(root, ast.Name):
                binds.add(root.id)
    return binds, reads


def _depends(pieces: list[tuple[set[str], set[str]]], names: set[str]) -> list[int]:
    """Which pieces of code (their binds and reads) the `names` depend on: those that bind one of
    them, then those that bind what these read, and so on."""
    need, chosen, grown = set(names), set(), True
    while grown:
        grown = False
        for k, (binds, reads) in enumerate(pieces):
            if k not in chosen and binds & need:
                chosen.add(k)
                need |= reads
                grown = True
    return sorted(chosen)


def recipe_cells(nb) -> list[int]:
    """The master's code cells that 4b's trained model depends on: among the cells the autograder runs
    before 4b's check (tests aside), those that bind the names its probe reads (cgcnn_kernel.TRAINED),
    then those that bind what these read, and so on. Plots and set-up cells are not among them."""
    from cgcnn_grading.settings import MAE_QUESTION
    from cgcnn_kernel import TRAINED
    places = _layout(nb)
    block = [i for i, (question, _) in enumerate(places) if question == MAE_QUESTION]
    if not block:
        raise BuildError(f"the master notebook has no question {MAE_QUESTION} (cgcnn_grading.settings.MAE_QUESTION)")
    before = [i for i in range(block[-1]) if nb.cells[i].cell_type == "code" and places[i][1] != "tests"]
    scopes = [_scope(_ipython(nb.cells[i].source)) for i in before]
    return [before[k] for k in _depends(scopes, set(TRAINED))]


def _support_names(nb, cells: list[int]) -> set[str]:
    """The names of the support module that `cells` use: cgcnn_utils.X, or imported from it."""
    used = set()
    for i in cells:
        for node in ast.walk(ast.parse(_ipython(nb.cells[i].source))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == SUPPORT:
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == SUPPORT:
                used |= {alias.name for alias in node.names}
    return used


def _module_code(rel: str, used: set[str]) -> list[tuple[str, str]]:
    """The top-level statements of module assignment/`rel` that bind `used`, with those that what they
    read depends on: [(label, code as it behaves)]."""
    text = (ASSIGNMENT / rel).read_text()
    source = text.split("\n")
    labels, statements = [], []
    for node in ast.parse(text).body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        statements.append("\n".join(source[start - 1:node.end_lineno]))
        labels.append(f"{rel}: {node.name}" if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                      else f"{rel}: `{_first_line(_code_text(statements[-1]))}`")
    chosen = _depends([_scope(code) for code in statements], used)
    return [(labels[k], _code_text(statements[k])) for k in chosen]


def _unique(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """{label: value}, a label given twice numbered in order (label, label', label'')."""
    out = {}
    for label, value in pairs:
        while label in out:
            label += "'"
        out[label] = value
    return out


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def fingerprint() -> dict:
    """What a calibration measures, part by part (16 hex digits of sha256 each). "recipe": the master's
    cells that 4b's trained model depends on (recipe_cells), the support module's code they use and
    MEASURED_BY's functions, each as its code behaves (_code_text: comments and docstrings aside);
    "data": every file of CALIBRATION_DATA. Markdown, questions, tests, plots and comments are not in it."""
    import nbformat
    nb = nbformat.read(MASTER, as_version=4)
    cells = recipe_cells(nb)
    code = [_code_text(_ipython(nb.cells[i].source)) for i in cells]  # labelled by code too: a comment is no change
    recipe = _unique([(f"the cell starting `{_first_line(text)}`", _digest(text)) for text in code])
    for rel, used in {**{f"{SUPPORT}.py": _support_names(nb, cells)}, **MEASURED_BY}.items():
        recipe.update({label: _digest(code) for label, code in _unique(_module_code(rel, set(used))).items()})
    data = ASSIGNMENT / CALIBRATION_DATA
    digest = hashlib.sha256()
    for path in sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")):
        content = path.read_bytes()
        digest.update(f"{path.relative_to(data).as_posix()}\0{len(content)}\0".encode() + content)
    return {"recipe": recipe, "data": {CALIBRATION_DATA: digest.hexdigest()[:16]}}


def check_calibration(calibration: dict) -> None:
    """Refuse a calibration measured on another recipe or data set than the tree's (see fingerprint):
    its thresholds, and the MAEs the notebook quotes, would be another recipe's."""
    recorded = calibration.get("fingerprint")
    command = (f"run `python build.py calibrate` to measure the thresholds again (it grades the solution and the "
               f"network without convolutions with {len(CALIBRATION_SEEDS)} seeds each)")
    if not isinstance(recorded, dict):
        raise BuildError(f"{_shown(CALIBRATION)} does not say what it was measured on (no fingerprint): {command}")
    now = fingerprint()
    for kind, what in (("recipe", "the training recipe"), ("data", "the data set")):
        old, new = recorded.get(kind) or {}, now[kind]
        changes = {"differs or is new": [k for k in new if old.get(k) != new[k]],
                   "no longer there": [k for k in old if k not in new]}
        if any(changes.values()):
            shown = "; ".join(f"{how}: {'; '.join(parts[:3])}{' ...' if len(parts) > 3 else ''}"
                              for how, parts in changes.items() if parts)
            raise BuildError(f"{what} changed since calibration ({shown}): {command}")


def _spread(maes: dict[int, float]) -> dict:
    values = list(maes.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return {"seeds": {str(k): round(v, 4) for k, v in maes.items()}, "mean": round(mean, 4),
            "std": round(std, 4), "worst": round(max(values), 4)}


def calibrate() -> None:
    """Grade the solution, and the same network without convolutions, with several seeds; full credit
    up to MARGIN times the solution's worst test MAE, which must stay below every structure-blind
    baseline (else the 4b grade would not measure what the crystal graph adds)."""
    import nbformat
    import baselines
    check_inputs()
    check_code(nbformat.read(MASTER, as_version=4))
    measured = fingerprint()  # before the hour of gradings: an edit made meanwhile is not stamped as measured
    with tempfile.TemporaryDirectory(prefix="cgcnn-calibrate-") as tmp:
        zip_path, dist = assemble(Path(tmp), {"mae_full": 9.0})
        solution = nbformat.read(dist / "autograder" / MASTER.name, as_version=4)
        maes = _graded_maes(zip_path, solution, Path(tmp), "solution")
        no_conv = _graded_maes(zip_path, with_conv(solution, "none"), Path(tmp), "no convolution")
        heldout = json.loads(zipfile.ZipFile(zip_path).read(HELDOUT))
    blind = baselines.baselines()
    labels = [entry["label"] for entry in heldout.values()]
    if len(labels) != blind["n"]["test"]:
        raise BuildError(f"the zip holds {len(labels)} held-out crystals, the data set's test split "
                         f"{blind['n']['test']}: rebuild the data set (`python build.py data`)")
    table = {"solution": _spread(maes), "no_convolution": _spread(no_conv),
             "composition_ridge": blind["composition_ridge"], "formula_lookup": blind["formula_lookup"],
             "mean_predictor": blind["mean_predictor"]}
    mae_full = math.ceil(MARGIN * max(maes.values()) * 100) / 100
    structure_blind = {"no_convolution": min(no_conv.values()),  # each blind model's best seed
                       "composition_ridge": table["composition_ridge"]["test_mae"],
                       "mean_predictor": table["mean_predictor"]["test_mae"]}
    if blind["formula_lookup"]["test_mae_on_covered"] is not None:
        structure_blind["formula_lookup"] = blind["formula_lookup"]["test_mae_on_covered"]
    above = {name: mae for name, mae in structure_blind.items() if mae <= mae_full}
    if above:
        raise BuildError(f"full credit would reach {mae_full} eV/atom (MARGIN {MARGIN} x the solution's worst "
                         f"seed), but structure-blind baselines score {above}: change MARGIN in build.py or "
                         "the split, so that 4b rewards what the crystal graph adds")
    thresholds = {"mae_full": mae_full, "mae_mean": table["mean_predictor"]["test_mae"],
                  "mae_solution": table["solution"]["mean"], "mae_no_conv": table["no_convolution"]["mean"],
                  "mae_composition": table["composition_ridge"]["test_mae"]}
    CALIBRATION.write_text(json.dumps({
        "seeds": {str(k): v for k, v in maes.items()}, "margin": MARGIN, "thresholds": thresholds,
        "baselines": {"units": "test MAE, eV/atom, on the held-out test set of "
                               f"{len(labels)} crystals whose formulas are not in the training set",
                      **table}, "fingerprint": measured}, indent=1) + "\n")
    print(f"wrote {CALIBRATION.relative_to(ROOT)}: {thresholds}")


# The cell `answers` appends to the solution: Part 4's model on the held-out crystals, saved for build.py
TEST_PREDICTIONS = "test_predictions.json"
SAVE_TEST_PREDICTIONS = f"""\
test_graphs = cgcnn_utils.build_graphs(data, data.ids("test"), embedding, atom_features, neighbor_list,
                                       RADIUS, MAX_NUM_NBR, progress=False)
test_batches = cgcnn_utils.make_batches(test_graphs, data.targets, data.ids("test"), gaussian_expand, 256)
Path("{TEST_PREDICTIONS}").write_text(json.dumps(cgcnn_utils.predict(model, test_batches, normalizer)))"""


def answers() -> None:
    """The figures Part 5's model answer quotes: the solution as released, executed with the held-out
    crystals in its data, prints its experiments and its polymorph energy differences on the
    validation formulas; Part 4's model then predicts the test formulas, whose differences only the
    course staff can measure."""
    import nbformat
    import cgcnn_utils
    thresholds = calibrated_thresholds()
    with tempfile.TemporaryDirectory(prefix="cgcnn-answers-") as tmp:
        _, dist = assemble(Path(tmp), thresholds)
        work = dist / "autograder"
        shutil.rmtree(work / "data" / "perovskites")
        shutil.copytree(ASSIGNMENT / "data" / "perovskites", work / "data" / "perovskites")
        nb = nbformat.read(work / MASTER.name, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import json\nfrom pathlib import Path\n" + SAVE_TEST_PREDICTIONS))
        nbformat.write(nb, work / MASTER.name)
        print("executing the solution with the held-out crystals ...")
        executed = execute(work / MASTER.name, timeout=1800)
        test_pred = json.loads((work / TEST_PREDICTIONS).read_text())
    for cell in executed.cells:
        if cell.cell_type == "code" and ("variants = {" in cell.source or "polymorph_differences(val_pred" in cell.source):
            print("".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"))
    data = cgcnn_utils.load_dataset(ASSIGNMENT / "data" / "perovskites")
    formula = {i: row["formula"] for i, row in data.metadata.items()}
    diffs = cgcnn_utils.polymorph_differences(test_pred, data.targets, formula)
    mae = sum(abs(p - t) for t, p in diffs.values()) / len(diffs)
    blind = sum(abs(t) for t, _ in diffs.values()) / len(diffs)  # a composition-only model predicts 0 for each
    above = [p > 0 for t, p in diffs.values() if t > 0.01]  # clearly above: is it predicted above?
    print(f"test formulas: polymorph energy differences MAE {mae:.3f} eV/atom; a composition-only model "
          f"{blind:.3f}; {len(diffs)} polymorphs of "
          f"{len({formula[i] for i in diffs})} formulas; {sum(above)} of the {len(above)} more than 10 meV/atom "
          f"above their formula's lowest predicted above it; test MAE "
          f"{sum(abs(test_pred[i] - data.targets[i]) for i in test_pred) / len(test_pred):.3f} eV/atom")


def grade_command(argv: list[str]) -> None:
    """`python build.py grade`'s arguments."""
    import argparse
    parser = argparse.ArgumentParser(
        prog="python build.py grade", description="Grade every submission as Gradescope does, side by side, "
        "and write a CSV: each part, total, points possible, test MAE, status (graded, time limit, error), reason; "
        "beside it NAME-students.csv (one row per student, for a gradebook import) and NAME-report.html (pass "
        "rates per part and check, the most common messages, the test MAEs).")
    parser.add_argument("submissions", type=Path, help="Gradescope's Export Submissions (its folder or zip), or "
                        "a folder of .ipynb / .zip files, one per student")
    parser.add_argument("csv", nargs="?", type=Path, help="the CSV to write, as -o")
    parser.add_argument("-o", "--output", type=Path, help="the CSV to write (default: scores.csv)")
    parser.add_argument("-j", "--jobs", type=int, help="gradings side by side, each on one CPU as a grading user "
                        f"of its own (default: one per CPU, as memory allows {GRADING_MEMORY_MB} MB each: "
                        f"{default_jobs()} here)")
    parser.add_argument("--results", type=Path, help="where each submission's results.json and grader.log are "
                        "kept; must be new or empty (default: next to the CSV, CSV-NAME-results/)")
    parser.add_argument("--autograder", type=Path, default=AUTOGRADER_ZIP,
                        help=f"the autograder zip (default: autograder/{ZIP_NAME})")
    args = parser.parse_args(argv)
    if args.csv and args.output:
        parser.error("give the CSV once: as the second argument or with -o")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"-j must be at least 1, not {args.jobs}")
    grade_folder(args.submissions, args.output or args.csv or Path("scores.csv"), args.jobs, args.results,
                 args.autograder)


# PDFs of the written questions ----------------------------------------------------------------------

# The instructors' export prints offline with Debian's browser and MathJax (apt-get install ...):
DEBIAN_CHROMIUM = Path("/usr/lib/chromium/chromium-headless-shell")  # package chromium-headless-shell
DEBIAN_MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")  # package libjs-mathjax (MathJax 2)
PDF_USER = "cgcnn-pdf"  # chromium's user when root prints the submissions: it owns nothing of the course's
PDF_SECONDS = 120  # s for one submission's PDF, all of it (about 5 s measured); then it is abandoned, the batch goes on


def pdf_tools() -> tuple[Path, Path]:
    """Debian's chromium and Debian's MathJax 2 folder; BuildError naming the packages missing."""
    missing = [f"{package} ({path})" for package, path in (("chromium-headless-shell", DEBIAN_CHROMIUM),
                                                            ("libjs-mathjax", DEBIAN_MATHJAX)) if not path.is_file()]
    if missing:
        raise BuildError(f"the PDF export prints with Debian's packages, not installed here: {', '.join(missing)}: "
                         "apt-get install chromium-headless-shell libjs-mathjax")
    return DEBIAN_CHROMIUM, DEBIAN_MATHJAX.parent


@dataclass
class PDFBrowser:
    """How chromium runs for the staff's PDFs: `launcher`, the executable playwright starts (a script
    that starts chromium as `user` inside bubblewrap where it works), `sandbox` (chromium's own) and
    `mode`, said at the start of the batch."""
    launcher: Path
    sandbox: bool
    mode: str
    uid: int | None  # the user's, whose processes are ended after each PDF; None: not switched (not root)


def pdf_box(argv: list[str], uid: int | None, gid: int | None) -> list[str]:
    """`argv` as `uid` (when given: root switches to it, no groups, no way back to privileges) inside
    bubblewrap: its own namespaces (no network but a loopback of its own, its own processes, which all
    end with it or with its parent), a tmpfs for /tmp and home, and read-only only what chromium needs:
    /usr, the fonts' configuration, the linker's cache. No repository, no submission, no /root, no
    /home: a script in the page that got past every other layer finds no file of the course's."""
    box = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
           "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
           "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32"):  # merged /usr: symlinks; otherwise folders of their own
        top = Path("/") / name
        if top.is_symlink():
            box += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            box += ["--ro-bind", str(top), str(top)]
    box += ["--ro-bind-try", "/etc/fonts", "/etc/fonts", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp", "--", *argv]
    return [*as_pdf_user(uid, gid), *box]


def as_pdf_user(uid: int | None, gid: int | None) -> list[str]:
    """The start of a command run as `uid` (none: as is): no groups, no way back to privileges."""
    return [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
                                   "--"]


def pdf_browser(chromium: Path, folder: Path) -> PDFBrowser:
    """Chromium for the staff's PDFs, made as safe as this machine allows, each layer tried before use:
    as root, a user of its own (PDF_USER, created on first use); bubblewrap, where user namespaces
    work (not in some containers, nor on Ubuntu 24.04 without an AppArmor profile for it); chromium's
    own sandbox, which needs them too. Whatever is missing, the page's own layers hold (its policy, its
    origin, the requests refused, the notebook cleaned: cgcnn_utils.questions_pdf)."""
    import pwd
    import shlex
    uid = gid = None
    who = "as the user running this"
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(PDF_USER)
        except KeyError:
            done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                   "/nonexistent", "--shell", "/usr/sbin/nologin", PDF_USER],
                                  capture_output=True, text=True)
            if done.returncode != 0 and "already exists" not in done.stderr:
                raise BuildError(f"could not create the user {PDF_USER} that chromium runs as: {done.stderr.strip()}")
            user = pwd.getpwnam(PDF_USER)
        uid, gid, who = user.pw_uid, user.pw_gid, f"as {PDF_USER}"
    # Inside the box: the user switched to, the repository out of sight; then user namespaces for chromium
    me = os.geteuid() if uid is None else uid
    probe = (f'test "$(id -u)" = {me} || {{ echo "bubblewrap ran as uid $(id -u), not {me}" >&2; exit 1; }}; '
             f'! test -e {shlex.quote(str(ROOT))} || {{ echo "{ROOT} is visible inside bubblewrap" >&2; exit 1; }}')
    userns = ["unshare", "--user", "--pid", "--net", "--fork", "true"]  # what chromium's own sandbox needs
    boxed = shutil.which("bwrap") is not None
    if boxed:
        checked = subprocess.run(pdf_box(["sh", "-c", probe], uid, gid), capture_output=True, text=True, timeout=60)
        boxed, why = checked.returncode == 0, (checked.stderr.strip().splitlines() or ["?"])[-1]
    else:
        why = "bubblewrap is not installed: apt-get install bubblewrap"
    if boxed:
        run = f'exec {shlex.join(pdf_box([str(chromium)], uid, gid))} "$@"\n'
        sandbox = subprocess.run(pdf_box(userns, uid, gid), capture_output=True, timeout=60).returncode == 0
        mode = f"chromium runs {who} in bubblewrap (no network, no file of the course's)"
        start = ""
    else:
        # chromium as the user, straight: the folder playwright made for its profile (root's) given to it
        run = (f'exec {shlex.join(as_pdf_user(uid, gid))} env "HOME=${{profile:-/tmp}}" {shlex.quote(str(chromium))} '
               '"$@"\n')
        sandbox = subprocess.run([*as_pdf_user(uid, gid), *userns], capture_output=True, timeout=60).returncode == 0
        mode = f"chromium runs {who} WITHOUT bubblewrap ({why})"
        start = ('for arg; do case "$arg" in --user-data-dir=*) profile="${arg#--user-data-dir=}"; '
                 + (f'chown -R {uid}:{gid} "$profile";; ' if uid is not None else ";; ") + "esac; done\n")
    mode += (", its own sandbox on" if sandbox else ", its own sandbox off (no user namespaces)") + (
        "" if boxed else "; the page's policy and refused requests still hold")
    launcher = folder / "chromium"
    launcher.write_text("#!/bin/sh\n# chromium for one PDF of the written questions (build.py pdf_browser)\n"
                        + start + run)
    launcher.chmod(0o700)
    return PDFBrowser(launcher, sandbox, mode, uid)


# The PDFs are made in a process of the batch's, which the batch ends at a PDF's time limit (nbconvert
# and bleach cannot be interrupted, and a page can keep chromium busy) and starts again for the next:
# it imports nbconvert and otter once (3 s), not once per PDF. It answers each job with one line.
_PDF_WORKER = """import json, sys
import cgcnn_utils
mathjax, chromium, sandbox = sys.argv[1:]
for line in sys.stdin:
    notebook, dest, seconds = json.loads(line)
    try:
        cgcnn_utils.questions_pdf(notebook, dest, mathjax, chromium, sandbox == "on", seconds)
        problem = None
    except cgcnn_utils.PDFError as err:
        problem = str(err)
    except Exception as err:  # a bug met on one notebook: said, and the batch goes on
        problem = f"{type(err).__name__}: {err}"
    print("PDF " + json.dumps(problem), flush=True)
"""


class PDFWorker:
    """The process that makes the PDFs one after the other (_PDF_WORKER), each within its time limit."""

    def __init__(self, mathjax: Path, browser: PDFBrowser, log: Path):
        self.mathjax, self.browser, self.log = mathjax, browser, log
        self.child: subprocess.Popen | None = None

    def start(self) -> None:
        import cgcnn_utils
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(cgcnn_utils.__file__).parent),
                                                            os.environ.get("PYTHONPATH", "")])}
        with open(self.log, "a") as log:
            self.child = subprocess.Popen(
                [sys.executable, "-c", _PDF_WORKER, str(self.mathjax), str(self.browser.launcher),
                 "on" if self.browser.sandbox else "off"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda out, q: [q.put(line) for line in out] + [q.put(None)],
                         args=(self.child.stdout, self.lines), daemon=True).start()

    def make(self, notebook: Path, dest: Path, seconds: float) -> str | None:
        """The PDF of `notebook` at `dest` within `seconds`; None, or why there is none."""
        if self.child is not None and self.child.poll() is not None:
            self.stop()  # died after its last answer
        if self.child is None:
            self.start()
        deadline = time.monotonic() + seconds
        problem = None
        try:
            self.child.stdin.write(json.dumps([str(notebook), str(dest), seconds]) + "\n")
            self.child.stdin.flush()
            while True:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
                if line is None:  # the process died: its last words
                    self.stop()
                    said = self.log.read_text(errors="replace").strip().splitlines()
                    problem = f"the PDF's process died ({said[-1] if said else 'without a word'})"
                    break
                if line.startswith("PDF "):
                    problem = json.loads(line[4:])
                    if problem is None and not dest.is_file():
                        problem = "the PDF's process wrote no PDF"
                    break
        except (queue.Empty, BrokenPipeError):
            self.stop()
            problem = f"no PDF after {seconds:g} s (the time limit of one PDF: python build.py pdf --seconds N)"
        if self.browser.uid is not None:
            _end_processes(self.browser.uid)  # without bubblewrap, chromium's own processes
        if problem:
            dest.unlink(missing_ok=True)
        return problem

    def stop(self) -> None:
        """End the process and all it started: python and playwright's driver by their process group,
        chromium with them (bubblewrap's --die-with-parent; without it, the pipe to the driver closes)."""
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGKILL)
            self.child.wait()
            self.child = None
        if self.browser.uid is not None:
            _end_processes(self.browser.uid)


def _end_processes(uid: int) -> None:
    """End every process of `uid` (the PDF's user: nothing else runs as it); zombies are ended already."""
    for _ in range(50):
        found = _processes_of(uid)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _processes_of(uid: int) -> list[int]:
    """The live processes of `uid` (not zombies)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == uid:
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except (OSError, IndexError):
            continue  # ended meanwhile
    return found


def submission_notebook(upload: Path) -> bytes:
    """The notebook of one upload: an .ipynb, the zip of the notebook's export cell, or a folder
    holding either (one submission of Gradescope's export)."""
    if upload.is_dir():
        found = sorted(upload.rglob(NB_NAME)) or sorted(upload.rglob("*.ipynb")) or sorted(upload.rglob("*.zip"))
        if len(found) != 1:
            raise BuildError(f"{upload} holds {len(found) or 'no'} notebooks or zips: expected one ({NB_NAME})")
        return submission_notebook(found[0])
    if upload.suffix == ".zip":
        try:
            with zipfile.ZipFile(upload) as z:
                names = [n for n in z.namelist() if n.endswith(".ipynb") and not n.startswith("__MACOSX")]
                named = [n for n in names if Path(n).name == NB_NAME]
                if len(named or names) != 1:
                    raise BuildError(f"{upload} holds {len(names) or 'no'} notebooks: expected one ({NB_NAME})")
                return z.read((named or names)[0])
        except zipfile.BadZipFile as err:
            raise BuildError(f"{upload} is not a readable zip ({err})") from err
    return upload.read_bytes()


def written_pdfs(sources: list[Path], out: Path, seconds: float = PDF_SECONDS) -> list[Path]:
    """The PDF of the written questions of every submission in `sources` (notebooks, zips of the
    export cell, folders of them or Gradescope's Export Submissions) in `out`, one per submission, as
    the students' cell makes it (cgcnn_utils.questions_pdf), offline, chromium as safe as this
    machine allows (pdf_browser), each PDF within `seconds`; BuildError listing those that could not
    be made, and why, after the others are written."""
    chromium, mathjax = pdf_tools()
    out.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    with tempfile.TemporaryDirectory(prefix="cgcnn-pdf-") as tmp:
        uploads = []
        for n, source in enumerate(sources):
            if source.is_file() and source.suffix == ".ipynb" or (source.suffix == ".zip" and _holds_notebook(source)):
                uploads.append((source.stem, source))
            else:
                subs, _ = find_submissions(source, Path(tmp) / f"unpack{n}")
                failed += [f"{s.key}: {s.problem}" for s in subs if s.path is None]
                uploads += [(s.folder, s.path) for s in subs if s.path is not None]
        browser = pdf_browser(chromium, Path(tmp))
        print(f"{browser.mode}; {seconds:g} s per PDF at most", flush=True)
        worker = PDFWorker(mathjax, browser, Path(tmp) / "worker.log")
        names = [name for name, _ in uploads]
        with _pdf_lock() if browser.uid is not None else contextlib.nullcontext():
            try:
                for n, (name, upload) in enumerate(uploads):
                    name = name if names.count(name) == 1 else f"{name}-{n + 1}"  # two uploads of the same name
                    start = time.perf_counter()
                    print(f"[{n + 1}/{len(uploads)}] {name} ...", end=" ", flush=True)
                    notebook = Path(tmp) / f"nb{n}" / NB_NAME
                    notebook.parent.mkdir()
                    try:
                        notebook.write_bytes(submission_notebook(upload))
                        problem = worker.make(notebook, out / f"{name}.pdf", seconds)
                    except BuildError as err:
                        problem = str(err)
                    print(f"{'no PDF' if problem else 'done'} ({time.perf_counter() - start:.1f} s)", flush=True)
                    if problem:
                        failed.append(f"{name} ({upload}): {problem}")
                    else:
                        written.append(out / f"{name}.pdf")
            finally:
                worker.stop()
    print(f"wrote {len(written)} PDFs in {out}")
    if failed:
        raise BuildError(f"{len(failed)} PDFs not made:\n  " + "\n  ".join(failed))
    return written


@contextlib.contextmanager
def _pdf_lock():
    """One batch of PDFs at a time on this machine: each ends every process of the PDF's user, which
    would end another batch's browser. A lock in a folder of root's, which the user cannot take."""
    import fcntl
    folder = Path("/run/cgcnn-pdf")
    folder.mkdir(mode=0o700, exist_ok=True)
    with open(folder / "batch.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another `python build.py pdf` on this machine to finish ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _holds_notebook(path: Path) -> bool:
    """Whether `path` is a zip with a notebook at its top level (a student's export, not Gradescope's)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/" not in n and n.endswith(".ipynb") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def pdf_command(argv: list[str]) -> None:
    """`python build.py pdf`'s arguments."""
    import argparse
    parser = argparse.ArgumentParser(
        prog="python build.py pdf", description="The PDF of the written questions (otter's filtered export: the "
        "hand-graded questions with the cells inside them and the answers), one per submission, printed offline "
        "with Debian's chromium-headless-shell and libjs-mathjax.")
    parser.add_argument("submissions", type=Path, nargs="+", help="notebooks, the zips of the notebook's export "
                        "cell, folders of them, or Gradescope's Export Submissions (its folder or zip)")
    parser.add_argument("-o", "--output", type=Path, default=Path("written-pdfs"),
                        help="the folder for the PDFs (default: written-pdfs)")
    parser.add_argument("--seconds", type=float, default=PDF_SECONDS,
                        help="the time limit of one PDF, after which the batch goes on without it "
                        f"(default: {PDF_SECONDS})")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, not {args.seconds:g}")
    written_pdfs(args.submissions, args.output, args.seconds)


# Installing what the project needs ------------------------------------------------------------------

IGNORE_INSTALLED = {"-I", "--ignore-installed", "--force-reinstall"}  # pip options that reinstall torch too


def pinned(name: str, requirements: Path = ROOT / "requirements.txt") -> str:
    """The version `requirements` pins for `name` (its `name==version` line)."""
    for line in requirements.read_text().splitlines():
        found = re.fullmatch(rf"{re.escape(name)}==(\S+)", line.split("#")[0].strip())
        if found:
            return found.group(1)
    raise BuildError(f"{requirements.name} pins no {name}: it needs a line {name}==VERSION")


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", *args]


def install_plan(requirements: str, pip_options: list[str], system: str, machine: str,
                 torch_installed: str | None, cpu_index: str = TORCH_CPU_INDEX) -> list[list[str]]:
    """The pip commands that install the project, in order. On Linux torch comes first, from PyTorch's
    CPU index, so that `-r requirements` then finds it installed and pulls no CUDA package; it is left
    out where the pinned torch is installed already (`torch_installed`, its version)."""
    version = pinned("torch")
    plan = []
    if system == "Linux" and machine in TORCH_CPU_MACHINES and (torch_installed or "").split("+")[0] != version:
        plan.append(_pip(f"torch=={version}", "--index-url", cpu_index, *pip_options))
    plan.append(_pip("-r", requirements, *pip_options))
    plan.append(_pip("--no-build-isolation", "-e", ".", *pip_options))
    return plan


def unreachable(url: str, timeout: float = 10) -> str | None:
    """Why `url` cannot be reached, or None when it answers (within `timeout` seconds, not pip's
    retries and minutes)."""
    import urllib.request
    try:
        with urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"),
                                    timeout=timeout):
            return None
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts, a malformed URL
        return str(getattr(err, "reason", None) or err)


def run_install_step(command: list[str], pip_options: list[str], cpu_index: str = TORCH_CPU_INDEX) -> None:
    """Run one command of the plan. Torch from the CPU index runs only when the index answers;
    otherwise torch's CPU build is looked for in pip's own configured indexes and find-links (a
    machine with the wheel on disk), never PyPI's CUDA build."""
    version = pinned("torch")
    if cpu_index in command:
        why = unreachable(cpu_index)
        if why:
            print(f"PyTorch's CPU index {cpu_index} cannot be reached ({why}): looking for torch=={version}+cpu "
                  "in pip's configured indexes and find-links instead", flush=True)
            command = _pip(f"torch=={version}+cpu", *pip_options)
            if subprocess.run(command, cwd=ROOT).returncode != 0:
                raise BuildError(
                    f"torch {version} is not installed: {cpu_index} cannot be reached ({why}) and pip's "
                    f"configured indexes and find-links hold no torch=={version}+cpu. Run this again when "
                    f"{cpu_index} can be reached, or take PyPI's build (on Linux the CUDA one, several GB): "
                    "pip install -r requirements.txt")
            return
    print("$ pip install " + " ".join(command[4:]), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise BuildError(f"pip install {' '.join(command[4:])} failed: pip's output above says why")


def install(data: bool = False, pip_options: list[str] = ()) -> None:
    """Install what the project needs (requirements.txt, or requirements-data.txt with `data`) and the
    project itself, torch's CPU build first on Linux (see install_plan)."""
    import importlib.metadata
    import platform
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = None
    if IGNORE_INSTALLED & set(pip_options):
        torch = None
    system, machine = platform.system(), platform.machine()
    if torch and torch.split("+")[0] == pinned("torch"):
        print(f"torch {torch} is installed: kept")
    elif system != "Linux":
        print(f"torch from PyPI: its {system} build is CPU-only")
    elif machine not in TORCH_CPU_MACHINES:
        print(f"torch from PyPI: PyTorch's CPU index has no wheels for {machine}")
    requirements = "requirements-data.txt" if data else "requirements.txt"
    for command in install_plan(requirements, list(pip_options), system, machine, torch):
        run_install_step(command, list(pip_options))


def term_option(args: list[str]) -> str:
    """`--term NAME` of the build: the hidden tests' inputs are drawn from a seed derived from NAME
    (their `seeded` argument, cgcnn_grading.master_tests.seeded_factory), so a term's leaked hidden
    inputs and answers do not pass the next term's. Anyone with the grader's code and the name can derive them too: pick a name that is not
    guessable when the code may have leaked."""
    if not args:
        return ""
    if len(args) == 2 and args[0] == "--term" and args[1].strip() and not args[1].startswith("-"):
        return args[1].strip()
    raise BuildError(f"unexpected arguments {' '.join(args)!r}: the build takes only `--term NAME`")


# What each command does and costs (measured on this project's 2-core machine), for `--help`; the
# commands with options of their own (grade, pdf, data) answer --help with their full usage as well.
COMMANDS = {
    "build": ("python build.py [--term NAME]", "the three releases (student/, solutions/, autograder/) from "
              "assignment/: otter assign, the solution graded with the new zip (every test of the master must run "
              "and pass), the student notebook graded (every test must fail), the solution executed; "
              "--term NAME reseeds the hidden tests' inputs for a course term", "about 10 minutes"),
    "install": ("python build.py install [--data] [pip options]", "what the project needs, torch's CPU build "
                "first on Linux; --data adds CHGNet for `data`", "about 2 minutes"),
    "calibrate": ("python build.py calibrate", "grades the solution with seeds 0 to 2 and the network without "
                  "convolutions, fits the structure-blind baselines, writes 4b's thresholds to "
                  "assignment/calibration.json", "about 30 minutes"),
    "answers": ("python build.py answers", "executes the solution with the held-out crystals and prints every "
                "figure Part 5's model answer quotes", "about 10 minutes"),
    "grade": ("python build.py grade SUBMISSIONS [-o scores.csv] [-j N] [--results DIR]", "grades Gradescope's "
              "export (or a folder of notebooks and zips) as Gradescope does, side by side; writes a CSV",
              "about 1 CPU-minute per submission, one submission per CPU at a time"),
    "pdf": ("python build.py pdf SUBMISSIONS... [-o DIR]", "the written questions' PDF of each submission, "
            "offline", "a few seconds per submission"),
    "data": ("python build.py data [options]", "regenerates the data set with CHGNet (needs `install --data`)",
             "about 30 minutes from an empty cache, seconds from the cache"),
}
HELP_FLAGS = {"-h", "--help"}


def command_help(command: str) -> str:
    usage, what, cost = COMMANDS[command]
    return f"usage: {usage}\n\n{what} ({cost})."


def main(argv: list[str]) -> int:
    command = argv[0] if argv and not argv[0].startswith("-") else "build"
    if command in ("build", "install", "calibrate", "answers") and HELP_FLAGS & set(argv):
        print(command_help(command) + ("\n\n" + __doc__ if command == "build" else ""))
        return 0  # nothing else runs: --help has no side effects
    try:
        if command == "build":
            build(term_option(argv[1:] if argv and argv[0] == "build" else argv))
        elif command == "install":
            install(data="--data" in argv[1:], pip_options=[a for a in argv[1:] if a != "--data"])
        elif command == "calibrate":
            calibrate()
        elif command == "answers":
            answers()
        elif command == "grade":
            grade_command(argv[1:])
        elif command == "pdf":
            pdf_command(argv[1:])
        elif command == "data":
            import make_dataset
            make_dataset.main(argv[1:])
        else:
            print(f"unknown command {command!r}\n\n{__doc__}", file=sys.stderr)
            return 2
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
