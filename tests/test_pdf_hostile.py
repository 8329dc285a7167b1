"""A hostile submission through the written questions' PDF (issue 24, item 6).

`python build.py pdf` prints every student's notebook as root. A notebook is untrusted data: its
outputs' metadata, Markdown and HTML reach the page that chromium prints. The notebook here carries
the attacks that printed the instructor's files into a student's PDF, beside honest content that
must still print:

(a) an image output whose `width` metadata closes the attribute and adds `onerror=eval(...)`: a
    script that frames, fetches and embeds secret files (by absolute path and through
    /proc/self/cwd, the exporter's working directory), and that writes a marker if it ran;
(b) a Markdown image `![](/abs/secret.png)`, an HTML output's `<img src="file:///...">` and
    `<iframe>`, and an image output whose `filenames` metadata names the secret PNG;
(c) a 20 MB output, which stalled the batch.

The secrets are planted outside the submission: a text file with a unique marker and a PNG of a
distinctive size. The PDF must hold neither (pdftotext; pdfimages' sizes), must hold the honest
answers, table, image and typeset maths, and must be made within a bound. The same notebook goes
through the students' path too (questions_pdf with playwright's defaults, no bubblewrap), where the
page's own layers (its origin, the Content-Security-Policy, the refused requests, the cleaned
notebook) are what protects.

Needs chromium-headless-shell, libjs-mathjax, poppler-utils and bubblewrap (.ci/run installs them);
elsewhere it is skipped, never in CI.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

import build
import cgcnn_utils
from conftest import ROOT
from test_pdf_export import IN_CI, missing_tools, poppler, words
from test_roundtrip import ANSWERS, NB, STUDENT, fill_answers

HONEST_PNG = (300, 200)  # pixels of the honest figure (3 x 2 inches at 100 dpi)
SECRET_PNG = (613, 419)  # pixels of the planted secret image: no honest image has this size
HONEST_ROWS = ["conv=gated: 0.051 +- 0.004", "conv=none: 0.139 +- 0.006"]  # the printed table
HTML_CELL = "gated-in-an-html-table"  # a cell of the HTML table output
BIG_MB = 20
RAN = "HOSTILE-SCRIPT-RAN"  # what the onerror script writes into the page if it runs
# `build.py pdf`'s time limit in these tests: the hostile notebook takes 5 to 12 s on a busy 2-core
# machine (20 MB output included; 118 s and 830 pages before the caps), the stalling one over 100 s
SECONDS = 30


def png(size: tuple[int, int], colour: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    fig.gca().plot([0, 1, 2], [2, 0, 1], color=colour)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict:
    """Files of the instructor's, outside any submission: a text with a unique marker, a PNG."""
    folder = tmp_path_factory.mktemp("instructor")
    marker = f"SECRET-{uuid.uuid4().hex}"
    (folder / "secret.txt").write_text(f"{marker}\nhidden checks would be here\n")
    (folder / "secret.png").write_bytes(png(SECRET_PNG, "red"))
    # The exporter's working directory holds one too: the attack reads it through /proc/self/cwd
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "calibration.json").write_text(json.dumps({"secret": marker}))
    return {"folder": folder, "marker": marker, "cwd": cwd}


def hostile_notebook(path: Path, secrets: dict, big_mb: int = BIG_MB) -> Path:
    """The student release with both answers typed, and a cell inside question 5 whose outputs are
    honest (a printed table, an HTML table, a figure) and hostile (a, b, c of the module's doc)."""
    folder, marker = secrets["folder"], secrets["marker"]
    nb = nbformat.read(STUDENT, as_version=4)
    fill_answers(nb, ANSWERS)
    answer = next(c for c in nb.cells if ANSWERS["Question 5"] in c.source)
    answer.source += (f"\n\n![the secret]({folder}/secret.png) and ![through cwd](/proc/self/cwd/secret.png)\n\n"
                      f'<iframe src="file://{folder}/secret.txt"></iframe>')
    targets = [f"file://{folder}/secret.txt", "file:///proc/self/cwd/calibration.json"]
    script = "".join(
        f"var f=document.createElement('iframe');f.src='{t}';f.style='width:100%;height:200px';"
        "document.body.prepend(f);"
        f"fetch('{t}').then(r=>r.text()).then(t=>document.body.prepend(t)).catch(e=>0);" for t in targets)
    script += (f"var i=document.createElement('img');i.src='file://{folder}/secret.png';document.body.prepend(i);"
               f"document.body.prepend('{RAN}');")
    attack = base64.b64encode(script.encode()).decode()
    honest_png = base64.b64encode(png(HONEST_PNG, "blue")).decode()
    cell = nbformat.v4.new_code_cell("show_results()", execution_count=7)
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="validation MAE (eV/atom) over seeds\n"
                               + "".join(f"{row}\n" for row in HONEST_ROWS)),
        nbformat.v4.new_output("display_data", data={
            "text/html": f"<table><tr><th>variant</th></tr><tr><td>{HTML_CELL}</td></tr></table>"
                         f'<img src="file://{folder}/secret.png"><iframe src="file://{folder}/secret.txt"></iframe>',
            "text/plain": "table"}),
        nbformat.v4.new_output("display_data", data={"image/png": honest_png, "text/plain": "<Figure>"},
                               metadata={"image/png": {"width": 300, "height": 200}}),
        # (a) an undecodable image, so its onerror handler fires, with the script in its width
        nbformat.v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "<Figure>"},
                               metadata={"image/png": {"width": f"1 onerror=eval(atob('{attack}'))"}}),
        # (b) an image output that names a local file as its source
        nbformat.v4.new_output("display_data", data={"image/png": honest_png, "text/plain": "<Figure>"},
                               metadata={"filenames": {"image/png": f"{folder}/secret.png"}}),
        # (c) 20 MB of text
        nbformat.v4.new_output("stream", name="stdout", text="y" * (big_mb * 10**6)),
    ]
    nb.cells.insert(nb.cells.index(answer), cell)
    nbformat.write(nb, path, version=4)
    return path


def stalling_notebook(path: Path) -> Path:
    """The release with 40 outputs of TeX inside question 5, within every cap (4 MB), which MathJax
    takes minutes to typeset (over 100 s measured): only the time limit stops it."""
    nb = nbformat.read(STUDENT, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "**Question 5" in c.source)
    formula = r"$\frac{\sqrt{x_{1}^{2}+y}}{\sum_{k=1}^{n} k}$ "
    cell = nbformat.v4.new_code_cell("typeset()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/latex": formula * (cgcnn_utils.PDF_MAX_TEXT // len(formula)), "text/plain": "x"}) for _ in range(40)]
    nb.cells.insert(at, cell)
    nbformat.write(nb, path, version=4)
    return path


def missing() -> list[str]:
    return missing_tools() + ([] if shutil.which("bwrap") else ["bubblewrap"])


@pytest.fixture(scope="module")
def tools():
    if missing() and not IN_CI:
        pytest.skip(f"Debian's {', '.join(missing())} not installed here (.ci/run installs them; in CI this runs)")


def pdf_user() -> tuple[int | None, int | None]:
    """The PDF's user (created by build.pdf_browser on first use) when root; else (None, None): as is."""
    if os.geteuid() != 0:
        return None, None
    user = pwd.getpwnam(build.PDF_USER)
    return user.pw_uid, user.pw_gid


def userns_allowed() -> bool:
    """Whether the PDF's user may make the user namespaces that bubblewrap and chromium's sandbox need."""
    return subprocess.run([*build.as_pdf_user(*pdf_user()), "unshare", "--user", "--pid", "--net", "--fork", "true"],
                          capture_output=True).returncode == 0


def read_pdf(pdf: Path) -> dict:
    """{text (whitespace runs as one space), fonts, images: [(width, height)]} of `pdf`, by poppler."""
    images = [line.split() for line in poppler("pdfimages", pdf, "-list").splitlines()[2:]]
    return {"text": words(poppler("pdftotext", pdf)), "fonts": poppler("pdffonts", pdf), "bytes": pdf.read_bytes(),
            "images": [(int(i[3]), int(i[4])) for i in images if i[2] == "image"]}


def assert_no_secret(pdf: dict, secrets: dict) -> None:
    assert secrets["marker"] not in pdf["text"], "the secret text file (or calibration.json via the cwd) is printed"
    assert secrets["marker"].encode() not in pdf["bytes"], "the secret's marker is in the PDF's bytes"
    assert RAN not in pdf["text"], "the onerror script ran in the exporting browser"
    assert SECRET_PNG not in pdf["images"], f"the secret image is printed: {pdf['images']}"


def assert_honest(pdf: dict) -> None:
    text = pdf["text"]
    for answer in ANSWERS.values():
        assert answer in text, f"the student's answer {answer[:14]!r} is missing"
    for row in HONEST_ROWS:
        assert row in text, f"the printed table's row {row!r} is missing"
    assert HTML_CELL in text, "the HTML table is missing"
    assert HONEST_PNG in pdf["images"], f"the honest figure is missing: {pdf['images']}"
    assert "SrTiO3" in text and "$" not in text, "question 6's maths is not typeset"
    assert "Type 3" in pdf["fonts"], f"no MathJax glyphs in the fonts:\n{pdf['fonts']}"


@pytest.fixture(scope="module")
def staff_batch(tools, secrets, tmp_path_factory) -> dict:
    """`python build.py pdf` of a notebook that stalls the browser, then the hostile one: the real
    staff command, as root, run from a folder holding a secret (the reviewer's /proc/self/cwd)."""
    folder = tmp_path_factory.mktemp("submissions")
    uploads = [stalling_notebook(folder / "stalls.ipynb"), hostile_notebook(folder / "hostile.ipynb", secrets)]
    out = tmp_path_factory.mktemp("pdfs")
    done = subprocess.run([sys.executable, str(ROOT / "build.py"), "pdf", *map(str, uploads), "-o", str(out),
                           "--seconds", str(SECONDS)], cwd=secrets["cwd"], capture_output=True, text=True,
                          timeout=10 * SECONDS)
    print(done.stdout)
    return {"done": done, "out": out}


def test_build_pdf_prints_no_file_of_the_instructors(staff_batch, secrets):
    done, out = staff_batch["done"], staff_batch["out"]
    assert (out / "hostile.pdf").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    pdf = read_pdf(out / "hostile.pdf")
    assert_no_secret(pdf, secrets)
    assert_honest(pdf)
    # (b): the local images are named as left out; (c): the 20 MB output is cut, and the PDF says so
    assert "[image not printed: the secret: only images inside the notebook are]" in pdf["text"]
    assert f"{BIG_MB * 10**6 - cgcnn_utils.PDF_MAX_TEXT:,} more characters of this output cut here" in pdf["text"]
    assert len(poppler("pdftotext", out / "hostile.pdf").split("\f")) <= 40, "the 20 MB output printed in full"


def test_build_pdf_keeps_each_pdf_within_its_time_limit_and_goes_on(staff_batch):
    """The stalling notebook is abandoned at the limit and named with the reason; the hostile one
    after it is printed, 20 MB output and all, well within the limit."""
    done = staff_batch["done"]
    assert done.returncode == 1, "a PDF not made is an error of the batch"
    assert re.search(rf"1 PDFs not made:\n  stalls \(.*stalls.ipynb\): no PDF after {SECONDS} s \(the time limit",
                     done.stderr), done.stderr[-3000:]
    assert not (staff_batch["out"] / "stalls.pdf").exists()
    seconds = re.search(r"\[2/2\] hostile \.\.\. done \(([\d.]+) s\)", done.stdout)
    assert seconds and float(seconds[1]) < SECONDS, done.stdout
    if os.geteuid() == 0:
        left = build._processes_of(pdf_user()[0])
        assert not left, f"processes of {build.PDF_USER} outlived the batch: {left}"


def test_build_pdf_says_how_chromium_is_confined(staff_batch):
    """The batch's first line says which layers are on: all of them where the PDF's user may make user
    namespaces (bubblewrap's and chromium's sandbox need them; some containers and Ubuntu 24.04 refuse
    them), else which is off."""
    line = staff_batch["done"].stdout.splitlines()[0]
    who = f"as {build.PDF_USER}" if os.geteuid() == 0 else "as the user running this"
    if userns_allowed():
        assert line == (f"chromium runs {who} in bubblewrap (no network, no file of the course's), its own sandbox on; "
                        f"{SECONDS:g} s per PDF at most"), line
    else:
        assert line.startswith(f"chromium runs {who} WITHOUT bubblewrap (") and "its own sandbox off" in line, line


def test_the_box_holds_no_course_file_and_no_network(tools, secrets, tmp_path):
    """What a script that escaped the page would find: not the repository, not the secrets, no network
    but its own loopback, and the PDF's user, not root."""
    build.pdf_browser(build.DEBIAN_CHROMIUM, tmp_path)  # creates the user on first use
    if not userns_allowed():
        pytest.skip("user namespaces are refused here, so bubblewrap cannot run (the batch says so: the test above)")
    uid, gid = pdf_user()
    script = (f"id -u; ls {ROOT} {secrets['folder']} {secrets['cwd']} /root /home 2>&1; "
              "cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    done = subprocess.run(build.pdf_box(["sh", "-c", script], uid, gid), capture_output=True, text=True, timeout=60)
    lines = done.stdout.split("\n")
    assert lines[0] == str(os.geteuid() if uid is None else uid), done.stdout + done.stderr
    for path in (ROOT, secrets["folder"], secrets["cwd"], "/root", "/home"):
        assert f"ls: cannot access '{path}': No such file or directory" in done.stdout, (path, done.stdout)
    assert [line.strip() for line in lines[-2:] if line.strip()] == ["lo"], f"network interfaces: {done.stdout}"


def test_the_students_path_prints_no_local_file_either(tools, secrets, tmp_path):
    """written_pdf's path (questions_pdf): playwright starts the given chromium itself, no user of its
    own, no bubblewrap, as root here (so chromium's sandbox off): the page's layers alone hold."""
    notebook = hostile_notebook(tmp_path / NB, secrets)
    pdf = cgcnn_utils.questions_pdf(notebook, tmp_path / "written.pdf", build.DEBIAN_MATHJAX.parent,
                                    build.DEBIAN_CHROMIUM, timeout=SECONDS)
    read = read_pdf(pdf)
    assert_no_secret(read, secrets)
    assert_honest(read)


def test_the_page_policy_holds_when_the_notebook_is_not_cleaned(tools, secrets, tmp_path, monkeypatch):
    """Defence in depth: with the notebook's metadata and HTML passed through as nbconvert writes them
    (the cleaning of _printable and _clean_html undone), the onerror handler is still blocked (the
    Content-Security-Policy allows no inline script), and the frames and local images load nothing
    (an http: page cannot load file: URLs; every request but MathJax's is refused)."""
    monkeypatch.setattr(cgcnn_utils, "_printable", lambda nb: nb)
    monkeypatch.setattr(cgcnn_utils, "_clean_html", lambda html: str(html))
    notebook = hostile_notebook(tmp_path / NB, secrets, big_mb=0)
    html = cgcnn_utils.questions_html(notebook, cgcnn_utils.LOCAL_MATHJAX)
    assert 'onerror="eval(atob(' in html and "<iframe" in html, "the attacks reach the page uncleaned"
    pdf = cgcnn_utils.questions_pdf(notebook, tmp_path / "uncleaned.pdf", build.DEBIAN_MATHJAX.parent,
                                    build.DEBIAN_CHROMIUM, timeout=SECONDS)
    read = read_pdf(pdf)
    assert_no_secret(read, secrets)
    assert "SrTiO3" in read["text"] and "Type 3" in read["fonts"], "MathJax runs under the policy"


def test_the_page_keeps_numbers_only_of_an_outputs_metadata_and_caps_it(tools, secrets, tmp_path):
    """What nbconvert writes into the page: an image's width as a number, no `filenames` source, the
    20 MB output cut with its note, an image over the cap and the outputs past the total left out."""
    import nbformat
    notebook = hostile_notebook(tmp_path / NB, secrets)
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source == "show_results()")
    cell.outputs += [nbformat.v4.new_output("display_data", data={"image/png": "A" * (2 * cgcnn_utils.PDF_MAX_IMAGE)})]
    cell.outputs += [nbformat.v4.new_output("stream", name="stdout", text="z" * cgcnn_utils.PDF_MAX_TEXT)] * 50
    nbformat.write(nb, notebook)
    html = cgcnn_utils.questions_html(notebook, cgcnn_utils.LOCAL_MATHJAX)
    assert "onerror" not in html and str(secrets["folder"]) not in html
    images = re.findall(r"<img [^>]*>", html)
    attributes = {name for image in images for name in re.findall(r'\s([\w-]+)=', image)}
    assert attributes <= {"alt", "src", "width", "height"}, f"attributes of the images: {attributes}"
    assert all(re.search(r'\ssrc="data:image/png;base64,', image) for image in images), images
    assert any('width="300"' in image and 'height="200"' in image for image in images), \
        "the honest figure keeps its numeric size"
    assert "y" * cgcnn_utils.PDF_MAX_TEXT in html and "y" * (cgcnn_utils.PDF_MAX_TEXT + 1) not in html
    assert "an image of 7.2 MB left out of the PDF: it prints images up to 3.6 MB" in html
    assert re.search(r"\[\d+ more output\(s\) of this cell left out of the PDF: it prints 4,000,000 characters", html)
    assert len(html) < 2 * cgcnn_utils.PDF_MAX_TOTAL, f"{len(html):,} characters of page"


def test_without_bubblewrap_chromium_still_runs_as_its_user_and_the_page_holds(tools, secrets, tmp_path,
                                                                                monkeypatch):
    """Where bubblewrap is missing (or user namespaces are refused), the batch says so and prints with
    chromium as the PDF's user straight (its profile folder handed over), the page's layers intact."""
    which = shutil.which
    monkeypatch.setattr(build.shutil, "which", lambda name: None if name == "bwrap" else which(name))
    browser = build.pdf_browser(build.DEBIAN_CHROMIUM, tmp_path)
    assert "WITHOUT bubblewrap (bubblewrap is not installed: apt-get install bubblewrap)" in browser.mode, browser.mode
    notebook = hostile_notebook(tmp_path / NB, secrets, big_mb=0)
    with build._pdf_lock() if browser.uid is not None else contextlib.nullcontext():  # as a batch does
        pdf = cgcnn_utils.questions_pdf(notebook, tmp_path / "fallback.pdf", build.DEBIAN_MATHJAX.parent,
                                        browser.launcher, browser.sandbox, timeout=SECONDS)
        if browser.uid is not None:
            build._end_processes(browser.uid)
    read = read_pdf(pdf)
    assert_no_secret(read, secrets)
    assert_honest(read)
