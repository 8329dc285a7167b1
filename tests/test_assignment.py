"""The releases, as instructors, students and Gradescope use them: built from a clean copy of the
repository, graded with the real autograder zip through `otter run`."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ASSIGNMENT, ROOT

import build

POINTS = {"q1a": 2, "q1b": 4, "q1c": 2, "q2a": 4, "q2b": 4, "q3": 4, "q4a": 3, "q4b": 7}
NB = "cgcnn_perovskites.ipynb"


def question_scores(results: dict) -> dict:
    """Points per question from otter's results.json (one entry per question)."""
    scores = {}
    for test in results["tests"]:
        name = test["name"]
        if name in POINTS:  # otter adds a "Public Tests" summary entry worth nothing
            scores[name] = scores.get(name, 0) + test.get("score", 0)
    return scores


def fill(student_nb, solution_nb, names):
    """A copy of the student notebook with the solution's cells for the given definitions."""
    nb = nbformat.from_dict(json.loads(json.dumps(student_nb)))

    def defines(cell, name):
        return cell.cell_type == "code" and re.search(rf"^(def|class) {name}\b", cell.source, re.M)

    for name in names:
        sol = next(c for c in solution_nb.cells if defines(c, name))
        cell = next(c for c in nb.cells if defines(c, name))
        cell.source = sol.source
    return nb


def grade_notebook(built, nb, tmp_path, name="submission"):
    path = tmp_path / name / NB
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return build.grade(built / "autograder" / build.ZIP_NAME, path, tmp_path / name / "out")


@pytest.fixture(scope="module")
def notebooks(built):
    student = nbformat.read(built / "student" / NB, as_version=4)
    solution = nbformat.read(built / "solutions" / "cgcnn_perovskites_solution.ipynb", as_version=4)
    return student, solution


def test_build_writes_three_releases(built):
    student, solutions, autograder = built / "student", built / "solutions", built / "autograder"
    assert (student / NB).is_file() and (student / "cgcnn_utils.py").is_file()
    assert (student / "data" / "perovskites" / "id_prop.csv").is_file()
    assert sorted(p.stem for p in (student / "tests").glob("*.py")) == sorted(POINTS)
    sol = nbformat.read(solutions / "cgcnn_perovskites_solution.ipynb", as_version=4)
    images = sum(1 for c in sol.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 4, "the executed solution shows its plots (graph, labels, curves, parity)"
    answers = (solutions / "written_answers.md").read_text()
    assert answers.count("*Model answer.*") == 2
    assert (autograder / build.ZIP_NAME).is_file() and (autograder / "test_labels.csv").is_file()
    assert sorted(p.stem for p in (autograder / "tests").glob("*.py")) == sorted(POINTS)


def test_solution_gets_full_marks(built, notebooks, tmp_path):
    results = grade_notebook(built, notebooks[1], tmp_path)
    assert question_scores(results) == pytest.approx({q: float(p) for q, p in POINTS.items()})


def test_untouched_student_notebook_gets_zero(built, notebooks, tmp_path):
    results = grade_notebook(built, notebooks[0], tmp_path)
    scores = question_scores(results)
    assert set(scores) == set(POINTS), "every autograded part is reported"
    assert all(s == 0 for s in scores.values()), scores


def test_one_part_correct_gets_that_part_only(built, notebooks, tmp_path):
    student, solution = notebooks
    results = grade_notebook(built, fill(student, solution, ["mean_pool", "max_pool"]), tmp_path)
    scores = question_scores(results)
    assert scores == pytest.approx({q: (float(p) if q == "q3" else 0.0) for q, p in POINTS.items()})


def test_student_notebook_runs_before_any_answer(built, tmp_path):
    work = tmp_path / "student"
    shutil.copytree(built / "student", work)
    nb = build.execute(work / NB)  # raises on the first cell that fails
    skipped = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Skipped until you have written" in skipped


def _solution_lines():
    """Lines of code inside the master notebook's solution blocks (long enough to be distinctive)."""
    master = nbformat.read(ASSIGNMENT / NB, as_version=4)
    lines, inside = set(), False
    for cell in master.cells:
        if cell.cell_type != "code":  # raw "# BEGIN SOLUTION" cells wrap the given code too
            continue
        for line in cell.source.splitlines():
            if line.strip().startswith("# BEGIN SOLUTION"):
                inside = True
            elif line.strip().startswith("# END SOLUTION"):
                inside = False
            elif inside and len(line.strip()) > 25:
                lines.add(line.strip())
    return lines


def _student_texts(built):
    for path in (built / "student").rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".py", ".csv", ".json", ".md"):
            yield path, path.read_text(errors="replace")


def test_student_release_holds_no_solution_hidden_test_or_label(built):
    solution_lines = _solution_lines()
    assert len(solution_lines) > 30
    hidden_lines, public_test_lines = set(), set()
    for test_file in (built / "autograder" / "tests").glob("*.py"):
        blocks = test_file.read_text().split("@test_case(")
        for block in blocks[1:]:
            lines = {l.strip() for l in block.splitlines()[1:] if len(l.strip()) > 30}
            if "hidden=True" in block.split("\n", 1)[0]:
                hidden_lines |= lines
            else:
                public_test_lines |= lines
    master = nbformat.read(ASSIGNMENT / NB, as_version=4)
    shared = {l.strip() for c in master.cells if c.cell_type == "code" and "hidden: true" not in c.source
              for l in c.source.splitlines()}  # imports and set-ups that public cells share
    hidden_lines -= shared | public_test_lines
    assert hidden_lines
    with open(built / "autograder" / "test_labels.csv", newline="") as f:
        labels = {r["id"]: r["formation_energy_per_atom"] for r in csv.DictReader(f)}
    assert len(labels) >= 100
    with open(ASSIGNMENT / "data" / "perovskites" / "metadata.csv", newline="") as f:
        # a polymorph that relaxed into its twin can share a label with a training entry: not a leak
        public = {r["formation_energy_per_atom"] for r in csv.DictReader(f) if r["id"] not in labels}
    for path, text in _student_texts(built):
        leaked = [l for l in solution_lines | hidden_lines if l in text]
        assert not leaked, f"{path.relative_to(built)} contains solution or hidden-test lines: {leaked[:3]}"
        if path.suffix in (".csv", ".json", ".ipynb"):
            found = [v for v in labels.values() if v in text and v not in public]
            assert not found, f"{path.relative_to(built)} contains held-out labels {found[:3]}"
    with open(built / "student" / "data" / "perovskites" / "id_prop.csv", newline="") as f:
        assert not set(labels) & {r[0] for r in csv.reader(f)}


def test_committed_releases_match_a_fresh_build(built):
    """What is committed is what the build makes: rebuilding changes nothing students see."""
    def cells(path):  # otter gives cells new random ids on every run: compare what they hold
        return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]

    assert cells(ROOT / "student" / NB) == cells(built / "student" / NB), f"student/{NB} differs: run python build.py"
    for rel in ["student/cgcnn_utils.py", "student/data/perovskites/id_prop.csv",
                "solutions/written_answers.md", "autograder/test_labels.csv"]:
        assert (ROOT / rel).read_text() == (built / rel).read_text(), f"{rel} differs: run python build.py"
    for test_file in (built / "autograder" / "tests").glob("*.py"):
        assert (ROOT / "autograder" / "tests" / test_file.name).read_text() == test_file.read_text()


@pytest.mark.parametrize("damage,message", [
    ("notebook", "not a valid notebook"),
    ("support", "cgcnn_utils.py is missing"),
    ("data", "id_prop.csv is missing"),
])
def test_build_rejects_bad_input_and_keeps_releases(tmp_path, damage, message):
    work = tmp_path / "repo"
    shutil.copytree(ASSIGNMENT, work / "assignment", ignore=shutil.ignore_patterns(".cache", ".tmp", "*.cif"))
    shutil.copy(ROOT / "build.py", work)
    (work / "student").mkdir()
    (work / "student" / "keep.txt").write_text("an earlier release")
    if damage == "notebook":
        (work / "assignment" / NB).write_text("{ not json")
    elif damage == "support":
        (work / "assignment" / "cgcnn_utils.py").unlink()
    else:
        (work / "assignment" / "data" / "perovskites" / "id_prop.csv").unlink()
    done = subprocess.run([sys.executable, "build.py"], cwd=work, capture_output=True, text=True)
    assert done.returncode == 1
    assert message in done.stderr
    assert (work / "student" / "keep.txt").read_text() == "an earlier release"
