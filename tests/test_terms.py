"""Per-term hidden inputs (`python build.py --term NAME`): a term's name reseeds the inputs of the
hidden tests of parts 1a to 4a (their `seeded` argument) and nothing else, so one term's leaked hidden
inputs and answers fail the next term's tests, while every catalogue submission of those parts keeps
its verdicts. Run in process (the master's tests against stand-ins whose requests a namespace of the
submission's definitions answers through JSON, as on the wire: test_master_tests.run), in seconds per
submission; the held-out set of 4b does not depend on the term, and the default term is graded end to
end by test_submissions.py."""

import json

import pytest

import submissions as S
from test_master_tests import PARTS, autograder, notebook, run
from test_notebook_tests import _case_definitions, _environment

TERMS = ("2026-fall", "2027-spring")  # two terms besides the default ("")


def requests_by_test(term: str, namespace: dict) -> dict[tuple, str]:
    """{(part, test name): every request its stand-ins sent, as JSON}, for the solution in `term`."""
    by_test = {}
    g = autograder()
    for question in PARTS:
        for test in g.parts[question].tests:
            log: list = []
            part = type(g.parts[question])(question, [test], True)
            run_one(part, namespace, term, log)
            by_test[(question, test.name)] = json.dumps([r for r, _ in log], sort_keys=True)
    return by_test


def run_one(part, namespace, term, log):
    from cgcnn_grading import master_tests, remote
    from test_master_tests import asker
    asker(namespace)({"op": "release"})  # handles numbered from 1, as at the start of a part
    return master_tests.run_part(part, remote.Link(asker(namespace, log)), autograder().solution,
                                 master_tests.seeded_factory(term))


@pytest.fixture(scope="module")
def by_term():
    namespace = notebook()
    return {term: requests_by_test(term, namespace) for term in ("", *TERMS)}


def test_a_term_reseeds_every_hidden_test_and_no_public_one(by_term):
    """What the hidden tests send the submission changes with the term; what the public ones send
    does not (they repeat the notebook's examples); and a term's inputs are the same every build."""
    hidden = {(t.question, t.name) for q in PARTS for t in autograder().parts[q].tests if t.hidden}
    for term in TERMS:
        for key, sent in by_term[""].items():
            assert (sent == by_term[term][key]) != (key in hidden), f"{term}: {key} ({'hidden' if key in hidden else 'public'})"
    assert requests_by_test(TERMS[0], notebook()) == by_term[TERMS[0]], "a term's inputs are the same every build"


class Leak:
    """A submission that answers every call it has seen before with the solution's recorded answer
    (what a leaked term's hidden inputs and answers would let a student hard-code), and fails any
    other call: a lookup table standing in for every function and class of the notebook."""

    def __init__(self, log: list):
        self.table: dict[str, list] = {}  # the same request may come twice (a layer built per mode)
        for request, answer in log:
            self.table.setdefault(json.dumps(request, sort_keys=True), []).append(answer)

    def ask(self, request: dict) -> dict:
        answers = self.table.get(json.dumps(json.loads(json.dumps(request)), sort_keys=True))
        if answers:
            return json.loads(json.dumps(answers.pop(0)))
        return {"__error__": {"type": "KeyError", "message": "not in the leaked table"}}


def test_last_terms_hidden_answers_fail_this_terms_hidden_tests():
    """The solution's answers to one term's hidden tests, replayed request by request, pass that
    term's hidden tests and fail the next term's, test by test."""
    from cgcnn_grading import master_tests, remote
    g, namespace = autograder(), notebook()
    for last, this in [("", TERMS[0]), (TERMS[0], TERMS[1])]:
        for question in PARTS:
            for test in (t for t in g.parts[question].tests if t.hidden):
                part = type(g.parts[question])(question, [test], True)
                log: list = []
                run_one(part, namespace, last, log)
                seeded = {term: master_tests.seeded_factory(term) for term in (last, this)}
                replay = master_tests.run_part(part, remote.Link(Leak(log).ask), g.solution, seeded[last])
                assert replay[0].message is None, f"{question} {test.name}: the replay passes its own term ({replay[0].message})"
                fresh = master_tests.run_part(part, remote.Link(Leak(log).ask), g.solution, seeded[this])
                assert fresh[0].message is not None, f"{question} {test.name}: last term's answers pass term {this!r}"


def _fails_outside_its_definitions(case) -> bool:
    """A case whose parts of 1a to 4a fail through a cell that defines nothing (its set-up cell), which
    this in-process test, running definition cells only, does not run: graded whole in test_submissions."""
    solution = _case_definitions(S.Case("solution", "alternative", "", lambda nb: None, S.full()))
    return _case_definitions(case) == solution and any(case.expected[p] < S.POINTS[p] for p in PARTS)


CASES = [c for c in S.CASES if c.category in ("wrong", "alternative") and c.edit is not None
         and not _fails_outside_its_definitions(c)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_catalogue_keeps_its_verdicts_of_parts_1a_to_4a_in_every_term(case):
    """A wrong or alternative catalogue submission passes exactly the parts of 1a to 4a that its
    expected scores give full points, with each term's hidden inputs as with the default's."""
    env = _environment(stub=False, defs=_case_definitions(case))
    env.setdefault("__name__", "notebook")
    want = {part: case.expected[part] == S.POINTS[part] for part in PARTS}
    got = {}
    for term in ("", *TERMS):
        answers = run(env, PARTS, term=term)
        got[term or "default"] = {q: not any(v.message for v in answers[q].verdicts) for q in PARTS}
    wrong = {term: {p: v[p] for p in PARTS if v[p] != want[p]} for term, v in got.items() if v != want}
    assert not wrong, f"{case.name} ({case.what}): parts whose verdict differs from the expected scores: {wrong}"
