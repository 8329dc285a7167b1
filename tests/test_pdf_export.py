"""The written questions the standard way: the PDF of the hand-graded questions (otter's filtered
export, the experiments' table and figures inside question 5, maths typeset offline by Debian's
MathJax, printed by Debian's chromium-headless-shell), the rubrics of solutions/written_answers.md,
and the messages when a PDF cannot be made.

The PDF test exports the student's round trip (tests/test_roundtrip.py: the release filled in with
the solutions and the written answers, run top to bottom, exported to a zip), made once per session.
It needs chromium-headless-shell, libjs-mathjax and poppler-utils (pdftotext, pdffonts, pdfimages),
which .ci/run installs; elsewhere, without them, it is skipped (never in CI).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

import build
import cgcnn_utils
from conftest import ROOT
from test_roundtrip import ANSWERS, NB, STUDENT, roundtrip

IN_CI = bool(os.environ.get("CI"))  # .ci/run sets it: there the Debian packages are installed, never skipped
VARIANTS = ["conv=gated", "conv=shared", "conv=none", "M=4", "M=8", "no batch norm", "ReLU", "max pooling"]
TABLE_HEADER = "validation MAE (eV/atom) over seeds"  # the first line the experiments' cell prints
POLYMORPH_LINE = "polymorph energy differences: MAE"  # what the polymorph figure's cell prints
CODING_PARTS = ["Part 1: Encoding a crystal as a graph", "def atom_features", "class GatedConv", "grader.check(",
                "Part 6 (optional", "Look at what the model learned"]


def missing_tools() -> list[str]:
    tools = {"chromium-headless-shell": build.DEBIAN_CHROMIUM.is_file(), "libjs-mathjax": build.DEBIAN_MATHJAX.is_file(),
             "poppler-utils": all(shutil.which(t) for t in ("pdftotext", "pdffonts", "pdfimages"))}
    return [package for package, present in tools.items() if not present]


def poppler(tool: str, pdf: Path, *args: str) -> str:
    return subprocess.run([tool, *args, str(pdf), *(["-"] if tool == "pdftotext" else [])], capture_output=True,
                          text=True, check=True).stdout


def words(text: str) -> str:
    """Text with every run of whitespace one space: a PDF breaks lines where the page does."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, request):
    """The round trip's zip through `python build.py pdf`: {pdf, pages (text of each), fonts, images, seconds}."""
    missing = missing_tools()
    if missing and not IN_CI:
        pytest.skip(f"Debian's {', '.join(missing)} not installed here (.ci/run installs them; in CI this runs)")
    trip = roundtrip(tmp_path_factory, request)
    assert trip["zip"], "the round trip's export cell wrote no zip"
    out = tmp_path_factory.mktemp("pdfs")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "build.py", "pdf", str(trip["zip"]), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pdfs = sorted(out.glob("*.pdf"))
    assert [p.name for p in pdfs] == [f"{trip['zip'].stem}.pdf"], pdfs
    pdf = pdfs[0]
    print(f"\nPDF of the written questions: {seconds:.1f} s, {pdf.stat().st_size / 1e3:.0f} kB")
    return {"pdf": pdf, "pages": poppler("pdftotext", pdf, "-layout").split("\f"), "seconds": seconds,
            "fonts": poppler("pdffonts", pdf), "images": poppler("pdfimages", pdf, "-list").splitlines()[2:]}


def page_of(pages: list[str], text: str) -> int:
    found = [n for n, page in enumerate(pages) if text in words(page)]
    assert found, f"{text!r} is on no page of the PDF"
    return found[0]


@pytest.mark.grading
def test_the_pdf_holds_both_questions_and_the_experiments_table(exported):
    pages = exported["pages"]
    text = words("\n".join(pages))
    for question, answer in ANSWERS.items():
        assert f"{question} (5 points)" in text, question
        assert answer in text, f"the student's answer to {question}"
    assert TABLE_HEADER in text, "the experiments' table"
    table = text[text.index(TABLE_HEADER):]
    for variant in VARIANTS:
        assert re.search(rf"{re.escape(variant)}: \d\.\d{{3}} \+- \d\.\d{{3}}", table), f"the table's row {variant}"
    assert POLYMORPH_LINE in text, "the polymorph energy differences' printout"
    assert len(exported["images"]) >= 2, "the loss curves and the polymorph figure are drawn"
    # Question 6 on pages of its own (Gradescope's page assignment), after question 5 and its table
    q5, q6 = page_of(pages, "Question 5 (5 points)"), page_of(pages, "Question 6 (5 points)")
    assert page_of(pages, TABLE_HEADER) <= page_of(pages, ANSWERS["Question 5"]) < q6 and q5 < q6
    assert ANSWERS["Question 5"] not in words(pages[q6])


@pytest.mark.grading
def test_the_maths_is_typeset_offline(exported):
    """Question 6's prompt holds maths (SrTiO$_3$, $M = 12$): typeset by Debian's MathJax, not raw TeX."""
    text = "\n".join(exported["pages"])
    assert "$" not in text and "\\" not in text, "raw TeX in the PDF: MathJax did not typeset it"
    assert "SrTiO3" in text, "SrTiO$_3$ typeset: its subscript next to the formula"
    # MathJax draws with its web fonts, which chromium embeds as Type 3 fonts; the text is in TrueType
    assert "Type 3" in exported["fonts"], f"no MathJax glyphs in the PDF's fonts:\n{exported['fonts']}"


@pytest.mark.grading
def test_filtering_leaves_out_the_coding_parts(exported):
    text = words("\n".join(exported["pages"]))
    for part in CODING_PARTS:
        assert part not in text, f"{part!r} is in the PDF: it should hold the written questions only"
    assert len(exported["pages"]) <= 8, f"{len(exported['pages'])} pages: more than the two questions"


# Without the round trip: the rubrics, the master's layout, the messages ---------------------------

def master():
    return nbformat.read(build.MASTER, as_version=4)


def manual_points(nb) -> dict[str, float]:
    return {c["name"]: float(c["points"]) for c in build.question_configs(nb) if c.get("manual") == "true"}


def test_written_answers_give_a_rubric_per_question_worth_its_points():
    nb = master()
    answers = build.written_answers(nb)
    points = manual_points(nb)
    assert sorted(points) == ["q5", "q6"]
    sections = re.split(r"\n(?=\*\*Question \d)", answers)[1:]
    assert len(sections) == len(points), "one section per hand-graded question"
    for (name, total), section in zip(points.items(), sections):
        assert section.count("*Model answer.*") == 1 and section.count("*Rubric") == 1, name
        elements = [float(p) for p in build.RUBRIC_LINE.findall(section)]
        assert len(elements) >= 3, f"{name}'s rubric names its elements"
        assert sum(elements) == pytest.approx(total, abs=1e-9), f"{name}: {elements} against {total} points"


def _with_rubric(nb, name: str, change):
    """A copy of the master with `change(cells, index of name's rubric)` applied."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    places = build._layout(nb)
    at = next(i for i, c in enumerate(nb.cells) if places[i][0] == name and c.source.startswith("*Rubric"))
    change(nb.cells, at)
    return nb


@pytest.mark.parametrize("name,change,message", [
    ("q5", lambda cells, at: setattr(cells[at], "source", cells[at].source.replace("**1 point.**", "**2 points.**", 1)),
     r"q5's rubric gives 2 \+ 1 \+ 1 \+ 1 \+ 1 = 6 points, its `# BEGIN QUESTION` config 5"),
    ("q6", lambda cells, at: cells.insert(at + 1, cells.pop(at)),  # past `# END SOLUTION`: students would see it
     r"q6's rubric .* is outside its solution block, so it would reach students"),
    ("q6", lambda cells, at: cells.pop(at), r"q6 is graded by hand and needs one rubric .* found 0"),
])
def test_a_rubric_that_disagrees_with_its_question_is_refused(name, change, message):
    with pytest.raises(build.BuildError, match=message):
        build.check_rubrics(_with_rubric(master(), name, change))
    build.check_rubrics(master())


def test_question_5_holds_its_experiments_table_and_figures_in_the_master():
    """otter's filtered PDF keeps the cells of a question's block: the experiments' cell (table, loss
    figure) and the polymorph figure's cell must be inside q5's, with the prompt its last markdown
    cell (otter adds the points there)."""
    nb = master()
    places = build._layout(nb)
    block = [i for i, (question, _) in enumerate(places) if question == "q5"]
    starts = {c.source.split("\n", 1)[0]: i for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    experiments = starts['variants = {"conv=gated": {}, "conv=shared": {"conv": "shared"}, "conv=none": {"conv": "none"},']
    polymorphs = next(i for i, c in enumerate(nb.cells) if "cgcnn_utils.plot_polymorph_differences(" in c.source)
    assert experiments in block and polymorphs in block
    prompts = [i for i in block if nb.cells[i].cell_type == "markdown" and places[i][1] is None]
    assert nb.cells[prompts[-1]].source.startswith("**Question 5"), "the prompt is q5's last markdown cell"
    assert "otter_ignore" in nb.cells[polymorphs].metadata.get("tags", []), "Part 5 is not run by the autograder"


def _saved_with_outputs(tmp_path) -> Path:
    """The student release's notebook, saved with one output (so the PDF cell goes on to print)."""
    nb = nbformat.read(STUDENT, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    path = tmp_path / NB
    nbformat.write(nb, path)
    return path


def test_the_page_keeps_the_answers_text_and_drops_what_could_reach_local_files(tmp_path):
    """The page printed: the questions' cells only, paragraphs and headings kept; a submission's frames,
    scripts and file: URLs (which would print the instructor's files into the PDF) removed."""
    nb = nbformat.read(STUDENT, as_version=4)
    answer = next(c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", []))
    answer.source = ("### My answer\n\nThe gated one wins.\n\n<iframe src=\"file:///etc/passwd\"></iframe>"
                     "<script>alert('answer')</script><img src=\"file:///etc/hostname.png\"> <em>kept</em>")
    added = nbformat.v4.new_code_cell("show(table)")  # a cell the student added inside question 5
    added.outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": "<table><tr><td>conv=gated</td></tr></table><script>alert('output')</script>",
        "text/plain": "table"}), nbformat.v4.new_output("display_data", data={
        "application/javascript": "alert('javascript')", "text/plain": "script"})]
    nb.cells.insert(nb.cells.index(answer) + 1, added)
    nbformat.write(nb, tmp_path / NB)
    html = cgcnn_utils.questions_html(tmp_path / NB, cgcnn_utils.LOCAL_MATHJAX)
    # tags dropped (a script's text may stay, as text); the output's javascript dropped whole; the
    # image's local source replaced by a note; no inline script of the template's either
    for gone in ("<iframe", "file:///etc", "<script>alert", "alert('javascript')", "Part 1: Encoding",
                 "def atom_features", "text/x-mathjax-config", "cdnjs", "<img"):
        assert gone not in html, gone
    for kept in ("<h3", "<p>The gated one wins.</p>", "<em>kept</em>", "<td>conv=gated</td>", "<strong>Question 5",
                 "<strong>Question 6", "[image not printed: only images inside the notebook are]",
                 f'<script src="{cgcnn_utils.MATHJAX_CONFIG_URL}"></script>',
                 f'<script src="{cgcnn_utils.LOCAL_MATHJAX}MathJax.js?config=TeX-AMS_CHTML-full,Safe"></script>',
                 f'<meta content="{cgcnn_utils.page_policy(cgcnn_utils.LOCAL_MATHJAX)}" '
                 'http-equiv="Content-Security-Policy"/>'):
        assert kept in html, kept
    assert len(re.findall("<script", html)) == 2, "the page's only scripts: MathJax's configuration and MathJax"


def test_the_students_pdf_cell_says_what_to_do_without_a_browser(tmp_path, monkeypatch, capsys):
    """No browser (playwright's folder empty, no Chrome, Edge or Chromium): the cell prints how to get
    one or to print the notebook, raises nothing (Run All goes on to the zip's export) and writes no PDF."""
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "no-browsers"))
    monkeypatch.setattr(cgcnn_utils, "BROWSER_CHANNELS", ())  # in case this machine has Chrome or Edge
    monkeypatch.setattr(cgcnn_utils, "CHROMIUM_NAMES", ())
    path = _saved_with_outputs(tmp_path)
    assert cgcnn_utils.written_pdf(path) is None
    said = capsys.readouterr().out
    assert "No PDF: chromium could not start" in said and "Chrome, Chromium or Edge" in said, said
    assert "python -m playwright install chromium" in said, said
    assert "File > Print" in said
    assert not list(tmp_path.glob("*.pdf"))


def test_the_students_pdf_looks_for_installed_browsers_after_playwrights_own(tmp_path, monkeypatch):
    """Issue 26: a student with Chrome, Edge or a Chromium on PATH needs no 150-MB download."""
    for name in ("chromium", "chromium-browser"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cgcnn_utils.browsers() == [{}, {"channel": "chrome"}, {"channel": "msedge"},
                                      {"executable_path": str(tmp_path / "chromium")},
                                      {"executable_path": str(tmp_path / "chromium-browser")}]


def _closure(requirements: Path) -> set[str]:
    """The distributions `pip install -r requirements` installs on this platform: its pins (and the
    files it includes with -r), their requirements and extras, and so on."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    todo = [(Requirement(line), "") for line in lines if line and not line.startswith("-")]
    for line in lines:
        if line.startswith("-r "):
            todo += [(Requirement(name), "") for name in _closure(requirements.parent / line[3:].strip())]
    found: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        for wanted in ["", *req.extras]:
            key = (canonicalize_name(req.name), wanted)
            if key not in found:
                found.add(key)
                todo += [(Requirement(r), wanted) for r in importlib.metadata.requires(req.name) or []]
    return {name for name, _ in found}


def test_the_students_pdf_prints_offline_with_only_the_students_requirements(tmp_path):
    """Issue 26: the written questions' PDF, as a student makes it (`python cgcnn_utils.py NOTEBOOK`, what
    the Submit section's cell runs), in a network namespace of its own (no network at all: every request
    to any host fails), with every installed package that student/requirements.txt does not install
    hidden (a module of that name that raises ImportError, first on the path), playwright's own browser
    folder empty and a system Chromium on PATH: the maths typeset by jupyter-server-mathjax's MathJax."""
    from packaging.utils import canonicalize_name
    chromium = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    missing = ([] if chromium else ["chromium-headless-shell"]) + (
        [] if shutil.which("pdffonts") else ["poppler-utils"])
    no_netns = subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0
    if (missing or no_netns) and not IN_CI:
        pytest.skip(f"needs {', '.join(missing) or 'a network namespace (root)'} (.ci/run has them; in CI this runs)")
    wanted = _closure(STUDENT.parent / "requirements.txt")
    assert {"playwright", "jupyter-server-mathjax", "otter-grader"} <= wanted
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for module, dists in importlib.metadata.packages_distributions().items():
        if module.isidentifier() and not {canonicalize_name(d) for d in dists} & (wanted | {"pip", "setuptools"}):
            (hidden / f"{module}.py").write_text(f"raise ImportError('{module}: not in student/requirements.txt')\n")
    folder = tmp_path / "student"
    folder.mkdir()
    shutil.copy(STUDENT.parent / "cgcnn_utils.py", folder)
    nb = nbformat.read(_saved_with_outputs(tmp_path), as_version=4)
    answer = next(c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", []))
    answer.source = "The gated convolution wins: $\\sigma(z W_f) \\odot g(z W_s)$ keeps what matters."
    nbformat.write(nb, folder / NB)
    env = {"PATH": f"{Path(chromium or '/usr/bin/chromium').parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(hidden), "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "no-browsers"), "LANG": "C.UTF-8"}
    done = subprocess.run(["unshare", "--net", "--", sys.executable, "cgcnn_utils.py", NB], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pdf = folder / NB.replace(".ipynb", "_written.pdf")
    assert f"wrote {pdf.name}" in done.stdout, done.stdout
    text = words(poppler("pdftotext", pdf))
    assert "The gated convolution wins:" in text and "keeps what matters" in text, text[:2000]
    assert "Question 5" in text and "Question 6" in text
    assert "\\sigma" not in text and "$" not in text, "the maths printed as raw TeX"
    assert "Type 3" in poppler("pdffonts", pdf), "no MathJax glyphs (drawn with its web fonts, embedded as Type 3)"


def test_the_students_pdf_cell_wants_the_notebook_saved_first(tmp_path, capsys):
    shutil.copy(STUDENT, tmp_path / NB)  # as released: no outputs
    assert cgcnn_utils.written_pdf(tmp_path / NB) is None
    assert "has no outputs: save it" in capsys.readouterr().out
    assert cgcnn_utils.written_pdf(tmp_path / "elsewhere.ipynb") is None  # Colab: not beside the cell
    assert "not found" in capsys.readouterr().out


def test_build_pdf_names_the_missing_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "DEBIAN_CHROMIUM", tmp_path / "no-chromium")
    assert build.main(["pdf", str(_saved_with_outputs(tmp_path)), "-o", str(tmp_path / "out")]) == 1
    said = capsys.readouterr().err
    assert "chromium-headless-shell" in said and "apt-get install chromium-headless-shell libjs-mathjax" in said
    assert not (tmp_path / "out").exists()


def test_submission_notebook_reads_each_kind_of_upload(tmp_path):
    data = STUDENT.read_bytes()
    (tmp_path / "zipped").mkdir()
    with zipfile.ZipFile(tmp_path / "zipped" / "cgcnn_perovskites_2026.zip", "w") as z:
        z.writestr(NB, data)
        z.writestr(".OTTER_LOG", b"log")
    (tmp_path / "folder" / "submission_1").mkdir(parents=True)
    (tmp_path / "folder" / "submission_1" / NB).write_bytes(data)
    for upload in (STUDENT, tmp_path / "zipped" / "cgcnn_perovskites_2026.zip", tmp_path / "zipped",
                   tmp_path / "folder" / "submission_1"):
        assert build.submission_notebook(upload) == data, upload
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.ipynb", data)
        z.writestr("b.ipynb", data)
    with pytest.raises(build.BuildError, match="holds 2 notebooks"):
        build.submission_notebook(tmp_path / "two.zip")
