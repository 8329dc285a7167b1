"""The front door and its guides: README.md stays short, every link between them leads somewhere, and
every command they name exists: each `python build.py COMMAND --option` is a command of build.py that
takes that option (its own --help, which has no side effects), and each module, script or test file
a command runs is in the repository."""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest

import build
from conftest import ROOT

README_LINES = 150  # issue 28: a front door, the rest in docs/
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "assignment" / "student_README.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")
CODE = re.compile(r"`([^`\n]+)`|```\w*\n(.*?)```", re.S)
COMMANDS = ("build", "install", "calibrate", "answers", "grade", "pdf", "data")


def commands(text: str) -> list[list[str]]:
    """Every shell command in `text`'s code (inline or fenced) that runs build.py, a module or a script
    of the repository: its words, each `&&`-joined command apart."""
    found = []
    for inline, block in CODE.findall(text):
        for line in (inline or block).splitlines():
            for part in re.split(r"&&|;", line.split(" # ")[0]):
                try:
                    words = shlex.split(part.replace("\\", " "))
                except ValueError:  # an apostrophe in prose
                    continue
                words = [w.strip("[]") for w in (words[1:] if words[:1] == ["sudo"] else words)]  # [--opt]: usage
                if words[:1] in (["python"], ["python3"]) and len(words) > 1:
                    found.append(words[1:])
    return found


def build_help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
        build.main([command, "--help"] if command != "build" else ["--help"])
    return out.getvalue()


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < README_LINES, f"README.md has {len(lines)} lines: move the detail to a guide in docs/"
    assert lines[2] == "```bash" and "python build.py install" in lines[3] and "pytest" in lines[4], lines[:6]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_leads_to_a_file(doc):
    prose = CODE.sub("", doc.read_text())  # a link shown as code is an example, not a link
    missing = [target for target, _ in LINK.findall(prose)
               if not target.startswith(("http://", "https://", "mailto:")) and not (doc.parent / target).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_the_commands_are_found_in_the_guides():
    """The parser itself: a command with an option, a module, a script, and prose left alone."""
    text = ("Run `sudo python build.py grade export.zip -o scores.csv -j 2` and\n```bash\npython -m pytest -q "
            "tests/test_docs.py && python benchmarks/training_step.py  # note\n```\nit's `python`'s way")
    assert commands(text) == [["build.py", "grade", "export.zip", "-o", "scores.csv", "-j", "2"],
                              ["-m", "pytest", "-q", "tests/test_docs.py"], ["benchmarks/training_step.py"]]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_a_guide_names_exists(doc):
    helps: dict[str, str] = {}
    wrong = []
    for words in commands(doc.read_text()):
        if words[0] == "build.py":
            command = words[1] if len(words) > 1 and not words[1].startswith("-") else "build"
            if command not in COMMANDS:
                wrong.append(f"python build.py {command}: no such command")
                continue
            text = helps.setdefault(command, build_help(command))
            options = [w.split("=")[0] for w in words[2 if command != "build" or words[1:2] == ["build"] else 1:]
                       if w.startswith("-")]
            pip_options = command == "install"  # `install` hands its other options to pip
            wrong += [f"python build.py {command} {o}: no such option" for o in options
                      if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text) and not (pip_options and o != "--data")]
        elif words[0] == "-m":
            module = words[1]
            if module in ("pytest", "pip", "venv", "playwright", "otter", "jupyter"):
                paths = [w for w in words[2:] if w.startswith("tests")]
                wrong += [f"{p}: not in the repository" for p in paths if not (ROOT / p.split("::")[0]).exists()]
            elif not any((ROOT / f"{module.replace('.', '/')}{suffix}").exists() or
                         (ROOT / "assignment" / f"{module.replace('.', '/')}{suffix}").exists()
                         for suffix in (".py", "/__init__.py")):
                wrong.append(f"python -m {module}: no such module in the repository")
        elif words[0].endswith(".py") and "/" in words[0]:
            if not (ROOT / words[0]).exists() and not (ROOT / "assignment" / words[0]).exists():
                wrong.append(f"python {words[0]}: no such script")
    assert not wrong, f"{doc.relative_to(ROOT)} names commands that do not exist: {wrong}"
