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


def _folder_counts() -> dict[str, dict[tuple[str, str], int]]:
    """The student folder's own counts, from its files: {table: {(group, split): n}}, groups as the card's."""
    import collections
    import csv
    counts = {}
    for name, group in (("perovskites", lambda r: r["prototype"]),
                        ("classification", lambda r: "perovskite" if r["is_perovskite"] == "1" else r["prototype"])):
        folder = STUDENT / "data" / name
        split = {r["id"]: r["split"] for r in csv.DictReader((folder / "split.csv").open())}
        rows = list(csv.DictReader((folder / "metadata.csv").open()))
        assert sorted(split) == sorted(r["id"] for r in rows) == sorted(p.stem for p in folder.glob("*.cif"))
        counts[name] = collections.Counter((group(r), split[r["id"]]) for r in rows)
    return counts


def test_the_introduction_quotes_the_folders_own_perovskites_and_what_is_held_back():
    """Issue 26: the notebook quoted the full set's 871 perovskites to students who hold 780; it now says
    how many their folder holds and how many test crystals only the autograder has."""
    nb = nbformat.read(STUDENT / build.NB_NAME, as_version=4)
    text = " ".join(" ".join(c.source for c in nb.cells if c.cell_type == "markdown").split())
    total, formulas = map(int, re.search(r"\*\*The data\.\*\* (\d+) perovskites of (\d+) formulas", text).groups())
    folder, heldout, heldout_formulas = map(int, re.search(
        r"folder holds the (\d+) crystals of training and validation; the (\d+) test crystals \((\d+) formulas\)",
        text).groups())
    own = _folder_counts()["perovskites"]
    assert folder == sum(own.values()) and not any(split == "test" for _, split in own), own
    full = build.data_counts()
    assert (total, formulas, heldout, heldout_formulas) == (
        int(full["PEROVSKITES"]), int(full["FORMULAS"]), int(full["HELDOUT_PEROVSKITES"]),
        int(full["HELDOUT_FORMULAS"])) and total == folder + heldout


def test_the_data_card_gives_the_folders_own_counts_and_says_why_the_rest_differs():
    """Issue 26: the student's card and baselines.json were the full set's (497 oxides, 124 in test) in a
    folder of 474 (120); the card's section on the folder now tables the folder's own counts by group and
    split, says what is held back and why, and baselines.json's classification rules are measured on
    the folder's own split."""
    import json

    import baselines
    card = (STUDENT / "data" / "DATACARD.md").read_text()
    section = card[card.index("## This folder"):card.index("## Contents")]
    assert "held back" in section and "full data set" in section, section
    for name, own in _folder_counts().items():
        table = re.search(rf"^\| {name} \| train \| val \| test \| total \|\n\|[-|]+\|\n((?:\|.*\|\n)+)", section, re.M)
        assert table, f"no {name} table in the card's section on this folder"
        quoted = {}
        for line in table.group(1).splitlines():
            group, *numbers = [cell.strip() for cell in line.strip("|").split("|")]
            quoted[group] = [int(n) for n in numbers]
        groups = sorted({g for g, _ in own})
        assert sorted(quoted) == sorted([*groups, "all"]), quoted
        for group, numbers in quoted.items():
            n = [sum(v for (g, s), v in own.items() if s == split and group in (g, "all"))
                 for split in ("train", "val", "test")]
            assert numbers == [*n, sum(n)], (name, group, numbers, n)
    staged = json.loads((STUDENT / "data" / "baselines.json").read_text())["classification"]
    assert staged == json.loads(json.dumps(baselines.classification_baselines(STUDENT / "data" / "classification")))
    assert sum(staged["n"].values()) == sum(_folder_counts()["classification"].values())
