"""The repository's structure, drawn from its imports: the module map in docs/development.md is what
the code imports, nothing edits `sys.path`, and the benchmarks never import the tests."""

import ast
import re
import subprocess

import nbformat

from conftest import ROOT

PACKAGES = {"cgcnn_grading", "benchmarks"}  # `from . import x` names the package and x: keep x
MAP = re.compile(r"<!-- module map -->\n```text\n(.*?)```", re.S)


def tracked(pattern: str) -> list:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.split()]


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[1:] if parts[0] == "assignment" else parts  # assignment/ is the installed root
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, name: str) -> set[str]:
    """The dotted names `path` (module `name`) imports, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return found


def product_graph() -> dict[str, list[str]]:
    """{module: the repository modules it imports} for build.py and everything under assignment/."""
    paths = [p for p in tracked("*.py") if module_name(p).split(".")[0] not in ("tests", "student", "benchmarks")]
    names = {module_name(p): p for p in paths}
    return {name: sorted(d for d in imports(path, name) if d in names and d != name and d not in PACKAGES)
            for name, path in sorted(names.items())}


def test_the_code_map_draws_the_modules_as_they_import_each_other():
    drawn = MAP.search((ROOT / "docs" / "development.md").read_text())
    assert drawn, "docs/development.md needs its module map (<!-- module map --> and a text block)"
    width = max(map(len, product_graph()))
    expected = "".join(f"{name:<{width}} -> {', '.join(deps) or '(nothing of the repository)'}\n"
                       for name, deps in product_graph().items())
    assert drawn.group(1) == expected, f"the module map is out of date; the imports give:\n{expected}"


def test_nothing_edits_sys_path():
    sources = [(p, p.read_text()) for p in tracked("*.py")]
    sources += [(p, c.source) for p in tracked("*.ipynb") for c in nbformat.read(p, as_version=4).cells
                if c.cell_type == "code"]
    edits = [str(p.relative_to(ROOT)) for p, text in sources if re.search(r"sys\.path\.(insert|append)|sys\.path\s*=", text)]
    assert not edits, f"these edit sys.path instead of importing the installed modules: {edits}"


def test_benchmarks_never_import_the_tests():
    test_modules = {p.stem for p in tracked("tests/*.py")} | {"tests"}
    for path in tracked("benchmarks/*.py"):
        used = {name.split(".")[0] for name in imports(path, module_name(path))}
        assert not used & test_modules, f"{path.name} imports {used & test_modules}"
