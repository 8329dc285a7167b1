"""The autograder against the catalogue of submissions in tests/submissions.py: every case is graded
once with the real autograder zip (two at a time, the longest first), then checked part by part.

About 30 minutes on a 2-core machine: most cases re-run the one-minute training, and two cases wait
for the grader's time limit per cell. The checks of the catalogue itself take seconds.
CGCNN_AUTOGRADER_ZIP=path grades the catalogue with another autograder zip (a candidate release).

Every worker is pinned to one CPU (in turn), which its gradings inherit: torch then trains on one
thread (cgcnn_utils.fit uses the CPUs the process may run on), as on Gradescope's fraction of a CPU.
Unpinned, two gradings at a time with torch's thread per CPU oversubscribe the cores, and OpenMP's
waiting threads slowed one training from under a minute to over eight (measured here), enough to
reach the grader's time limit.
"""

import itertools
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import harness
import submissions as S

WORKERS = 2
MINIMUM = {"wrong": 25, "alternative": 6, "adversarial": 10, "malformed": 8, "determinism": 3}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """{case name: (results.json or the exception grading raised, seconds)}, every case graded once:
    the cases a time limit stops on threads of their own from the start (they mostly wait), the
    others two at a time, the longest first."""
    root = tmp_path_factory.mktemp("submissions")
    base = S.base_notebook()
    zip_path = S.autograder(root / "autograder", Path(os.environ.get("CGCNN_AUTOGRADER_ZIP", harness.AUTOGRADER_ZIP)))

    def run(case):
        start = time.perf_counter()
        try:
            outcome = S.grade(case, root / case.name, zip_path, base)
        except Exception as err:  # noqa: BLE001 - reported by the case's own test
            outcome = err
        return outcome, time.perf_counter() - start

    cpus, lock, turn = sorted(os.sched_getaffinity(0)), threading.Lock(), itertools.count()

    def pin():  # a worker thread's affinity passes to the processes it starts
        with lock:
            os.sched_setaffinity(0, {cpus[next(turn) % len(cpus)]})

    start = time.perf_counter()
    waiting = [c for c in S.CASES if c.stopped]
    with pytest.MonkeyPatch.context() as env, ThreadPoolExecutor(len(waiting) or 1, initializer=pin) as slow, \
            ThreadPoolExecutor(WORKERS, initializer=pin) as pool:
        env.setenv("OMP_NUM_THREADS", "1")
        futures = {c.name: slow.submit(run, c) for c in waiting}
        futures |= {c.name: pool.submit(run, c) for c in sorted(S.CASES, key=lambda c: -c.seconds) if not c.stopped}
        done = {name: f.result() for name, f in futures.items()}
    summary = {name: {"seconds": round(sec), "scores": harness.scores(r) if isinstance(r, dict) else repr(r)}
               for name, (r, sec) in done.items()}
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ngraded {len(done)} submissions in {time.perf_counter() - start:.0f} s; scores in {root / 'summary.json'}")
    return done


def test_catalogue_has_every_kind_of_case():
    names = [c.name for c in S.CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    for category, minimum in MINIMUM.items():
        assert sum(c.category == category for c in S.CASES) >= minimum, category
    for case in S.CASES:
        assert case.category in S.CATEGORIES and set(case.expected) == set(S.POINTS), case.name
        assert all(0 <= case.expected[q] <= p for q, p in S.POINTS.items()), case.name
        if case.category in ("adversarial", "malformed") and (case.stopped or case.expected != S.full()):
            assert case.message, f"{case.name}: which message in the results says why?"
    broken = {q for c in S.CASES if c.category == "wrong" for q in S.POINTS if c.expected[q] < S.POINTS[q]}
    assert broken == set(S.POINTS), f"parts no wrong submission breaks: {set(S.POINTS) - broken}"


def test_every_edit_still_fits_the_solution(tmp_path):
    base = S.base_notebook()
    for case in S.CASES:
        assert S.write_upload(case, tmp_path / case.name, base).is_file()


def test_table_in_docs_matches_the_catalogue():
    assert S.DOC.is_file() and S.DOC.read_text() == S.table(), "run `python tests/submissions.py`"


@pytest.mark.parametrize("case", S.CASES, ids=lambda c: c.name)
def test_submission_scores(graded, case):
    results, _ = graded[case.name]
    if isinstance(results, Exception):
        raise results
    got = harness.scores(results)
    text = S.outputs(results)
    if case.graded:
        assert set(S.POINTS) <= set(got), f"parts missing from the results: {set(S.POINTS) - set(got)}\n{text[:2000]}"
    got = {q: float(got.get(q, 0.0)) for q in S.POINTS}
    wrong = {q: (got[q], case.expected[q]) for q in S.POINTS if abs(got[q] - case.expected[q]) > 1e-6}
    details = "\n".join(t.get("output", "") for t in results["tests"] if t.get("name") in wrong)
    assert not wrong, f"{case.what}\n(got, expected) per part: {wrong}\n{details[:3000]}"
    if case.message:
        assert re.search(case.message, text), f"results.json does not say {case.message!r}:\n{text[:3000]}"


def test_grading_is_deterministic(graded):
    runs = [graded[c.name][0] for c in S.CASES if c.category == "determinism"]
    assert len(runs) >= 3 and all(isinstance(r, dict) for r in runs)
    assert all(harness.scores(r) == harness.scores(runs[0]) for r in runs)
