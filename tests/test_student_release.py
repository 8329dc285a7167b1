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
