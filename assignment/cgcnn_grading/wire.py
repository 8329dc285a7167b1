"""What crosses from the kernel into the grading process, read as data and nothing else.

Two layers, both refusing before they decode or allocate:

    GuardedSession   the Jupyter client's session: a message frame over MESSAGE_BYTES or nested
                     deeper than MESSAGE_DEPTH (counted on its bytes, strings skipped) is never
                     JSON-decoded; it is dropped, and the reason kept in `refused` for the results
                     (a frame nested 5,000 deep made json.loads raise RecursionError in the grader)
    decode           one answer: JSON numbers, strings and lists; {"__ndarray__": base64 .npy} whose
                     header (magic, version, dtype, shape, size) is checked before the array exists,
                     then loaded with allow_pickle=False; tensors (an array and three plain fields),
                     tuples, dicts as key-value pairs, non-finite floats, and handles (a number and a
                     type's name) for objects that stay in the kernel. Any other tag or object
                     ("__structure__", "__global__", a plain JSON object, ...) is refused: the grader
                     never builds objects the data names (pymatgen's from_dict goes through monty,
                     which imports modules and constructs classes named in the data).

A refusal raises `Refused` with a sentence that names the problem; nothing of it is an exception
text of the grader's own.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass

import numpy as np
from jupyter_client.session import Session

# The honest answers are far below these: part 4b's, the largest (the trained model's state dict),
# is about 0.45 MB of JSON with 36 arrays of at most 87 KB (tests/test_wire.py measures it).
MESSAGE_BYTES = 16_000_000  # one frame of a kernel message
MESSAGE_DEPTH = 64  # brackets open at once in one frame; json.loads recurses once per level
ANSWER_DEPTH = 24  # containers within one probe's answers
ANSWER_BYTES = MESSAGE_BYTES  # strings and numbers of one probe's answers together
ARRAY_BYTES = 16 * 2**20  # the data of one array, as its .npy header declares it
ARRAY_DIMS = 32
NPY_HEADER_BYTES = 10_000  # numpy's own default limit for a .npy header
# Numbers only: bool, signed and unsigned integers, floats of at most 8 bytes (no object, string,
# void, structured, datetime or complex arrays)
DTYPE_KINDS = "biuf"
TAGS = ("__ndarray__", "__tensor__", "__tuple__", "__dict__", "__float__", "__handle__")
REFUSED = "cgcnn_refused"  # msg_type of a refused message's stand-in: no cell's, so every client ignores it

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included, in linear time
_CHUNK = 1 << 20


class Refused(ValueError):
    """What came from the kernel is not data the grader reads; the message says why."""


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


# ---------------------------------------------------------------------------------------------
# Jupyter messages
# ---------------------------------------------------------------------------------------------

def frame_depth(frame: bytes) -> int:
    """The deepest nesting of [ and { in a JSON text, strings skipped: counted on the bytes, without
    decoding (and without recursion)."""
    skeleton = _STRING.sub(b'""', frame)
    depth = peak = 0
    for start in range(0, len(skeleton), _CHUNK):
        a = np.frombuffer(skeleton, np.uint8, count=min(_CHUNK, len(skeleton) - start), offset=start)
        step = (a == ord("[")).astype(np.int32) + (a == ord("{")) - (a == ord("]")) - (a == ord("}"))
        levels = depth + np.cumsum(step, dtype=np.int64)
        if levels.size:
            peak, depth = max(peak, int(levels.max())), int(levels[-1])
    return peak


def frame_problem(frame: bytes) -> str | None:
    """Why a message frame must not be decoded, or None."""
    if len(frame) > MESSAGE_BYTES:
        return f"a message of {_size(len(frame))} (at most {_size(MESSAGE_BYTES)})"
    depth = frame_depth(frame)
    if depth > MESSAGE_DEPTH:
        return f"a message nested {depth} levels deep (at most {MESSAGE_DEPTH})"
    return None


class GuardedSession(Session):
    """jupyter_client's Session that never JSON-decodes a frame over MESSAGE_BYTES or nested deeper
    than MESSAGE_DEPTH, nor lets a frame that fails to decode (bad UTF-8, invalid JSON, a signature
    that does not match) raise into the grader: such a message is replaced by a stand-in of type
    REFUSED with no parent, which no cell waits for, and the reason is appended to `refused`.
    `clone()` (each kernel client's copy) keeps the class."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.refused: list[str] = []

    def deserialize(self, msg_list, content: bool = True, copy: bool = True) -> dict:
        frames = [bytes(getattr(f, "bytes", f)) for f in msg_list[:5]]
        problem = next(filter(None, map(frame_problem, frames[1:5])), None)
        if problem is None:
            try:
                return super().deserialize(msg_list, content=content, copy=copy)
            except (ValueError, TypeError, KeyError, RecursionError, MemoryError) as err:
                problem = f"a message that could not be read ({type(err).__name__})"
        self.refused.append(problem)
        header = {"msg_id": "", "msg_type": REFUSED, "session": "", "username": "", "version": "5.3", "date": None}
        return {"header": header, "msg_id": "", "msg_type": REFUSED, "parent_header": {}, "metadata": {},
                "content": {}, "buffers": []}


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

def answers_problem(raw) -> str | None:
    """Why one answer of the kernel ({"value": ...} or {"__error__": ...}) must not be decoded (too
    deep, too large, not JSON data), or None: measured without recursion."""
    if not isinstance(raw, dict):
        return "its answer is not a JSON object"
    stack, total = [(raw, 1)], 0
    while stack:
        value, depth = stack.pop()
        if depth > ANSWER_DEPTH:
            return f"its answers are nested more than {ANSWER_DEPTH} levels deep"
        if isinstance(value, dict):
            total += sum(len(str(k)) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            total += len(value)
        elif value is None or isinstance(value, (bool, int, float)):
            total += 8
        else:
            return f"its answers hold a {type(value).__name__}, which is not JSON data"
        if total > ANSWER_BYTES:
            return f"its answers hold more than {_size(ANSWER_BYTES)}"
    return None


@dataclass(frozen=True)
class Tensor:
    """A tensor the kernel returned: its values, whether it requires a gradient there, whether it is a
    leaf, and the kernel's handle for it (for backpropagation) when it requires one."""

    array: np.ndarray
    requires_grad: bool
    leaf: bool
    handle: int | None


@dataclass(frozen=True)
class Handle:
    """An object that stays in the kernel: its number there, its type's name (a class: its own name)."""

    id: int
    type: str
    kind: str  # "class" or "object"


@dataclass(frozen=True)
class Raised:
    """An exception the submission's code raised: its type's name and its text, as text."""

    type: str
    message: str


def _fields(value: dict, tag: str, allowed: set) -> None:
    extra = set(value) - allowed - {tag}
    if extra:
        raise Refused(f"its {tag} object has the unexpected field {sorted(map(str, extra))[0][:40]!r}")


def decode(value, depth: int = 0):
    """One answer's value as data: JSON numbers, strings and lists; numpy arrays (checked, see
    `decode_array`); tuples, dicts (from key-value pairs), non-finite floats; Tensor and Handle.
    Raises Refused for anything else, a plain JSON object included."""
    if depth > ANSWER_DEPTH:
        raise Refused(f"it is nested more than {ANSWER_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(v, depth + 1) for v in value]
    if not isinstance(value, dict):
        raise Refused(f"it holds a {type(value).__name__}, which is not JSON data")
    tag = next((k for k in value if k in TAGS), None)
    if tag is None:
        shown = next(iter(value), "")
        raise Refused(f"it is an object (keys {str(shown)[:40]!r}, ...); answers are numbers, strings, lists, arrays "
                      "and the tagged values of cgcnn_kernel only")
    body = value[tag]
    if tag == "__ndarray__":
        _fields(value, tag, set())
        return decode_array(body)
    if tag == "__tensor__":
        _fields(value, tag, {"requires_grad", "leaf", "handle"})
        handle = value.get("handle")
        if not (isinstance(value.get("requires_grad"), bool) and isinstance(value.get("leaf"), bool)
                and (handle is None or (type(handle) is int and handle > 0))):
            raise Refused("its tensor's requires_grad, leaf or handle is not of its kind")
        return Tensor(decode_array(body), value["requires_grad"], value["leaf"], handle)
    if tag == "__tuple__":
        _fields(value, tag, set())
        if not isinstance(body, list):
            raise Refused("its tuple is not a list")
        return tuple(decode(v, depth + 1) for v in body)
    if tag == "__dict__":
        _fields(value, tag, set())
        if not (isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body)):
            raise Refused("its dict is not a list of key-value pairs")
        out = {}
        for key, item in body:
            key = decode(key, depth + 1)
            if not (key is None or isinstance(key, (bool, int, float, str))):
                raise Refused("its dict has a key that is not a number or a string")
            out[key] = decode(item, depth + 1)
        return out
    if tag == "__float__":
        _fields(value, tag, set())
        if body not in ("nan", "inf", "-inf"):
            raise Refused("its __float__ is not nan, inf or -inf")
        return float(body)
    if tag == "__handle__":
        _fields(value, tag, {"type", "kind"})
        if not (type(body) is int and body > 0 and isinstance(value.get("type"), str)
                and value.get("kind") in ("class", "object")):
            raise Refused("its handle is not a number with a type name and kind")
        return Handle(body, value["type"][:80], value["kind"])
    raise Refused(f"it is an object tagged {tag}, which answers do not hold")


def raised(value) -> Raised | None:
    """The exception an answer reports ({"__error__": {"type", "message"}}), or None."""
    if not (isinstance(value, dict) and "__error__" in value):
        return None
    error = value["__error__"]
    if not (isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str)):
        raise Refused("its __error__ is not a type name and a message")
    return Raised(error["type"][:80], error["message"][:2000])


def decode_array(text) -> np.ndarray:
    """A base64 .npy of numbers, its header checked before anything is allocated: format version 1.0
    or 2.0, a dtype of DTYPE_KINDS of at most 8 bytes, at most ARRAY_DIMS dimensions, at most
    ARRAY_BYTES of data, and exactly that much data present; then numpy.load(allow_pickle=False)."""
    if not isinstance(text, str):
        raise Refused("its array is not base64 text")
    if len(text) > 4 * ((ARRAY_BYTES + NPY_HEADER_BYTES) // 3 + 1):
        raise Refused(f"its array takes {_size(len(text) * 3 / 4)} (at most {_size(ARRAY_BYTES)})")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("its array is not valid base64") from None
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise Refused(f"its array is .npy format version {version[0]}.{version[1]} (1.0 or 2.0 expected)")
        shape, _, dtype = read_header(stream, max_header_size=NPY_HEADER_BYTES)
    except Refused:
        raise
    except Exception:  # noqa: BLE001 - numpy raises several types for a broken header; none is shown
        raise Refused("its array is not a readable .npy array") from None
    if dtype.kind not in DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize > 8:
        raise Refused(f"its array has dtype {str(dtype)[:40]}; only bool, integer and float arrays are read")
    if len(shape) > ARRAY_DIMS or any(not isinstance(n, int) or n < 0 for n in shape):
        raise Refused(f"its array's shape {str(shape)[:80]} is not a shape of at most {ARRAY_DIMS} dimensions")
    declared = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    if declared > ARRAY_BYTES:
        raise Refused(f"its array's header declares {_size(declared)} (shape {str(shape)[:80]}, {dtype}), over the "
                      f"{_size(ARRAY_BYTES)} an answer's array may hold")
    present = len(raw) - stream.tell()
    if present != declared:
        raise Refused(f"its array holds {present} bytes of data where its header declares {declared}")
    return np.load(io.BytesIO(raw), allow_pickle=False)
