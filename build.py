"""Build the releases of the CGCNN assignment from the master notebook.

    python build.py              student/, solutions/ and autograder/ from assignment/
    python build.py calibrate    train the solution over several seeds; writes the MAE thresholds
    python build.py data         regenerate the data set with CHGNet (needs requirements-data.txt)
    python build.py grade DIR [scores.csv]   grade every submission in DIR locally (otter run)

The build stages the master notebook with the student copy of the data (no held-out labels) in a
temporary directory, runs `otter assign` there, grades the solution with the new autograder zip,
executes the solution notebook, and only then replaces the three release directories.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ASSIGNMENT = ROOT / "assignment"
NAME = "cgcnn_perovskites"
MASTER = ASSIGNMENT / f"{NAME}.ipynb"
CALIBRATION = ASSIGNMENT / "calibration.json"
SHIPPED = ["cgcnn_utils.py", "autograder_requirements.txt", "cgcnn_grading.py"]
PLUGIN = "cgcnn_grading.py"  # otter plugin: imported from the zip's top level (see its docstring)
ENTRY = "run_otter.py"  # Gradescope's entry point: ours always writes a result (see its docstring)
DATA_FILES = ["id_prop.csv", "split.csv", "metadata.csv", "atom_init.json"]
ZIP_NAME = f"{NAME}-autograder.zip"
CALIBRATION_SEEDS = [0, 1, 2]
MARGIN = 1.5  # full credit up to 1.5 times the worst solution seed's test MAE


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
    for rel in SHIPPED + [ENTRY] + [f"data/perovskites/{f}" for f in DATA_FILES] + ["data/classification/id_prop.csv"]:
        if not (ASSIGNMENT / rel).is_file():
            raise BuildError(f"assignment/{rel} is missing (run `python build.py data` for the data set)")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def stage_student_data(dest: Path) -> None:
    """Copy the data set without the test set's labels; write them to test_labels.csv beside it."""
    src = ASSIGNMENT / "data"
    shutil.copytree(src, dest / "data", ignore=shutil.ignore_patterns(".*", "references.json",
                                                                      "generation.json", "rejected.csv"))
    pv = dest / "data" / "perovskites"
    test_ids = {r["id"] for r in _rows(pv / "split.csv") if r["split"] == "test"}
    meta = _rows(pv / "metadata.csv")
    columns = list(meta[0])
    _write_rows(dest / "test_labels.csv", [r for r in meta if r["id"] in test_ids], ["id", "formation_energy_per_atom"])
    for r in meta:
        if r["id"] in test_ids:
            r["energy_per_atom"] = r["formation_energy_per_atom"] = ""
    _write_rows(pv / "metadata.csv", meta, columns)
    id_prop = (pv / "id_prop.csv").read_text().splitlines()
    (pv / "id_prop.csv").write_text("".join(l + "\n" for l in id_prop if l.split(",")[0] not in test_ids))
    cl = dest / "data" / "classification"
    meta = _rows(cl / "metadata.csv")
    keep = [c for c in meta[0] if "energy" not in c]  # these would leak perovskite test labels
    _write_rows(cl / "metadata.csv", meta, keep)


def stage(dest: Path, thresholds: dict) -> Path:
    """The master notebook, with calibrated thresholds filled in, and what it ships, in `dest`."""
    dest.mkdir(parents=True)
    text = MASTER.read_text()
    for key, value in thresholds.items():
        text = text.replace(f"__{key.upper()}__", f"{value:.3f}")
    (dest / MASTER.name).write_text(text)
    for rel in SHIPPED:
        shutil.copy(ASSIGNMENT / rel, dest / rel)
    stage_student_data(dest)
    return dest / MASTER.name


def plugin_env(plugin_dir: Path) -> dict:
    """The environment for otter commands: the grading plugin importable, as on Gradescope."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH")]))
    return env


def otter_assign(notebook: Path, run_tests: bool) -> Path:
    dist = notebook.parent / "dist"
    cmd = [sys.executable, "-m", "otter", "assign", notebook.name, "dist"]
    if not run_tests:
        cmd.append("--no-run-tests")
    done = subprocess.run(cmd, cwd=notebook.parent, capture_output=True, text=True, env=plugin_env(notebook.parent))
    if done.returncode != 0:
        raise BuildError("otter assign failed (when it grades the solution, a score below 100 % fails):\n"
                         + done.stdout[-4000:] + done.stderr[-4000:])
    return dist


def execute(notebook: Path, seed: int | None = None, graded_only: bool = False,
            timeout: int = 900) -> "nbformat.NotebookNode":
    """Run a notebook top to bottom in its own directory (optionally with another SEED, or without
    the cells the autograder skips)."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(notebook, as_version=4)
    # The export cell would grade the notebook file as saved (SEED = 0), overwriting this run's outputs.
    nb.cells = [c for c in nb.cells if "grader.export(" not in c.source]
    if graded_only:
        nb.cells = [c for c in nb.cells if "otter_ignore" not in c.metadata.get("tags", [])]
    if seed is not None:
        for cell in nb.cells:
            cell.source = re.sub(r"^SEED = \d+", f"SEED = {seed}", cell.source, flags=re.M)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return nb


def grade(zip_path: Path, submission: Path, out: Path) -> dict:
    """Grade one submission with the autograder zip through `otter run`; return results.json. The
    grading plugin is imported from the zip itself, as on Gradescope, so that it always matches the
    zip's otter_config.json."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cgcnn-plugin-") as plugin_dir:
        with zipfile.ZipFile(zip_path) as z:
            z.extract(PLUGIN, plugin_dir)
        done = subprocess.run([sys.executable, "-m", "otter", "run", "-a", str(zip_path), "-o", str(out),
                               str(submission)], capture_output=True, text=True, timeout=1800,
                              env=plugin_env(Path(plugin_dir)))
    results = out / "results.json"
    if not results.is_file():
        why = (done.stderr.strip().splitlines() or ["no error message"])[-1]
        raise BuildError(f"otter run wrote no results for {submission.name}: {why}")
    return json.loads(results.read_text())


def finish_zip(path: Path) -> None:
    """Put our entry point and the time-limit plugin at the top level of the autograder zip (on the
    sys.path of Gradescope's `python /autograder/source/run_otter.py`)."""
    ours = {ENTRY: (ASSIGNMENT / ENTRY).read_bytes(), PLUGIN: (ASSIGNMENT / PLUGIN).read_bytes()}
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist() if info.filename not in ours]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in members:
            z.writestr(info, data)
        for name, data in ours.items():
            z.writestr(zipfile.ZipInfo(name, date_time=members[0][0].date_time), data)


def written_answers(nb) -> str:
    """The model answers of the manually graded questions, as markdown."""
    parts, in_q = ["# Model answers to the written questions\n"], False
    for cell in nb.cells:
        text = re.sub(r"<!--.*?-->", "", cell.source).strip()  # otter marks manual questions with comments
        if cell.cell_type == "markdown" and re.match(r"\*\*Question \d", text):
            parts.append(text)
            in_q = True
        elif in_q and cell.cell_type == "markdown" and text.startswith("*Model answer"):
            parts.append(text)
            in_q = False
    return "\n\n".join(parts) + "\n"


def _swap(new: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(new), str(target))


def build() -> None:
    check_inputs()
    if not CALIBRATION.is_file():
        raise BuildError(f"{CALIBRATION.relative_to(ROOT)} is missing: run `python build.py calibrate`")
    thresholds = json.loads(CALIBRATION.read_text())["thresholds"]
    with tempfile.TemporaryDirectory(prefix="cgcnn-build-") as tmp:
        tmp = Path(tmp)
        dist = otter_assign(stage(tmp / "stage", thresholds), run_tests=False)
        zips = sorted((dist / "autograder").glob(f"{NAME}-autograder_*.zip"))
        if len(zips) != 1:
            raise BuildError(f"expected one autograder zip from otter assign, found {len(zips)}")
        finish_zip(zips[0])
        print("grading the solution with the new autograder ...")
        solution_nb = dist / "autograder" / MASTER.name
        results = grade(zips[0], solution_nb, tmp / "grade")
        score = sum(t.get("score", 0) for t in results["tests"])
        possible = sum(t.get("max_score", 0) for t in results["tests"])
        if not math.isclose(score, possible, abs_tol=1e-6):
            failed = [t["name"] for t in results["tests"] if t.get("score", 0) < t.get("max_score", 0)]
            raise BuildError(f"the solution scores {score}/{possible}; failing: {failed}")
        print(f"solution scores {score}/{possible}; executing the solution notebook ...")
        import nbformat
        executed = execute(solution_nb)
        out = {name: tmp / "out" / name for name in ("student", "solutions", "autograder")}
        shutil.copytree(dist / "student", out["student"])
        shutil.copy(ASSIGNMENT / "student_requirements.txt", out["student"] / "requirements.txt")
        out["solutions"].mkdir(parents=True)
        nbformat.write(executed, out["solutions"] / f"{NAME}_solution.ipynb")
        (out["solutions"] / "written_answers.md").write_text(written_answers(executed))
        out["autograder"].mkdir()
        shutil.copy(zips[0], out["autograder"] / ZIP_NAME)
        shutil.copy(ASSIGNMENT / PLUGIN, out["autograder"] / PLUGIN)  # for local `otter run`
        with zipfile.ZipFile(zips[0]) as z:  # the hidden tests, readable beside the zip
            for member in z.namelist():
                if member.startswith("tests/") and member.endswith(".py"):
                    (out["autograder"] / member).parent.mkdir(exist_ok=True)
                    (out["autograder"] / member).write_bytes(z.read(member))
        shutil.copy(tmp / "stage" / "test_labels.csv", out["autograder"] / "test_labels.csv")
        for name, path in out.items():
            _swap(path, ROOT / name)
    print(f"""
wrote
  student/     {MASTER.name}, public tests, cgcnn_utils.py, data/ (no test labels), requirements.txt:
               give to students
  solutions/   {NAME}_solution.ipynb (executed), written_answers.md: keep for the course staff
  autograder/  {ZIP_NAME}: upload to Gradescope ("Configure Autograder", zip upload);
               tests/ and test_labels.csv: the hidden tests and held-out labels, for reading""")


def grade_folder(folder: Path, csv_path: Path) -> list[dict]:
    """Grade every submission (.zip or .ipynb) in `folder` with the released autograder through
    `otter run`, one at a time; write one CSV row per submission, with a note when it has no results."""
    zip_path = ROOT / "autograder" / ZIP_NAME
    if not zip_path.is_file():
        raise BuildError(f"{zip_path.relative_to(ROOT)} not found: run `python build.py` first")
    submissions = sorted(p for p in Path(folder).iterdir() if p.suffix in (".zip", ".ipynb"))
    if not submissions:
        raise BuildError(f"no .zip or .ipynb submissions in {folder}")
    rows, questions = [], []
    with tempfile.TemporaryDirectory(prefix="cgcnn-grade-") as tmp:
        for n, sub in enumerate(submissions):
            print(f"[{n + 1}/{len(submissions)}] {sub.name} ...", flush=True)
            row = {"submission": sub.name, "note": ""}
            try:
                results = grade(zip_path, sub, Path(tmp) / str(n))
                for t in results["tests"]:
                    if "max_score" in t and t["name"] != "Public Tests":
                        row[t["name"]] = t.get("score", 0)
                        questions += [t["name"]] if t["name"] not in questions else []
            except (BuildError, subprocess.TimeoutExpired) as err:
                row["note"] = f"not graded: {err}"
            row["total"] = sum(v for k, v in row.items() if k in questions)
            rows.append(row)
    _write_rows(csv_path, rows, ["submission", *questions, "total", "note"])
    print(f"wrote {csv_path}: {len(rows)} submissions")
    return rows


def calibrate() -> None:
    """Train the solution with several seeds; full credit up to MARGIN times the worst test MAE."""
    check_inputs()
    with tempfile.TemporaryDirectory(prefix="cgcnn-calibrate-") as tmp:
        nb = stage(Path(tmp) / "stage", {"mae_full": 9.0, "mae_mean": 0.0, "mae_solution": 0.0})
        solution_nb = otter_assign(nb, run_tests=False) / "autograder" / MASTER.name
        labels = {r["id"]: float(r["formation_energy_per_atom"]) for r in _rows(nb.parent / "test_labels.csv")}
        maes = {}
        for seed in CALIBRATION_SEEDS:
            execute(solution_nb, seed, graded_only=True)
            pred = {r["id"]: float(r["prediction"]) for r in _rows(solution_nb.parent / "test_predictions.csv")}
            maes[seed] = sum(abs(pred[i] - y) for i, y in labels.items()) / len(labels)
            print(f"seed {seed}: test MAE {maes[seed]:.4f} eV/atom")
    split = {r["id"]: r["split"] for r in _rows(ASSIGNMENT / "data/perovskites/split.csv")}
    train = [float(r["formation_energy_per_atom"]) for r in _rows(ASSIGNMENT / "data/perovskites/metadata.csv")
             if split[r["id"]] == "train"]
    mean = sum(train) / len(train)
    mae_mean = sum(abs(mean - y) for y in labels.values()) / len(labels)
    thresholds = {"mae_full": math.ceil(MARGIN * max(maes.values()) * 100) / 100,
                  "mae_mean": mae_mean, "mae_solution": sum(maes.values()) / len(maes)}
    CALIBRATION.write_text(json.dumps({"seeds": {str(k): v for k, v in maes.items()}, "margin": MARGIN,
                                       "thresholds": thresholds}, indent=1) + "\n")
    print(f"wrote {CALIBRATION.relative_to(ROOT)}: {thresholds}")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    try:
        if command == "build":
            build()
        elif command == "calibrate":
            calibrate()
        elif command == "grade" and len(argv) in (2, 3):
            grade_folder(Path(argv[1]), Path(argv[2] if len(argv) == 3 else "scores.csv"))
        elif command == "data":
            sys.path.insert(0, str(ASSIGNMENT))
            import make_dataset
            make_dataset.main(argv[1:])
        else:
            print(__doc__)
            return 2
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
