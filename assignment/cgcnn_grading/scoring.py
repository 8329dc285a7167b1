"""Verdicts and points, computed in the grading process from the kernel's answers: every part all or
nothing over its checks, part 4b in tiers of its test-set MAE; and the results.json Gradescope reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference, wire
from .checks import GRADER_FAILED, Answers, Check, JudgeError
from .settings import FORWARD_PARTS, MAE_QUESTION, MAE_TIERS, Settings


@dataclass(frozen=True)
class Heldout:
    """The held-out crystals as the grader's CGCNN reads them (reference.batch) and their labels."""

    inputs: dict
    labels: np.ndarray  # eV/atom, in the order of the crystals in `inputs`

MESSAGE_CHARS = 600  # of one failed check's message: enough to act on, never a page of arrays
# Gradescope shows these entries (points, hidden verdicts, the test MAE) only once the course staff
# publish the grades: before that a submission cannot be used to probe the hidden tests or the test set.
PUBLISHED = "after_published"
# Never shown to students, published or not: the grader's own failures, for the course staff.
STAFF = "hidden"
STAFF_ENTRY = "grader errors (course staff only)"
HELDOUT_ATOMS = 256  # atoms per chunk of the held-out set in the reference CGCNN: bounded memory


def _verdicts(checks: list[Check], raw: dict | None, missing: str | None,
              staff: list[str] | None = None) -> list[tuple[Check, str | None]]:
    """Each check of one part with its failure, as a line a student can read (None: it passed). A part
    whose answers were never captured fails its first check with the reason. Where the grader itself
    failed, the student reads GRADER_FAILED and the failure is appended to `staff`."""
    if raw is None:
        return [(checks[0], f"not checked: {missing}")] if checks else []
    out, staff = [], [] if staff is None else staff
    for check in checks:
        try:
            check.judge(Answers(raw))
            out.append((check, None))
        except AssertionError as err:
            if isinstance(err, JudgeError):
                staff.append(err.detail)
            message = str(err).strip()[:MESSAGE_CHARS] or "(no message)"
            where = f"a hidden test ({check.summary})" if check.hidden else check.name
            out.append((check, f"{where}: {message}"))
        except Exception as err:  # noqa: BLE001 - a judge must not crash grading, nor show its exception
            staff.append(f"{check.question} {check.name}: {type(err).__name__}: {err}"[:2000])
            out.append((check, f"{check.name}: {GRADER_FAILED}"))
    return out


def _public_entry(question: str, verdicts: list[tuple[Check, str | None]], checks: list[Check],
                  not_checked: str | None) -> dict:
    """What a student sees at once: the public checks' verdicts, as the notebook's own tests give them.
    The hidden checks' verdicts and the part's points wait for publication (PUBLISHED), so that the
    hidden tests cannot be probed by resubmitting."""
    lines = [message or f"{check.name}: passed" for check, message in verdicts if not check.hidden]
    hidden = sum(check.hidden for check in checks)
    if hidden:
        lines.append(f"{hidden} hidden check{'s' if hidden > 1 else ''}: {'their' if hidden > 1 else 'its'} verdict and "
                     "this part's points are shown when grades are published.")
    failed = any(message for check, message in verdicts if not check.hidden)
    if not_checked:  # the answers never reached the grader: say why, whichever check would have said it
        lines, failed = [f"not checked: {not_checked}"], True
    return {"name": f"{question} (public checks)", "visibility": "visible", "status": "failed" if failed else "passed",
            "output": "\n".join(lines) or "This part has no public checks."}


def heldout_mae(raw: dict | None, missing: str | None, heldout: "Heldout") -> tuple[float | None, str]:
    """The test-set MAE of the trained model as the probe captured it at 4b's check, or None and why
    not: its parameters, pooling and normalizer evaluated in the grader's own CGCNN (reference.py) on
    the grader's own graphs of the held-out crystals. Nothing the kernel computes is a prediction."""
    if raw is None:
        return None, missing or "the check did not run"
    unread = ("the trained model could not be read: the probe's answer lacks the model's parameters, pooling or "
              "normalizer; keep `model` the CGCNN you trained and `normalizer` the notebook's Normalizer")
    try:
        model = Answers(raw)["model"]
        state, pool = model["state"], model.get("pool")
        mean, std = (float(x) for x in model["normalizer"])
        if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
            return None, unread
    except AssertionError as err:  # our own message: an exception in the kernel, a refused answer
        return None, f"the trained model could not be read: {err}"
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, unread
    conv = "gated" if any(".fc_full." in k for k in state) else "shared" if any(".fc_neighbor." in k for k in state) else "none"
    pool = {"mean_pool": "mean", "max_pool": "max"}.get(pool if isinstance(pool, str) else None)
    if pool is None:
        return None, f"the model's pool must be mean_pool or max_pool, not {str(model.get('pool'))[:80]!r}"
    inputs = heldout.inputs
    try:  # shapes first: nothing is computed with a state that is not the notebook's network
        reference.check_state(state, conv, np.shape(inputs["atom_fea"])[-1], np.shape(inputs["nbr_fea"])[-1])
    except reference.StateError as err:
        return None, f"the model's parameters do not fit the CGCNN of the notebook: {err}"
    state = {k: v.astype(np.float64) for k, v in state.items()}
    with np.errstate(all="ignore"):
        predictions = np.concatenate([reference.cgcnn_forward(state, **part, conv=conv, pool=pool)
                                      for part in reference.split_batch(inputs, HELDOUT_ATOMS)]) * std + mean
    if not np.all(np.isfinite(predictions)):
        return None, "the model's predictions for the held-out crystals are not all finite numbers"
    return float(np.mean(np.abs(predictions - heldout.labels))), ""


def score(settings: Settings, checks: list[Check], answers: dict, missing: dict,
          heldout: Heldout, events: list[str]) -> dict:
    """results.json for Gradescope. Per part, two entries: the public checks' verdicts, visible at once,
    and the part's points with every verdict (hidden checks named by what they test, never their
    source), visible once grades are published. 4b's visible entry gives its tier, never the test MAE
    (no oracle to tune on): the MAE is the staff's, in `extra_data`, and the student's after publication."""
    tests, extra, failed, staff = [], {}, [], []
    for question, points in settings.points.items():
        raw, why = answers.get(question), missing.get(question, "the check did not run")
        problem = wire.answers_problem(raw) if raw is not None else None
        if problem:  # measured before anything of it is decoded
            raw, why = None, f"the answers of this part's check were refused: {problem}"
        part_checks = [c for c in checks if c.question == question]
        verdicts = _verdicts(part_checks, raw, why, staff)
        failures = [message for _, message in verdicts if message]
        if question == MAE_QUESTION:
            network = [q for q in failed if q in FORWARD_PARTS]
            got, output, seen = _mae_points(settings, failures, network, raw, why, heldout, extra)
            tests.append({"name": f"{question} (tier)", "visibility": "visible",
                          "status": "passed" if got == points else "failed", "output": seen})
        else:
            got = 0.0 if failures else float(points)
            output = "All checks passed." if not failures else "\n".join(failures)
            tests.append(_public_entry(question, verdicts, part_checks, why if raw is None else None))
        failed += [question] if failures else []
        tests.append({"name": question, "score": got, "max_score": float(points), "visibility": PUBLISHED,
                      "output": output})
    if staff:  # the grader's own failures: the course staff's alone (never after_published)
        extra["grader_errors"] = staff
        tests.append({"name": STAFF_ENTRY, "visibility": STAFF, "output": "\n\n".join(staff)})
        print("grader errors (students read a fixed sentence):", *staff, sep="\n")
    total = sum(t.get("score", 0) for t in tests)
    return {"score": total, "tests": tests, "output": "\n".join(events), "extra_data": extra,
            "visibility": "visible", "stdout_visibility": "hidden"}


def _mae_points(settings, failures, network, raw, why, heldout, extra) -> tuple[float, str, str]:
    """4b's points, the full account (published) and what the student sees before: the tier only."""
    if failures:
        text = "Not scored: a check of this part failed.\n" + "\n".join(failures)
        return 0.0, text, text
    if network:
        text = (f"Not scored: 4b evaluates your trained parameters in the grader's CGCNN, which is your "
                f"network only when parts {', '.join(FORWARD_PARTS)} pass; {', '.join(network)} did not. "
                "Fix that part and your model's test MAE counts.")
        return 0.0, text, text
    mae, reason = heldout_mae(raw, why, heldout)
    if mae is None:
        return 0.0, f"Not scored: {reason}", f"Not scored: {reason}"
    extra["test_mae"] = mae
    lines, tiers, got = [f"Test MAE {mae:.4f} eV/atom on {len(heldout.labels)} held-out crystals (your trained "
                         "parameters in the grader's CGCNN)."], [], 0.0
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
