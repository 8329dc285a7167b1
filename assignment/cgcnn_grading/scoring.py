"""Verdicts and points, computed in the grading process from the kernel's answers: every part all or
nothing over its checks, part 4b in tiers of its test-set MAE; and the results.json Gradescope reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference
from .checks import Answers, Check
from .settings import FORWARD_PARTS, MAE_QUESTION, MAE_TIERS, Settings


@dataclass(frozen=True)
class Heldout:
    """The held-out crystals as the grader's CGCNN reads them (reference.batch) and their labels."""

    inputs: dict
    labels: np.ndarray  # eV/atom, in the order of the crystals in `inputs`

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


def heldout_mae(raw: dict | None, missing: str | None, heldout: "Heldout") -> tuple[float | None, str]:
    """The test-set MAE of the trained model as the probe captured it at 4b's check, or None and why
    not: its parameters, pooling and normalizer evaluated in the grader's own CGCNN (reference.py) on
    the grader's own graphs of the held-out crystals. Nothing the kernel computes is a prediction."""
    if raw is None:
        return None, missing or "the check did not run"
    try:
        model = Answers(raw)["model"]
        state = {k: np.asarray(v, dtype=float) for k, v in model["state"].items()}
        mean, std = (float(x) for x in model["normalizer"])
    except AssertionError as err:
        return None, f"the trained model could not be read: {err}"
    except (KeyError, TypeError, ValueError) as err:
        return None, f"the trained model could not be read ({type(err).__name__}: {err})"
    conv = "gated" if any(".fc_full." in k for k in state) else "shared" if any(".fc_neighbor." in k for k in state) else "none"
    pool = {"mean_pool": "mean", "max_pool": "max"}.get(model.get("pool"))
    if pool is None:
        return None, f"the model's pool must be mean_pool or max_pool, not {model.get('pool')!r}"
    try:
        with np.errstate(all="ignore"):
            predictions = reference.cgcnn_forward(state, **heldout.inputs, conv=conv, pool=pool) * std + mean
    except (KeyError, ValueError, IndexError) as err:
        return None, (f"the model's parameters do not fit the CGCNN of the notebook ({type(err).__name__}: {err}); "
                      "keep the layer names and shapes of the class you were given")
    if not np.all(np.isfinite(predictions)):
        return None, "the model's predictions for the held-out crystals are not all finite numbers"
    return float(np.mean(np.abs(predictions - heldout.labels))), ""


def score(settings: Settings, checks: list[Check], answers: dict, missing: dict,
          heldout: Heldout, events: list[str]) -> dict:
    """results.json for Gradescope: one entry per part, the total, and what happened while grading."""
    tests, extra, failed = [], {}, []
    for question, points in settings.points.items():
        raw, why = answers.get(question), missing.get(question, "the check did not run")
        failures = _verdicts([c for c in checks if c.question == question], raw, why)
        if question == MAE_QUESTION:
            network = [q for q in failed if q in FORWARD_PARTS]
            got, output = _mae_points(settings, failures, network, raw, why, heldout, extra)
        else:
            got = 0.0 if failures else float(points)
            output = "All checks passed." if not failures else "\n".join(failures)
        failed += [question] if failures else []
        tests.append({"name": question, "score": got, "max_score": float(points), "visibility": "visible",
                      "output": output})
    total = sum(t["score"] for t in tests)
    return {"score": total, "tests": tests, "output": "\n".join(events), "extra_data": extra,
            "visibility": "visible", "stdout_visibility": "hidden"}


def _mae_points(settings, failures, network, raw, why, heldout, extra):
    if failures:
        return 0.0, "Not scored: a check of this part failed.\n" + "\n".join(failures)
    if network:
        return 0.0, (f"Not scored: 4b evaluates your trained parameters in the grader's CGCNN, which is your "
                     f"network only when parts {', '.join(FORWARD_PARTS)} pass; {', '.join(network)} did not. "
                     "Fix that part and your model's test MAE counts.")
    mae, reason = heldout_mae(raw, why, heldout)
    if mae is None:
        return 0.0, f"Not scored: {reason}"
    extra["test_mae"] = mae
    lines, got = [f"Test MAE {mae:.4f} eV/atom on {len(heldout.labels)} held-out crystals (your trained "
                  "parameters in the grader's CGCNN)."], 0.0
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
