"""What crosses from the kernel into the grading process (assignment/cgcnn_grading/wire.py) is read as
data only: answers tagged as objects are refused without importing anything, .npy headers are checked
before an array exists, nesting and size are capped before JSON decoding, and the honest solution's
answers stay far below every cap. In-process, in seconds."""

import base64
import io
import json
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from jupyter_client.session import Session

import cgcnn_kernel
import cgcnn_utils
from cgcnn_grading import checks as checks_module, wire
from test_checks import CHECKS, _namespace


def npy(header: dict | None = None, data: bytes = b"", array=None, allow_pickle=False) -> str:
    """base64 .npy text: of `array` as numpy writes it, or a hand-made header and data."""
    buffer = io.BytesIO()
    if array is not None:
        np.save(buffer, array, allow_pickle=allow_pickle)
    else:
        np.lib.format.write_array_header_1_0(buffer, header)
        buffer.write(data)
    return base64.b64encode(buffer.getvalue()).decode()


def deep(levels: int):
    value = []
    for _ in range(levels):
        value = [value]
    return value


# Answers: plain data, arrays checked before they exist ---------------------------------------------

@pytest.mark.parametrize("array", [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((0, 92)), np.array(3.5),
                                   np.array([True, False]), np.arange(4, dtype=np.uint8), np.arange(4, dtype=">i8"),
                                   np.asfortranarray(np.arange(12.0).reshape(3, 4)), np.float16([1, 2])],
                         ids=lambda a: f"{a.dtype}{a.shape}")
def test_honest_arrays_pass_unchanged(array):
    got = wire.decode({"__ndarray__": npy(array=array)})
    assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)


def test_plain_json_passes_and_errors_and_type_names_stay_as_they_are():
    value = {"output": [1, 2.5, None, True, "x"], "conv_types": ["GatedConv"], "nested": {"a": {"b": []}}}
    assert wire.decode(value) == value
    assert wire.decode({"__repr__": "Structure"}) == {"__repr__": "Structure"}
    assert wire.decode([{"__error__": "ValueError: x"}]) == [{"__error__": "ValueError: x"}]


def test_a_structure_answer_is_refused_without_importing_what_it_names(tmp_path, monkeypatch):
    """The attack of issue 24: {"__structure__": ...} went to Structure.from_dict, and monty imported
    the modules the site properties named, as root. A module that would leave a file when imported:
    refused, never imported."""
    marker = tmp_path / "imported"
    (tmp_path / "cgcnn_attack_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass X:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from pymatgen.core import Lattice, Structure
    crystal = Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]],
                        site_properties={"magmom": [{"@module": "cgcnn_attack_module", "@class": "X"}] * 2})
    for tag, payload in [("__structure__", crystal.as_dict()), ("__tensor__", npy(array=np.ones(2))),
                         ("__global__", "embedding"), ("__crystal__", {}), ("__class__", "os.system")]:
        with pytest.raises(wire.Refused, match=f"it is an object tagged '{tag}'; answers are numbers"):
            wire.decode({"atoms": [{tag: payload}]})
    raw = {"test_srtio3/0": {"__structure__": crystal.as_dict()}}
    with pytest.raises(checks_module.SubmissionError, match=r"the answer to 'test_srtio3/0' was refused: it is an "
                                                            r"object tagged '__structure__'.*do not change it"):
        checks_module.Answers(raw)["test_srtio3/0"]
    assert "cgcnn_attack_module" not in sys.modules and not marker.exists()
    # a tagged value must be the tag alone: no tag hidden beside data
    with pytest.raises(wire.Refused, match="tagged '__ndarray__'"):
        wire.decode({"__ndarray__": npy(array=np.ones(2)), "@module": "os"})


def test_an_npy_header_declaring_64_gib_is_refused_before_anything_is_allocated():
    text = npy({"descr": "<f8", "fortran_order": False, "shape": (2**33,)}, data=b"\0" * 16)
    tracemalloc.start()
    try:
        with pytest.raises(wire.Refused, match=r"its array's header declares 64 GiB \(shape \(8589934592,\), "
                                               r"float64\), over the 16 MiB an answer's array may hold"):
            wire.decode({"__ndarray__": text})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes allocated while refusing"
    with pytest.raises(checks_module.SubmissionError, match="declares 64 GiB"):
        checks_module.Answers({"a": {"__ndarray__": text}})["a"]


@pytest.mark.parametrize("text, message", [
    (npy(array=np.array([object(), 1], dtype=object), allow_pickle=True), r"dtype object; only bool, integer"),
    (npy(array=np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])), r"dtype \[\('a', '<f4'\), \('b', '<i4'\)\]"),
    (npy(array=np.array(["text"])), r"dtype <U4"),
    (npy(array=np.zeros(2, dtype=complex)), r"dtype complex128"),
    (npy(array=np.zeros(2, dtype=np.longdouble)), r"dtype float128"),
    (npy({"descr": "<f4", "fortran_order": False, "shape": (4,)}, data=b"\0" * 8), r"holds 8 bytes of data where "
                                                                                   r"its header declares 16"),
    (npy({"descr": "<f4", "fortran_order": False, "shape": (1,) * 40}, data=b"\0" * 4), r"at most 32 dimensions"),
    (base64.b64encode(b"\x93NUMPY\x09\x00" + b"\0" * 20).decode(), r"format version 9\.0"),
    (base64.b64encode(b"PK\x03\x04 not an array").decode(), r"not a readable \.npy array"),
    ("not base64!", r"not valid base64"),
    (12, r"not base64 text"),
])
def test_arrays_that_are_not_plain_numbers_are_refused_by_their_header(text, message):
    with pytest.raises(wire.Refused, match=message):
        wire.decode_array(text)


def test_nesting_and_size_are_capped_before_decoding():
    with pytest.raises(wire.Refused, match=f"nested more than {wire.ANSWER_DEPTH} levels deep"):
        wire.decode(deep(5000))  # no RecursionError: refused at the cap
    assert wire.answers_problem({"a": deep(5000)}) == f"its answers are nested more than {wire.ANSWER_DEPTH} levels deep"
    assert wire.answers_problem({"a": "x" * (wire.ANSWER_BYTES + 1)}).startswith("its answers hold more than")
    assert wire.answers_problem([1]) == "its answers are not a table of answers by request"
    assert wire.answers_problem({"a": deep(wire.ANSWER_DEPTH - 2), "b": [1.5, "x", None]}) is None


# Jupyter messages: refused before json.loads ---------------------------------------------------------

def test_frame_depth_counts_brackets_outside_strings():
    assert wire.frame_depth(b'{"a": [1, {"b": "[[[[{{{{"}], "c": "\\\\\\"[["}') == 3
    assert wire.frame_depth(b"[" * 5000 + b"]" * 5000) == 5000
    assert wire.frame_problem(b"[" * 5000 + b"]" * 5000) == f"a message nested 5000 levels deep (at most {wire.MESSAGE_DEPTH})"
    assert wire.frame_problem(b'"' + b"x" * wire.MESSAGE_BYTES + b'"').startswith("a message of 15.3 MiB (at most")


def _signed(session: Session, content: bytes) -> list[bytes]:
    """The frames of a display_data message as a kernel that holds the key sends them, its content
    packed by hand (a kernel may pack anything)."""
    msg = session.msg("display_data", {})
    frames = [session.pack(msg["header"]), session.pack({"msg_id": "cell-1"}), session.pack({}), content]
    return [session.sign(frames), *frames]


def test_the_grading_session_drops_a_message_too_deep_to_decode_and_says_why():
    """A kernel message nested 5,000 deep made jupyter_client's json.loads raise RecursionError in the
    grader (Autograder Error, 0 points): the guarded session drops it undecoded, and keeps reading."""
    guarded = wire.GuardedSession(key=b"secret")
    kernel = Session(key=b"secret")
    content = b'{"data": {"application/json": ' + b"[" * 5000 + b"]" * 5000 + b'}, "metadata": {}}'
    with pytest.raises(RecursionError):  # what an unguarded session does with it
        Session(key=b"secret").deserialize(_signed(kernel, content))
    msg = guarded.deserialize(_signed(kernel, content))
    assert msg["msg_type"] == wire.REFUSED and msg["parent_header"] == {} and msg["content"] == {}
    assert guarded.refused == [f"a message nested 5002 levels deep (at most {wire.MESSAGE_DEPTH})"]
    for bad in (b"\xff\xfe not utf-8", b'{"n": 1' + b"0" * 5000 + b"}"):  # bad text; an integer past Python's limit
        assert guarded.deserialize(_signed(kernel, bad))["msg_type"] == wire.REFUSED
    assert guarded.refused[1:] == ["a message that could not be read (JSONDecodeError)",
                                   "a message that could not be read (ValueError)"]
    honest = guarded.deserialize(_signed(kernel, b'{"data": {"text/plain": "[[1]]"}, "metadata": {}}'))
    assert honest["msg_type"] == "display_data" and honest["parent_header"]["msg_id"] == "cell-1"
    assert honest["content"]["data"]["text/plain"] == "[[1]]" and len(guarded.refused) == 3
    clone = guarded.clone()  # each kernel client's session is a clone of its manager's
    assert isinstance(clone, wire.GuardedSession) and clone.refused == []


# The honest answers, measured against the caps -------------------------------------------------------

def test_the_solutions_answers_are_far_below_every_cap():
    """4b's answer, the largest (the trained model's state dict, the notebook's default CGCNN), and
    every check's answers, as the probe's display_data frame: size, depth, largest array."""
    namespace = _namespace()
    torch.manual_seed(0)
    namespace["model"] = namespace["CGCNN"]()
    namespace["normalizer"] = cgcnn_utils.Normalizer([-2.0, -3.0])
    probes = {"q4b": [{"id": "model", "op": "trained_model"}]}
    for check in CHECKS:
        probes.setdefault(check.question, []).extend(check.requests)
    for name, requests in probes.items():
        answers = json.loads(json.dumps(cgcnn_kernel.answer(namespace, requests)))
        frame = json.dumps({"data": {cgcnn_kernel.MIME: {"probe": name, "answers": answers}}, "metadata": {},
                            "transient": {}}).encode()
        arrays = [len(base64.b64decode(v)) for v in _tagged(answers, "__ndarray__")]
        assert len(frame) < wire.MESSAGE_BYTES / 20 and wire.frame_depth(frame) <= wire.MESSAGE_DEPTH / 4, name
        assert max(arrays, default=0) < wire.ARRAY_BYTES / 100 and wire.answers_problem(answers) is None, name
        if name == "q4b":
            assert 300_000 < len(frame) < 600_000 and len(arrays) == 36, (len(frame), len(arrays))  # 0.45 MB
            assert max(arrays) == 128 * 169 * 4 + 128  # convs.k.fc_full.weight, with its .npy header
            assert wire.decode(answers["model"])["state"]["convs.0.fc_full.weight"].shape == (128, 169)


def _tagged(value, tag):
    if isinstance(value, dict):
        if tag in value:
            yield value[tag]
        for v in value.values():
            yield from _tagged(v, tag)
    elif isinstance(value, list):
        for v in value:
            yield from _tagged(v, tag)


def test_crystals_cross_as_arrays_and_arrive_as_the_same_structure():
    """Requests carry crystals as lattice, atomic numbers and fractional coordinates; the kernel builds
    the Structure that pymatgen's own dict round trip gives, site for site."""
    from pymatgen.core import Structure
    crystals = [arg for c in CHECKS for r in c.requests for arg in r.get("args", []) if isinstance(arg, dict)
                and "__crystal__" in arg]
    assert len(crystals) >= 8 and not any("__structure__" in json.dumps(c.requests) for c in CHECKS)
    for arg in crystals:
        built = cgcnn_kernel.decode(arg)
        again = Structure.from_dict(built.as_dict())
        assert np.array_equal(built.lattice.matrix, again.lattice.matrix)
        assert [s.specie.Z for s in built] == [s.specie.Z for s in again] == arg["__crystal__"]["species"]
        assert np.array_equal(built.frac_coords, cgcnn_kernel.decode_array(arg["__crystal__"]["frac_coords"]))
