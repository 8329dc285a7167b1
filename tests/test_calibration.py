"""Part 4b's calibration (assignment/calibration.json, written by `python build.py calibrate`): full
credit must reward what the crystal graph adds, so it lies below every structure-blind baseline and
above the solution's worst seed by the margin; the table agrees with the data set it was measured on."""

import json
import math

import pytest

import baselines
import build

CALIBRATION = json.loads(build.CALIBRATION.read_text())
TABLE = CALIBRATION["baselines"]
THRESHOLDS = CALIBRATION["thresholds"]


def test_the_table_holds_every_baseline_over_at_least_three_seeds():
    for trained in ("solution", "no_convolution"):
        seeds = TABLE[trained]["seeds"]
        assert len(seeds) >= 3, f"{trained}: {len(seeds)} seeds, at least 3 wanted"
        values = list(seeds.values())
        assert TABLE[trained]["worst"] == pytest.approx(max(values), abs=1e-4)
        assert TABLE[trained]["mean"] == pytest.approx(sum(values) / len(values), abs=1e-4)
    for fitted in ("composition_ridge", "formula_lookup", "mean_predictor"):
        assert fitted in TABLE, f"{fitted} is missing from calibration.json's baselines"


def test_full_credit_lies_below_every_structure_blind_baseline():
    full = THRESHOLDS["mae_full"]
    blind = {"no convolution (best seed)": min(TABLE["no_convolution"]["seeds"].values()),
             "composition + ridge": TABLE["composition_ridge"]["test_mae"],
             "mean predictor": TABLE["mean_predictor"]["test_mae"]}
    if TABLE["formula_lookup"]["test_mae_on_covered"] is not None:
        blind["formula lookup"] = TABLE["formula_lookup"]["test_mae_on_covered"]
    above = {name: mae for name, mae in blind.items() if mae <= full}
    assert not above, f"full credit up to {full} eV/atom, yet structure-blind models reach {above}"


def test_full_credit_lies_above_the_solutions_worst_seed_by_the_margin():
    worst = max(CALIBRATION["seeds"].values())
    assert THRESHOLDS["mae_full"] >= build.MARGIN * worst - 1e-9
    assert THRESHOLDS["mae_full"] <= build.MARGIN * worst + 0.01, "rounded up to 0.01, no further"
    assert build.MARGIN > 1.0


def test_no_test_formula_can_be_looked_up_in_the_training_set():
    assert TABLE["formula_lookup"]["test_formulas_in_train"] == 0
    assert TABLE["formula_lookup"]["test_mae_on_covered"] is None


def test_the_structure_blind_baselines_are_those_of_the_committed_data():
    now = baselines.baselines()
    for key in ("composition_ridge", "mean_predictor"):
        assert math.isclose(TABLE[key]["test_mae"], now[key]["test_mae"], abs_tol=1e-4), \
            f"{key}: calibration.json says {TABLE[key]['test_mae']}, the data gives {now[key]['test_mae']}: " \
            "run `python build.py calibrate`"
    assert TABLE["units"].endswith(f"{now['n']['test']} crystals whose formulas are not in the training set")


def test_the_notebook_quotes_the_calibrated_numbers():
    student = (build.ROOT / "student" / build.NB_NAME).read_text()
    for key in ("mae_full", "mae_mean", "mae_solution", "mae_no_conv", "mae_composition"):
        assert f"{THRESHOLDS[key]:.3f}" in student, f"the student notebook does not quote {key}"
    assert "__MAE_" not in student, "a threshold placeholder was left unfilled"


def test_the_answers_cell_uses_only_names_the_solution_defines():
    """`python build.py answers` appends build.SAVE_TEST_PREDICTIONS to the executed solution: a name
    the master renamed would fail only after ten minutes of execution."""
    import ast
    import nbformat
    master = nbformat.read(build.MASTER, as_version=4)
    defined = {"json", "Path"}  # imported by the appended cell itself
    for cell in master.cells:
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                defined.update((a.asname or a.name).split(".")[0] for a in node.names)
    used = {node.id for node in ast.walk(ast.parse(build.SAVE_TEST_PREDICTIONS)) if isinstance(node, ast.Name)}
    assert used - defined - {"test_graphs", "test_batches"} == set(), "rename them in build.SAVE_TEST_PREDICTIONS"
