"""What each part must compute: the grader's checks, public and hidden, as inputs for the probe and
judges that compare the answers with reference code. Runs in the grading process only; this file
ships in the autograder and is never readable by the submission's user.

A check is one test of one part (`question`), named as the notebook's tests are named. `requests`
are what the kernel is asked (see `cgcnn_kernel` for the operations); `judge` receives the decoded
answers and raises AssertionError with a message a student can act on when an answer is wrong. The
public checks repeat the examples of the notebook's public tests (there for the student's feedback,
here for the grade), the hidden ones use inputs the public tests never show.
"""

from __future__ import annotations

import functools
import hashlib
import math
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cgcnn_kernel import encode_array

from . import reference, wire

# What a student reads when the grader itself fails while judging an answer; the failure goes to the
# course staff alone (JudgeError.detail: results.json's extra_data and the grader's log).
GRADER_FAILED = ("the grader could not judge this answer (a failure on the grader's side, reported to the course "
                 "staff): check that the function returns what the task asks (type, shape, dtype); if it does, "
                 "ask the course staff")


class SubmissionError(AssertionError):
    """The submission's code raised an exception instead of answering."""


class JudgeError(AssertionError):
    """A judge raised something other than its own AssertionError: students read GRADER_FAILED, the
    course staff read `detail` (which may quote the answer or the grader's code)."""

    def __init__(self, detail: str):
        super().__init__(GRADER_FAILED)
        self.detail = detail


class Answers:
    """The kernel's answers to one probe, by request id, decoded as data only (wire.decode); an answer
    that was an exception, or that is not data the grader reads, raises SubmissionError."""

    def __init__(self, raw: dict):
        self._raw = raw

    def __getitem__(self, request_id: str):
        if request_id not in self._raw:
            raise SubmissionError(f"no answer to {request_id!r}: the probe did not finish")
        value = self._raw[request_id]
        if isinstance(value, dict) and "__error__" in value:
            raise SubmissionError(f"your code raised {value['__error__']}")
        try:
            return wire.decode(value)
        except wire.Refused as err:
            raise SubmissionError(f"the answer to {request_id!r} was refused: {err} (the grader's probe, "
                                  "cgcnn_kernel, sends nothing else: do not change it)") from None


@dataclass(frozen=True)
class Check:
    question: str
    name: str
    hidden: bool
    requests: list[dict]
    judge: Callable[[Answers], None]
    # What a failing hidden check tells the student: the input family and property, not the source.
    summary: str = ""


# ---------------------------------------------------------------------------------------------
# Requests: what the kernel is asked
# ---------------------------------------------------------------------------------------------

EMBEDDING = {"__global__": "embedding"}  # the notebook's own element embedding


def _tensor(array) -> dict:
    return {"__tensor__": encode_array(np.asarray(array))}


def _crystal(structure) -> dict:
    """A crystal as arrays (the kernel builds the Structure): lattice matrix (3, 3) in A, atomic
    numbers (N,), fractional coordinates (N, 3). Sites without properties or partial occupancy."""
    return {"__crystal__": {"lattice": encode_array(structure.lattice.matrix),
                            "species": [site.specie.Z for site in structure],
                            "frac_coords": encode_array(structure.frac_coords)}}


def _call(id_: str, function: str, *args, grad_wrt: int | None = None, **kwargs) -> dict:
    return {"id": id_, "op": "call", "function": function, "args": list(args), "kwargs": kwargs,
            "grad_wrt": grad_wrt}


def _calls(name: str, function: str, cases) -> list[dict]:
    """One call of `function` per tuple of arguments, ids name/0, name/1, ...; crystals and arrays encoded."""
    def wire(v):
        return _crystal(v) if hasattr(v, "lattice") else encode_array(v) if isinstance(v, np.ndarray) else v
    return [_call(f"{name}/{k}", function, *map(wire, args)) for k, args in enumerate(cases)]


def _tensors(arrays) -> list[dict]:
    return [_tensor(a) for a in arrays]


def _module(id_: str, cls: str, state: dict, inputs: list, init=(), init_kwargs=None, mode="eval",
            grad_wrt: int | None = None) -> dict:
    return {"id": id_, "op": "module", "cls": cls, "init": list(init), "init_kwargs": init_kwargs or {},
            "state": _encoded(state), "mode": mode, "inputs": inputs, "grad_wrt": grad_wrt}


def _encoded(state: dict) -> dict:
    return {name: encode_array(array) for name, array in state.items()}


def _rng(seed: int, term: str = "") -> np.random.Generator:
    """The random inputs of a check: its seed alone, or for a hidden check with the course term's name
    mixed in (`python build.py --term NAME`), so that one term's leaked hidden inputs and answers are
    not the next term's. The public checks never take a term: they repeat the notebook's examples."""
    if not term:
        return np.random.default_rng(seed)
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(term.encode()).digest()[:8], "big")])


def _weights(shapes: dict, scale: float, term: str = "") -> dict[str, np.ndarray]:
    """Seeded by the name, as the notebook's tests seed them (and by the term, for hidden checks):
    N(0, scale), running variances 0.5 + |N(0, scale)|; float32."""
    weights = {}
    for name, shape in shapes.items():
        w = _rng(sum(ord(ch) * (i + 1) for i, ch in enumerate(name)), term).normal(0, scale, shape)
        weights[name] = (0.5 + np.abs(w) if "running_var" in name else w).astype(np.float32)
    return weights


def _batch(rng, sizes, m: int):
    """crystal_idx of a batch of crystals of `sizes` atoms, and M neighbours per atom inside its crystal."""
    c = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    return c, np.stack([start[c[i]] + rng.integers(0, sizes[c[i]], m) for i in range(len(c))])


def _srtio3(a: float = 3.905, species=("Sr", "Ti", "O", "O", "O")):
    from pymatgen.core import Lattice, Structure
    return Structure(Lattice.cubic(a), list(species), [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


# ---------------------------------------------------------------------------------------------
# Judges: answers made safe to compare
# ---------------------------------------------------------------------------------------------

def _describe(value) -> str:
    if isinstance(value, dict) and "__repr__" in value:
        return f"a {value['__repr__']}"
    return "None" if value is None else f"a {type(value).__name__}"


def _array(value, what: str, dtype=np.float64) -> np.ndarray:
    """The answer as an array (of `dtype`; as returned if None), AssertionError if it is not one. A
    single non-number (None, say) gives a 0-d array, for the judge's shape message."""
    try:
        out = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise AssertionError(f"{what} must be an array of numbers, not {_describe(value)}") from None
    if out.dtype == object and out.ndim:
        raise AssertionError(f"{what} must be an array of numbers, not {_describe(value)}")
    return out


def _gap(got: np.ndarray, want) -> float:
    """The largest |got - want|; inf when the shapes differ or a value is not finite."""
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf
    if got.size == 0:
        return 0.0
    gap = float(np.abs(got.astype(np.float64) - want).max())
    return gap if math.isfinite(gap) else math.inf


def _pair(value, what: str = "neighbor_list"):
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise AssertionError(f"{what} must return the pair (nbr_idx, nbr_dist), not {_describe(value)}")
    return _array(value[0], "nbr_idx", dtype=None), _array(value[1], "nbr_dist")


def _gradient(answers: Answers, request_id: str, what: str) -> np.ndarray:
    try:
        value = answers[request_id]
    except SubmissionError as err:
        raise SubmissionError(f"gradients must flow through {what}: {err}") from None
    grad = value.get("grad") if isinstance(value, dict) else None
    assert grad is not None, f"gradients must flow through {what}"
    return _array(grad, f"the gradient of {what}")


def _check(question: str, name: str, hidden: bool, requests: list[dict], judge, summary: str = "") -> Check:
    """A Check whose judge raises nothing but AssertionError, whatever the answers are: its own, with
    a message for the student, or JudgeError, whose exception text reaches the course staff alone."""
    @functools.wraps(judge)
    def guarded(answers: Answers) -> None:
        try:
            with np.errstate(all="ignore"):
                judge(answers)
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed answer is a wrong answer
            detail = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-3))
            raise JudgeError(f"{question} {name}: {detail[-2000:]}") from None
    return Check(question, name, hidden, requests, guarded, summary)


# ---------------------------------------------------------------------------------------------
# The checks, part by part, in the notebook's order
# ---------------------------------------------------------------------------------------------

def _q1a(embedding: dict, term: str) -> list[Check]:
    from pymatgen.core import Lattice, Structure

    def srtio3(answers):
        x = _array(answers["test_srtio3/0"], "atom_features", dtype=None)
        assert x.shape == (5, 92), f"expected one row of 92 features per atom, shape (5, 92); got {x.shape}"
        assert x.dtype == np.float32, f"expected float32, got {x.dtype}"
        for i, z in enumerate([38, 22, 8, 8, 8]):
            assert np.abs(x[i] - embedding[z]).max() < 1e-6, f"row {i} should be the vector of Z={z}"

    rng = _rng(7, term)
    s = Structure.from_spacegroup("Pnma", Lattice.orthorhombic(5.6, 7.7, 5.4), ["Gd", "Fe", "O", "O"],
                                  [[0.01, 0.25, 0.98], [0, 0, 0.5], [0.57, 0.25, 0.08], [0.29, 0.04, 0.71]])
    sites = list(s)
    crystals = [Structure.from_sites([sites[i] for i in rng.permutation(len(sites))]),
                Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [.5, .5, .5]])]

    def other_crystals(answers):
        for k, struct in enumerate(crystals):
            x = _array(answers[f"test_other_crystals/{k}"], "atom_features")
            ref = reference.atom_features(struct, embedding)
            assert x.shape == ref.shape, f"shape {x.shape}, expected {ref.shape}"
            assert _gap(x, ref) < 1e-6, "rows must follow the order of the sites"

    return [
        _check("q1a", "test_srtio3", False, _calls("test_srtio3", "atom_features", [(_srtio3(), EMBEDDING)]), srtio3),
        _check("q1a", "test_other_crystals", True,
               _calls("test_other_crystals", "atom_features", [(c, EMBEDDING) for c in crystals]), other_crystals,
               "rows must be the element vectors in the order of the sites, for a shuffled orthorhombic "
               "perovskite cell and a two-atom cubic cell"),
    ]


def _q1b(term: str) -> list[Check]:
    from collections import Counter
    from pymatgen.core import Lattice, Structure
    a = 3.905

    def shells(answers):
        idx, dist = _pair(answers["test_srtio3_shells/0"])
        assert idx.shape == (5, 12) and dist.shape == (5, 12), f"shapes {idx.shape}, {dist.shape}; expected (5, 12)"
        assert np.issubdtype(idx.dtype, np.integer), "nbr_idx must hold integer indices"
        assert np.all(np.diff(dist, axis=1) >= -1e-8), "each row of nbr_dist must be sorted, nearest first"
        assert np.abs(dist[1, :6] - a / 2).max() < 1e-3 and sorted(idx[1, :6]) == [2, 2, 3, 3, 4, 4], \
            "Ti (atom 1): its six O neighbours at a/2 come first"
        assert np.abs(dist[1, 6:] - a * 3 ** 0.5 / 2).max() < 1e-3 and set(idx[1, 6:]) == {0}, \
            "Ti (atom 1): after the six O, Sr at a*sqrt(3)/2"
        assert np.abs(dist[0] - a / 2 ** 0.5).max() < 1e-3 and sorted(idx[0]) == [2] * 4 + [3] * 4 + [4] * 4, \
            "Sr (atom 0): twelve O at a/sqrt(2)"

    def padding(answers):
        idx, dist = _pair(answers["test_padding/0"])
        assert idx.shape == (5, 12) and dist.shape == (5, 12), f"shapes {idx.shape}, {dist.shape}; expected (5, 12)"
        assert np.abs(dist[1, :6] - a / 2).max() < 1e-3, "Ti's six O neighbours come first"
        assert np.abs(dist[1, 6:] - 4.0).max() < 1e-6, "padding distance must be radius + 1.0"
        assert list(idx[1, 6:]) == [1] * 6, "padding must point to the atom itself"
        # O on (1/2, 1/2, 0): 2 Ti at a/2, then 12 atoms (4 Sr, 8 O) tied at a/sqrt(2): any 10 of them
        assert sorted(idx[2, :2]) == [1, 1] and np.abs(dist[2, 2:] - a / 2 ** 0.5).max() < 1e-3, \
            "O (atom 2): its two Ti at a/2 come first, then the atoms at a/sqrt(2)"
        assert set(idx[2, 2:]) <= {0, 3, 4}, "tied neighbours must be the Sr and O at a/sqrt(2)"

    rng = _rng(3, term)
    distorted = Structure.from_spacegroup("Pnma", Lattice.orthorhombic(5.5, 7.8, 5.45), ["La", "Mn", "O", "O"],
                                          [[0.03, 0.25, 0.99], [0, 0, 0.5], [0.49, 0.25, 0.07], [0.28, 0.04, 0.72]])
    for i in range(len(distorted)):  # break the symmetry: a fixed, seeded displacement of every atom
        distorted.translate_sites([i], rng.normal(0, 0.05, 3), frac_coords=False)
    sparse = Structure(Lattice.orthorhombic(9.0, 10.0, 11.0), ["Cs", "I"], [[0, 0, 0], rng.uniform(0.3, 0.7, 3)])
    cases = [(distorted, 6.0, 12), (_srtio3(4.0, ("Ba", "Zr", "O", "O", "O")), 5.0, 16), (sparse, 7.0, 8)]

    def against_reference(answers):
        for case, (s, radius, m) in enumerate(cases):
            idx, dist = _pair(answers[f"test_against_reference/{case}"])
            n = len(s)
            assert idx.shape == (n, m) and dist.shape == (n, m), f"shape {idx.shape}, expected {(n, m)}"
            for i, ref in enumerate(reference.sorted_neighbours(s, radius)):
                k = min(m, len(ref))
                ref_d = np.array([d for d, _ in ref])
                ref_i = np.array([j for _, j in ref], dtype=int)
                want = np.r_[ref_d[:k], np.full(m - k, radius + 1.0)]
                assert np.abs(dist[i] - want).max() < 1e-4, f"atom {i}: distances {dist[i]} != {want}"
                assert list(idx[i, k:]) == [i] * (m - k), f"atom {i}: padding must point to atom {i}"
                for d in np.unique(np.round(ref_d[:k], 4)):
                    shell = Counter(ref_i[np.abs(ref_d - d) < 1e-3])  # every neighbour at that distance
                    chosen = Counter(idx[i, :k][np.abs(want[:k] - d) < 1e-3])  # the ones the answer kept
                    assert not chosen - shell, f"atom {i}: neighbours {dict(chosen)} are not at {d:.3f} A"

    srtio3 = _srtio3(a)
    return [
        _check("q1b", "test_srtio3_shells", False, _calls("test_srtio3_shells", "neighbor_list", [(srtio3, 8.0, 12)]),
               shells),
        _check("q1b", "test_padding", False, _calls("test_padding", "neighbor_list", [(srtio3, 3.0, 12)]), padding),
        _check("q1b", "test_against_reference", True, _calls("test_against_reference", "neighbor_list", cases),
               against_reference, "distances, padding and tied neighbours must match pymatgen's, for a distorted "
                                  "orthorhombic perovskite, a cubic one with 16 neighbours and a sparse two-atom cell"),
    ]


def _q1c(term: str) -> list[Check]:
    def defaults(answers):
        g = _array(answers["test_defaults/0"], "gaussian_expand's result")
        assert g.shape == (3, 41), f"3 distances x 41 Gaussians expected, got {g.shape}"
        assert abs(g[0, 0] - 1) < 1e-6 and abs(g[1, 5] - 1) < 1e-6, "a distance on a centre gives 1"
        assert abs(g[1, 4] - np.exp(-1)) < 1e-6, "one step away from a centre gives exp(-1)"
        assert abs(g[2, 12] - np.exp(-0.25)) < 1e-6, "2.5 A is half a step from the centre at 2.4 A"
        g = _array(answers["test_defaults/1"], "gaussian_expand's result")
        assert g.shape == (2, 3, 41), "keep the input's shape"

    d = _rng(11, term).uniform(0.5, 7.0, size=(6, 5))
    # The last grid is one where (dmax - dmin) / step falls just below a whole number in floating point
    # (0.7 / 0.1 == 6.999999999999999), so that int() instead of round() loses a centre.
    grids = [(0.5, 6.0, 0.5, 0.3), (1.0, 5.0, 0.25, None), (0.0, 3.0, 0.1, 0.15), (0.0, 0.7, 0.1, None)]

    def other_grids(answers):
        for k, (dmin, dmax, step, var) in enumerate(grids):
            got = _array(answers[f"test_other_grids/{k}"], "gaussian_expand's result")
            want = reference.gaussian_expand(d, dmin, dmax, step, var)
            if got.ndim and got.shape[:-1] == want.shape[:-1] and got.shape[-1] != want.shape[-1]:
                raise AssertionError(
                    f"the number of Gaussians for dmin={dmin}, dmax={dmax}, step={step}: expected {want.shape[-1]}, "
                    f"got {got.shape[-1]} (the centres run from dmin to dmax inclusive; (dmax - dmin) / step is "
                    "not always an exact integer in floating point)")
            assert got.shape == want.shape, f"grid {dmin}..{dmax} step {step}: shape {got.shape}, expected {want.shape}"
            # 1e-5: a float32 expansion (correct: the task names no dtype) is off by up to 1.25e-6 over 200
            # draws of these inputs (1e-6 failed it for some terms' draws); a wrong formula is off by far more
            assert _gap(got, want) < 1e-5, f"values differ for grid {dmin}..{dmax} step {step} var {var}"

    default_calls = _calls("test_defaults", "gaussian_expand", [(np.array([0.0, 1.0, 2.5]),), (np.ones((2, 3)),)])
    grid_calls = [_call(f"test_other_grids/{k}", "gaussian_expand", encode_array(d), dmin=dmin, dmax=dmax, step=step,
                        var=var) for k, (dmin, dmax, step, var) in enumerate(grids)]
    return [
        _check("q1c", "test_defaults", False, default_calls, defaults),
        _check("q1c", "test_other_grids", True, grid_calls, other_grids,
               "values and the number of Gaussians must follow the formula on grids other than the default, with "
               "and without var, including one where (dmax - dmin) / step is just below a whole number in floating "
               "point"),
    ]


def _symmetry(question: str, cls: str, shapes: dict, n: int, m: int, f: int, b: int, seed: int) -> Check:
    """The public test of 2a and 2b: output shape, and atoms renumbered or neighbours reordered."""
    rng = np.random.default_rng(seed)
    x, e = rng.normal(size=(n, f)).astype(np.float32), rng.normal(size=(n, m, b)).astype(np.float32)
    idx = rng.integers(0, n, size=(n, m))
    perm, cols = rng.permutation(n), rng.permutation(m)
    inv = np.argsort(perm)
    name, what = "test_shape_and_symmetry", f"{cls}'s output"
    cases = {"out": (x, e, idx), "renumbered": (x[perm], e[perm], inv[idx[perm]]),
             "reordered": (x, e[:, cols], idx[:, cols])}

    def judge(answers):
        out = _array(answers[f"{name}/out"], what)
        assert out.shape == (n, f), f"output must have shape (N, F) = {(n, f)}, got {out.shape}"
        assert _gap(_array(answers[f"{name}/renumbered"], what), out[perm]) < 1e-5, \
            "renumbering the atoms must renumber the output"
        assert _gap(_array(answers[f"{name}/reordered"], what), out) < 1e-5, "neighbour order must not matter"

    state = _weights(shapes, 0.4)
    requests = [_module(f"{name}/{k}", cls, state, _tensors(args), init=[f, b]) for k, args in cases.items()]
    return _check(question, name, False, requests, judge)


def _conv_inputs(seed: int, n: int, m: int, f: int, b: int, term: str = ""):
    rng = _rng(seed, term)
    x, e = rng.normal(size=(n, f)).astype(np.float32), rng.uniform(size=(n, m, b)).astype(np.float32)
    return x, e, rng.integers(0, n, size=(n, m))


# The notebook's public small examples of 2a, 2b and 4a (`test_small_example`) and of 3
# (`test_interleaved_crystals_and_gradients`): the same inputs and weights, set by name, judged here
# against the reference. The notebook's own test names the likely mistake; this says where to look.
_SMALL = (np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=np.float32),  # 3 atoms, F = 2
          np.array([[[1.0], [0.5]], [[0.2], [0.2]], [[0.0], [1.5]]], dtype=np.float32),  # B = 1
          np.array([[1, 2], [0, 0], [1, 1]]))  # M = 2
_SEE_PUBLIC = "run this part's public tests in your notebook: their messages name the likely mistake"


def _float32(state: dict) -> dict[str, np.ndarray]:
    return {name: np.asarray(value, dtype=np.float32) for name, value in state.items()}


def _small_values(question: str, what: str, requests: list[dict], want: dict, tolerance: float = 1e-4):
    """A public small-example check: each request's answer against want[request id] within `tolerance`."""
    def judge(answers):
        for request_id, expected in want.items():
            got = _array(answers[request_id], what)
            expected = np.asarray(expected, dtype=np.float64)
            where = request_id.split("/", 1)[1]
            assert got.shape == expected.shape, f"{where}: shape {got.shape}, expected {expected.shape}"
            assert _gap(got, expected) < tolerance, (f"{where}: got {np.round(got, 4).tolist()}, expected "
                                                    f"{np.round(expected, 4).tolist()} (within {tolerance:g}); "
                                                    + _SEE_PUBLIC)
    return judge


def _small_shared() -> Check:
    w = _float32({"fc_neighbor.weight": [[0.5, -0.3, 0.2], [0.1, 0.4, -0.6]],
                  "fc_self.weight": [[0.7, 0.0], [-0.2, 0.3]], "fc_self.bias": [0.1, -0.2]})
    request = _module("test_small_example/out", "SharedConv", w, _tensors(_SMALL), init=[2, 1])
    want = {"test_small_example/out": reference.shared_conv(w, *_SMALL)}
    return _check("q2a", "test_small_example", False, [request], _small_values("q2a", "SharedConv's output", [request], want))


def _small_gated() -> Check:
    w = _float32({"fc_full.weight": [[0.3, -0.2, 0.5, 0.1, -0.4], [-0.1, 0.4, 0.2, -0.3, 0.6],
                                     [0.2, 0.1, -0.5, 0.4, 0.3], [0.6, -0.3, 0.1, 0.2, -0.2]],
                  "fc_full.bias": [0.1, -0.1, 0.2, 0.0]}
                 | {f"{bn}.{k}": np.full(d, v) for bn, d in (("bn1", 4), ("bn2", 2))
                    for k, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0))})
    requests = [_module(f"test_small_example/{mode} mode", "GatedConv", w, _tensors(_SMALL), init=[2, 1], mode=mode)
                for mode in ("eval", "train")]
    want = {f"test_small_example/{mode} mode": reference.gated_conv(w, *_SMALL, train=mode == "train")
            for mode in ("eval", "train")}
    return _check("q2b", "test_small_example", False, requests, _small_values("q2b", "GatedConv's output", requests, want))


def _interleaved_pools() -> Check:
    x = np.array([[1.0, -2.0], [3.0, -4.0], [5.0, 6.0], [-1.0, -3.0], [2.0, 0.5]], dtype=np.float32)
    c = np.array([1, 0, 1, 0, 2])  # not sorted
    pools = {"mean": ("mean_pool", reference.mean_pool, lambda: reference.mean_pool_grad(c, 3, 2)),
             "max": ("max_pool", reference.max_pool, lambda: reference.max_pool_grad(x, c, 3))}
    name = "test_interleaved_crystals_and_gradients"
    requests = ([_call(f"{name}/{kind}", function, *_tensors((x, c)), 3) for kind, (function, _, _) in pools.items()]
                + [_call(f"{name}/{kind}_grad", function, *_tensors((x, c)), 3, grad_wrt=0)
                   for kind, (function, _, _) in pools.items()])

    def judge(answers):
        for kind, (function, pool, grad) in pools.items():
            got, want = _array(answers[f"{name}/{kind}"], f"{function}'s result"), pool(x, c, 3)
            assert _gap(got, want) < 1e-6, (f"{kind} pooling gave {np.round(got, 4).tolist()} for crystal_idx "
                                            f"{c.tolist()}, expected {want.tolist()}: do not assume crystal_idx is sorted")
            got = _gradient(answers, f"{name}/{kind}_grad", f"{kind} pooling")
            assert _gap(got, grad()) < 1e-6, (f"{kind} pooling's gradient is {np.round(got, 4).tolist()}, expected "
                                              f"{grad().tolist()}")

    return _check("q3", name, False, requests, judge)


def _small_network() -> Check:
    """The notebook's public example, judged as 4a's hidden check judges: the head applied to the
    submission's own pooling of the embedded atoms (conv="none": no layers), so that a pooling mistake
    costs part 3, not this part too."""
    x = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=np.float32)
    c = np.array([0, 0, 1, 1, 1])  # sorted: part 3's checks cover unsorted indices
    idx, e = np.array([[1], [0], [3], [4], [2]]), np.zeros((5, 1, 1), dtype=np.float32)
    w = _float32({"embedding.weight": [[0.5, -1.0, 0.2], [0.3, 0.8, -0.6]], "embedding.bias": [0.1, -0.3],
                  "conv_to_fc.weight": [[1.2, -0.7], [0.4, 0.9]], "conv_to_fc.bias": [-0.5, 0.2],
                  "fc_out.weight": [[0.8, -1.1]], "fc_out.bias": [0.3]})
    kwargs = {"orig_atom_fea_len": 3, "nbr_fea_len": 1, "atom_fea_len": 2, "h_fea_len": 2, "conv": "none"}
    embedded = reference.linear(w, "embedding.", x).astype(np.float32)
    requests = [{"id": f"test_small_example/pool={pool}", "op": "cgcnn_stages", "init_kwargs": kwargs | {"pool": pool},
                 "state": _encoded(w), "inputs": [*_tensors((x, e, idx, c)), 2], "embedded": _tensor(embedded)}
                for pool in ("mean", "max")]

    def judge(answers):
        for request in requests:
            got, where = answers[request["id"]], request["id"].split("/", 1)[1]
            assert isinstance(got, dict) and "output" in got, f"{where}: the model gave no output"
            out = _array(got["output"], "CGCNN's output")
            pooled = _array(got["pooled"], "your pooling")
            assert out.shape == (2,), f"{where}: one prediction per crystal, shape (2,), expected; got {out.shape}"
            assert pooled.shape == (2, 2), f"{where}: your pooling gives shape {pooled.shape}, expected (2, 2)"
            want = reference.cgcnn_head(w, pooled)
            assert _gap(out, want) < 1e-4, (f"{where}: got {np.round(out, 4).tolist()}, expected "
                                            f"{np.round(want, 4).tolist()} (within 1e-4, from your own pooling); "
                                            + _SEE_PUBLIC)

    return _check("q4a", "test_small_example", False, requests, judge)


def _q2a(term: str) -> list[Check]:
    n, m, f, b = 9, 5, 6, 4
    w = _weights(reference.shared_shapes(f, b), 0.4, term)
    x, e, idx = _conv_inputs(5, n, m, f, b, term)

    def values(answers):
        got = _array(answers["test_values/x"], "SharedConv's output")
        want = reference.shared_conv(w, x, e, idx)
        assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
        assert _gap(got, want) < 1e-4, f"values differ from Eq. 3 by up to {_gap(got, want):.3g}"

    return [
        _symmetry("q2a", "SharedConv", reference.shared_shapes(5, 3), 7, 4, 5, 3, seed=0),
        _small_shared(),
        _check("q2a", "test_values", True, [_module("test_values/x", "SharedConv", w, _tensors((x, e, idx)), [f, b])],
               values, "values must match Eq. 3 for random weights, atom features and neighbours"),
    ]


def _q2b(term: str) -> list[Check]:
    n, m, f, b = 10, 4, 5, 3
    w = _weights(reference.gated_shapes(f, b), 0.5)  # the public backward check's inputs
    x, e, idx = _conv_inputs(9, n, m, f, b)
    hw = _weights(reference.gated_shapes(f, b), 0.5, term)  # the hidden values check's: the same unless a term is set
    hx, he, hidx = _conv_inputs(9, n, m, f, b, term)

    def values(answers):
        got_eval = _array(answers["test_values/eval"], "GatedConv's output")
        got_train = _array(answers["test_values/train"], "GatedConv's output")
        assert _gap(got_eval, reference.gated_conv(hw, hx, he, hidx, train=False)) < 1e-4, \
            "eval mode (running statistics) differs from Eq. 4"
        assert _gap(got_train, reference.gated_conv(hw, hx, he, hidx, train=True)) < 1e-4, \
            "train mode (batch statistics) differs from Eq. 4"

    requests = [_module(f"test_values/{mode}", "GatedConv", hw, _tensors((hx, he, hidx)), [f, b], mode=mode)
                for mode in ("eval", "train")]

    def backward(answers):
        # As in training: the layer's input is the output of another layer (not a leaf), and backward
        # runs through the whole layer in train mode. An in-place residual (atom_fea += ...) passes
        # every forward check and fails here, as it fails in the notebook's training.
        try:
            got = answers["test_backward/x"]
        except SubmissionError as err:
            raise AssertionError(_backward_failure("GatedConv", str(err))) from None
        grad = got.get("grad") if isinstance(got, dict) else None
        assert grad is not None, "backward through GatedConv gave no gradient for atom_fea: keep the computation in torch"
        grad = _array(grad, "the gradient of GatedConv's output")
        want = reference.numerical_gradient(lambda a: reference.gated_conv(w, a, e, idx, train=True), x)
        assert _gap(grad, want) < 1e-3, (f"the gradient of GatedConv's summed output with respect to atom_fea differs "
                                         f"from Eq. 4's (train mode) by up to {_gap(grad, want):.3g}")

    return [
        _symmetry("q2b", "GatedConv", reference.gated_shapes(6, 3), 8, 4, 6, 3, seed=1),
        _small_gated(),
        _check("q2b", "test_backward", False,
               [_module("test_backward/x", "GatedConv", w, _tensors((x, e, idx)), [f, b], mode="train", grad_wrt=0)],
               backward, "the gradient of the layer's summed output with respect to atom_fea, in train mode, as "
                         "training computes it"),
        _check("q2b", "test_values", True, requests, values,
               "values must match Eq. 4 in eval mode (running statistics) and in train mode (batch statistics), "
               "for random weights, atom features and neighbours"),
    ]


def _backward_failure(layer: str, error: str) -> str:
    """What a failed backward pass means, first; the error (trimmed) after."""
    error = error.removeprefix("your code raised ")
    if "inplace operation" in error or "in-place operation" in error:
        return (f"backward through {layer} failed: an in-place operation on the input (atom_fea += ... or "
                "atom_fea.add_(...)) breaks autograd, and training stops at its first batch; write "
                f"out = atom_fea + ... instead (torch: {error[:240]})")
    return f"backward through {layer} failed, as it would in training: {error[:400]}"


def _q3(term: str) -> list[Check]:
    pools = {"mean": "mean_pool", "max": "max_pool"}

    def small(answers):
        mean = _array(answers["test_small_example/mean"], "mean_pool's result")
        mx = _array(answers["test_small_example/max"], "max_pool's result")
        assert mean.shape == (2, 2) and mx.shape == (2, 2), "one row per crystal expected"
        assert _gap(mean, [[2.0, -3.0], [5.0, 6.0]]) < 1e-6, f"mean pooling gave {mean}"
        assert _gap(mx, [[3.0, -2.0], [5.0, 6.0]]) < 1e-6, f"max pooling gave {mx}"

    rng = _rng(21, term)
    sizes = [1, 5, 20, 3, 10, 2]
    c = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
    x = rng.normal(-1.0, 2.0, size=(len(c), 7)).astype(np.float32)  # the network's dtype
    order = rng.permutation(len(c))  # atoms of different crystals interleaved
    xo, co = x[order], c[order]

    def random_batches(answers):
        for kind, function in pools.items():
            got = _array(answers[f"test_random_batches/{kind}"], f"{function}'s result")
            want = (reference.mean_pool if kind == "mean" else reference.max_pool)(x, c, len(sizes))
            assert got.shape == want.shape and _gap(got, want) < 1e-5, f"{kind} pooling is wrong on a batch"
        grad = _gradient(answers, "test_random_batches/mean_grad", "mean pooling")
        assert np.isfinite(grad).all(), "gradients must flow through mean pooling"
        assert _gap(grad, reference.mean_pool_grad(co, len(sizes), 7)) < 1e-6, \
            "the gradient of mean pooling must be 1 / (number of atoms of the crystal) for every feature of an atom"
        grad = _gradient(answers, "test_random_batches/max_grad", "max pooling")
        assert _gap(grad, reference.max_pool_grad(xo, co, len(sizes))) < 1e-6, \
            "the gradient of max pooling must be 1 where an atom holds its crystal's maximum of a feature, 0 elsewhere"

    small_args = _tensors((np.array([[1.0, -2.0], [3.0, -4.0], [5.0, 6.0]], dtype=np.float32), np.array([0, 0, 1])))
    args = (*_tensors((xo, co)), len(sizes))
    return [
        _check("q3", "test_small_example", False,
               [_call(f"test_small_example/{k}", function, *small_args, 2) for k, function in pools.items()], small),
        _interleaved_pools(),
        _check("q3", "test_random_batches", True,
               [_call(f"test_random_batches/{k}", function, *args) for k, function in pools.items()]
               + [_call(f"test_random_batches/{k}_grad", function, *args, grad_wrt=0) for k, function in pools.items()],
               random_batches, "mean and max pooling, and their gradients, must be right on a batch of six "
                               "crystals of 1 to 20 atoms whose atoms are interleaved"),
    ]


def _q4a(term: str) -> list[Check]:
    rng = np.random.default_rng(2)
    sizes, m = [5, 10, 2], 6
    c, idx = _batch(rng, sizes, m)
    x, e = rng.random((len(c), 92)).astype(np.float32), rng.random((len(c), m, 41)).astype(np.float32)
    # Atoms renumbered within each crystal: crystal_idx stays sorted, so that this check of the assembly
    # does not depend on pooling unsorted indices right (q3 tests that; one mistake, one part).
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    perm = np.concatenate([s0 + rng.permutation(s) for s0, s in zip(start, sizes)])
    inv = np.argsort(perm)
    cases = {"out": (x, e, idx, c), "renumbered": (x[perm], e[perm], inv[idx[perm]], c[perm])}

    def invariance(answers):
        out = _array(answers["test_shape_and_invariance/out"], "CGCNN's output")
        assert out.shape == (3,), f"one prediction per crystal, shape (3,), expected; got {out.shape}"
        out_p = _array(answers["test_shape_and_invariance/renumbered"], "CGCNN's output")
        assert _gap(out_p, out) < 1e-5, \
            "the prediction must not depend on how the atoms of a crystal are numbered"

    state = _weights(reference.cgcnn_shapes(16, 2, 24), 0.3)
    invariance_requests = [_module(f"test_shape_and_invariance/{k}", "CGCNN", state, [*_tensors(args), 3],
                                   init_kwargs={"atom_fea_len": 16, "n_conv": 2, "h_fea_len": 24})
                           for k, args in cases.items()]

    rng = _rng(4, term)
    sizes, (m, f, h, b) = [3, 6, 1, 4], (5, 8, 12, 41)
    c, idx = _batch(rng, sizes, m)
    x, e = rng.uniform(size=(len(c), 92)).astype(np.float32), rng.uniform(size=(len(c), m, b)).astype(np.float32)
    layer_type = {"gated": "GatedConv", "shared": "SharedConv", "none": None}
    options = [("gated", "mean"), ("shared", "max"), ("none", "mean")]
    weights = {conv: _weights(reference.cgcnn_shapes(f, 2, h, b, conv), 0.3, term) for conv, _ in options}

    def values(answers):
        for conv, pool in options:
            got, where = answers[f"test_values/{conv}_{pool}"], f"conv={conv}, pool={pool}"
            assert isinstance(got, dict) and isinstance(got.get("conv_types"), list), f"conv={conv}: no model answered"
            types = got["conv_types"]
            n_layers = 0 if layer_type[conv] is None else 2
            assert len(types) == n_layers, f"conv={conv}: {len(types)} layers, expected n_conv"
            assert all(t == layer_type[conv] for t in types), f"conv={conv}: layers {types}"
            out = _array(got["output"], "CGCNN's output")
            assert out.shape == (len(sizes),), f"{where}: shape {out.shape}, expected {(len(sizes),)}"
            # The head applied to the submission's own layers (2a, 2b) and pooling (3): a mistake there
            # costs the points of that part, not these as well.
            pooled = _array(got["pooled"], "your layers and pooling")
            assert pooled.shape == (len(sizes), f), \
                f"{where}: your own layers and pooling give shape {pooled.shape}, expected {(len(sizes), f)}"
            want = reference.cgcnn_head(weights[conv], pooled)
            assert _gap(out, want) < 1e-3, f"{where}: predictions differ from the recipe"

    def stages(conv: str, pool: str) -> dict:
        embedded = reference.linear(weights[conv], "embedding.", x).astype(np.float32)
        return {"id": f"test_values/{conv}_{pool}", "op": "cgcnn_stages",
                "init_kwargs": {"atom_fea_len": f, "n_conv": 2, "h_fea_len": h, "conv": conv, "pool": pool},
                "state": _encoded(weights[conv]), "inputs": [*_tensors((x, e, idx, c)), len(sizes)],
                "embedded": _tensor(embedded)}

    return [
        _check("q4a", "test_shape_and_invariance", False, invariance_requests, invariance),
        _small_network(),
        _check("q4a", "test_values", True, [stages(conv, pool) for conv, pool in options], values,
               "for each conv and pool option, with random weights: n_conv layers of the chosen type, and predictions "
               "that apply the head (softplus, conv_to_fc, softplus, fc_out) to your own layers and pooling"),
    ]


def checks(embedding: dict[int, np.ndarray], term: str = "") -> list[Check]:
    """Every check of parts 1a to 4a, in the notebook's order; the same requests on every call.
    `embedding` is the grader's copy of the element embedding ({Z: 92 float32}), for the judges;
    `term` (grading.json, from `python build.py --term NAME`) reseeds the hidden checks' inputs."""
    return (_q1a(embedding, term) + _q1b(term) + _q1c(term) + _q2a(term) + _q2b(term) + _q3(term)
            + _q4a(term))
