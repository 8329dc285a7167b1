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

import copy
import csv
import hashlib
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
SHIPPED = ["cgcnn_utils.py", "autograder_requirements.txt"]
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


def stage(dest: Path, thresholds: dict) -> tuple[Path, dict]:
    """The master notebook, with calibrated thresholds filled in, and what it ships, in `dest`;
    returns its path and the held-out set."""
    dest.mkdir(parents=True)
    text = MASTER.read_text()
    for key, value in thresholds.items():
        text = text.replace(f"__{key.upper()}__", f"{value:.3f}")
    (dest / MASTER.name).write_text(text)
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
        raise BuildError("otter assign failed (when it grades the solution, a score below 100 % fails):\n"
                         + done.stdout[-4000:] + done.stderr[-4000:])
    return dist


def with_seed(nb, seed: int):
    """The notebook with `SEED = seed` in its settings cell."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.source = re.sub(r"^SEED = \d+", f"SEED = {seed}", cell.source, flags=re.M)
    return nb


def execute(notebook: Path, timeout: int = 900) -> "nbformat.NotebookNode":
    """Run a notebook top to bottom in its own directory, on one torch thread as graded (so that the
    same commit gives the same outputs), without its export cell (which would grade the notebook as
    saved and overwrite this run's outputs)."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if "grader.export(" not in c.source]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    client.execute(env=env, cwd=str(notebook.parent))
    return normalise(nb)


def normalise(nb):
    """What changes from run to run taken out of an executed notebook: fixed cell ids, no execution
    timestamps, no progress bars (stderr or widgets); cells tagged `varies` (timings) keep no outputs.
    (The notebook seeds `random` too, for otter's choice of emoji after "passed!".)"""
    for index, cell in enumerate(nb.cells):
        cell.id = f"c{index:03d}-{hashlib.sha1(cell.source.encode()).hexdigest()[:8]}"
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            if "varies" in cell.metadata.get("tags", []):
                cell.outputs = []
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")
                            and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    return nb


def protect_repository() -> None:
    """Local grading runs submissions as the grading user on this machine: the repository (solutions,
    hidden checks, held-out labels, git history) must be closed to other users."""
    mode = ROOT.stat().st_mode
    if mode & 0o007:
        os.chmod(ROOT, mode & ~0o007)
        print(f"closed {ROOT} to other users (chmod o-rwx): submissions are graded as another user")


def grade(zip_path: Path, submission: Path, out: Path | None = None, prefix: list[str] = (),
          timeout: float = 1800, user: str | None = None) -> dict:
    """Grade one submission (.ipynb, .zip or a folder) with the autograder zip, as Gradescope does: the
    zip's entry point in Gradescope's layout (the zip unpacked into source/, the upload into
    submission/), in a private temporary folder; return results.json. `prefix` wraps the command (for
    example `["taskset", "-c", "0"]`); a run longer than `timeout` raises subprocess.TimeoutExpired.
    Gradings side by side need a grading `user` each (cgcnn-student-N); one user grades one at a time."""
    protect_repository()
    with tempfile.TemporaryDirectory(prefix="cgcnn-grade-") as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(root / "source")
        upload = root / "submission"
        if submission.is_dir():
            shutil.copytree(submission, upload, symlinks=True)
        elif submission.suffix == ".zip":
            with zipfile.ZipFile(submission) as z:
                z.extractall(upload)
        else:
            upload.mkdir()
            shutil.copy(submission, upload)
        (root / "submission_metadata.json").write_text("{}")
        command = [sys.executable, str(root / "source" / "run_otter.py"), *(["--user", user] if user else []), str(root), str(ROOT)]
        done = subprocess.run([*prefix, *command],
                              cwd=root / "source", capture_output=True, text=True, timeout=timeout)
        results = root / "results" / "results.json"
        if not results.is_file():
            why = (done.stderr.strip().splitlines() or ["no error message"])[-1]
            raise BuildError(f"the autograder wrote no results for {submission.name}: {why}")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(results, out / "results.json")
        return json.loads(results.read_text())


def scores(results: dict) -> dict[str, float]:
    """{part: score} from a results.json."""
    return {t["name"]: t.get("score", 0) for t in results.get("tests", []) if "max_score" in t}


def question_points(nb) -> dict[str, float]:
    """{part: points} from the master notebook's question configs (otter's `# BEGIN QUESTION` cells)."""
    points = {}
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            config = dict(re.findall(r"^(\w+): *([^#\n]*?) *(?:#.*)?$", cell.source, re.M))
            if config.get("manual", "false") != "true":
                points[config["name"]] = float(config["points"])
    return points


def grading_settings(student_nb, points: dict[str, float], mae_full: float) -> str:
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
    return Settings(NAME, points, checks, export, mae_full, dataclasses.asdict(cgcnn_utils.GRAPH)).dump()


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
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, members[name])


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


def assemble(tmp: Path, thresholds: dict) -> tuple[Path, Path]:
    """otter assign on the staged master, then the zip finished with the grader; returns the zip and
    otter's dist folder."""
    import nbformat
    master, heldout = stage(tmp / "stage", thresholds)
    dist = otter_assign(master, run_tests=False)
    zips = sorted((dist / "autograder").glob(f"{NAME}-autograder_*.zip"))
    if len(zips) != 1:
        raise BuildError(f"expected one autograder zip from otter assign, found {len(zips)}")
    student = nbformat.read(dist / "student" / MASTER.name, as_version=4)
    points = question_points(nbformat.read(master, as_version=4))
    settings = grading_settings(student, points, thresholds["mae_full"])
    finish_zip(zips[0], {"grading.json": settings.encode(), HELDOUT: json.dumps(heldout, indent=0).encode()})
    nbformat.write(normalise(student), dist / "student" / MASTER.name)
    return zips[0], dist


def failure(results: dict) -> str:
    """Why a graded notebook lost points: each part's first line, and what stopped a cell."""
    lines = [f"{t['name']} {t['score']:g}/{t['max_score']:g}: {(t.get('output') or '').splitlines()[:1]}"
             for t in results["tests"] if t.get("score", 0) < t.get("max_score", 0)]
    return "\n  ".join(lines + ([results["output"]] if results.get("output") else []))


def build() -> None:
    check_inputs()
    if not CALIBRATION.is_file():
        raise BuildError(f"{CALIBRATION.relative_to(ROOT)} is missing: run `python build.py calibrate`")
    thresholds = json.loads(CALIBRATION.read_text())["thresholds"]
    with tempfile.TemporaryDirectory(prefix="cgcnn-build-") as tmp:
        tmp = Path(tmp)
        zip_path, dist = assemble(tmp, thresholds)
        print("grading the solution with the new autograder ...")
        solution_nb = dist / "autograder" / MASTER.name
        results = grade(zip_path, solution_nb, tmp / "grade")
        score = sum(t.get("score", 0) for t in results["tests"])
        possible = sum(t.get("max_score", 0) for t in results["tests"])
        if not math.isclose(score, possible, abs_tol=1e-6):
            raise BuildError(f"the solution scores {score:g}/{possible:g}:\n  {failure(results)}")
        print(f"solution scores {score:g}/{possible:g}; executing the solution notebook ...")
        import nbformat
        executed = execute(solution_nb)
        out = {name: tmp / "out" / name for name in ("student", "solutions", "autograder")}
        shutil.copytree(dist / "student", out["student"])
        shutil.copy(ASSIGNMENT / "student_requirements.txt", out["student"] / "requirements.txt")
        out["solutions"].mkdir(parents=True)
        nbformat.write(executed, out["solutions"] / f"{NAME}_solution.ipynb")
        (out["solutions"] / "written_answers.md").write_text(written_answers(executed))
        out["autograder"].mkdir()
        shutil.copy(zip_path, out["autograder"] / ZIP_NAME)
        for name, path in out.items():
            _swap(path, ROOT / name)
        os.chmod(ROOT / "autograder", 0o700)  # the held-out labels are in the zip: root's alone
    print(f"""
wrote
  student/     {MASTER.name}, public tests, cgcnn_utils.py, data/ (no held-out crystals), requirements.txt:
               give to students
  solutions/   {NAME}_solution.ipynb (executed), written_answers.md: keep for the course staff
  autograder/  {ZIP_NAME}: upload to Gradescope ("Configure Autograder", zip upload); it holds the
               grader (cgcnn_grading/), the held-out crystals and their labels: keep it private""")


def grade_folder(folder: Path, csv_path: Path) -> list[dict]:
    """Grade every submission (.zip or .ipynb) in `folder` with the released autograder, each as
    Gradescope grades it; write one CSV row per submission, with a note when it has no results."""
    zip_path = AUTOGRADER_ZIP
    if not zip_path.is_file():
        raise BuildError(f"{zip_path.relative_to(ROOT)} not found: run `python build.py` first")
    submissions = sorted(p for p in Path(folder).iterdir() if p.suffix in (".zip", ".ipynb"))
    if not submissions:
        raise BuildError(f"no .zip or .ipynb submissions in {folder}")
    rows, questions = [], []
    for n, sub in enumerate(submissions):
        print(f"[{n + 1}/{len(submissions)}] {sub.name} ...", flush=True)
        row = {"submission": sub.name, "note": ""}
        try:
            results = grade(zip_path, sub)
            for t in results["tests"]:
                if "max_score" in t and t["name"] != "Autograder Error":
                    row[t["name"]] = t.get("score", 0)
                    questions += [t["name"]] if t["name"] not in questions else []
            row["note"] = results.get("output", "") if not results.get("tests") or any(
                t["name"] == "Autograder Error" for t in results["tests"]) else ""
            row["note"] = row["note"] or "; ".join(l for l in results.get("output", "").splitlines()
                                                   if l.startswith("Time limit"))
        except (BuildError, subprocess.TimeoutExpired) as err:
            row["note"] = f"not graded: {err}"
        row["total"] = sum(v for k, v in row.items() if k in questions)
        rows.append(row)
    _write_rows(csv_path, rows, ["submission", *questions, "total", "note"])
    print(f"wrote {csv_path}: {len(rows)} submissions")
    return rows


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
        results = grade(zip_path, path)
        if "test_mae" not in results.get("extra_data", {}):
            raise BuildError(f"{what}, seed {seed}: part 4b was not scored:\n  {failure(results)}")
        maes[seed] = results["extra_data"]["test_mae"]
        print(f"{what}, seed {seed}: test MAE {maes[seed]:.4f} eV/atom")
    return maes


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
                      **table}}, indent=1) + "\n")
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
