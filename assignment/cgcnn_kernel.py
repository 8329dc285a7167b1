"""The half of grading that runs inside the submission's kernel: it does what the grader's tests ask
of the submission's objects and hands back plain data. It holds nothing secret and decides nothing.

The grader (package `cgcnn_grading`, in another process and under another user) runs the notebook.
Where the notebook checks a part (`grader.check("q1a")`), the grader runs that part's tests, the
master notebook's own test functions, in its own process: each name a test takes from the notebook
(`atom_features`, `GatedConv`, `model`, ...) is a stand-in there, and every use of a stand-in (a
call, an attribute, an index) is one cell of the grader's in this kernel,
`cgcnn_kernel.serve('<request as JSON>')`, answered here as one `display_data` output of type
`MIME`. The grader reads answers as data only (`cgcnn_grading.wire`): nothing that crosses from
this kernel is code, nor names a class for the grader to build; objects that are not data stay
here and cross as numbered handles. Expected values, comparisons and points are the grader's, so
whatever this module (or a notebook that patches it) answers, a part scores only if the answers are
right.

A request is a dict with an `op`:

    global     {"name"}                       the notebook's variable (NameError if undefined)
    getattr    {"target", "name"}             an attribute; a tensor attribute stays here (a handle),
                                              so that in-place methods (`weight.copy_(...)`) act on it
    call       {"target", "args", "kwargs", "grad_enabled"}
                                              target(*args, **kwargs) with torch's grad mode as the
                                              grader's test had it; input tensors that require a
                                              gradient are kept, for `backward`
    getitem    {"target", "key"}, len {"target"}, isinstance {"target", "cls"}
    backward   {"outputs", "grads", "inputs"} backpropagate `grads` from the kept output tensors;
                                              answer the kept inputs' gradients (None where none)
    release    {}                             forget every handle (the end of a part's tests)
    trained    {}                             the trained `model`'s parameters and buffers, its
                                              pooling's name and the normalizer's mean and std: the
                                              grader evaluates them in its own CGCNN (the master's)
                                              on held-out crystals that never reach this kernel

Values are JSON with tags: {"__ndarray__": base64 .npy}, {"__tensor__": .npy, "requires_grad",
"leaf"} (and "handle" in answers, for a tensor that requires a gradient), {"__tuple__": [...]},
{"__dict__": [[key, value], ...]}, {"__float__": "nan" | "inf" | "-inf"}, {"__handle__": id, "type":
name, "kind": "class" | "object"}, {"__crystal__": {"lattice", "species", "frac_coords"}} (requests
only: a pymatgen Structure built here), {"__global__": name} (requests only). An answer is
{"value": ...} or {"__error__": {"type": exception name, "message": text}}.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os

MIME = "application/vnd.cgcnn.probe+json"
SETUP = "import cgcnn_kernel; cgcnn_kernel.setup()"  # the grader's first cell
TRAINED = ("model", "normalizer")  # the notebook's names that 4b's probe reads (trained)

_handles: dict[int, object] = {}


def setup() -> None:
    """The kernel's settings for grading: one torch thread per CPU of its budget (a student's own
    training loop included, not only cgcnn_utils.fit), and deterministic kernels."""
    import torch
    import cgcnn_utils
    threads = int(os.environ.get("CGCNN_THREADS", "0")) or cgcnn_utils.cpu_budget()
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Values across the boundary
# ---------------------------------------------------------------------------------------------

def encode_array(array) -> dict:
    import numpy as np
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return {"__ndarray__": base64.b64encode(buffer.getvalue()).decode()}


def decode_array(value: dict):
    import numpy as np
    return np.load(io.BytesIO(base64.b64decode(value["__ndarray__"])), allow_pickle=False)


def _keep(obj) -> int:
    handle = len(_handles) + 1
    _handles[handle] = obj
    return handle


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach") and hasattr(value, "requires_grad")


class _Stays:
    """A value answered as a handle, whatever it is."""

    def __init__(self, value):
        self.value = value


def encode(value, depth: int = 0):
    """What the submission returned, as data; objects that are not data stay here as handles."""
    import numpy as np
    if isinstance(value, _Stays):
        return {"__handle__": _keep(value.value), "type": type(value.value).__name__[:80], "kind": "object"}
    if depth > 20:
        return {"__handle__": _keep(value), "type": type(value).__name__, "kind": "object"}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return encode(value.item())
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return encode_array(value)
    if _is_tensor(value):
        try:
            array = value.detach().cpu().numpy()  # a sparse, complex or bfloat16 tensor stays a handle
        except (TypeError, RuntimeError):
            array = None
        if array is not None and array.dtype.kind in "biuf":
            return {"__tensor__": encode_array(array)["__ndarray__"], "requires_grad": bool(value.requires_grad),
                    "leaf": bool(value.is_leaf), "handle": _keep(value) if value.requires_grad else None}
    if type(value) is list:
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, tuple) and type(value).__module__ in ("builtins", "torch", "collections"):
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if type(value) is dict and all(k is None or isinstance(k, (bool, int, float, str)) for k in value):
        return {"__dict__": [[encode(k), encode(v, depth + 1)] for k, v in value.items()]}
    kind = "class" if isinstance(value, type) else "object"
    return {"__handle__": _keep(value), "type": str(getattr(value, "__name__", "") if kind == "class"
                                                    else type(value).__name__)[:80], "kind": kind}


class _Inputs:
    """The tensors of one call's arguments that require a gradient, kept for `backward`."""

    def __init__(self):
        self.leaves: list = []


def decode(value, namespace: dict, inputs: _Inputs | None = None):
    """A request's value made real: arrays, tensors (a tensor that is not a leaf in the grader's test
    enters as another tensor's result here too), crystals, handles and notebook variables."""
    if isinstance(value, list):
        return [decode(v, namespace, inputs) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return decode_array(value)
    if "__tensor__" in value:
        import torch
        tensor = torch.from_numpy(decode_array({"__ndarray__": value["__tensor__"]}).copy())
        if not value.get("requires_grad"):
            return tensor
        leaf = tensor.requires_grad_(True)
        if inputs is not None:
            inputs.leaves.append(leaf)
        return leaf if value.get("leaf", True) else leaf * 1.0  # as another layer's output would be
    if "__crystal__" in value:
        from pymatgen.core import Lattice, Structure
        crystal = value["__crystal__"]
        return Structure(Lattice(decode_array(crystal["lattice"])), crystal["species"],
                         decode_array(crystal["frac_coords"]))
    if "__handle__" in value:
        return _handles[value["__handle__"]]
    if "__global__" in value:
        return namespace[value["__global__"]]
    if "__tuple__" in value:
        return tuple(decode(value["__tuple__"], namespace, inputs))
    if "__dict__" in value:
        return {decode(k, namespace): decode(v, namespace, inputs) for k, v in value["__dict__"]}
    if "__float__" in value:
        return float(value["__float__"])
    return {k: decode(v, namespace, inputs) for k, v in value.items()}


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------

def _grad_mode(enabled: bool):
    try:
        import torch
    except ImportError:
        return contextlib.nullcontext()
    return torch.set_grad_enabled(bool(enabled))


def _global(ns, name):
    if name not in ns:
        raise NameError(f"name {name!r} is not defined")
    return ns[name]


def _getattr(ns, target, name):
    value = getattr(decode(target, ns), name)
    return _Stays(value) if _is_tensor(value) else value  # a tensor attribute: the test may change it in place


def _call(ns, target, args=(), kwargs=None, grad_enabled=False):
    inputs = _Inputs()
    function = decode(target, ns)
    args = decode(list(args), ns, inputs)
    kwargs = decode(kwargs or {}, ns, inputs)
    with _grad_mode(grad_enabled):
        value = function(*args, **kwargs)
    return {"__call__": value, "inputs": [_keep(leaf) for leaf in inputs.leaves]}


def _backward(ns, outputs, grads, inputs):
    import torch
    tensors = [_handles[h] for h in outputs]
    torch.autograd.backward(tensors, [torch.from_numpy(decode_array(g).copy()) for g in grads])
    return [_handles[h].grad for h in inputs]


def _trained(ns):
    """The trained `model`'s parameters and buffers, its pooling and the target normalizer: the grader
    evaluates them in its own CGCNN on crystals this kernel never sees."""
    model, normalizer = (ns.get(name) for name in TRAINED)
    if model is None or normalizer is None:
        raise LookupError(f"there is no trained {'model' if model is None else 'normalizer'} (still None or "
                          "undefined): did the training cell run without an error?")
    return {"state": {str(k): v for k, v in model.state_dict().items() if not str(k).endswith("num_batches_tracked")},
            "pool": getattr(getattr(model, "pool", None), "__name__", None),
            "normalizer": [float(normalizer.mean), float(normalizer.std)]}


def _release(ns):
    _handles.clear()


OPERATIONS = {
    "global": _global,
    "getattr": _getattr,
    "call": _call,
    "getitem": lambda ns, target, key: decode(target, ns)[decode(key, ns)],
    "len": lambda ns, target: len(decode(target, ns)),
    "isinstance": lambda ns, target, cls: isinstance(decode(target, ns), decode(cls, ns)),
    "backward": _backward,
    "release": _release,
    "trained": _trained,
}


def answer(namespace: dict, request: dict):
    """The encoded answer to one request: what the submission's code returned, or the error it raised."""
    try:
        args = {k: v for k, v in request.items() if k != "op"}
        value = OPERATIONS[request["op"]](namespace, **args)
        if isinstance(value, dict) and "__call__" in value:
            return {"value": encode(value["__call__"]), "inputs": value["inputs"]}
        return {"value": encode(value)}
    except BaseException as err:  # noqa: BLE001 - any failure of the submission's code is an answer
        if isinstance(err, KeyboardInterrupt):
            raise  # the grader's time limit: the cell must stop
        return {"__error__": {"type": type(err).__name__[:80], "message": str(err)[:2000]}}


def serve(request_json: str) -> None:
    """Answer one request of the grader's in the notebook's namespace, as this cell's output."""
    from IPython import get_ipython
    from IPython.display import display
    spec = json.loads(request_json)
    display({MIME: {"probe": spec["probe"], "answer": answer(get_ipython().user_ns, spec["request"])}}, raw=True)
