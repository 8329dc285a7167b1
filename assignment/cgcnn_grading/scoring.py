"""Verdicts and points, computed in the grading process from the kernel's answers: every part all or
nothing over its checks, part 4b in tiers of its test-set MAE; and the results.json Gradescope reads.
"""

from __future__ import annotations

import math

import numpy as np

from . import reference
from .checks import Answers, Check
from .settings import FORWARD_PARTS, MAE_QUESTION, MAE_TIERS, PREDICTION_TOLERANCE, Settings

MESSAGE_CHARS = 600  # of one failed check's message: enough to act on, never a page of arrays


def _verdicts(checks: list[Check], raw: dict | None, missing: str | None) -> list[str]:
    """The failures of one part's checks, as lines a student can read (empty: every check passed)."""
    failures = []
    for check in checks:
        if raw is None:
            failures.append(f"not checked: {missing}")
            break
        try:
            check.judge(Answers(raw))
        except AssertionError as err:
            message = str(err).strip()[:MESSAGE_CHARS] or "(no message)"
            where = f"a hidden test ({check.summary})" if check.hidden else check.name
            failures.append(f"{where}: {message}")
        except Exception as err:  # noqa: BLE001 - a judge must not crash grading; say it plainly
            failures.append(f"{check.name}: the grader could not judge the answer ({type(err).__name__}: {err})")
    return failures


def heldout_mae(raw: dict | None, missing: str | None, labels: dict[str, float],
                verify: bool) -> tuple[float | None, str]:
    """The test-set MAE of the model's predictions as the probe captured them, or None and why not.
    With `verify`, the predictions must be what the reference network computes from the model's
    parameters and input batches."""
    if raw is None:
        return None, f"not checked: {missing}"
    try:
        answer = Answers(raw)["predictions"]
        ids, values = list(answer["ids"]), np.asarray(answer["predictions"], dtype=float).reshape(-1)
    except AssertionError as err:
        return None, f"the trained model could not predict the held-out crystals: {err}"
    except (KeyError, TypeError, ValueError) as err:
        return None, f"the held-out predictions are not one number per crystal ({err})"
    predictions = dict(zip(ids, values))
    missing_ids = sorted(set(labels) - set(predictions))
    if missing_ids or len(ids) != len(values):
        return None, f"the model gave no prediction for {len(missing_ids)} held-out crystals"
    if not all(math.isfinite(predictions[i]) for i in labels):
        return None, "the model's predictions for the held-out crystals are not all finite numbers"
    if verify:
        worst = _recomputed_gap(answer, predictions)
        if worst is None or worst > PREDICTION_TOLERANCE:
            return None, ("the predictions are not what the trained network computes from its parameters"
                          + (f" (off by up to {worst:.3g} eV/atom)" if worst is not None else ""))
    return float(np.mean([abs(predictions[i] - y) for i, y in labels.items()])), ""


def _recomputed_gap(answer: dict, predictions: dict[str, float]) -> float | None:
    """The largest difference between the reported predictions and the reference network's, from the
    same parameters and input batches (None: they cannot be recomputed)."""
    try:
        state = {k: np.asarray(v, dtype=float) for k, v in answer["state"].items()}
        conv = "gated" if any(".fc_full." in k for k in state) else \
            "shared" if any(".fc_neighbor." in k for k in state) else "none"
        pool = {"mean_pool": "mean", "max_pool": "max"}[answer["pool"]]
        mean, std = (float(x) for x in answer["normalizer"])
        worst = 0.0
        for b in answer["batches"]:
            out = reference.cgcnn_forward(state, np.asarray(b["atom_fea"], float), np.asarray(b["nbr_fea"], float),
                                          np.asarray(b["nbr_idx"]), np.asarray(b["crystal_idx"]),
                                          int(b["n_crystals"]), conv=conv, pool=pool) * std + mean
            worst = max(worst, max(abs(predictions[i] - y) for i, y in zip(b["ids"], out)))
        return worst
    except Exception:  # noqa: BLE001 - anything malformed means: not recomputable
        return None


def score(settings: Settings, checks: list[Check], answers: dict, missing: dict,
          labels: dict[str, float], events: list[str]) -> dict:
    """results.json for Gradescope: one entry per part, the total, and what happened while grading."""
    tests, extra, failed = [], {}, set()
    for question, points in settings.points.items():
        raw, why = answers.get(question), missing.get(question, "the check did not run")
        failures = _verdicts([c for c in checks if c.question == question], raw, why)
        failed |= {question} if failures else set()
        if question == MAE_QUESTION:
            verify = not failed & set(FORWARD_PARTS)
            got, output = _mae_points(settings, failures, raw, why, labels, extra, verify)
        else:
            got = 0.0 if failures else float(points)
            output = "All checks passed." if not failures else "\n".join(failures)
        tests.append({"name": question, "score": got, "max_score": float(points), "visibility": "visible",
                      "output": output})
    total = sum(t["score"] for t in tests)
    return {"score": total, "tests": tests, "output": "\n".join(events), "extra_data": extra,
            "visibility": "visible", "stdout_visibility": "hidden"}


def _mae_points(settings, failures, raw, why, labels, extra, verify):
    if failures:
        return 0.0, "Not scored: a check of this part failed.\n" + "\n".join(failures)
    mae, reason = heldout_mae(raw, why, labels, verify)
    if mae is None:
        return 0.0, f"Not scored: {reason}"
    extra["test_mae"] = mae
    lines, got = [f"Test MAE {mae:.4f} eV/atom on {len(labels)} held-out crystals."], 0.0
    for name, factor, points in MAE_TIERS:
        limit = factor * settings.mae_full
        passed = mae <= limit
        got += points if passed else 0
        lines.append(f"{name}: {'passed' if passed else 'failed'} (MAE {'<=' if passed else '>'} {limit:.3f}"
                     f" eV/atom: {points if passed else 0}/{points} points)")
    return float(got), "\n".join(lines)


def error_results(text: str, help_text: str) -> dict:
    """results.json for a submission that could not be graded at all, with the reason."""
    return {"score": 0, "output": f"This submission could not be graded: {text}.\n\n{help_text}",
            "tests": [{"name": "Autograder Error", "score": 0, "max_score": 0, "visibility": "visible",
                       "output": f"This submission could not be graded: {text}.\n\n{help_text}"}]}
