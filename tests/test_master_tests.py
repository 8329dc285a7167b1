"""The master notebook's tests as the grader runs them (assignment/cgcnn_grading/master_tests.py), in
process, in seconds: the autograder is assembled once (`build.assemble`: otter assign writes every
test, public and hidden, into its tests/, and the build its master_solution.py and heldout.json); the
tests run here, as in grading, against stand-ins (cgcnn_grading.remote) whose requests a namespace
of notebook definitions answers through the kernel half (cgcnn_kernel.answer), passed through JSON as
on the wire. The namespaces are the solution module's text, with text replacements for the wrong
and alternative solutions, and the released student notebook's stubs."""

import ast
import atexit
import dataclasses
import functools
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import build
import cgcnn_kernel
import cgcnn_utils
from cgcnn_grading import grade, heldout as heldout_set, master_tests, remote, scoring, wire
from cgcnn_grading.settings import MAE_QUESTION, Settings

PARTS = ("q1a", "q1b", "q1c", "q2a", "q2b", "q3", "q4a")  # the parts of definitions; 4b trains
GRADER_FAILED = master_tests.GRADER_FAILED  # what a student reads of a test that crashed in the grader
TERM = "2026-fall"  # a course term's name besides the default ("")


# The autograder, assembled once per test process (test_wire.py uses it too) ------------------------

@dataclasses.dataclass(frozen=True)
class Autograder:
    source: Path  # the autograder zip, unpacked: Gradescope's /autograder/source
    student: Path  # otter's student notebook, as released
    settings: Settings
    parts: dict  # question -> master_tests.Part
    solution: object  # master_solution.py, imported as the grader imports it
    solution_text: str
    heldout: heldout_set.Heldout


@functools.cache
def autograder() -> Autograder:
    """`build.assemble` with the calibrated thresholds (calibration.json's, unchecked), the zip unpacked."""
    tmp = Path(tempfile.mkdtemp(prefix="cgcnn-master-tests-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    thresholds = json.loads(build.CALIBRATION.read_text())["thresholds"]
    zip_path, dist = build.assemble(tmp / "assemble", thresholds)
    source = tmp / "source"
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(source)
    embedding = json.loads((source / "files" / "data" / "atom_init.json").read_text())
    solution = master_tests.load_solution(source, {int(z): np.asarray(v, dtype=np.float32) for z, v in embedding.items()})
    settings = Settings.load(source)
    return Autograder(source, dist / "student" / build.NB_NAME, settings, master_tests.load(source / master_tests.TESTS_DIR),
                      solution, (source / master_tests.SOLUTION_MODULE).read_text(),
                      heldout_set.load(source / build.HELDOUT, solution, settings.graph))


@pytest.fixture(scope="module")
def grader() -> Autograder:
    return autograder()


# Notebooks: namespaces of definitions, as the kernel holds them ---------------------------------------

def notebook(replace=(), trained: bool = False, text: str | None = None) -> dict:
    """The solution module's definitions as a notebook's namespace, after the text replacements
    `replace`; `trained`: with what 4b reads (`data`, `val_batches` as the notebook builds them, an
    untrained `model` of the namespace's own CGCNN, a `normalizer`)."""
    source = autograder().solution_text if text is None else text
    for old, new in replace:
        assert source.count(old) == 1, f"variant text not found (once) in the solution: {old!r}"
        source = source.replace(old, new)
    namespace = {"__name__": "notebook"}
    exec(compile(source, "notebook", "exec"), namespace)
    namespace.update(embedding=cgcnn_utils.load_embedding(), cgcnn_utils=cgcnn_utils)
    if trained:
        data = cgcnn_utils.load_dataset()
        graphs = cgcnn_utils.build_graphs(data, data.ids("val"), namespace["embedding"], namespace["atom_features"],
                                          namespace["neighbor_list"], progress=False)
        val_batches = cgcnn_utils.make_batches(graphs, data.targets, data.ids("val"), namespace["gaussian_expand"], 256)
        torch.manual_seed(0)
        namespace.update(data=data, val_batches=val_batches,
                         model=namespace["CGCNN"](nbr_fea_len=val_batches[0].nbr_fea.shape[-1]),
                         normalizer=cgcnn_utils.Normalizer([-2.0, -3.0]))
    return namespace


def definition_names(text: str) -> list[str]:
    return [n.name for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def stubs() -> dict:
    """The released student notebook's definitions of the solution's names (each raises
    NotImplementedError where the student writes code), with what its first cells define: the
    notebook as graded before any part is written (its training cell leaves `model` None)."""
    names = set(definition_names(autograder().solution_text))
    student = nbformat.read(autograder().student, as_version=4)
    found = {}
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython syntax: no definition of ours
            continue
        found.update({n.name: ast.get_source_segment(cell.source, n) for n in tree.body
                      if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names})
    assert set(found) == names, f"the student notebook does not define {sorted(names - set(found))}"
    namespace = {"__name__": "notebook"}
    exec("import numpy as np\nimport torch\nfrom torch import nn\n\n" + "\n\n".join(found.values()), namespace)
    namespace.update(embedding=cgcnn_utils.load_embedding(), cgcnn_utils=cgcnn_utils,
                     data=cgcnn_utils.load_dataset(), model=None)
    return namespace


# Grading in process ----------------------------------------------------------------------------------

def asker(namespace: dict, log: list | None = None):
    """ask(request) -> the kernel's raw answer, both through JSON as on the wire; `log` keeps
    (request, answer) pairs."""
    def ask(request: dict) -> dict:
        request = json.loads(json.dumps(request))
        answer = json.loads(json.dumps(cgcnn_kernel.answer(namespace, request)))
        if log is not None:
            log.append((request, answer))
        return answer
    return ask


def run(namespace: dict, questions=None, term: str = "", log: list | None = None) -> dict:
    """{question: PartAnswers}: each part's probe as grading runs it (grade.probes: the part's tests,
    then 4b's `trained` request, then `release`), the requests answered by `namespace`."""
    g = autograder()
    answers = {}
    for probe in grade.probes(g.settings, g.parts, g.solution, master_tests.seeded_factory(term)):
        if questions is None or probe.name in questions:
            answers[probe.name] = probe.run(asker(namespace, log), math.inf)
    return answers


def failures(answers: dict) -> dict:
    """{(question, test name): message, or None if it passed}."""
    return {(q, v.test.name): v.message for q, part in answers.items() for v in part.verdicts}


def failed(answers: dict) -> dict:
    return {k: m for k, m in failures(answers).items() if m is not None}


def staff(answers: dict) -> list:
    return [v.staff for part in answers.values() for v in part.verdicts if v.staff]


# The tests of the master, as the grader loads them ---------------------------------------------------

def master_test_cells() -> list[tuple]:
    """(question, test name, hidden, points) of the master notebook's test cells, in order."""
    out, question = [], None
    for cell in nbformat.read(build.MASTER, as_version=4).cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            question = re.search(r"name: (\w+)", cell.source).group(1)
        elif cell.cell_type == "code" and cell.source.startswith('""" # BEGIN TEST CONFIG'):
            config = dict(re.findall(r"^(points|hidden): *(\S+)", cell.source, re.M))
            out.append((question, re.search(r"^def (test_\w+)", cell.source, re.M).group(1), config["hidden"] == "true",
                        float(config["points"])))
    return out


def test_the_grader_loads_every_test_of_the_master_notebook_in_its_order(grader):
    loaded = [(t.question, t.name, t.hidden, t.points) for part in grader.parts.values() for t in part.tests]
    assert loaded == master_test_cells()
    assert {q for q, *_ in loaded} == set(PARTS) | {MAE_QUESTION}
    assert sum(t[2] for t in loaded) >= len(PARTS), "every part of definitions has a hidden test"
    assert all(part.all_or_nothing for q, part in grader.parts.items() if q != MAE_QUESTION)
    for test in (t for part in grader.parts.values() for t in part.tests if t.hidden):
        assert test.summary and test.summary != test.name.removeprefix("test_").replace("_", " "), \
            f"{test.name}: a hidden test needs a docstring, what a student reads when it fails"
        assert "def " not in test.summary and "solution." not in test.summary, test.summary


# Test files otter's format allows that the master's do not use (points listed per test, shared out by the
# file's total, not stated at all): the grader must resolve them as otter does.
OTTER_VARIANTS = {
    "listed": 'name = "qx"\npoints = [1, 2]\n\n@test_case()\ndef test_a():\n    pass\n\n'
              '@test_case(hidden=True)\ndef test_b():\n    pass\n',
    "shared": 'name = "qy"\npoints = 3\nall_or_nothing = True\n\n@test_case(points=1)\ndef test_a():\n    pass\n\n'
              '@test_case()\ndef test_b():\n    pass\n\n@test_case(failure_message="say this")\ndef test_c():\n    pass\n',
    "unstated": 'name = "qz"\n\n@test_case()\ndef test_a():\n    pass\n\n@test_case(points=0)\ndef test_b():\n    pass\n',
}


def _as_otter_reads(path: Path) -> tuple:
    from otter.test_files import ExceptionTestFile
    read = ExceptionTestFile.from_file(str(path))
    return read.name, bool(read.all_or_nothing), [(c.body.test_func.__name__, bool(c.hidden), float(c.points),
                                                  c.failure_message) for c in read.test_cases]


def _as_the_grader_reads(path: Path) -> tuple:
    name, all_or_nothing, cases = master_tests.read_test_file(path)
    return name, all_or_nothing, [(c.test_func.__name__, bool(c.hidden), p, c.failure_message) for c, p in cases]


def test_the_grader_reads_every_test_file_as_otter_does(grader, tmp_path):
    files = sorted((grader.source / master_tests.TESTS_DIR).glob("*.py"))
    for name, text in OTTER_VARIANTS.items():
        files.append(tmp_path / f"{name}.py")
        files[-1].write_text(f"from otter.test_files import test_case\n\nOK_FORMAT = False\n\n{text}")
    assert len(files) == len(PARTS) + 1 + len(OTTER_VARIANTS)
    for path in files:
        assert _as_the_grader_reads(path) == _as_otter_reads(path), path.name


def test_a_test_file_importing_more_of_otter_is_refused_saying_what_to_write(tmp_path):
    path = tmp_path / "q1a.py"
    path.write_text("from otter.test_files import test_case, TestFile\n\nname = 'q1a'\n")
    with pytest.raises(master_tests.TestFileError, match=r"with `@test_case\(...\)` alone"):
        master_tests.read_test_file(path)


def test_the_grading_process_reads_the_tests_without_importing_otter(grader):
    """otter's package would bring 64 MB into the grading process, which shares Gradescope's 768 MB with
    the kernel (its exporters and nbconvert), and a second of CPU to every grading."""
    code = ("import sys; from pathlib import Path; from cgcnn_grading import grade, master_tests; "
            "master_tests.load(Path(sys.argv[1])); print(sorted(m for m in sys.modules if m.split('.')[0] == 'otter'))")
    done = subprocess.run([sys.executable, "-c", code, str(grader.source / master_tests.TESTS_DIR)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_the_students_tests_folder_holds_the_public_tests_alone(grader):
    released = master_tests.load(grader.student.parent / master_tests.TESTS_DIR)
    assert [(t.question, t.name) for part in released.values() for t in part.tests] == \
        [(q, name) for q, name, hidden, _ in master_test_cells() if not hidden]
    assert not any(p in master_tests.RESERVED for part in released.values() for t in part.tests for p in t.parameters)


# The solution and the stubs --------------------------------------------------------------------------

def test_every_test_passes_on_the_solution_through_stand_ins():
    answers = run(notebook(trained=True))
    assert set(answers) == set(PARTS) | {MAE_QUESTION}
    assert len(failures(answers)) == len(master_test_cells())
    assert not failed(answers) and not staff(answers)
    assert answers[MAE_QUESTION].model_error is None and set(answers[MAE_QUESTION].model) == {"state", "pool", "normalizer"}


def test_every_test_passes_on_the_solution_in_another_term():
    """A term reseeds the hidden tests' inputs; the expected values are the solution's own, so the
    solution passes in any term."""
    answers = run(notebook(), PARTS, term=TERM)
    assert not failed(answers) and not staff(answers)


def test_seeded_inputs_depend_on_the_seed_and_the_term_alone():
    default, term, again = (master_tests.seeded_factory(t) for t in ("", TERM, TERM))
    assert np.array_equal(default(7).normal(size=5), np.random.default_rng(7).normal(size=5))
    assert np.array_equal(term(7).normal(size=5), again(7).normal(size=5))
    assert not np.allclose(term(7).normal(size=5), default(7).normal(size=5))
    assert not np.allclose(term(7).normal(size=5), term(8).normal(size=5))


def test_every_test_fails_on_the_released_stubs_with_a_clean_message():
    """The student notebook as released: every test of a part of definitions fails with the stub's own
    NotImplementedError, 4b's because there is no trained model; none crashes in the grader."""
    results = failures(run(stubs()))
    passing = [k for k, m in results.items() if m is None]
    assert not passing, f"tests the stubs pass: {passing}"
    for (question, name), message in results.items():
        if question == MAE_QUESTION:
            assert message.startswith("no trained model yet: run the training cell above first (your notebook does "
                                      "not define normalizer, val_batches: did the cell"), message
        else:
            assert re.match(r"your code raised NotImplementedError: \w+(\.forward)? is not written yet$", message), \
                (question, name, message)


MALFORMED = [None, 3, "text", [1, 2], float("nan"), np.full((2, 2), np.nan), np.zeros((5, 12), int),
             torch.zeros(3, 2), {"value": None}]


@pytest.mark.parametrize("value", MALFORMED, ids=lambda v: type(v).__name__ if hasattr(v, "shape") else repr(v))
def test_a_malformed_return_fails_every_test_and_shows_students_no_grader_code(value):
    """Every definition returns `value`: every test fails; a test that cannot go on (an attribute
    error on the value) shows students the fixed sentence (it asks them to check what their code
    returns) and the staff the traceback, never the test's source."""
    namespace = notebook()
    for name in ("atom_features", "neighbor_list", "gaussian_expand", "mean_pool", "max_pool"):
        namespace[name] = lambda *args, **kwargs: value
    for name in ("SharedConv", "GatedConv", "CGCNN"):
        namespace[name] = type(name, (namespace[name],), {"forward": lambda self, *args, **kwargs: value})
    answers = run(namespace, PARTS)
    results = failures(answers)
    assert all(results.values()), f"tests passed with {value!r}: {[k for k, m in results.items() if m is None]}"
    crashed = [k for k, m in results.items() if m == GRADER_FAILED]
    assert len(staff(answers)) == len(crashed)
    shown = json.dumps(list(results.values()))
    assert "def test_" not in shown and "solution." not in shown and "Traceback" not in shown


# Wrong and correct variants --------------------------------------------------------------------------

def _early_return(before: str, body: str) -> tuple:
    """A replacement that makes the function return `body` just before the solution line `before`."""
    return before, f"{before[:len(before) - len(before.lstrip())]}return {body}\n{before}"


SCATTER_MAX = "    out = torch.zeros(n_crystals, atom_fea.shape[1], dtype=atom_fea.dtype)\n"
INDEX_ADD = "    summed = torch.zeros(n_crystals"
SHARED_RETURN = "        return self.softplus(summed + self.fc_self(atom_fea))"
HEAD = ("        hidden = self.softplus(self.conv_to_fc(self.softplus(crystal)))\n"
        "        return self.fc_out(hidden).squeeze(-1)")
LOOP_MEAN = "torch.stack([atom_fea[crystal_idx == c].mean(0) for c in range(n_crystals)])"
LOOP_MAX = "torch.stack([atom_fea[crystal_idx == c].max(0).values for c in range(n_crystals)])"
SPLIT_MEAN = "torch.stack([t.mean(0) for t in atom_fea.split(torch.bincount(crystal_idx, minlength=n_crystals).tolist())])"
SPLIT_MAX = "torch.stack([t.max(0).values for t in atom_fea.split(torch.bincount(crystal_idx, minlength=n_crystals).tolist())])"
GATED_RETURN = "        return self.softplus2(atom_fea + self.bn2(summed))"
INPLACE_ADD = (GATED_RETURN, "        atom_fea += self.bn2(summed)\n        return self.softplus2(atom_fea)")
INPLACE = r"^backward through GatedConv failed: an in-place operation on the input \(atom_fea \+= \.\.\."
INT_K = ("round((dmax - dmin) / step)", "int((dmax - dmin) / step)")

# (part, what is wrong, a failure message of that part it must give, the replacement in the solution)
WRONG = [
    ("q1a", "rows in composition order", "order of the sites", (
        "embedding[site.specie.Z] for site in structure]",
        "embedding[el.Z] for el, k in structure.composition.items() for _ in range(int(k))]")),
    ("q1a", "float64 rows", "expected float32", ("structure]).astype(np.float32)", "structure]).astype(float)")),
    ("q1b", "unsorted", "sorted|distances", ('mine[np.argsort(dists[mine], kind="stable")]', "mine")),
    ("q1b", "padding to atom 0", "padding must point", (
        "np.repeat(np.arange(n)[:, None], max_num_nbr, axis=1)", "np.zeros((n, max_num_nbr), int)")),
    ("q1b", "padding distance radius", "padding distance", ("max_num_nbr), radius + 1.0)", "max_num_nbr), radius)")),
    ("q1c", "/ var instead of / var**2", r"exp\(-1\)", ("/ var ** 2)", "/ var)")),
    ("q1c", "centres ignoring dmin", "values differ for grid", ("centres = dmin + step *", "centres = step *")),
    ("q1c", "int() for K", r"^the number of Gaussians for dmin=0\.0, dmax=0\.7, step=0\.1: expected 8, got 7", INT_K),
    ("q2a", "no self term", r"no self term v_i W_s \+ b|Eq\. 3", (SHARED_RETURN, "        return self.softplus(summed)")),
    ("q2a", "no softplus", "Eq. 3", (SHARED_RETURN, "        return summed + self.fc_self(atom_fea)")),
    ("q2b", "no residual", "no residual connection|Eq. 4", ("softplus2(atom_fea + self.bn2(summed))",
                                                             "softplus2(self.bn2(summed))")),
    ("q2b", "filter and core halves swapped", "the halves swapped|Eq. 4", ("nbr_filter, nbr_core =", "nbr_core, nbr_filter =")),
    ("q2b", "no sigmoid", "no sigmoid on the filter|Eq. 4", ("self.sigmoid(nbr_filter) *", "nbr_filter *")),
    ("q2b", "concatenation neighbour, centre, edge", "the concatenation order|Eq. 4", ("w_centre, w_nbr, w_edge",
                                                                                       "w_nbr, w_centre, w_edge")),
    ("q2b", "in-place residual +=", INPLACE, INPLACE_ADD),
    ("q2b", "in-place residual add_", INPLACE, (GATED_RETURN, "        return self.softplus2(atom_fea.add_(self.bn2(summed)))")),
    ("q2b", "residual detached", "gradient of GatedConv's summed output", (
        "softplus2(atom_fea + self.bn2(summed))", "softplus2(atom_fea.detach() + self.bn2(summed))")),
    ("q3", "max over the whole batch", "max pooling",
     _early_return(SCATTER_MAX, "atom_fea.max(0).values.expand(n_crystals, -1)")),
    ("q3", "include_self=True", "max pooling gave", ("include_self=False", "include_self=True")),
    ("q3", "max pool in numpy, without gradient", "max pooling's result has no gradient|gradients must flow through max",
     _early_return(SCATTER_MAX, "torch.from_numpy(np.stack([atom_fea.detach().numpy()[crystal_idx.numpy() == c].max(0) "
                                "for c in range(n_crystals)]))")),
    ("q3", "mean pool assuming sorted crystal_idx", "mean pooling is wrong on a batch", _early_return(INDEX_ADD, SPLIT_MEAN)),
    ("q3", "max pool assuming sorted crystal_idx", "max pooling is wrong on a batch", _early_return(SCATTER_MAX, SPLIT_MAX)),
    ("q3", "max pool detached", "max pooling's result has no gradient|gradients must flow through max pooling", (
        'reduce="amax",\n                              include_self=False)',
        'reduce="amax",\n                              include_self=False).detach()')),
    ("q3", "mean pool with a zero gradient", "gradient of mean pooling|mean pooling's gradient", (
        "return summed / counts[:, None]", "return (summed / counts[:, None]).detach() + 0 * summed")),
    ("q4a", "head without the first softplus", "the head without its two softplus|differ from the recipe", (
        "self.conv_to_fc(self.softplus(crystal))", "self.conv_to_fc(crystal)")),
    ("q4a", "pool option ignored", r"^pool=max: got .*: the pool option ignored", (
        'self.pool = {"mean": mean_pool, "max": max_pool}[pool]', "self.pool = mean_pool")),
]

# Other correct solutions, as replacements in the solution: every test must pass.
CORRECT = {
    "q1a loops in float64, cast back": [(
        "np.stack([embedding[site.specie.Z] for site in structure]).astype(np.float32)",
        "np.array([[float(v) for v in embedding[site.specie.Z]] for site in structure]).astype(np.float32)")],
    "q1b ties in reverse index order": [(
        'np.argsort(dists[mine], kind="stable")', "np.lexsort((-points[mine], np.round(dists[mine], 9)))")],
    "q1c float32 result": [("/ var ** 2)", "/ var ** 2).astype(np.float32)")],
    "q2a loops in float64, cast back": [(SHARED_RETURN, (
        "        w = self.fc_neighbor.weight.double()\n"
        "        loops = torch.stack([sum(w @ torch.cat([atom_fea[j].double(), nbr_fea[i, k].double()])\n"
        "                                 for k, j in enumerate(nbr_idx[i].tolist())) for i in range(len(atom_fea))])\n"
        "        return self.softplus(loops.float() + self.fc_self(atom_fea))"))],
    "q2b literal concatenation": [(
        "gated = centre[:, None, :] + gathered + nbr_fea @ w_edge.T",
        "gated = self.fc_full(torch.cat([atom_fea[:, None].expand(n, m, f), atom_fea[nbr_idx], nbr_fea], 2))")],
    "q3 loops": [_early_return(INDEX_ADD, LOOP_MEAN), _early_return(SCATTER_MAX, LOOP_MAX)],
    "q3 mean in float64, cast back": [(
        "return summed / counts[:, None]", "return (summed.double() / counts.double()[:, None]).to(atom_fea.dtype)")],
    "q4a head in float64, cast back": [(HEAD, (
        "        lin = lambda layer, a: nn.functional.linear(a, layer.weight.double(), layer.bias.double())\n"
        "        hidden = nn.functional.softplus(lin(self.conv_to_fc, nn.functional.softplus(crystal.double())))\n"
        "        return lin(self.fc_out, hidden).float().reshape(-1)"))],
}


def test_the_catalogue_has_two_wrong_variants_of_every_part():
    assert all(sum(part == w[0] for w in WRONG) >= 2 for part in PARTS)


@pytest.mark.parametrize("part, label, pattern, replace", WRONG, ids=[f"{w[0]}: {w[1]}" for w in WRONG])
def test_a_wrong_variant_fails_a_test_of_its_part(part, label, pattern, replace):
    answers = run(notebook([replace]), (part,))
    messages = list(failed(answers).values())
    assert messages, f"{label}: every test of {part} passes"
    assert any(re.search(pattern, m) for m in messages), f"{label}: {messages}"
    assert GRADER_FAILED not in messages and not staff(answers), messages


@pytest.mark.parametrize("label", CORRECT)
def test_an_alternative_correct_solution_passes_every_test(label):
    answers = run(notebook(CORRECT[label], trained=True))
    assert not failed(answers) and not staff(answers)


def test_pooling_that_assumes_sorted_crystal_idx_costs_q3_alone():
    """One mistake, one part: 4a's tests keep each crystal's atoms together (and check the assembly
    with the submission's own pooling), so only q3, which interleaves crystals, fails."""
    results = failures(run(notebook([_early_return(INDEX_ADD, SPLIT_MEAN), _early_return(SCATTER_MAX, SPLIT_MAX)]),
                           ("q3", "q4a")))
    assert results["q3", "test_interleaved_crystals_and_gradients"] and results["q3", "test_random_batches"], results
    assert {k: m for k, m in results.items() if k[0] == "q4a" and m is not None} == {}


def test_the_in_place_residual_fails_q2b_backward_across_the_boundary():
    """The in-place residual passes q2b's forward tests (and 4a's); test_backward's backward pass,
    run in the grading process, reaches the kernel's autograd graph, which raises torch's in-place
    error there: the test reads it as the RuntimeError it catches. The notebook's own training step
    fails with the same error."""
    namespace = notebook([INPLACE_ADD])
    results = failures(run(namespace, ("q2b", "q4a")))
    assert results["q2b", "test_shape_and_symmetry"] is None and results["q2b", "test_small_example"] is None
    assert re.match(INPLACE, results["q2b", "test_backward"]), results["q2b", "test_backward"]
    assert "modified by an inplace operation" in results["q2b", "test_backward"]
    assert {k: m for k, m in results.items() if k[0] == "q4a" and m is not None} == {}
    model = namespace["CGCNN"](nbr_fea_len=5, atom_fea_len=4, n_conv=1, h_fea_len=3)
    pred = model(torch.rand(5, 92), torch.rand(5, 3, 5), torch.randint(0, 5, (5, 3)), torch.tensor([0, 0, 1, 1, 1]), 2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pred.sum().backward()


def test_a_failed_hidden_test_names_its_summary_not_its_source(grader):
    """What a student reads of q1c's hidden grids: what the test checks (its docstring), the grid and
    both counts; nothing of the test's code or of the solution."""
    (verdict,) = [v for v in run(notebook([INT_K]), ("q1c",))["q1c"].verdicts if v.message]
    assert verdict.test.hidden and verdict.test.name == "test_other_grids"
    line = scoring._line(verdict)
    summary = re.escape(verdict.test.summary)
    assert verdict.test.summary.startswith("Values and the number of Gaussians must follow the formula")
    assert re.fullmatch(rf"a hidden test \({summary}\): the number of Gaussians for dmin=0\.0, dmax=0\.7, step=0\.1: "
                        r"expected 8, got 7 .*", line), line
    assert "test_other_grids" not in line and "want" not in line and "solution" not in line and "np." not in line


# What students see -----------------------------------------------------------------------------------

def test_students_see_public_verdicts_at_once_and_points_hidden_verdicts_and_the_mae_when_published(grader):
    """results.json of a notebook that fails only q1c's hidden test, with an untrained model for 4b:
    before publication a student sees every public verdict and 4b's tier, never the test MAE (no
    oracle to tune on) nor a hidden verdict; the published entries name the failed hidden test by
    what it tests, and the staff's extra_data holds the exact MAE and every test's verdict."""
    answers = run(notebook([INT_K], trained=True))
    results = scoring.score(grader.settings, grader.parts, answers, {}, grader.heldout, grader.solution, [])
    points = grader.settings.points
    mae = results["extra_data"]["test_mae"]
    entries = {t["name"]: t for t in results["tests"]}
    assert mae > 2 * grader.settings.mae_full, "an untrained model earns no tier"

    published = {q: entries[q] for q in points}
    assert all(t["visibility"] == "after_published" for t in published.values())
    assert {q: t["score"] for q, t in published.items() if t["score"] < t["max_score"]} == {"q1c": 0, MAE_QUESTION: 0}
    summary = grader.parts["q1c"].tests[-1].summary
    assert f"a hidden test ({summary}): the number of Gaussians" in published["q1c"]["output"]
    assert "def test_" not in json.dumps(results) and "expected 8, got 7" in published["q1c"]["output"]
    assert f"Test MAE {mae:.4f} eV/atom on {len(grader.heldout.labels)} held-out crystals" in published[MAE_QUESTION]["output"]

    seen = [t for t in results["tests"] if t.get("visibility", results["visibility"]) == "visible"]
    assert [t["name"] for t in seen] == [f"{q} (public checks)" for q in points if q != MAE_QUESTION] + [f"{MAE_QUESTION} (tier)"]
    assert all("score" not in t and "max_score" not in t for t in seen), "points wait for publication (but 4b's tier)"
    q1c = entries["q1c (public checks)"]
    assert q1c["status"] == "passed" and "1 hidden test: its verdict" in q1c["output"], q1c
    assert q1c["output"].startswith("test_defaults: passed\n")
    text = results["output"] + "".join(t["output"] for t in seen)
    assert f"{mae:.3f}" not in text and f"{mae:.4f}" not in text and "Test MAE" not in text, text
    assert "earns 0 of 7 points" in entries[f"{MAE_QUESTION} (tier)"]["output"]
    report = results["extra_data"]["tests"]
    assert {(q, name) for q, tests in report.items() for name, verdict in tests.items() if verdict != "passed"} == \
        {("q1c", "test_other_grids")}
    assert report["q1c"]["test_other_grids"].startswith("failed: the number of Gaussians")


def test_a_part_scores_all_or_nothing_unless_its_test_file_says_otherwise(grader):
    part = grader.parts["q2b"]
    verdicts = [master_tests.Verdict(t, "wrong" if t.name == "test_backward" else None) for t in part.tests]
    assert scoring.part_points(part, verdicts, 4.0) == 0.0
    assert scoring.part_points(part, [master_tests.Verdict(t, None) for t in part.tests], 4.0) == 4.0
    shares = dataclasses.replace(part, all_or_nothing=False)
    assert scoring.part_points(shares, verdicts, 4.0) == pytest.approx(4.0 * 3 / 4)
    assert scoring.part_points(part, [], 4.0) == 0.0


def test_a_stopped_training_is_not_scored_and_says_why():
    """4b's result when a cell before its probe was stopped (execution leaves the reason in `missing`):
    nothing is scored, and the text names the cell, the limit and the budget."""
    from cgcnn_grading import execution
    g = autograder()
    why = (f"the cell starting 'model, val_pred = None, {{}}' was stopped after {g.settings.limits.cell_cpu_seconds:.0f} s "
           f"of CPU time (time limit), before the check of q4b, so your training did not finish. "
           f"{execution.budget(g.settings.limits)}")
    passed = {q: scoring.PartAnswers([master_tests.Verdict(t, None) for t in part.tests])
              for q, part in g.parts.items() if q != MAE_QUESTION}  # the network's parts pass
    results = scoring.score(g.settings, g.parts, passed, {MAE_QUESTION: why}, g.heldout, g.solution, [])
    entries = {t["name"]: t for t in results["tests"]}
    tier, published = entries[f"{MAE_QUESTION} (tier)"], entries[MAE_QUESTION]
    assert published["score"] == 0 and "test_mae" not in results["extra_data"]
    assert tier["output"] == published["output"], "why a model is not scored is no secret: students see it at once"
    assert tier["output"].startswith("Not scored: the cell starting 'model, val_pred = None, {}' was stopped after "
                                     "240 s of CPU time (time limit)"), "the first line says why"
    assert "240 s of CPU time and 360 s of wall-clock time" in tier["output"]


def test_a_grader_failure_in_test_code_shows_students_a_fixed_sentence_and_the_staff_the_detail(grader):
    """Issue 24: an exception of the grader's own (here quoting a root-only file) was copied into a
    visible entry. A test whose own code raises (not an assertion, not the submission's exception):
    students read GRADER_FAILED; the exception reaches only extra_data, a hidden entry (never
    after_published) and the log."""
    def test_srtio3(atom_features):
        atom_features  # a stand-in of the notebook's function: the submission is not at fault
        raise OSError("root:$6$secret-hash-from-etc-shadow")

    crashing = master_tests.Test("q1a", "test_srtio3", False, 2.0, test_srtio3, master_tests.summary(test_srtio3))
    part = master_tests.Part("q1a", [crashing], True)
    verdicts = master_tests.run_part(part, remote.Link(asker(notebook())), grader.solution, master_tests.seeded_factory())
    assert [(v.message, "secret-hash" in (v.staff or "")) for v in verdicts] == [(GRADER_FAILED, True)]
    settings = dataclasses.replace(grader.settings, points={"q1a": 2.0})
    results = scoring.score(settings, {"q1a": part}, {"q1a": scoring.PartAnswers(verdicts)}, {}, None, None, [])
    seen = [t for t in results["tests"] if t["visibility"] in ("visible", "after_published")]
    assert [t["name"] for t in seen] == ["q1a (public checks)", "q1a"]
    assert all("secret-hash" not in t["output"] and "OSError" not in t["output"] for t in seen)
    assert f"test_srtio3: {GRADER_FAILED}" in seen[0]["output"] and seen[1]["score"] == 0
    hidden = [t for t in results["tests"] if t["visibility"] == "hidden"]
    assert [t["name"] for t in hidden] == [scoring.STAFF_ENTRY] and "secret-hash" in hidden[0]["output"]
    assert "OSError" in results["extra_data"]["grader_errors"][0] and results["stdout_visibility"] == "hidden"
    assert "secret-hash" not in results["output"]
    # a test's own KeyError on what the submission gave is the submission's failure: its type alone shown
    def test_values(atom_features):
        atom_features
        raise KeyError("root:$6$secret-hash-from-etc-shadow")
    part = master_tests.Part("q1a", [master_tests.Test("q1a", "test_values", True, 2.0, test_values, "rows")], True)
    (verdict,) = master_tests.run_part(part, remote.Link(asker(notebook())), grader.solution, master_tests.seeded_factory())
    assert verdict.message.startswith("the test could not use what your code gave (KeyError)") and verdict.staff is None
    assert "secret-hash" not in verdict.message


# 4b: the held-out crystals in the solution's CGCNN ---------------------------------------------------

def trained_answer(namespace: dict) -> dict:
    """4b's `trained` request as grading sends it, decoded as the probe keeps it."""
    link = remote.Link(asker(namespace))
    return link.request("trained")[0]


@functools.cache
def untrained_state() -> dict:
    """The `trained` answer for the notebook's default CGCNN, untrained (seed 0)."""
    namespace = notebook()
    torch.manual_seed(0)
    namespace.update(model=namespace["CGCNN"](), normalizer=cgcnn_utils.Normalizer([-2.0, -3.0]))
    return trained_answer(namespace)


@functools.cache
def untrained_mae() -> tuple:
    g = autograder()
    return scoring.heldout_mae(scoring.PartAnswers(model=untrained_state(), pool="mean"), None, g.heldout, g.solution)


def with_state(model: dict, **changed) -> dict:
    """The answer with state entries replaced (None: removed); `convs__1__x` names convs.1.x."""
    state = {k: v.array for k, v in model["state"].items()}
    for name, array in changed.items():
        name = name.replace("__", ".")
        if array is None:
            del state[name]
        else:
            state[name] = array
    return {**model, "state": state}


def test_the_grader_predicts_the_held_out_crystals_as_the_solution_model_does(grader):
    """4b's predictions are the grader's: the model's parameters in the solution's CGCNN (float64, eval
    mode) on graphs the grader builds from the held-out CIFs. For an untrained model of the solution
    (float32, its own graphs from the data set's structures) the MAEs agree within 1e-5 eV/atom."""
    namespace = notebook()
    data = cgcnn_utils.load_dataset()
    heldout = json.loads((grader.source / build.HELDOUT).read_text())
    ids = sorted(heldout)
    assert len(ids) == len(grader.heldout.labels) > 50
    torch.manual_seed(0)
    model = namespace["CGCNN"](nbr_fea_len=grader.heldout.edge_features).eval()
    normalizer = cgcnn_utils.Normalizer([-2.0, -3.0])
    graphs = cgcnn_utils.build_graphs(data, ids, namespace["embedding"], namespace["atom_features"],
                                      namespace["neighbor_list"], progress=False)
    theirs = cgcnn_utils.predict(model, cgcnn_utils.make_batches(graphs, data.targets, ids, namespace["gaussian_expand"], 32),
                                 normalizer)
    labels = np.array([float(heldout[i]["label"]) for i in ids])
    assert np.array_equal(labels, grader.heldout.labels)
    want = np.mean([abs(theirs[i] - y) for i, y in zip(ids, labels)])
    answer = trained_answer({**namespace, "model": model, "normalizer": normalizer})
    mae, why = scoring.heldout_mae(scoring.PartAnswers(model=answer, pool="mean"), None, grader.heldout, grader.solution)
    assert why == "" and mae == pytest.approx(want, abs=1e-5)
    unread = scoring.heldout_mae(scoring.PartAnswers(model_error="there is no trained model"), None, grader.heldout,
                                 grader.solution)
    assert unread == (None, "the trained model could not be read: there is no trained model")


def test_the_held_out_set_is_evaluated_in_batches_of_whole_crystals_with_the_same_predictions(grader, monkeypatch):
    batches = grader.heldout.batches
    assert len(batches) > 2 and sum(b[4] for b in batches) == len(grader.heldout.labels)
    assert all(len(b[0]) <= heldout_set.HELDOUT_ATOMS or b[4] == 1 for b in batches)
    assert all(b[0].dtype == b[1].dtype == torch.float64 for b in batches)
    model = untrained_state()
    network = heldout_set.model_for({k: v.array for k, v in model["state"].items()}, "mean", grader.solution, 92,
                                    grader.heldout.edge_features)
    monkeypatch.setattr(heldout_set, "HELDOUT_ATOMS", 10**6)
    whole = heldout_set.load(grader.source / build.HELDOUT, grader.solution, grader.settings.graph)
    assert len(whole.batches) == 1
    with torch.no_grad():
        chunked = torch.cat([network(*b) for b in batches])
        assert (chunked - network(*whole.batches[0])).abs().max().item() < 1e-12
    mean, std = model["normalizer"]
    assert heldout_set.mae(network, grader.heldout, mean, std) == pytest.approx(
        np.mean(np.abs(chunked.numpy() * std + mean - grader.heldout.labels)), abs=1e-12)


@pytest.mark.parametrize("changed, message", [
    # issue 24: a bias of shape (500000, 1, 1) broadcast to (500000, N, 1) float64 and OOM-killed the grader
    ({"fc_out__bias": np.zeros((500000, 1, 1), np.float32)},
     r"the model's fc_out\.bias has shape \(500000, 1, 1\), where the notebook's CGCNN with atom_fea_len=64, "
     r"h_fea_len=128 for 92 atom and 41 edge features has \(1,\): keep the CGCNN class you were given"),
    ({"convs__1__fc_full__weight": np.zeros((128, 170), np.float32)}, r"convs\.1\.fc_full\.weight has shape \(128, 170\)"),
    ({"convs__2__bn2__running_var": None}, r"the model has no convs\.2\.bn2\.running_var \(a CGCNN with conv='gated'"),
    ({"fc_extra__weight": np.zeros((1, 1), np.float32)}, r"a parameter 'fc_extra\.weight' that the notebook's CGCNN has not"),
    ({"embedding__weight": np.zeros((2048, 92), np.float32)}, r"the model's atom_fea_len is 2048, more than the 256 the "
                                                              r"grader evaluates: train with a smaller atom_fea_len"),
    ({"conv_to_fc__weight": np.zeros((4096, 64), np.float32)}, r"the model's h_fea_len is 4096, more than the 1024"),
    ({f"convs__{k}__fc_full__weight": np.zeros((128, 169), np.float32) for k in range(3, 9)},
     r"the model's n_conv is 9, more than the 6"),
    ({"convs__7__fc_full__weight": np.zeros((128, 169), np.float32)}, r"convolution layers are not numbered 0 to 3"),
    ({"embedding__weight": np.zeros(92, np.float32)}, r"no embedding\.weight or conv_to_fc\.weight of two dimensions"),
], ids=["huge bias", "wrong weight", "missing buffer", "extra parameter", "too wide", "too wide a head", "too deep",
        "layers misnumbered", "no embedding matrix"])
def test_the_grader_refuses_a_state_that_is_not_the_notebooks_network_before_any_arithmetic(grader, monkeypatch, changed,
                                                                                            message):
    model = untrained_state()
    mae, why = untrained_mae()
    assert why == "" and math.isfinite(mae)  # the untouched state is scored

    def no_arithmetic(*args, **kwargs):
        raise AssertionError("a state that is not the notebook's network reached the grader's CGCNN")
    monkeypatch.setattr(grader.solution.CGCNN, "load_state_dict", no_arithmetic)
    monkeypatch.setattr(heldout_set, "mae", no_arithmetic)
    mae, why = scoring.heldout_mae(scoring.PartAnswers(model=with_state(model, **changed), pool="mean"), None, grader.heldout,
                                   grader.solution)
    assert mae is None and why.startswith("the model's parameters do not fit the CGCNN of the notebook: "), why
    assert re.search(message, why), why


@pytest.mark.parametrize("model, why", [
    ({"state": {}, "pool": "mean_pool"}, scoring.UNREAD),
    ({"state": {"embedding.weight": [[1.0]]}, "pool": "mean_pool", "normalizer": [0.0, 1.0]}, scoring.UNREAD),
    ({"state": "weights", "pool": "mean_pool", "normalizer": [0.0, 1.0]}, scoring.UNREAD),
], ids=["no normalizer", "a list for an array", "no state dict"])
def test_a_trained_answer_that_is_not_a_model_is_not_scored_and_says_why(grader, model, why):
    assert scoring.heldout_mae(scoring.PartAnswers(model=model, pool="mean"), None, grader.heldout, grader.solution) == \
        (None, why)


POOLINGS = {  # how a notebook may choose its pooling, and what the grader must find it computes
    "the functions themselves": ("self.pool = {\"mean\": mean_pool, \"max\": max_pool}[pool]", "mean"),
    "functools.partial": ("self.pool = __import__('functools').partial(lambda x, c, n, reduce: (mean_pool if reduce == "
                          "'mean' else max_pool)(x, c, n), reduce=pool)", "mean"),
    "a lambda": ("self.pool = lambda x, c, n: mean_pool(x, c, n)", "mean"),
    "a median": ("self.pool = lambda x, c, n: torch.stack([x[c == k].median(dim=0).values for k in range(n)])", None),
}


@pytest.mark.parametrize("label", POOLINGS)
def test_the_models_pooling_is_identified_by_what_it_computes_not_by_its_name(label):
    """Issue 29: `mean_pool = functools.partial(...)` lost 4b's 7 points because the grader read the
    pooling's __name__. The grader runs the trained model's own `pool` on a test batch and compares it
    with the solution's mean and max pooling."""
    line, kind = POOLINGS[label]
    namespace = notebook(trained=True, replace=[("self.pool = {\"mean\": mean_pool, \"max\": max_pool}[pool]", line)]
                         if label != "the functions themselves" else ())
    torch.manual_seed(0)
    namespace["model"] = namespace["CGCNN"](nbr_fea_len=41)
    answers = run(namespace, (MAE_QUESTION,))[MAE_QUESTION]
    assert answers.pool == kind, answers.pool_error
    if kind is None:
        assert answers.pool_error.startswith("the model's pooling (model.pool) computes neither mean nor max pooling")
        g = autograder()
        assert scoring.heldout_mae(answers, None, g.heldout, g.solution) == (None, answers.pool_error)
    else:
        g = autograder()
        mae, why = scoring.heldout_mae(answers, None, g.heldout, g.solution)
        assert mae is not None and math.isfinite(mae), why


def test_the_held_out_graphs_follow_the_graph_settings_the_notebook_trained_with():
    """Issue 29: a notebook that trained with MAX_NUM_NBR = 8 was scored on graphs of 12 neighbours. The
    grader reads the notebook's RADIUS and MAX_NUM_NBR at 4b's check (numbers within range; others keep
    the defaults) and builds the held-out graphs with them; the Gaussians keep the support module's span."""
    g = autograder()
    namespace = notebook(trained=True)
    namespace.update(RADIUS=7.0, MAX_NUM_NBR=8)
    answers = run(namespace, (MAE_QUESTION,))[MAE_QUESTION]
    assert (answers.graph["radius"], answers.graph["max_num_nbr"]) == (7.0, 8)
    assert answers.graph_note == "The held-out crystals' graphs were built with your notebook's RADIUS = 7.0, MAX_NUM_NBR = 8."
    built = heldout_set.load_as_trained(g.source / build.HELDOUT, g.solution, answers.graph, g.settings.graph)
    assert built.batches[0][2].shape[1] == 8 and built.edge_features == g.heldout.edge_features
    # the 8 nearest of the default graph's 12, expanded over the same Gaussians
    assert torch.allclose(built.batches[0][1], g.heldout.batches[0][1][:, :8], atol=1e-12)
    namespace.update(RADIUS="8", MAX_NUM_NBR=10**6)  # not numbers within range: the defaults
    answers = run(namespace, (MAE_QUESTION,))[MAE_QUESTION]
    assert answers.graph_note == "" and answers.graph["max_num_nbr"] == g.settings.graph["max_num_nbr"]


@pytest.mark.parametrize("source, part", [
    ('grader.check("q4b")', "q4b"), ("grader.check('q4b')", "q4b"), ('grader.check( "q1a" )\n', "q1a"),
    ('# my check\ngrader.check("q3")', "q3"), ('grader.check("q4b"); model = None', None),
    ('print(grader.check("q4b"))', None), ("grader.check(q)", None), ("grader.check(", None),
])
def test_a_check_cell_is_recognised_by_its_code_not_its_exact_text(source, part):
    """Issue 29: `grader.check('q4b')` typed again (single quotes) was not recognised, and 4b scored a
    model that a later cell had replaced. A cell that is one call of grader.check with a part's name is
    that part's check, however written; a cell that does more is not."""
    from cgcnn_grading import execution
    assert execution.checked_part(source) == part


# The stand-ins (cgcnn_grading.remote) ----------------------------------------------------------------

def test_a_remote_class_builds_remote_objects_and_answers_isinstance():
    namespace = notebook()
    link = remote.Link(asker(namespace))
    gated, shared = (link.get("global", name=n) for n in ("GatedConv", "SharedConv"))
    assert isinstance(gated, type) and issubclass(gated, remote.RemoteClass) and gated.__name__ == "GatedConv"
    conv = gated(4, 2)
    assert isinstance(conv, remote.Remote) and repr(conv) == "<the notebook's GatedConv>"
    assert isinstance(conv, gated) and not isinstance(conv, shared)
    assert not isinstance(namespace["GatedConv"](4, 2), gated), "a local object is not the notebook's"
    other = remote.Link(asker(namespace)).get("global", name="GatedConv")
    assert not isinstance(conv, other), "an object of another link is not asked about"
    with torch.no_grad():  # a tensor attribute stays in the kernel: copy_ changes the layer the submission runs
        conv.fc_full.bias.copy_(torch.full((8,), 0.25))
    assert torch.equal(conv.fc_full.bias.detach(), torch.full((8,), 0.25))
    with pytest.raises(TypeError, match="a test cannot set 'atom_fea_len'"):
        conv.atom_fea_len = 3
    assert len(link.get("global", name="CGCNN")(n_conv=2).convs) == 2


def test_gradients_cross_the_boundary():
    """A test's tensor that requires a gradient, through the notebook's mean_pool in the kernel:
    backward here fills its grad with the kernel's gradient, 1 / (atoms of the crystal)."""
    link = remote.Link(asker(notebook()))
    mean_pool = link.get("global", name="mean_pool")
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    out = mean_pool(x * 2.0, torch.tensor([0, 1, 0]), 2)
    assert out.requires_grad and torch.allclose(out, torch.tensor([[6.0, 8.0], [6.0, 8.0]]))
    (out * torch.tensor([[1.0, 1.0], [3.0, 3.0]])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([[1.0, 1.0], [6.0, 6.0], [1.0, 1.0]]), atol=1e-6)
    with torch.no_grad():
        assert not mean_pool(x, torch.tensor([0, 1, 0]), 2).requires_grad


def _raises(source: str):
    namespace = {}
    exec(f"class ShapeError(Exception):\n    pass\n\ndef f():\n    {source}", namespace)
    link = remote.Link(asker(namespace))
    with pytest.raises(remote.SubmissionRaised) as raised:
        link.get("global", name="f")()
    return raised.value


@pytest.mark.parametrize("source, base, type_name, text", [
    ("raise KeyError('x')", KeyError, "KeyError", "'x'"),
    ("raise RuntimeError('the layer broke')", RuntimeError, "RuntimeError", "the layer broke"),
    ("raise ValueError('shape (3,)')", ValueError, "ValueError", "shape (3,)"),
    ("raise ShapeError('no')", RuntimeError, "ShapeError", "no"),
    ("raise StopIteration('done')", RuntimeError, "StopIteration", "done"),
    ("b'\\xff'.decode()", RuntimeError, "UnicodeDecodeError", "can't decode byte 0xff"),
], ids=["KeyError", "RuntimeError", "ValueError", "a class of the notebook's", "StopIteration", "UnicodeDecodeError"])
def test_an_exception_of_the_submission_comes_back_as_a_builtin_of_its_name(source, base, type_name, text):
    """A test's `except KeyError` works on the submission's KeyError; any other exception (a class of
    the notebook's, one that would change a test's control flow, one whose constructor wants other
    arguments) is a RuntimeError that keeps its name."""
    err = _raises(source)
    assert isinstance(err, base) and isinstance(err, remote.SubmissionRaised) and type(err).type_name == type_name
    assert text in str(err)
    assert not isinstance(err, StopIteration)


def test_a_submission_exception_reads_your_code_raised():
    namespace = notebook([("    var = step if var is None else var\n", "    var = {}[var]\n")])
    messages = list(failures(run(namespace, ("q1c",))).values())
    assert messages == ["your code raised KeyError: None", "your code raised KeyError: 0.3"]  # var=None, var=0.3


def test_a_link_past_its_deadline_breaks_without_asking_the_kernel(grader):
    asked = []
    link = remote.Link(lambda request: asked.append(request) or {"value": None}, deadline=time.monotonic() - 1)
    with pytest.raises(remote.LinkBroken, match=r"the check's time is up \(time limit\)"):
        link.request("global", name="atom_features")
    verdicts = master_tests.run_part(grader.parts["q1a"], link, grader.solution, master_tests.seeded_factory())
    assert [v.message for v in verdicts] == ["not checked: the check's time is up (time limit)"] * 2
    assert asked == [] and link.requests == 0


def test_a_link_breaks_mid_test_with_the_reason_not_a_grader_failure(grader):
    """The deadline passes while a test runs: that test and the rest fail with the reason."""
    ask = asker(notebook())

    def slow(request):
        if request["op"] == "call":
            link.deadline = time.monotonic() - 1
        return ask(request)
    link = remote.Link(slow)
    verdicts = master_tests.run_part(grader.parts["q2a"], link, grader.solution, master_tests.seeded_factory())
    assert {v.message for v in verdicts} == {"not checked: the check's time is up (time limit)"}
    assert not any(v.staff for v in verdicts)


@pytest.mark.parametrize("value", [{"__structure__": {"@module": "os", "@class": "system"}}, {"__repr__": "Structure"},
                                   {"atoms": [1, 2]}, {"__handle__": 1, "type": "X", "kind": "module"}],
                         ids=["__structure__", "__repr__", "untagged", "handle of an unknown kind"])
def test_a_kernel_answer_with_an_unknown_tag_is_refused(grader, value):
    """A kernel (or a notebook that patched cgcnn_kernel) answering with anything but cgcnn_kernel's
    tags: refused as data, before anything is built; the test fails with a sentence that says so."""
    ask = asker(notebook())
    link = remote.Link(lambda request: {"value": value} if request["op"] == "call" else ask(request))
    with pytest.raises(wire.Refused):
        link.get("global", name="atom_features")(1)
    verdicts = master_tests.run_part(grader.parts["q1c"], link, grader.solution, master_tests.seeded_factory())
    for v in verdicts:
        assert v.message.startswith("the kernel's answer was refused: it") and v.message.endswith(
            "(the grader's probe, cgcnn_kernel, sends nothing else: do not change it)"), v.message
    answered = remote.Link(lambda request: {"value": value})  # already the notebook's variable: every test not checked
    assert {v.message.split(":")[0] for v in master_tests.run_part(grader.parts["q1c"], answered, grader.solution,
                                                                    master_tests.seeded_factory())} == {"not checked"}


def test_an_undefined_name_is_none_and_the_message_says_which():
    """As otter passes them: a name the notebook does not define is None in the test, and the
    message adds which names are missing."""
    namespace = notebook()
    del namespace["gaussian_expand"]
    results = failures(run(namespace, ("q1c",)))
    assert set(results.values()) >= {"the test could not use what your code gave (TypeError): check that it returns "
                                     "what the task asks (type, shape, dtype) (your notebook does not define "
                                     "gaussian_expand: did the cell that defines it raise an error?)"}, results


def test_the_notebooks_own_errors_are_reported_to_the_student_and_a_time_limits_interrupt_is_not():
    """Issue 29: a set-up cell that imported a package the grader lacks showed only the grader's later
    failure to find a name; the results now say which cell raised what (the first CELL_ERRORS)."""
    from cgcnn_grading import execution
    outcome = execution.Outcome()

    def cell(ename, evalue):
        return nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                                                             traceback=[])])
    execution._report_errors(cell("ModuleNotFoundError", "No module named 'seaborn'"), "the cell starting 'import seaborn'",
                             outcome, None)
    execution._report_errors(cell("KeyboardInterrupt", ""), "the cell starting 'while True:'", outcome,
                             "the cell starting 'while True:' was stopped after 240 s of CPU time (time limit)")
    assert outcome.events == ["Your notebook's cell starting 'import seaborn' raised ModuleNotFoundError: No module "
                              "named 'seaborn'"]
    for k in range(2 * execution.CELL_ERRORS):
        execution._report_errors(cell("ValueError", f"bad {k}"), f"the cell starting 'f({k})'", outcome, None)
    assert len(outcome.events) == execution.CELL_ERRORS + 1 and outcome.events[-1].startswith("Your notebook's later cells")
