"""Points, computed in the grading process from the verdicts of the master's tests (master_tests):
every part all or nothing over its tests (or by its tests' points, where its test file says so), part
4b in tiers of its test-set MAE (heldout); and the results.json Gradescope reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import heldout as heldout_set
from .master_tests import Part, Test, Verdict
from .wire import Tensor
from .settings import FORWARD_PARTS, MAE_QUESTION, MAE_TIERS, Settings

# Gradescope shows these entries (points, hidden verdicts, the test MAE) only once the course staff
# publish the grades: before that a submission cannot be used to probe the hidden tests or the test set.
PUBLISHED = "after_published"
# Never shown to students, published or not: the grader's own failures, for the course staff.
STAFF = "hidden"
STAFF_ENTRY = "grader errors (course staff only)"
UNREAD = ("the trained model could not be read: the probe's answer lacks the model's parameters, pooling or "
          "normalizer; keep `model` the CGCNN you trained and `normalizer` the notebook's Normalizer")


@dataclass
class PartAnswers:
    """What one part's probe learnt: each test's verdict, and for 4b the trained model (the kernel's
    decoded answer) or why it could not be read."""

    verdicts: list[Verdict] = field(default_factory=list)
    model: dict | None = None
    model_error: str | None = None
    pool: str | None = None  # "mean" or "max": what the model's pooling computes (heldout.pooling_of)
    pool_error: str = ""
    graph: dict | None = None  # the graph settings it trained with (heldout.graph_of)
    graph_note: str = ""


def _verdicts(tests: list[Test], answers: PartAnswers | None, missing: str | None) -> list[Verdict]:
    """Each test of one part with its verdict; a part whose probe never ran fails every test with the reason."""
    if answers is None:
        return [Verdict(test, f"not checked: {missing}") for test in tests]
    return answers.verdicts


def _line(verdict: Verdict) -> str:
    test = verdict.test
    where = f"a hidden test ({test.summary})" if test.hidden else test.name
    return f"{where}: {verdict.message}"


def _public_entry(question: str, verdicts: list[Verdict], not_checked: str | None) -> dict:
    """What a student sees at once: the public tests' verdicts, as the notebook's own tests give them.
    The hidden tests' verdicts and the part's points wait for publication (PUBLISHED), so that the
    hidden tests cannot be probed by resubmitting."""
    lines = [_line(v) if v.message else f"{v.test.name}: passed" for v in verdicts if not v.test.hidden]
    hidden = sum(v.test.hidden for v in verdicts)
    if hidden:
        lines.append(f"{hidden} hidden test{'s' if hidden > 1 else ''}: {'their' if hidden > 1 else 'its'} verdict and "
                     "this part's points are shown when grades are published.")
    failed = any(v.message for v in verdicts if not v.test.hidden)
    if not_checked:  # the answers never reached the grader: say why, whichever test would have said it
        lines, failed = [f"not checked: {not_checked}"], True
    return {"name": f"{question} (public checks)", "visibility": "visible", "status": "failed" if failed else "passed",
            "output": "\n".join(lines) or "This part has no public checks."}


def part_points(part: Part | None, verdicts: list[Verdict], points: float) -> float:
    """All or nothing (the part's test file says so), or the share of its tests' points that passed."""
    if not verdicts:
        return 0.0
    failed = [v for v in verdicts if v.message]
    if part is None or part.all_or_nothing or not sum(v.test.points for v in verdicts):
        return 0.0 if failed else float(points)
    share = sum(v.test.points for v in verdicts if not v.message) / sum(v.test.points for v in verdicts)
    return float(points) * share


def heldout_mae(answers: PartAnswers | None, missing: str | None, heldout, solution) -> tuple[float | None, str]:
    """The test-set MAE of the trained model as 4b's probe read it, or None and why not: its parameters,
    pooling and normalizer in the master's CGCNN (heldout.model_for) on the grader's own graphs of the
    held-out crystals. Nothing the kernel computes is a prediction."""
    if answers is None:
        return None, missing or "the check did not run"
    if answers.model is None:
        return None, f"the trained model could not be read: {answers.model_error}" if answers.model_error else UNREAD
    model = answers.model
    try:
        state, pool = model["state"], model.get("pool")
        mean, std = (float(x) for x in model["normalizer"])
        if not isinstance(state, dict) or not all(isinstance(v, (np.ndarray, Tensor)) for v in state.values()):
            return None, UNREAD
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, UNREAD
    state = {k: getattr(v, "array", v) for k, v in state.items()}
    pool = answers.pool
    if pool not in ("mean", "max"):
        return None, answers.pool_error or "the model's pooling could not be identified"
    try:  # shapes first: nothing is computed with a state that is not the notebook's network
        network = heldout_set.model_for(state, pool, solution, heldout.batches[0][0].shape[-1], heldout.edge_features)
    except heldout_set.StateError as err:
        return None, f"the model's parameters do not fit the CGCNN of the notebook: {err}"
    mae = heldout_set.mae(network, heldout, mean, std)
    if mae is None:
        return None, "the model's predictions for the held-out crystals are not all finite numbers"
    return mae, ""


def score(settings: Settings, parts: dict[str, Part], answers: dict[str, PartAnswers], missing: dict,
          heldout, solution, events: list[str]) -> dict:
    """results.json for Gradescope. Per part, two entries: the public tests' verdicts, visible at once,
    and the part's points with every verdict (hidden tests named by what they test, never their
    source), visible once grades are published. 4b's visible entry gives its tier, never the test MAE
    (no oracle to tune on): the MAE is the staff's, in `extra_data`, and the student's after publication.
    extra_data.tests names every test of the master with its verdict (the build's proof reads it)."""
    tests, extra, failed, staff, report = [], {}, [], [], {}
    for question, points in settings.points.items():
        part = parts.get(question)
        got, why = answers.get(question), missing.get(question, "the check did not run")
        verdicts = _verdicts(part.tests if part else [], got, why)
        staff += [v.staff for v in verdicts if v.staff]
        report[question] = {v.test.name: "passed" if v.message is None else f"failed: {v.message}"[:300]
                            for v in verdicts}
        failures = [_line(v) for v in verdicts if v.message]
        if question == MAE_QUESTION and got is None:
            failures = []  # the probe never ran: heldout_mae's first line says why (a stopped training)
        if question == MAE_QUESTION:
            network = [q for q in failed if q in FORWARD_PARTS]
            earned, output, seen = _mae_points(settings, failures, network, got, why, heldout, solution, extra)
            tests.append({"name": f"{question} (tier)", "visibility": "visible",
                          "status": "passed" if earned == points else "failed", "output": seen})
        else:
            earned = part_points(part, verdicts, points)
            output = ("All tests passed." if not failures else "\n".join(failures)) if verdicts else \
                "This part has no tests: the autograder cannot score it (ask the course staff)."
            tests.append(_public_entry(question, verdicts, why if got is None else None))
        failed += [question] if failures or not verdicts else []
        tests.append({"name": question, "score": earned, "max_score": float(points), "visibility": PUBLISHED,
                      "output": output})
    extra["tests"] = report
    if staff:  # the grader's own failures: the course staff's alone (never after_published)
        extra["grader_errors"] = staff
        tests.append({"name": STAFF_ENTRY, "visibility": STAFF, "output": "\n\n".join(staff)})
        print("grader errors (students read a fixed sentence):", *staff, sep="\n")
    total = sum(t.get("score", 0) for t in tests)
    return {"score": total, "tests": tests, "output": "\n".join(events), "extra_data": extra,
            "visibility": "visible", "stdout_visibility": "hidden"}


def _mae_points(settings, failures, network, answers, why, heldout, solution, extra) -> tuple[float, str, str]:
    """4b's points, the full account (published) and what the student sees before: the tier only."""
    gated = (f"4b evaluates your trained parameters in the grader's CGCNN, which is your network only when "
             f"parts {', '.join(FORWARD_PARTS)} pass; {', '.join(network)} did not. Fix "
             f"{'that part' if len(network) == 1 else 'those parts'} and your model's test MAE counts.")
    if failures:  # both reasons when both hold: fixing 4b's check alone would not get the model scored
        text = "\n".join(["Not scored: a check of this part failed.", *failures] + ([f"Also, {gated}"] if network else []))
        return 0.0, text, text
    if network:
        text = f"Not scored: {gated}"
        return 0.0, text, text
    mae, reason = heldout_mae(answers, why, heldout, solution)
    if mae is None:
        return 0.0, f"Not scored: {reason}", f"Not scored: {reason}"
    extra["test_mae"] = mae
    lines, tiers, got = [f"Test MAE {mae:.4f} eV/atom on {len(heldout.labels)} held-out crystals (your trained "
                         "parameters in the grader's CGCNN)."], [], 0.0
    if answers is not None and answers.graph_note:
        lines.append(answers.graph_note)
    for name, factor, points in MAE_TIERS:
        limit = factor * settings.mae_full
        passed = mae <= limit
        got += points if passed else 0
        lines.append(f"{name}: {'passed' if passed else 'failed'} (MAE {'<=' if passed else '>'} {limit:.3f}"
                     f" eV/atom: {points if passed else 0}/{points} points)")
        tiers.append(f"{name}: {'passed' if passed else 'failed'} ({points if passed else 0}/{points} points)")
    possible = sum(points for *_, points in MAE_TIERS)
    seen = "\n".join([f"Your trained model earns {got:g} of {possible:g} points on the held-out crystals."] + tiers + [
        "The test MAE itself is shown when grades are published: the held-out set grades your model once; "
        "choose settings on the validation set."])
    return float(got), "\n".join(lines), seen


def error_results(text: str, help_text: str, detail: str = "") -> dict:
    """results.json for a submission that could not be graded at all, with the reason; `detail` (the
    grader's own exception) for the course staff alone."""
    results = {"score": 0, "output": f"This submission could not be graded: {text}.\n\n{help_text}",
               "tests": [{"name": "Autograder Error", "score": 0, "max_score": 0, "visibility": "visible",
                          "output": f"This submission could not be graded: {text}.\n\n{help_text}"}],
               "stdout_visibility": "hidden"}
    if detail:
        results["extra_data"] = {"grader_errors": [detail]}
        results["tests"].append({"name": STAFF_ENTRY, "visibility": STAFF, "output": detail})
    return results
