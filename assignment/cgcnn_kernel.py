"""The half of grading that runs inside the submission's kernel: it calls the submission's code on
the grader's inputs and hands back plain outputs. It holds nothing secret and decides nothing.

The grader (package `cgcnn_grading`, in another process and under another user) runs the notebook,
and at each part's check it runs one cell of its own, `cgcnn_kernel.probe('<requests as JSON>')`.
This module answers every request with what the submission's code returned (or the exception it
raised) and sends the answers back as one `display_data` output of type `MIME`: JSON, with arrays
as `.npy` bytes. The grader reads those as data only (`cgcnn_grading.wire`: message size and depth
capped, .npy headers checked, then `numpy.load(allow_pickle=False)`): nothing that crosses from the
kernel to the grader is code, nor names a class for the grader to build. Expected values, comparisons and points are computed in the
grader, from reference code this kernel cannot read; whatever this module (or a notebook that
patches it) answers, a part scores only if the answers are right.

A request is a dict with an `id` and an `op`:

    call                 {"function": name, "args": [...], "kwargs": {...}, "grad_wrt": index or None}
                         the submission's function; with grad_wrt, that argument (a tensor) requires
                         a gradient and the answer is {"value": ..., "grad": d sum(value) / d arg}
    module               {"cls": name, "init": [...], "state": {name: array}, "mode": "eval"|"train",
                         "inputs": [...], "grad_wrt": index or None}  an instance with the given
                         parameters and buffers (by name), called on `inputs` without gradients; with
                         grad_wrt, that input enters as a non-leaf tensor (as another layer's output
                         does), and the answer is {"value": ..., "grad": d sum(value) / d input}
    cgcnn_stages         {"init_kwargs": {...}, "state": {...}, "inputs": [...], "embedded": array}
                         CGCNN's output, the types of its layers, and the submission's own layers and
                         pooling applied to `embedded` (part 4a tests the assembly of those)
    trained_model        {}  the trained `model`'s parameters and buffers (state dict), the name of its
                         pooling function and the normalizer's mean and std: the grader evaluates
                         them in its own reference CGCNN on the held-out crystals, which never
                         reach this kernel

Requests are JSON, with {"__ndarray__": base64 .npy} for arrays, {"__tensor__": ...} for inputs that
are torch tensors, {"__crystal__": {"lattice": (3, 3), "species": atomic numbers, "frac_coords":
(N, 3)}} for crystals (built into a pymatgen Structure here) and {"__global__": name} for a variable
of the notebook (the element `embedding`). Answers are data alone: JSON, {"__ndarray__": ...} for
arrays and tensors, {"__repr__": type name} for anything else, {"__error__": text} for an exception;
the grader refuses any other tag (cgcnn_grading.wire).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os

MIME = "application/vnd.cgcnn.probe+json"
SETUP = "import cgcnn_kernel; cgcnn_kernel.setup()"  # the grader's first cell
TRAINED = ("model", "normalizer")  # the notebook's names that 4b's probe reads (trained_model)


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


def encode(value):
    """A value the submission returned, as JSON data (arrays and tensors as .npy bytes)."""
    import numpy as np
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # JSON has no NaN or inf
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, np.ndarray):
        return encode_array(value) if value.dtype != object else {"__repr__": "array of objects"}
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return encode_array(value.detach().cpu().numpy())
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return {"__repr__": type(value).__name__}


def decode(value, namespace: dict | None = None):
    """A request's input from the grader: arrays, tensors, crystals and notebook variables made real."""
    if isinstance(value, list):
        return [decode(v, namespace) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return decode_array(value)
    if "__tensor__" in value:
        import torch
        return torch.from_numpy(decode_array(value["__tensor__"]).copy())
    if "__crystal__" in value:
        from pymatgen.core import Lattice, Structure
        crystal = value["__crystal__"]
        return Structure(Lattice(decode_array(crystal["lattice"])), crystal["species"],
                         decode_array(crystal["frac_coords"]))
    if "__global__" in value:
        return (namespace or {})[value["__global__"]]
    return {k: decode(v, namespace) for k, v in value.items()}


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------

def _call(ns, function, args=(), kwargs=None, grad_wrt=None):
    args = decode(list(args), ns)
    kwargs = decode(kwargs or {}, ns)
    if grad_wrt is None:
        return ns[function](*args, **kwargs)
    args[grad_wrt] = args[grad_wrt].clone().requires_grad_(True)
    value = ns[function](*args, **kwargs)
    value.sum().backward()
    return {"value": value, "grad": args[grad_wrt].grad}


def _instance(ns, cls, init, init_kwargs, state, mode):
    import torch
    obj = ns[cls](*decode(list(init), ns), **decode(init_kwargs or {}, ns))
    named = dict(obj.named_parameters()) | dict(obj.named_buffers())
    missing = sorted(set(state) - set(named))
    if missing:
        raise KeyError(f"{cls} has no parameter or buffer {missing[0]!r}: keep the given __init__")
    with torch.no_grad():
        for name, array in state.items():
            named[name].copy_(torch.as_tensor(decode(array)))
    return obj.train(mode == "train")


def _module(ns, cls, init=(), init_kwargs=None, state=None, mode="eval", inputs=(), grad_wrt=None):
    import torch
    obj = _instance(ns, cls, init, init_kwargs, state or {}, mode)
    inputs = decode(list(inputs), ns)
    if grad_wrt is None:
        with torch.no_grad():
            return obj(*inputs)
    # The input as a layer receives it in a network: another layer's output, not a leaf.
    leaf = inputs[grad_wrt].clone().requires_grad_(True)
    inputs[grad_wrt] = leaf.clone()
    value = obj(*inputs)
    value.sum().backward()
    return {"value": value, "grad": leaf.grad}


def _cgcnn_stages(ns, init_kwargs, state, inputs, embedded):
    import torch
    model = _instance(ns, "CGCNN", (), init_kwargs, state, "eval")
    inputs = decode(list(inputs), ns)
    pool = ns["max_pool" if init_kwargs.get("pool") == "max" else "mean_pool"]
    with torch.no_grad():
        output = model(*inputs)
        v = decode(embedded)
        for layer in model.convs:
            v = layer(v, inputs[1], inputs[2])
        pooled = pool(v, inputs[3], inputs[4])
    return {"output": output, "conv_types": [type(layer).__name__ for layer in model.convs], "pooled": pooled}


def _trained_model(ns):
    """The trained `model`'s parameters and buffers, its pooling and the target normalizer: the grader
    evaluates them in its own CGCNN on crystals this kernel never sees."""
    model, normalizer = (ns.get(name) for name in TRAINED)
    if model is None or normalizer is None:
        raise LookupError(f"there is no trained {'model' if model is None else 'normalizer'} (still None or "
                          "undefined): did the training cell run without an error?")
    return {"state": {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")},
            "pool": getattr(getattr(model, "pool", None), "__name__", None),
            "normalizer": [float(normalizer.mean), float(normalizer.std)]}


OPERATIONS = {"call": _call, "module": _module, "cgcnn_stages": _cgcnn_stages, "trained_model": _trained_model}


def answer(namespace: dict, requests: list[dict]) -> dict:
    """{request id: encoded answer}: what the submission's code returned, or the error it raised."""
    answers = {}
    for request in requests:
        args = {k: v for k, v in request.items() if k not in ("id", "op")}
        try:
            answers[request["id"]] = encode(OPERATIONS[request["op"]](namespace, **args))
        except BaseException as err:  # noqa: BLE001 - any failure of the submission's code is an answer
            if isinstance(err, KeyboardInterrupt):
                raise  # the grader's time limit: the cell must stop
            answers[request["id"]] = {"__error__": f"{type(err).__name__}: {err}"}
    return answers


def probe(requests_json: str) -> None:
    """Answer the grader's requests in the notebook's namespace; the answers are this cell's output."""
    from IPython import get_ipython
    from IPython.display import display
    spec = json.loads(requests_json)
    answers = answer(get_ipython().user_ns, spec["requests"])
    display({MIME: {"probe": spec["probe"], "answers": answers}}, raw=True)
