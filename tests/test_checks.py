"""The grader's checks of parts 1a to 4a (assignment/cgcnn_grading/checks.py), in-process in seconds:
each check's requests answered by the kernel half (cgcnn_kernel.answer) in a namespace built from the
master notebook's definitions, passed through JSON as on the wire, and judged."""

import json
import re

import nbformat
import numpy as np
import pytest
import torch
from otter.assign.solutions import replace_solutions

import cgcnn_kernel
import cgcnn_utils
from cgcnn_grading import checks as checks_module, reference
from conftest import ASSIGNMENT

NB = ASSIGNMENT / "cgcnn_perovskites.ipynb"
PARTS = ("q1a", "q1b", "q1c", "q2a", "q2b", "q3", "q4a")
SAFETY_NET = checks_module.GRADER_FAILED  # what a student reads of a judge that crashed
EMBEDDING = cgcnn_utils.load_embedding()
CHECKS = checks_module.checks(EMBEDDING)
# The checks in order; "*" marks a hidden one (the master notebook keeps only the public tests).
EXPECTED = {"q1a": "test_srtio3 test_other_crystals*", "q1b": "test_srtio3_shells test_padding test_against_reference*",
            "q1c": "test_defaults test_other_grids*", "q2a": "test_shape_and_symmetry test_small_example test_values*",
            "q2b": "test_shape_and_symmetry test_small_example test_backward test_values*",
            "q3": "test_small_example test_interleaved_crystals_and_gradients test_random_batches*",
            "q4a": "test_shape_and_invariance test_small_example test_values*"}


def _namespace(stub: bool = False, replace=()) -> dict:
    """The notebook's definition cells run as one source, after the text replacements `replace`."""
    cells = nbformat.read(NB, as_version=4).cells
    source = "\n\n\n".join(c.source for c in cells if c.cell_type == "code" and c.source.startswith(("def ", "class ")))
    for old, new in replace:
        assert source.count(old) == 1, f"variant text not found (once) in the solution: {old!r}"
        source = source.replace(old, new)
    if stub:
        source = "\n".join(replace_solutions(source.split("\n"), "python"))
    namespace = {"np": np, "torch": torch, "nn": torch.nn, "embedding": cgcnn_utils.load_embedding()}
    exec(source, namespace)
    return namespace


def _failures(namespace: dict, parts=PARTS) -> dict:
    """{(question, check name): message, or None if it passed}; the answers go through JSON as on the wire."""
    out = {}
    for check in (c for c in CHECKS if c.question in parts):
        wire = json.loads(json.dumps(cgcnn_kernel.answer(namespace, check.requests)))
        try:
            check.judge(checks_module.Answers(wire))
            out[check.question, check.name] = None
        except AssertionError as err:
            out[check.question, check.name] = str(err)
    return out


def _notebook_public_tests() -> list:
    """(question, test name) of the master notebook's public tests of parts 1a to 4a, in order."""
    out, question = [], None
    for cell in nbformat.read(NB, as_version=4).cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            question = re.search(r"name: (\w+)", cell.source).group(1)
        elif cell.source.startswith('""" # BEGIN TEST CONFIG') and "hidden: false" in cell.source and question in PARTS:
            out.append((question, re.search(r"def (test_\w+)", cell.source).group(1)))
    return out


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
INPLACE = r"^backward through GatedConv failed: an in-place operation on the input \(atom_fea \+= \.\.\."

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
    ("q1c", "int() for K", r"^the number of Gaussians for dmin=0\.0, dmax=0\.7, step=0\.1: expected 8, got 7",
     ("round((dmax - dmin) / step)", "int((dmax - dmin) / step)")),
    ("q2a", "no self term", "Eq. 3", (SHARED_RETURN, "        return self.softplus(summed)")),
    ("q2a", "no softplus", "Eq. 3", (SHARED_RETURN, "        return summed + self.fc_self(atom_fea)")),
    ("q2b", "no residual", "Eq. 4", ("softplus2(atom_fea + self.bn2(summed))", "softplus2(self.bn2(summed))")),
    ("q2b", "filter and core halves swapped", "Eq. 4", ("nbr_filter, nbr_core =", "nbr_core, nbr_filter =")),
    ("q2b", "no sigmoid", "Eq. 4", ("self.sigmoid(nbr_filter) *", "nbr_filter *")),
    ("q2b", "concatenation neighbour, centre, edge", "Eq. 4", ("w_centre, w_nbr, w_edge", "w_nbr, w_centre, w_edge")),
    ("q2b", "in-place residual +=", INPLACE, (GATED_RETURN, "        atom_fea += self.bn2(summed)\n"
                                                          "        return self.softplus2(atom_fea)")),
    ("q2b", "in-place residual add_", INPLACE, (GATED_RETURN, "        return self.softplus2(atom_fea.add_(self.bn2(summed)))")),
    ("q2b", "residual detached", "gradient of GatedConv's summed output", (
        "softplus2(atom_fea + self.bn2(summed))", "softplus2(atom_fea.detach() + self.bn2(summed))")),
    ("q3", "max over the whole batch", "max pooling",
     _early_return(SCATTER_MAX, "atom_fea.max(0).values.expand(n_crystals, -1)")),
    ("q3", "include_self=True", "max pooling gave", ("include_self=False", "include_self=True")),
    ("q3", "max pool in numpy, without gradient", "gradients must flow through max pooling", _early_return(
        SCATTER_MAX, "torch.from_numpy(np.stack([atom_fea.detach().numpy()[crystal_idx.numpy() == c].max(0) "
                     "for c in range(n_crystals)]))")),
    ("q3", "mean pool assuming sorted crystal_idx", "mean pooling is wrong on a batch", _early_return(INDEX_ADD, SPLIT_MEAN)),
    ("q3", "max pool assuming sorted crystal_idx", "max pooling is wrong on a batch", _early_return(SCATTER_MAX, SPLIT_MAX)),
    ("q3", "max pool detached", "gradients must flow through max pooling", (
        'reduce="amax",\n                              include_self=False)',
        'reduce="amax",\n                              include_self=False).detach()')),
    ("q3", "mean pool with a zero gradient", "gradient of mean pooling", (
        "return summed / counts[:, None]", "return (summed / counts[:, None]).detach() + 0 * summed")),
    ("q4a", "head without the first softplus", "differ from the recipe", (
        "self.conv_to_fc(self.softplus(crystal))", "self.conv_to_fc(crystal)")),
    ("q4a", "pool option ignored", "conv=shared, pool=max: predictions differ", (
        'self.pool = {"mean": mean_pool, "max": max_pool}[pool]', "self.pool = mean_pool")),
]

# Other correct solutions, as replacements in the solution: every check must pass.
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


def test_checks_are_the_tests_of_parts_1a_to_4a_in_the_notebook_order():
    want = [(q, name.rstrip("*"), name.endswith("*")) for q, names in EXPECTED.items() for name in names.split()]
    assert [(c.question, c.name, c.hidden) for c in CHECKS] == want
    assert [(q, name) for q, name, hidden in want if not hidden] == _notebook_public_tests()
    assert all(c.summary for c in CHECKS if c.hidden), "every hidden check needs a summary"
    for part in PARTS:
        ids = [r["id"] for c in CHECKS if c.question == part for r in c.requests]
        assert len(ids) == len(set(ids)), f"{part}: request ids repeat"


def test_every_check_passes_on_the_solution():
    assert not {k: v for k, v in _failures(_namespace()).items() if v is not None}


def test_every_check_fails_on_the_released_stubs_with_a_clean_message():
    results = _failures(_namespace(stub=True))
    assert all(results.values()), f"checks the stubs pass: {[k for k, v in results.items() if v is None]}"
    assert not [k for k, v in results.items() if v.startswith(SAFETY_NET)], "a judge crashed on a stub's answer"


MALFORMED = [None, 3, "text", [1, 2], [None, None], {"__repr__": "Foo"}, {"__error__": "Error: x"},
             {"value": None, "conv_types": 5}, np.full((2, 2), np.nan), np.zeros((5, 12), int)]


@pytest.mark.parametrize("value", MALFORMED, ids=repr)
def test_judges_turn_any_malformed_answer_into_a_clean_assertion(value):
    wire = value if isinstance(value, dict) else cgcnn_kernel.encode(value)
    for check in CHECKS:
        with pytest.raises(AssertionError) as failure:
            check.judge(checks_module.Answers({r["id"]: wire for r in check.requests}))
        assert str(failure.value) and not str(failure.value).startswith(SAFETY_NET), check.name
        if value is None and check.name == "test_srtio3":  # a stub that returns None
            assert "expected one row of 92 features per atom, shape (5, 92); got ()" in str(failure.value)


def test_the_catalogue_has_two_wrong_variants_of_every_part():
    assert all(sum(part == w[0] for w in WRONG) >= 2 for part in PARTS)


@pytest.mark.parametrize("part, label, pattern, replace", WRONG, ids=[f"{w[0]}: {w[1]}" for w in WRONG])
def test_a_wrong_variant_fails_a_check_of_its_part(part, label, pattern, replace):
    messages = [m for m in _failures(_namespace(replace=[replace]), parts=(part,)).values() if m is not None]
    assert messages, f"{label}: every check of {part} passes"
    assert any(re.search(pattern, m) for m in messages), f"{label}: {messages}"
    assert not [m for m in messages if m.startswith(SAFETY_NET)], messages


def test_pooling_that_assumes_sorted_crystal_idx_costs_q3_alone():
    """One mistake, one part: 4a's checks keep each crystal's atoms together (and judge the assembly
    with the submission's own pooling), so only q3, which interleaves crystals, fails."""
    namespace = _namespace(replace=[_early_return(INDEX_ADD, SPLIT_MEAN), _early_return(SCATTER_MAX, SPLIT_MAX)])
    results = _failures(namespace, parts=("q3", "q4a"))
    assert results["q3", "test_random_batches"], results
    assert {k: v for k, v in results.items() if k[0] == "q4a" and v is not None} == {}


def test_the_q2b_backward_check_runs_backward_as_training_does():
    """The in-place residual passes every forward check of q2b (and 4a's), fails the backward one, and
    fails in the notebook's own training step with the error the check reports."""
    namespace = _namespace(replace=[(GATED_RETURN, "        atom_fea += self.bn2(summed)\n"
                                                   "        return self.softplus2(atom_fea)")])
    results = _failures(namespace, parts=("q2b", "q4a"))
    assert [k for k, v in results.items() if v is not None] == [("q2b", "test_backward")], results
    assert "modified by an inplace operation" in results["q2b", "test_backward"]
    model = namespace["CGCNN"](nbr_fea_len=5, atom_fea_len=4, n_conv=1, h_fea_len=3)
    c, idx = np.array([0, 0, 1, 1, 1]), torch.randint(0, 5, (5, 3))
    pred = model(torch.rand(5, 92), torch.rand(5, 3, 5), idx, torch.as_tensor(c), 2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pred.sum().backward()


def test_a_failed_hidden_check_names_the_property_not_the_source():
    """What a student reads of q1c's hidden grids: the number of Gaussians, the grid, both counts."""
    from cgcnn_grading import scoring
    namespace = _namespace(replace=[("round((dmax - dmin) / step)", "int((dmax - dmin) / step)")])
    q1c = [c for c in CHECKS if c.question == "q1c"]
    raw = json.loads(json.dumps(cgcnn_kernel.answer(namespace, [r for c in q1c for r in c.requests])))
    (line,) = [message for _, message in scoring._verdicts(q1c, raw, None) if message]
    summary = re.escape(q1c[-1].summary)
    assert re.fullmatch(rf"a hidden test \({summary}\): the number of Gaussians for dmin=0\.0, dmax=0\.7, step=0\.1: "
                        r"expected 8, got 7 .*", line), line
    assert "want" not in line and "reference" not in line and "np." not in line


def test_a_stopped_training_is_not_scored_and_says_why_in_its_first_line():
    """4b's result when a cell before its check was stopped (execution leaves the reason in `missing`):
    the first line names the cell and the limit, and the text states the budget."""
    from cgcnn_grading import execution, scoring
    from cgcnn_grading.settings import Limits
    limits = Limits()
    probe = execution.Probe("q4b", [{"id": "model", "op": "trained_model"}])
    assert probe.reads_training and not execution.Probe("q3", CHECKS[0].requests).reads_training
    why = (f"the cell starting 'model, val_pred = None, {{}}' was stopped after {limits.cell_cpu_seconds:.0f} s of "
           f"CPU time (time limit), before the check of q4b, so your training did not finish. "
           f"{execution.budget(limits)}")
    points, text, seen = scoring._mae_points(None, [], [], None, why, None, {})
    assert points == 0 and seen == text, "why a model is not scored is no secret: students see it at once"
    first = text.splitlines()[0]
    assert first.startswith("Not scored: the cell starting 'model, val_pred = None, {}' was stopped after 240 s of CPU "
                            "time (time limit)"), first
    assert f"{limits.cell_cpu_seconds:.0f} s of CPU time and {limits.cell_wall_seconds:.0f} s of wall-clock time" in first


@pytest.mark.parametrize("label", CORRECT)
def test_an_alternative_correct_solution_passes_every_check(label):
    assert not {k: v for k, v in _failures(_namespace(replace=CORRECT[label])).items() if v is not None}


def test_checks_are_deterministic_and_leave_the_global_random_states_alone():
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    first, second = (json.dumps([c.requests for c in checks_module.checks(EMBEDDING)], sort_keys=True) for _ in "12")
    assert first == second
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert np.array_equal(numpy_state, np.random.get_state()[1])


def test_module_states_name_exactly_the_weights_and_running_statistics_of_the_given_init():
    namespace = _namespace()
    for request in (r for c in CHECKS for r in c.requests if r["op"] in ("module", "cgcnn_stages")):
        obj = namespace[request.get("cls", "CGCNN")](*request.get("init", ()), **request["init_kwargs"])
        want = {k: tuple(v.shape) for k, v in [*obj.named_parameters(), *obj.named_buffers()]
                if not k.endswith("num_batches_tracked")}  # 0-d and never read: see reference.batch_norm_shapes
        assert {k: cgcnn_kernel.decode_array(v).shape for k, v in request["state"].items()} == want, request["id"]


@pytest.mark.parametrize("conv, pool", [("gated", "mean"), ("shared", "max"), ("none", "max")])
def test_the_reference_network_matches_the_solution_in_eval_mode(conv, pool):
    rng = np.random.default_rng(0)
    model = _namespace()["CGCNN"](nbr_fea_len=7, atom_fea_len=6, n_conv=2, h_fea_len=5, conv=conv, pool=pool)
    model = model.double().eval()
    state = {}
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            w = rng.normal(0, 0.5, tuple(t.shape))
            t.copy_(torch.as_tensor(0.5 + np.abs(w) if "running_var" in name else w))
            state[name] = t.numpy().copy()
        c, idx = np.array([0, 1, 0, 2, 1, 1]), rng.integers(0, 6, (6, 3))
        x, e = rng.normal(size=(6, 92)), rng.uniform(size=(6, 3, 7))
        want = model(*(torch.tensor(a) for a in (x, e, idx, c)), 3).numpy()
    assert np.abs(reference.cgcnn_forward(state, x, e, idx, c, 3, conv=conv, pool=pool) - want).max() < 1e-6


def test_the_grader_predicts_the_held_out_crystals_as_the_solution_model_does():
    """4b's predictions are the grader's: the model's parameters in the reference CGCNN on graphs the
    grader builds (reference.batch). For the solution (its own graphs, float32) they agree to 1e-4."""
    from cgcnn_grading import scoring
    namespace = _namespace()
    data = cgcnn_utils.load_dataset()
    ids = data.ids("test")[:12]
    torch.manual_seed(0)
    model = namespace["CGCNN"](nbr_fea_len=len(reference.gaussian_centres(0, cgcnn_utils.GRAPH.radius,
                                                                          cgcnn_utils.GRAPH.step)))
    model.eval()
    normalizer = cgcnn_utils.Normalizer([-2.0, -3.0])
    graphs = cgcnn_utils.build_graphs(data, ids, namespace["embedding"], namespace["atom_features"],
                                      namespace["neighbor_list"], progress=False)
    batches = cgcnn_utils.make_batches(graphs, data.targets, ids, namespace["gaussian_expand"], 5)
    theirs = cgcnn_utils.predict(model, batches, normalizer)
    labels = np.array([data.targets[i] for i in ids])
    heldout = scoring.Heldout(reference.batch([data.structure(i) for i in ids], namespace["embedding"],
                                              cgcnn_utils.GRAPH.radius, cgcnn_utils.GRAPH.max_num_nbr,
                                              cgcnn_utils.GRAPH.step), labels)
    raw = json.loads(json.dumps(cgcnn_kernel.answer({"model": model, "normalizer": normalizer},
                                                    [{"id": "model", "op": "trained_model"}])))
    mae, why = scoring.heldout_mae(raw, None, heldout)
    assert why == "" and mae == pytest.approx(np.mean([abs(theirs[i] - y) for i, y in zip(ids, labels)]), abs=1e-4)
    raw["model"] = {"__error__": "NameError: name 'model' is not defined"}
    assert scoring.heldout_mae(raw, None, heldout)[0] is None


def test_students_see_public_verdicts_at_once_and_points_hidden_verdicts_and_the_mae_when_published():
    """results.json of a notebook that fails only q1c's hidden check, with an untrained model for 4b:
    before publication a student sees every public verdict and 4b's tier, never the test MAE (no
    oracle to tune on) nor a hidden verdict; the published entries name the failed hidden check by
    what it tests, and the staff's extra_data holds the exact MAE."""
    import dataclasses
    from cgcnn_grading import scoring
    from cgcnn_grading.settings import MAE_QUESTION, Settings
    import build
    namespace = _namespace(replace=[("round((dmax - dmin) / step)", "int((dmax - dmin) / step)")])
    data = cgcnn_utils.load_dataset()
    ids = data.ids("test")[:6]
    torch.manual_seed(0)
    namespace["model"] = namespace["CGCNN"](nbr_fea_len=len(reference.gaussian_centres(
        0, cgcnn_utils.GRAPH.radius, cgcnn_utils.GRAPH.step)))
    namespace["normalizer"] = cgcnn_utils.Normalizer([-2.0, -3.0])
    heldout = scoring.Heldout(reference.batch([data.structure(i) for i in ids], namespace["embedding"],
                                              cgcnn_utils.GRAPH.radius, cgcnn_utils.GRAPH.max_num_nbr,
                                              cgcnn_utils.GRAPH.step), np.array([data.targets[i] for i in ids]))
    points = build.question_points(nbformat.read(NB, as_version=4))
    settings = Settings("cgcnn_perovskites", points, {}, [], 0.1, dataclasses.asdict(cgcnn_utils.GRAPH))
    answers = {}
    for question in points:
        requests = [r for c in CHECKS if c.question == question for r in c.requests]
        requests += [{"id": "model", "op": "trained_model"}] if question == MAE_QUESTION else []
        answers[question] = json.loads(json.dumps(cgcnn_kernel.answer(namespace, requests)))
    results = scoring.score(settings, CHECKS, answers, {}, heldout, [])
    mae = results["extra_data"]["test_mae"]
    entries = {t["name"]: t for t in results["tests"]}

    published = {q: entries[q] for q in points}
    assert all(t["visibility"] == "after_published" for t in published.values())
    assert {q: t["score"] for q, t in published.items() if t["score"] < t["max_score"]} == {"q1c": 0, MAE_QUESTION: 0}
    assert "a hidden test (" + CHECKS_BY_NAME["q1c", "test_other_grids"].summary in published["q1c"]["output"]
    assert "def test_" not in json.dumps(results) and "expected 8, got 7" in published["q1c"]["output"]
    assert f"Test MAE {mae:.4f} eV/atom" in published[MAE_QUESTION]["output"]

    seen = [t for t in results["tests"] if t.get("visibility", results["visibility"]) == "visible"]
    assert [t["name"] for t in seen] == [f"{q} (public checks)" for q in points if q != MAE_QUESTION] + [f"{MAE_QUESTION} (tier)"]
    assert all("score" not in t and "max_score" not in t for t in seen), "points wait for publication (but 4b's tier)"
    q1c = entries["q1c (public checks)"]
    assert q1c["status"] == "passed" and "1 hidden check: its verdict" in q1c["output"], q1c
    text = results["output"] + "".join(t["output"] for t in seen)
    assert f"{mae:.3f}" not in text and f"{mae:.4f}" not in text and "Test MAE" not in text, text
    assert "earns 0 of 7 points" in entries[f"{MAE_QUESTION} (tier)"]["output"]


CHECKS_BY_NAME = {(c.question, c.name): c for c in CHECKS}


def _heldout_and_model(n_crystals: int = 6):
    """A few held-out crystals as the grader reads them, and the probe's raw answer for an untrained
    solution model (the notebook's default CGCNN)."""
    from cgcnn_grading import scoring
    namespace = _namespace()
    data = cgcnn_utils.load_dataset()
    ids = data.ids("test")[:n_crystals]
    heldout = scoring.Heldout(reference.batch([data.structure(i) for i in ids], namespace["embedding"],
                                              cgcnn_utils.GRAPH.radius, cgcnn_utils.GRAPH.max_num_nbr,
                                              cgcnn_utils.GRAPH.step), np.array([data.targets[i] for i in ids]))
    torch.manual_seed(0)
    namespace["model"] = namespace["CGCNN"](nbr_fea_len=heldout.inputs["nbr_fea"].shape[-1])
    namespace["normalizer"] = cgcnn_utils.Normalizer([-2.0, -3.0])
    raw = json.loads(json.dumps(cgcnn_kernel.answer(namespace, [{"id": "model", "op": "trained_model"}])))
    return heldout, raw


def _with_state(raw: dict, **changed) -> dict:
    raw = json.loads(json.dumps(raw))
    for name, array in changed.items():
        name = name.replace("__", ".")
        if array is None:
            del raw["model"]["state"][name]
        else:
            raw["model"]["state"][name] = cgcnn_kernel.encode_array(array)
    return raw


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
    ({f"convs__{k}__fc_full__weight": np.zeros((128, 169), np.float32) for k in range(3, 9)},
     r"the model's n_conv is 9, more than the 6"),
], ids=["huge bias", "wrong weight", "missing buffer", "extra parameter", "too wide", "too deep"])
def test_the_reference_refuses_a_state_that_is_not_the_notebooks_network_before_any_arithmetic(monkeypatch, changed,
                                                                                               message):
    from cgcnn_grading import scoring
    heldout, raw = _heldout_and_model()
    assert scoring.heldout_mae(raw, None, heldout)[1] == ""  # the untouched state is scored

    def no_arithmetic(*args, **kwargs):
        raise AssertionError("reference.linear ran on a state that is not the notebook's network")
    monkeypatch.setattr(reference, "linear", no_arithmetic)
    mae, why = scoring.heldout_mae(_with_state(raw, **changed), None, heldout)
    assert mae is None and why.startswith("the model's parameters do not fit the CGCNN of the notebook: "), why
    assert re.search(message, why), why


def test_the_held_out_set_is_evaluated_in_chunks_of_whole_crystals_with_the_same_predictions():
    from cgcnn_grading import scoring
    heldout, raw = _heldout_and_model(12)
    state = {k: v.astype(np.float64) for k, v in checks_module.wire.decode(raw["model"])["state"].items()}
    parts = reference.split_batch(heldout.inputs, 40)
    assert len(parts) > 2 and sum(p["n_crystals"] for p in parts) == 12
    assert all(len(p["atom_fea"]) <= 40 or p["n_crystals"] == 1 for p in parts)
    whole = reference.cgcnn_forward(state, **heldout.inputs)
    assert np.abs(np.concatenate([reference.cgcnn_forward(state, **p) for p in parts]) - whole).max() < 1e-12
    mae, why = scoring.heldout_mae(raw, None, heldout)
    assert why == "" and mae == pytest.approx(np.mean(np.abs(whole * 0.5 - 2.5 - heldout.labels)), abs=1e-9)


def test_a_grader_failure_while_judging_shows_students_a_fixed_sentence_and_the_staff_the_detail():
    """Issue 24: an exception of the grader's own (here quoting a root-only file) was copied into a
    visible entry. Students read GRADER_FAILED; the exception reaches only extra_data, a hidden entry
    (never after_published) and the log."""
    import dataclasses
    from cgcnn_grading import scoring
    from cgcnn_grading.settings import Settings

    def judge(answers):
        raise KeyError("root:$6$secret-hash-from-etc-shadow")
    crashing = checks_module._check("q1a", "test_srtio3", False, [], judge)
    settings = Settings("cgcnn_perovskites", {"q1a": 2.0}, {}, [], 0.1, dataclasses.asdict(cgcnn_utils.GRAPH))
    results = scoring.score(settings, [crashing], {"q1a": {}}, {}, None, [])
    seen = [t for t in results["tests"] if t["visibility"] in ("visible", "after_published")]
    assert [t["name"] for t in seen] == ["q1a (public checks)", "q1a"]
    assert all("secret-hash" not in t["output"] and "KeyError" not in t["output"] for t in seen)
    assert f"test_srtio3: {checks_module.GRADER_FAILED}" in seen[0]["output"] and seen[1]["score"] == 0
    staff = [t for t in results["tests"] if t["visibility"] == "hidden"]
    assert [t["name"] for t in staff] == [scoring.STAFF_ENTRY] and "secret-hash" in staff[0]["output"]
    assert "KeyError" in results["extra_data"]["grader_errors"][0] and results["stdout_visibility"] == "hidden"
    assert "secret-hash" not in results["output"]
