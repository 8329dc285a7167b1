"""Per-term hidden inputs (`python build.py --term NAME`): a term's name reseeds the inputs of the
hidden checks of parts 1a to 4a and nothing else, so one term's leaked hidden inputs and answers fail
the next term's checks, while every catalogue submission of those parts keeps its verdicts. Judged
in-process (the checks' requests answered by the kernel half in a namespace of the submission's
definitions, through JSON as on the wire), in seconds per submission; the held-out set of 4b does not
depend on the term, and the default term is graded end to end by test_submissions.py."""

import json

import pytest

import build
import cgcnn_kernel
import submissions as S
from cgcnn_grading import checks as checks_module
from test_checks import EMBEDDING, PARTS, _namespace
from test_notebook_tests import _case_definitions, _environment

TERMS = ("2026-fall", "2027-spring")  # two terms besides the default ("")


def _verdicts(namespace: dict, checks) -> dict[str, bool]:
    """{part: every check passed} for parts 1a to 4a."""
    passed = {}
    for check in checks:
        wire = json.loads(json.dumps(cgcnn_kernel.answer(namespace, check.requests)))
        try:
            check.judge(checks_module.Answers(wire))
            ok = True
        except AssertionError:
            ok = False
        passed[check.question] = passed.get(check.question, True) and ok
    return passed


@pytest.fixture(scope="module")
def by_term():
    return {term: checks_module.checks(EMBEDDING, term) for term in ("", *TERMS)}


def test_a_term_reseeds_every_hidden_check_and_no_public_one(by_term):
    default = by_term[""]
    for term in TERMS:
        for before, after in zip(default, by_term[term]):
            assert (before.question, before.name, before.hidden) == (after.question, after.name, after.hidden)
            same = json.dumps(before.requests, sort_keys=True) == json.dumps(after.requests, sort_keys=True)
            assert same != before.hidden, f"{term}: {before.question} {before.name} ({'hidden' if before.hidden else 'public'})"
    assert json.dumps([c.requests for c in checks_module.checks(EMBEDDING, TERMS[0])], sort_keys=True) == \
        json.dumps([c.requests for c in by_term[TERMS[0]]], sort_keys=True), "a term's inputs are the same every build"


def test_last_terms_hidden_answers_fail_this_terms_hidden_checks(by_term):
    """The solution's answers to one term's hidden requests (what a leak would give a student to
    hard-code) pass that term's judges and fail the next term's, check by check."""
    namespace = _namespace()
    for last, this in [("", TERMS[0]), (TERMS[0], TERMS[1])]:
        for old, new in zip(by_term[last], by_term[this]):
            if not old.hidden:
                continue
            leaked = checks_module.Answers(json.loads(json.dumps(cgcnn_kernel.answer(namespace, old.requests))))
            old.judge(leaked)
            with pytest.raises(AssertionError):
                new.judge(leaked)


CASES = [c for c in S.CASES if c.category in ("wrong", "alternative") and c.edit is not None]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_catalogue_keeps_its_verdicts_of_parts_1a_to_4a_in_every_term(case, by_term):
    """A wrong or alternative catalogue submission passes exactly the parts of 1a to 4a that its
    expected scores give full points, with each term's hidden inputs as with the default's."""
    env = _environment(stub=False, defs=_case_definitions(case))
    want = {part: case.expected[part] == S.POINTS[part] for part in PARTS}
    got = {term or "default": _verdicts(env, checks) for term, checks in by_term.items()}
    wrong = {term: {p: v[p] for p in PARTS if v[p] != want[p]} for term, v in got.items() if v != want}
    assert not wrong, f"{case.name} ({case.what}): parts whose verdict differs from the expected scores: {wrong}"
