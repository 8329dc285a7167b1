"""The autograder against the catalogue of submissions in tests/submissions.py: every case is graded
once through Gradescope's entry point with the real autograder zip (two at a time, each as a grading
user of its own on a CPU of its own, the longest first), then checked part by part.

Most cases train with the short recipe (submissions.short_recipe); the cases whose point is part 4b's
tier train with the notebook's (`recipe="full"`), and three wait for a time limit (two for the CPU-time
limit of a cell, one for the wall-clock limit, beside the others), graded with the same zip stating
the short limits S.LIMITS (20 s of CPU, 90 s of wall-clock time per cell). The checks of the catalogue itself
take seconds. CGCNN_AUTOGRADER_ZIP=path grades the catalogue with another autograder zip (a candidate
release).
"""

import json
import math
import os
import re
from pathlib import Path

import pytest

import build
import submissions as S
from cgcnn_grading.settings import MAE_TIERS

MINIMUM = {"wrong": 25, "alternative": 6, "adversarial": 10, "malformed": 8, "determinism": 3}
# The six ways a submission could forge its grade (issue 11): each is tried on a hollow notebook
# (stubs only) and on an untrained model, and must score what the honest code underneath scores.
FINDINGS = ["forges_results", "reads_memory", "detached_forger", "pickles", "swaps_verdicts", "retrains_after_check"]
# a 4b tier edge must be at least this far from a recorded MAE, so that no CPU kind moves a case across it
EDGE_MARGIN = 2 * S.MAE_TOLERANCE
DIVERGED = 2.0  # eV/atom: above this a training has diverged, and only "diverged again" is repeatable


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """{case name: (results.json or the exception grading raised, seconds)}, every case graded once."""
    root = tmp_path_factory.mktemp("submissions")
    zip_path = Path(os.environ.get("CGCNN_AUTOGRADER_ZIP", build.AUTOGRADER_ZIP))
    done = S.grade_all(S.CASES, root, zip_path)
    summary = {name: {"seconds": round(sec), "test_mae": S.test_mae(r) if isinstance(r, dict) else None,
                      "scores": build.scores(r) if isinstance(r, dict) else repr(r)}
               for name, (r, sec) in done.items()}
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ngraded {len(done)} submissions; scores in {root / 'summary.json'}")
    return done


def test_catalogue_has_every_kind_of_case():
    names = [c.name for c in S.CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    for category, minimum in MINIMUM.items():
        assert sum(c.category == category for c in S.CASES) >= minimum, category
    for case in S.CASES:
        assert case.category in S.CATEGORIES and set(case.expected) == set(S.POINTS), case.name
        assert all(0 <= case.expected[q] <= p for q, p in S.POINTS.items()), case.name
        # a point lost to the short recipe's 4b needs no message of the case's own
        if case.category in ("adversarial", "malformed") and (case.stopped or (case.full_recipe or case.expected) != S.full()):
            assert case.message, f"{case.name}: which message in the results says why?"
    broken = {q for c in S.CASES if c.category == "wrong" for q in S.POINTS if c.expected[q] < S.POINTS[q]}
    assert broken == set(S.POINTS), f"parts no wrong submission breaks: {set(S.POINTS) - broken}"


def test_every_finding_is_tried_on_a_hollow_notebook_and_on_an_untrained_model():
    names = {c.name: c for c in S.CASES}
    for finding in FINDINGS:
        hollow, untrained = names[f"adv_{finding}_hollow"], names[f"adv_{finding}_untrained"]
        assert hollow.expected == S.zero() and hollow.message, hollow.name
        assert sum(untrained.expected.values()) == 23 and untrained.message, untrained.name


def test_every_edit_still_fits_the_solution(tmp_path):
    base = S.base_notebook()
    for case in S.CASES:
        assert S.write_upload(case, tmp_path / case.name, base).is_file()


def test_table_in_docs_matches_the_catalogue():
    assert S.DOC.is_file() and S.DOC.read_text() == S.table(), "run `python -m tests.submissions`"


@pytest.mark.grading
@pytest.mark.parametrize("case", S.CASES, ids=lambda c: c.name)
def test_submission_scores(graded, case):
    results, _ = graded[case.name]
    if isinstance(results, Exception):
        raise results
    got = build.scores(results)
    text = S.outputs(results)
    if case.graded:
        assert set(S.POINTS) <= set(got), f"parts missing from the results: {set(S.POINTS) - set(got)}\n{text[:2000]}"
    got = {q: float(got.get(q, 0.0)) for q in S.POINTS}
    wrong = {q: (got[q], case.expected[q]) for q in S.POINTS if abs(got[q] - case.expected[q]) > 1e-6}
    details = "\n".join(t.get("output", "") for t in results["tests"] if t.get("name") in wrong)
    assert not wrong, f"{case.what}\n(got, expected) per part: {wrong}\n{details[:3000]}"
    if case.message:
        assert re.search(case.message, text), f"results.json does not say {case.message!r}:\n{text[:3000]}"


@pytest.mark.grading
@pytest.mark.parametrize("case", [c for c in S.CASES if c.margin], ids=lambda c: c.name)
def test_the_case_keeps_half_of_every_time_limit_at_half_a_cpu(graded, case):
    """Issue 26: a form the notebook allows but does not teach (2b's literal concatenation, about twice
    the training time) still leaves the student a margin of 2x on every limit: its cells' CPU time in
    results.json (extra_data.cells), at Gradescope's half CPU."""
    results, _ = graded[case.name]
    if isinstance(results, Exception):
        raise results
    cells = results["extra_data"]["cells"]
    assert max(c["cpu_seconds"] for c in cells) > 10, "no cell trained: the case measures nothing"
    assert not S.over_half_limits(results), S.over_half_limits(results)


def _tier_edges() -> list[float]:
    calibration = json.loads((build.ASSIGNMENT / "calibration.json").read_text())
    return [factor * calibration["thresholds"]["mae_full"] for _, factor, _ in MAE_TIERS]


def test_no_recorded_mae_lies_near_a_tier_edge():
    """A case whose test MAE sits within EDGE_MARGIN of an edge of 4b's tiers would change its points
    on another CPU kind: such a case is moved away from the edge (another edit, or the short recipe)."""
    near = {name: (mae, edge) for name, mae in S.MEASURED_MAE.items() for edge in _tier_edges()
            if abs(mae - edge) < EDGE_MARGIN}
    assert not near, f"recorded test MAEs within {EDGE_MARGIN} eV/atom of a tier edge (MAE, edge): {near}"


def test_the_short_recipe_changes_the_epochs_and_the_training_crystals_and_nothing_else():
    cell = S._cell(S.base_notebook(), S.GRAPHS).source
    short = S.short_recipe(cell)
    cut = f'{S.TRAIN_IDS}[:{S.SHORT_TRAIN}]'
    assert short.count(S.SHORT_LINE) == 1 and S.RECIPE_LINE not in short and short.count(cut) == 3, short
    assert short.replace(S.SHORT_LINE, S.RECIPE_LINE).replace(cut, S.TRAIN_IDS) == cell
    with pytest.raises(S.CatalogueError, match="make short_recipe follow it"):
        S.short_recipe(cell.replace(S.RECIPE_LINE, "BATCH_SIZE, EPOCHS = 32, 60"))


def test_the_short_recipe_scores_no_point_of_4b():
    """The short recipe's model is far from 4b's loosest tier, so its cases expect 0 for 4b on any CPU."""
    short = [S.MEASURED_MAE[c.name] for c in S.CASES if c.category == "determinism"]
    assert short and all(c.recipe == "short" for c in S.CASES if c.category == "determinism")
    assert min(short) > max(_tier_edges()) + EDGE_MARGIN, (short, _tier_edges())


@pytest.mark.grading
@pytest.mark.parametrize("case", [c for c in S.CASES if c.name in S.MEASURED_MAE], ids=lambda c: c.name)
def test_the_recorded_test_mae_is_what_grading_measures(graded, case):
    results, _ = graded[case.name]
    measured, recorded = S.test_mae(results), S.MEASURED_MAE[case.name]
    assert measured is not None, f"{case.name}: no test MAE in the results"
    if recorded > DIVERGED:
        assert measured > DIVERGED, f"{case.name}: recorded as diverged ({recorded:.4g}), now {measured:.4g}"
        return
    assert S.same_mae(measured, recorded), \
        f"{case.name}: test MAE {measured:.4g}, the catalogue records {recorded:.4g} (update MEASURED_MAE)"


@pytest.mark.grading
def test_grading_is_deterministic(graded):
    runs = [graded[c.name][0] for c in S.CASES if c.category == "determinism"]
    assert len(runs) >= 3 and all(isinstance(r, dict) for r in runs)
    assert all(build.scores(r) == build.scores(runs[0]) for r in runs)
    maes = [S.test_mae(r) for r in runs]
    assert all(math.isclose(m, maes[0], rel_tol=0, abs_tol=1e-9) for m in maes), f"another model each time: {maes}"


def test_the_cases_stopped_by_a_time_limit_meet_the_limits_their_zip_states(tmp_path):
    """S.with_limits changes grading.json's limits and nothing else; the grader reads them from it (and
    the defaults from a zip that states none)."""
    import zipfile
    from cgcnn_grading.settings import SETTINGS_FILE, Limits, Settings
    short = S.with_limits(build.AUTOGRADER_ZIP, tmp_path / "short.zip")
    with zipfile.ZipFile(build.AUTOGRADER_ZIP) as a, zipfile.ZipFile(short) as b:
        assert a.namelist() == b.namelist()
        changed = [n for n in a.namelist() if a.read(n) != b.read(n)]
        assert changed == [SETTINGS_FILE], changed
        for name, z in (("released", a), ("short", b)):
            (tmp_path / name).mkdir()
            (tmp_path / name / SETTINGS_FILE).write_bytes(z.read(SETTINGS_FILE))
    assert Settings.load(tmp_path / "short").limits == S.LIMITS != Limits()
    assert Settings.load(tmp_path / "released").limits == Limits()
    raw = json.loads((tmp_path / "released" / SETTINGS_FILE).read_text())
    raw.pop("limits", None)  # an autograder built before the zip stated its limits
    (tmp_path / "released" / SETTINGS_FILE).write_text(json.dumps(raw))
    assert Settings.load(tmp_path / "released").limits == Limits()
