"""What crosses from the kernel into the grading process (assignment/cgcnn_grading/wire.py) is read as
data only: cgcnn_kernel's tags decode to their types after their fields are checked, any other object
(an untagged dict included) is refused without importing anything, .npy headers are checked before an
array exists, nesting and size are capped before JSON decoding, and the honest solution's answers, as
the master's tests ask for them through stand-ins, stay far below every cap. In-process, in seconds."""

import base64
import io
import json
import math
import re
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from jupyter_client.session import Session

import cgcnn_kernel
from cgcnn_grading import master_tests, remote, wire
from test_master_tests import PARTS, asker, autograder, notebook, run


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


def test_plain_json_numbers_strings_and_lists_pass_as_they_are():
    value = [1, 2.5, None, True, "x", [[], ["GatedConv"]], -0.0, 10**30]
    assert wire.decode(value) == value and wire.decode("text") == "text" and wire.decode(None) is None


@pytest.mark.parametrize("value, message", [
    ({"output": [1, 2.5], "conv_types": ["GatedConv"]}, r"it is an object \(keys 'output', \.\.\.\); answers are numbers, "
                                                       r"strings, lists, arrays and the tagged values of cgcnn_kernel only"),
    ({}, r"it is an object \(keys '', \.\.\.\)"),
    ({"__repr__": "Structure"}, r"it is an object \(keys '__repr__'"),
    ([1, {"__error__": "ValueError: x"}], r"it is an object \(keys '__error__'"),
    ({"__tuple__": [{"a": 1}]}, r"it is an object \(keys 'a'"),
    (3 + 4j, r"it holds a complex, which is not JSON data"),
], ids=["untagged dict", "empty dict", "__repr__", "__error__ inside a value", "untagged inside a tuple", "complex"])
def test_an_untagged_object_is_refused_wherever_it_is(value, message):
    """Answers are data; the old __repr__ and __error__-in-a-value forms are gone with the checks that
    read them: an exception is the whole answer ({"__error__": {"type", "message"}}, wire.raised)."""
    with pytest.raises(wire.Refused, match=message):
        wire.decode(value)


def test_an_error_answer_is_a_type_name_and_a_message():
    assert wire.raised({"__error__": {"type": "KeyError", "message": "'x'"}}) == wire.Raised("KeyError", "'x'")
    assert wire.raised({"value": 3}) is None and wire.raised([1]) is None
    long = wire.raised({"__error__": {"type": "E" * 500, "message": "m" * 5000}})
    assert (len(long.type), len(long.message)) == (80, 2000)
    for bad in ("KeyError: 'x'", {"type": "KeyError"}, {"type": 3, "message": "x"}, {"type": "E", "message": None}):
        with pytest.raises(wire.Refused, match="its __error__ is not a type name and a message"):
            wire.raised({"__error__": bad})


# The tags of cgcnn_kernel: each decodes to its type, its fields checked ------------------------------

def test_a_tensor_decodes_to_its_array_and_three_checked_fields():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = wire.decode({"__tensor__": npy(array=array), "requires_grad": True, "leaf": False, "handle": 7})
    assert isinstance(got, wire.Tensor) and (got.requires_grad, got.leaf, got.handle) == (True, False, 7)
    assert got.array.dtype == np.float32 and np.array_equal(got.array, array)
    plain = wire.decode({"__tensor__": npy(array=array), "requires_grad": False, "leaf": True})
    assert plain.handle is None and not plain.requires_grad
    for fields in ({"requires_grad": 1, "leaf": True}, {"requires_grad": False}, {"requires_grad": True, "leaf": True,
                   "handle": 0}, {"requires_grad": True, "leaf": True, "handle": True},
                   {"requires_grad": True, "leaf": True, "handle": "7"}):
        with pytest.raises(wire.Refused, match="its tensor's requires_grad, leaf or handle is not of its kind"):
            wire.decode({"__tensor__": npy(array=array), **fields})
    with pytest.raises(wire.Refused, match="its __tensor__ object has the unexpected field 'grad_fn'"):
        wire.decode({"__tensor__": npy(array=array), "requires_grad": False, "leaf": True, "grad_fn": "os.system"})
    with pytest.raises(wire.Refused, match=r"dtype object"):
        wire.decode({"__tensor__": npy(array=np.array([None]), allow_pickle=True), "requires_grad": False, "leaf": True})


def test_a_handle_decodes_to_a_number_a_type_name_and_a_kind():
    assert wire.decode({"__handle__": 3, "type": "GatedConv", "kind": "class"}) == wire.Handle(3, "GatedConv", "class")
    assert wire.decode({"__handle__": 4, "type": "x" * 500, "kind": "object"}).type == "x" * 80
    for bad in ({"__handle__": 0, "type": "X", "kind": "object"}, {"__handle__": "3", "type": "X", "kind": "object"},
                {"__handle__": True, "type": "X", "kind": "object"}, {"__handle__": 3, "type": 5, "kind": "object"},
                {"__handle__": 3, "type": "X", "kind": "module"}, {"__handle__": 3, "type": "X"}):
        with pytest.raises(wire.Refused, match="its handle is not a number with a type name and kind"):
            wire.decode(bad)
    with pytest.raises(wire.Refused, match="its __handle__ object has the unexpected field '@module'"):
        wire.decode({"__handle__": 3, "type": "X", "kind": "object", "@module": "os"})


def test_tuples_dicts_and_non_finite_floats_decode_to_their_types():
    assert wire.decode({"__tuple__": [1, {"__tuple__": []}, [2.5]]}) == (1, (), [2.5])
    got = wire.decode({"__dict__": [["a", {"__ndarray__": npy(array=np.ones(2))}], [3, None], [None, [1]], [2.5, "x"]]})
    assert list(got) == ["a", 3, None, 2.5] and np.array_equal(got["a"], np.ones(2)) and got[None] == [1]
    assert wire.decode({"__dict__": []}) == {}
    assert math.isnan(wire.decode({"__float__": "nan"})) and wire.decode([{"__float__": "inf"}, {"__float__": "-inf"}]) == \
        [math.inf, -math.inf]
    for bad, message in [({"__tuple__": {"a": 1}}, "its tuple is not a list"),
                         ({"__dict__": [["a", 1, 2]]}, "its dict is not a list of key-value pairs"),
                         ({"__dict__": {"a": 1}}, "its dict is not a list of key-value pairs"),
                         ({"__dict__": [[[1, 2], 3]]}, "its dict has a key that is not a number or a string"),
                         ({"__dict__": [[{"__tuple__": [1]}, 3]]}, "its dict has a key that is not a number or a string"),
                         ({"__float__": "1e999"}, "its __float__ is not nan, inf or -inf"),
                         ({"__float__": 1.5}, "its __float__ is not nan, inf or -inf"),
                         ({"__tuple__": [], "extra": 1}, "its __tuple__ object has the unexpected field 'extra'")]:
        with pytest.raises(wire.Refused, match=re.escape(message)):
            wire.decode(bad)


def test_what_the_kernel_encodes_the_grader_decodes():
    """cgcnn_kernel.encode and wire.decode agree on every tag (through JSON, as on the wire)."""
    value = [np.arange(3, dtype=np.int64), torch.ones(2, requires_grad=True) * 2, (1, "a", None), {"k": 1.5, 2: [True]},
             math.nan, -math.inf, np.float32(2.5), object()]
    got = wire.decode(json.loads(json.dumps(cgcnn_kernel.encode(value))))
    assert np.array_equal(got[0], np.arange(3)) and got[0].dtype == np.int64
    assert isinstance(got[1], wire.Tensor) and got[1].requires_grad and not got[1].leaf and type(got[1].handle) is int
    assert np.array_equal(got[1].array, np.full(2, 2.0, np.float32))
    assert got[2] == (1, "a", None) and got[3] == {"k": 1.5, 2: [True]}
    assert math.isnan(got[4]) and got[5] == -math.inf and got[6] == 2.5
    assert isinstance(got[7], wire.Handle) and (got[7].type, got[7].kind) == ("object", "object")


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
    for tag, payload in [("__structure__", crystal.as_dict()), ("__global__", "embedding"), ("__crystal__", {}),
                         ("__class__", "os.system"), ("@module", "cgcnn_attack_module")]:
        with pytest.raises(wire.Refused, match=f"it is an object \\(keys '{tag}', \\.\\.\\.\\); answers are numbers"):
            wire.decode({"__tuple__": [{tag: payload}]})
    # through the grader: q1a's tests, whose calls of atom_features the kernel answers with a Structure's dict
    ask = asker(notebook())
    attack = json.loads(json.dumps({"value": {"__structure__": crystal.as_dict()}}))  # as JSON on the wire
    link = remote.Link(lambda request: attack if request["op"] == "call" else ask(request))
    g = autograder()
    verdicts = master_tests.run_part(g.parts["q1a"], link, g.solution, master_tests.seeded_factory())
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert re.fullmatch(r"the kernel's answer was refused: it is an object \(keys '__structure__', \.\.\.\).*do not "
                            r"change it\)", verdict.message), verdict.message
    assert "cgcnn_attack_module" not in sys.modules and not marker.exists()
    # a tagged value must be the tag alone: no tag hidden beside data
    with pytest.raises(wire.Refused, match="its __ndarray__ object has the unexpected field '@module'"):
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
    for value in ({"__ndarray__": text}, {"__tensor__": text, "requires_grad": False, "leaf": True}):
        with pytest.raises(wire.Refused, match="declares 64 GiB"):
            remote.Link(lambda request: {"value": value}).request("global", name="atom_features")


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
    assert wire.answers_problem([1]) == "its answer is not a JSON object"
    assert wire.answers_problem({"value": [object()]}) == "its answers hold a object, which is not JSON data"
    nested = 1  # tagged containers count one level each
    for _ in range(wire.ANSWER_DEPTH):
        nested = {"__dict__": [["k", nested]]}
    assert wire.decode(nested) == json.loads(json.dumps(nested).replace('{"__dict__": [["k", ', '{"k": ').replace("]]}", "}"))
    with pytest.raises(wire.Refused, match=f"it is nested more than {wire.ANSWER_DEPTH} levels deep"):
        wire.decode({"__tuple__": [nested]})
    with pytest.raises(wire.Refused, match=f"its answers are nested more than {wire.ANSWER_DEPTH} levels deep"):
        remote.Link(lambda request: {"value": deep(5000)}).request("global", name="x")
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

@pytest.fixture(scope="module")
def solution_answers() -> dict:
    """{question: [(request, raw answer)]}: what the solution's kernel answers when the grader runs
    each part's tests through stand-ins, 4b's `trained` request (the notebook's default CGCNN) included."""
    namespace = notebook(trained=True)
    logs = {}
    for question in (*PARTS, "q4b"):
        logs[question] = []
        answers = run(namespace, (question,), log=logs[question])
        assert not [v for part in answers.values() for v in part.verdicts if v.message], question
    return logs


def test_the_solutions_answers_are_far_below_every_cap(solution_answers):
    """Every answer of the solution, as the kernel's display_data frame (cgcnn_kernel.serve): size,
    depth, largest array. 4b's `trained` answer, the model's state dict, is the largest."""
    sizes = {}
    for question, log in solution_answers.items():
        for request, answer in log:
            frame = json.dumps({"data": {cgcnn_kernel.MIME: {"probe": question, "answer": answer}}, "metadata": {},
                                "transient": {}}).encode()
            arrays = [len(base64.b64decode(v)) for tag in ("__ndarray__", "__tensor__") for v in _tagged(answer, tag)]
            where = f"{question} {request['op']}"
            assert len(frame) < wire.MESSAGE_BYTES / 20 and wire.frame_depth(frame) <= wire.MESSAGE_DEPTH / 4, where
            assert max(arrays, default=0) < wire.ARRAY_BYTES / 100 and wire.answers_problem(answer) is None, where
            sizes[question, request["op"]] = max(sizes.get((question, request["op"]), 0), len(frame))
            if request["op"] == "trained":
                trained = frame, arrays, answer
    assert max(sizes, key=sizes.get) == ("q4b", "trained"), sizes
    frame, arrays, answer = trained
    assert 300_000 < len(frame) < 600_000 and len(arrays) == 36, (len(frame), len(arrays))  # 0.45 MB
    assert max(arrays) == 128 * 169 * 4 + 128  # convs.k.fc_full.weight, with its .npy header
    state = wire.decode(answer["value"])["state"]
    assert state["convs.0.fc_full.weight"].array.shape == (128, 169) and not state["convs.0.fc_full.weight"].requires_grad


def _tagged(value, tag):
    if isinstance(value, dict):
        if tag in value:
            yield value[tag]
        for v in value.values():
            yield from _tagged(v, tag)
    elif isinstance(value, list):
        for v in value:
            yield from _tagged(v, tag)


def test_crystals_cross_as_arrays_and_arrive_as_the_same_structure(solution_answers):
    """The tests' crystals cross as lattice, atomic numbers and fractional coordinates (remote.Link.encode);
    the kernel builds the Structure that pymatgen's own dict round trip gives, site for site."""
    from pymatgen.core import Structure
    requests = [request for log in solution_answers.values() for request, _ in log]
    crystals = [arg for r in requests for arg in r.get("args", []) if isinstance(arg, dict) and "__crystal__" in arg]
    assert len(crystals) >= 8 and "__structure__" not in json.dumps(requests)
    for arg in crystals:
        built = cgcnn_kernel.decode(arg, {})
        again = Structure.from_dict(built.as_dict())
        assert np.array_equal(built.lattice.matrix, again.lattice.matrix)
        assert [s.specie.Z for s in built] == [s.specie.Z for s in again] == arg["__crystal__"]["species"]
        assert np.array_equal(built.frac_coords, cgcnn_kernel.decode_array(arg["__crystal__"]["frac_coords"]))
