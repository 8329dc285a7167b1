"""Fresh machines and Colab. `python build.py install`: on Linux torch's CPU build from PyTorch's CPU
index before the requirements, a quick fallback where that index cannot be reached, a no-op here;
the environment it leaves holds no CUDA package. The student release in one zip, and the notebook's
Colab setup cell that unpacks it and installs the grader's pins (run here with a stand-in for
google.colab). Nothing reaches the network: the unreachable index is a closed local port, and pip
resolves from this machine's configured indexes and find-links in dry runs.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile

import nbformat
import numpy  # noqa: F401  (loaded, as on Colab, for the restart test)
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import ASSIGNMENT, ROOT

import build

UNREACHABLE = "http://127.0.0.1:9/whl/cpu"  # the discard port: nothing listens, the connection is refused
DRY = ["--dry-run", "--ignore-installed", "--retries", "0", "--timeout", "5"]  # resolve, install nothing
PIP = [sys.executable, "-m", "pip", "install"]
TORCH = build.pinned("torch")


def _pins(path) -> dict[str, Requirement]:
    reqs = [Requirement(l.split("#")[0].strip()) for l in path.read_text().splitlines()
            if l.split("#")[0].strip() and not l.strip().startswith("-")]
    return {r.name.lower(): r for r in reqs}


def _version(req: Requirement) -> str:
    return str(req.specifier).removeprefix("==")


# python build.py install ---------------------------------------------------------------------------

@pytest.mark.parametrize("machine", build.TORCH_CPU_MACHINES)
def test_plan_on_linux_takes_torch_from_the_cpu_index_before_the_requirements(machine):
    for installed in (None, "2.9.0+cu126"):  # none, or another version (a CUDA build)
        plan = build.install_plan("requirements.txt", ["-q"], "Linux", machine, installed)
        assert plan == [PIP + [f"torch=={TORCH}", "--index-url", build.TORCH_CPU_INDEX, "-q"],
                        PIP + ["-r", "requirements.txt", "-q"],
                        PIP + ["--no-build-isolation", "-e", ".", "-q"]], plan
    # the index and the torch the autograder installs on Gradescope: the same
    grader = (ASSIGNMENT / "autograder_requirements.txt").read_text().split()
    assert build.TORCH_CPU_INDEX in grader
    assert Version(_version(_pins(ASSIGNMENT / "autograder_requirements.txt")["torch"])).public == TORCH


@pytest.mark.parametrize("system,machine,installed", [
    ("Darwin", "arm64", None), ("Windows", "AMD64", None),  # PyPI's torch is CPU-only there
    ("Linux", "x86_64", f"{TORCH}+cpu"),  # installed already
    ("Linux", "ppc64le", None),  # no wheels on the CPU index
])
def test_plan_leaves_torch_to_the_requirements_elsewhere(system, machine, installed):
    plan = build.install_plan("requirements-data.txt", [], system, machine, installed)
    assert plan == [PIP + ["-r", "requirements-data.txt"], PIP + ["--no-build-isolation", "-e", "."]], plan


def test_unreachable_cpu_index_falls_back_to_the_cpu_wheel_pip_is_configured_with(capfd):
    """This machine reaches no network; pip's find-links hold torch's CPU wheel (as on the course
    machines). The step says the index cannot be reached and resolves that wheel, no CUDA build."""
    plan = build.install_plan("requirements.txt", DRY, "Linux", "x86_64", None, cpu_index=UNREACHABLE)
    start = time.monotonic()
    build.run_install_step(plan[0], DRY, cpu_index=UNREACHABLE)
    print(f"fallback resolved in {time.monotonic() - start:.1f} s")
    out = capfd.readouterr().out
    assert f"CPU index {UNREACHABLE} cannot be reached" in out and "Connection refused" in out, out[-2000:]
    would = [line for line in out.splitlines() if line.startswith("Would install")]
    assert len(would) == 1 and f"torch-{TORCH}+cpu" in would[0].split(), out[-2000:]
    assert "nvidia" not in would[0] and "triton" not in would[0]


def test_without_the_index_or_a_cpu_wheel_it_stops_and_says_how_to_go_on(monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip reads no configuration file ...
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)  # ... and finds no wheel on disk
    options = [*DRY, "--no-index"]
    plan = build.install_plan("requirements.txt", options, "Linux", "x86_64", None, cpu_index=UNREACHABLE)
    with pytest.raises(build.BuildError) as err:
        build.run_install_step(plan[0], options, cpu_index=UNREACHABLE)
    message = str(err.value)
    assert f"torch=={TORCH}+cpu" in message and "cannot be reached" in message
    assert "Run this again when" in message and "pip install -r requirements.txt" in message


def test_install_here_is_a_no_op_that_succeeds():
    """`python build.py install --data` as CI runs it, dry: torch kept without asking any index, the
    requirements satisfied; only the project itself would be (re)installed, as every install does."""
    done = subprocess.run([sys.executable, "build.py", "install", "--data", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"torch {TORCH}+cpu is installed: kept" in done.stdout
    assert "--index-url" not in done.stdout and "cannot be reached" not in done.stdout
    would = [line for line in done.stdout.splitlines() if line.startswith("Would install")]
    assert would == [f"Would install cgcnn-assignment-{importlib.metadata.version('cgcnn-assignment')}"], would


def test_build_install_names_a_bad_pip_option():
    done = subprocess.run([sys.executable, "build.py", "install", "--no-such-option"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 1
    assert "no such option: --no-such-option" in done.stderr and "failed: pip's output above says why" in done.stderr


def test_no_cuda_package_is_installed():
    """What the install leaves: torch's CPU build, and none of the nvidia-* CUDA libraries or triton
    that PyPI's Linux torch pulls (a Python-only nvidia-* package without libraries, such as chgnet's
    NVML bindings nvidia-ml-py3, is no CUDA download)."""
    import torch
    assert torch.version.cuda is None and torch.__version__.endswith("+cpu"), torch.__version__
    assert not [r for r in importlib.metadata.requires("torch") or [] if r.startswith(("nvidia", "triton"))]
    cuda = []
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower()
        libraries = [f for f in dist.files or [] if f.suffix == ".so" or ".so." in f.name]
        if (name.startswith("nvidia") or name.startswith("triton")) and libraries:
            cuda.append(f"{name} ({len(libraries)} libraries)")
    assert not cuda, f"CUDA packages installed: {cuda}"


# The student release in one zip --------------------------------------------------------------------

def _student_copy(dest):
    """A copy of the committed student/ (without its zip), its requirements from the build's source."""
    shutil.copytree(ROOT / "student", dest, ignore=shutil.ignore_patterns(build.STUDENT_ZIP))
    shutil.copy(ASSIGNMENT / "student_requirements.txt", dest / "requirements.txt")
    shutil.copy(ASSIGNMENT / "student_requirements_pdf.txt", dest / "requirements-pdf.txt")
    return dest


def test_student_zip_is_deterministic_and_holds_every_other_file(tmp_path):
    folder = _student_copy(tmp_path / "student")
    first = build.student_zip(folder).read_bytes()
    assert build.student_zip(folder).read_bytes() == first, "a second run (its zip in the folder) differs"
    other = _student_copy(tmp_path / "again")
    for path in other.rglob("*"):  # other times on disk, the same files
        if path.is_file():
            path.touch()
    assert build.student_zip(other).read_bytes() == first, "a copy of the same files gives other bytes"
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
             if p.is_file() and p.name != build.STUDENT_ZIP}
    with zipfile.ZipFile(io.BytesIO(first)) as z:
        assert z.namelist() == sorted(files), "every other file of the folder, sorted, nothing else"
        assert all(z.read(name) == data for name, data in files.items())
        assert {info.date_time for info in z.infolist()} == {build.FIXED_TIME}
    for needed in (build.NB_NAME, "cgcnn_utils.py", "requirements.txt", "requirements-pdf.txt", "README.md",
                   "data/perovskites/id_prop.csv",
                   "data/atom_init.json", "tests/q1a.py"):
        assert needed in files, needed
    print(f"{len(files)} files, {len(first) / 1e6:.1f} MB zipped")


def test_released_student_zip_is_the_student_folder():
    """The committed release: student/ holds its zip, which the build wrote from the folder's other
    files, and the notebook's Colab cell asks for that name."""
    released = ROOT / "student" / build.STUDENT_ZIP
    assert released.is_file(), f"student/{build.STUDENT_ZIP} is missing: run python build.py"
    with zipfile.ZipFile(released) as z:
        zipped = {name: z.read(name) for name in z.namelist()}
    files = {p.relative_to(ROOT / "student").as_posix(): p.read_bytes() for p in (ROOT / "student").rglob("*")
             if p.is_file() and p != released}
    assert zipped == files, "student/'s zip differs from the folder: run python build.py"
    cell = next(c for c in nbformat.read(ROOT / "student" / build.NB_NAME, as_version=4).cells
                if c.cell_type == "code")
    assert build.STUDENT_ZIP in cell.source and build.TORCH_CPU_INDEX in cell.source


# The Colab setup cell ------------------------------------------------------------------------------

COLAB = {"torch": "2.9.0+cu126", "numpy": "2.0.2", "matplotlib": "3.10.0", "tqdm": "4.67.1",
         "ipykernel": "6.17.1"}  # a Colab runtime: its own torch (CUDA) and numpy; no pymatgen or otter


def _setup_cell() -> str:
    """The master's first code cell as the build writes it into the student notebook."""
    nb = nbformat.reads(build.fill(build.MASTER.read_text(), {}), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    assert "Colab" in cell.source.splitlines()[0], "the first code cell is the Colab setup cell"
    return cell.source


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _run_cell(monkeypatch, workdir, uploads=None, versions=None, loaded=None, colab=True):
    """Run the setup cell in `workdir` as on Colab (a stand-in google.colab whose files.upload returns
    `uploads`, {file name: bytes}), with `versions` ({distribution: version}) installed, if given, and
    `loaded` as packages_distributions' answer. pip is recorded, not run. Returns (pip commands, number
    of uploads asked for, the cell's exception or None)."""
    calls, asked = [], []
    monkeypatch.chdir(workdir)
    if colab:
        def upload():
            asked.append(1)
            return dict(uploads or {})
        monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(files=types.SimpleNamespace(upload=upload)))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if versions is not None:
        def version(name):
            if _norm(name) not in versions:
                raise importlib.metadata.PackageNotFoundError(name)
            return versions[_norm(name)]
        monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: dict(loaded or {}))

    def record(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(subprocess, "run", record)
    try:
        exec(compile(_setup_cell(), "colab-setup-cell", "exec"), {})
    except RuntimeError as err:
        return calls, len(asked), err
    return calls, len(asked), None


@pytest.fixture(scope="module")
def student_zip(tmp_path_factory):
    return build.student_zip(_student_copy(tmp_path_factory.mktemp("release") / "student")).read_bytes()


def test_setup_cell_is_filled_with_the_build_names():
    cell = _setup_cell()
    assert build.STUDENT_ZIP in cell and build.TORCH_CPU_INDEX in cell
    assert "__STUDENT_ZIP__" in build.MASTER.read_text() and not re.search(r"__[A-Z_]+__", cell)


def test_setup_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    calls, asked, err = _run_cell(monkeypatch, tmp_path, versions=COLAB, colab=False)
    assert (calls, asked, err) == ([], 0, None) and not list(tmp_path.iterdir())


def test_setup_cell_unpacks_the_upload_and_installs_the_grader_pins(monkeypatch, tmp_path, student_zip):
    calls, asked, err = _run_cell(monkeypatch, tmp_path, {build.STUDENT_ZIP: student_zip}, COLAB)
    assert err is None and asked == 1
    for path in ("cgcnn_utils.py", "requirements.txt", "data/perovskites/id_prop.csv", "tests/q1a.py", build.NB_NAME):
        assert (tmp_path / path).is_file(), path
    assert calls[0] == [sys.executable, "-m", "pip", "install", "-q", f"torch=={TORCH}", "--index-url",
                        build.TORCH_CPU_INDEX], calls
    assert len(calls) == 2 and calls[1][:5] == [sys.executable, "-m", "pip", "install", "-q"], calls
    installed = {Requirement(spec).name.lower(): Requirement(spec) for spec in calls[0][5:6] + calls[1][5:]}
    # exactly what Colab lacks at another version, each at the grader's pin (otter at the students' pin)
    grader = _pins(ASSIGNMENT / "autograder_requirements.txt")
    students = _pins(ASSIGNMENT / "student_requirements.txt")
    lacking = {name for name in students if students[name].specifier and COLAB.get(name) != _version(students[name])}
    assert set(installed) == lacking, (sorted(installed), sorted(lacking))
    assert not set(installed) & set(_pins(ASSIGNMENT / "student_requirements_pdf.txt")), "the PDF's, where it cannot print"
    for name, pin in grader.items():  # every package the grader pins: installed, or Colab's is that version
        assert name in installed or COLAB.get(name, "").split("+")[0] == Version(_version(pin)).public, name
    for name, req in installed.items():
        reference = grader.get(name, students[name])
        assert Version(_version(req)).public == Version(_version(reference)).public, (req, reference)


def test_setup_cell_run_again_asks_for_nothing_and_installs_nothing(monkeypatch, tmp_path, student_zip):
    with zipfile.ZipFile(io.BytesIO(student_zip)) as z:
        z.extractall(tmp_path)
    calls, asked, err = _run_cell(monkeypatch, tmp_path)  # this machine has every pin installed
    assert (calls, asked, err) == ([], 0, None)


def test_setup_cell_keeps_colab_torch_of_the_pinned_version(monkeypatch, tmp_path, student_zip):
    colab = {**COLAB, "torch": f"{TORCH}+cu126"}
    calls, _, err = _run_cell(monkeypatch, tmp_path, {build.STUDENT_ZIP: student_zip}, colab)
    assert err is None and len(calls) == 1 and not any(spec.startswith("torch") for spec in calls[0]), calls


def test_setup_cell_asks_for_a_restart_when_a_loaded_module_was_replaced(monkeypatch, tmp_path, student_zip):
    calls, _, err = _run_cell(monkeypatch, tmp_path, {build.STUDENT_ZIP: student_zip}, COLAB,
                              loaded={"numpy": ["numpy"], "sklearn": ["scikit-learn"]})
    assert len(calls) == 2 and err is not None
    assert "Runtime > Restart session" in str(err) and "numpy had been loaded" in str(err), err


@pytest.mark.parametrize("uploads,message", [
    ({}, "expected one zip, cgcnn_perovskites-student.zip, but got nothing"),
    ({"cgcnn_perovskites.ipynb": b'{"cells": []}'}, "but got ['cgcnn_perovskites.ipynb']"),
    ("other.zip", "other.zip is not the assignment's student release"),
])
def test_setup_cell_names_a_wrong_upload(monkeypatch, tmp_path, uploads, message):
    if uploads == "other.zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("notes.txt", "not the release")
        uploads = {"other.zip": buffer.getvalue()}
    calls, asked, err = _run_cell(monkeypatch, tmp_path, uploads, COLAB)
    assert err is not None and message in str(err) and "run this cell again" in str(err), err
    assert calls == [] and asked == 1 and not list(tmp_path.iterdir())
