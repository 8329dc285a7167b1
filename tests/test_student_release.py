"""The student release is self-contained: every file or folder its notebook names is in student/
(students have only that folder; the course repository's benchmarks, tests and build are not theirs)."""

import re

import nbformat

import build

STUDENT = build.ROOT / "student"
# Files the notebook makes (the export zip) or names only as other people's (the original CGCNN code).
MADE_HERE = {"cgcnn_perovskites_<date>.zip"}
PATH = re.compile(r"`((?:[\w.<>-]+/)*[\w.<>-]+\.(?:py|json|csv|md|txt|ipynb|png|zip|cif)|(?:data|tests)/[\w./-]*)`")


def _named_paths() -> set[str]:
    nb = nbformat.read(STUDENT / build.NB_NAME, as_version=4)
    return {m for cell in nb.cells for m in PATH.findall(cell.source)}


def test_the_pattern_finds_the_files_the_notebook_names():
    named = _named_paths()
    assert {"data/DATACARD.md", "data/classification"} <= {p.rstrip("/") for p in named}, named


def test_every_file_the_student_notebook_names_is_in_the_student_folder():
    missing = sorted(p for p in _named_paths() - MADE_HERE if not (STUDENT / p.rstrip("/")).exists())
    assert not missing, f"the student notebook names files that student/ does not hold: {missing}"


def test_the_notebook_does_not_send_students_to_the_course_repository():
    nb = nbformat.read(STUDENT / build.NB_NAME, as_version=4)
    text = "\n".join(cell.source for cell in nb.cells)
    for outside in ("benchmarks/", "build.py", "assignment/", "solutions/", "autograder/"):
        assert outside not in text, f"the student notebook mentions {outside}, which students do not have"


def test_the_saved_file_check_says_what_a_headless_run_must_do(tmp_path, capsys):
    """Issue 26: a notebook run by `jupyter nbconvert --execute --inplace` is written when the run ends,
    so its Submit cells read it without outputs; the check says to run them afterwards, alone."""
    import cgcnn_utils
    path = tmp_path / build.NB_NAME
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), path)
    assert cgcnn_utils.check_saved(path) is False
    said = capsys.readouterr().out
    assert "has no outputs: save it" in said and "headless" in said and "run the Submit cells alone" in said, said
    done = nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    nbformat.write(nbformat.v4.new_notebook(cells=[done]), path)
    assert cgcnn_utils.check_saved(path) is True


def test_the_student_readme_installs_the_pinned_torch_from_the_cpu_index_on_linux():
    """Issue 26: students had only requirements.txt's comments, whose --extra-index-url made pip retry an
    unreachable index for every package; the README installs torch alone from PyTorch's CPU index, at
    requirements.txt's pin, then the rest from PyPI, for each of Linux, macOS and Windows."""
    readme = (STUDENT / "README.md").read_text()
    pin = re.search(r"^torch==([\d.]+)$", (STUDENT / "requirements.txt").read_text(), re.M).group(1)
    linux = re.search(r"\*\*Linux\*\*.*?```bash\n(.*?)```", readme, re.S).group(1)
    assert f"pip install torch=={pin} --index-url https://download.pytorch.org/whl/cpu && pip install -r " \
           "requirements.txt" in linux, linux
    for system in ("macOS", "Windows"):
        commands = re.search(rf"\*\*{system}\*\*.*?```\w+\n(.*?)```", readme, re.S).group(1)
        assert "pip install -r requirements.txt" in commands and "index-url" not in commands, commands
    assert "extra-index-url" not in (STUDENT / "requirements.txt").read_text()


def test_part_6_quotes_the_student_folders_own_counts():
    """Issue 26: Part 6 said "about 500 oxides" (the full set's 497, 124 in test) while the student
    folder holds fewer (the perovskites of part 4b's test formulas are left out); it now quotes the
    folder's own counts, and the full set's as the card's, with why they differ."""
    import csv
    folder = STUDENT / "data" / "classification"
    split = list(csv.DictReader((folder / "split.csv").open()))
    labels = dict(line.split(",")[:2] for line in (folder / "id_prop.csv").read_text().split())
    nb = nbformat.read(STUDENT / build.NB_NAME, as_version=4)
    (text,) = [c.source for c in nb.cells if c.cell_type == "markdown" and "## Part 6 (optional" in c.source]
    said = re.search(r"holds (\d+) oxides \((\d+) in its test set\).*?\n(\d+) are perovskites", text, re.S)
    assert said, text[:600]
    assert [int(n) for n in said.groups()] == [len(split), sum(r["split"] == "test" for r in split),
                                               sum(v.strip() == "1" for v in labels.values())]
    assert len(split) < int(re.search(r"the full set,\s+(\d+) oxides", text).group(1)), "the full set is larger"
    answer = nb.cells[nb.cells.index(next(c for c in nb.cells if "def train_classifier" in c.source)) + 1]
    assert answer.cell_type == "markdown" and answer.source.startswith("**Your report (Part 6, ungraded).**")
