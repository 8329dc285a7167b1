"""Stand-ins: the notebook's objects as the grading process sees them while it runs the master's tests.

A test written in the master notebook takes the notebook's names as arguments (`def
test_values(GatedConv): ...`). In the student's notebook otter passes the real objects; in grading
the same function runs here, in the grading process, and each argument is a stand-in: calling it,
reading an attribute, indexing it or asking its length is one request to the kernel
(`cgcnn_kernel.serve`), answered as data (`wire.decode`). What comes back is
- data (numbers, strings, lists, tuples, dicts, numpy arrays) as itself;
- a tensor as a local torch tensor with the same values; where the test's own tensors required a
  gradient and the kernel's result does too, the local tensor is joined to the kernel's by `_Across`,
  so that `out.sum().backward()` here backpropagates through the submission's code there and fills
  `x.grad` of the test's tensor;
- any other object as a `Remote` (a handle: the object stays in the kernel), and a class as a
  `RemoteClass`, which builds remote instances and answers `isinstance`;
- an exception the submission's code raised as a builtin exception of the same name (RuntimeError
  for any other) that is also a `SubmissionRaised`, so that a test's `except RuntimeError` works.

Tensors that are attributes (a layer's `weight`) stay in the kernel as handles, so that a test's
`conv.fc_full.weight.copy_(...)` changes the layer the submission will run; torch's grad mode (as
set by the test's `with torch.no_grad()`) is sent with every call.
"""

from __future__ import annotations

import base64
import builtins
import io
import math
import re
import time
from typing import Callable

import numpy as np
import torch

from . import wire

NOT_RAISED = ("StopIteration", "StopAsyncIteration", "GeneratorExit")  # would change a test's control flow
MAX_LENGTH = 100_000  # of a remote container a test iterates over


class SubmissionRaised(Exception):
    """Mixed into the exceptions that the submission's code raised in the kernel."""

    type_name = "Exception"


class LinkBroken(RuntimeError):
    """The kernel can no longer answer (time limit, kernel died): the part's remaining tests fail with
    the reason, which is the grader's to report, not the student's error."""


_RAISED: dict[str, type] = {}


def submission_error(raised: wire.Raised) -> SubmissionRaised:
    base = getattr(builtins, raised.type, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or raised.type in NOT_RAISED:
        base = RuntimeError
    cls = _RAISED.get(raised.type)
    if cls is None:
        name = re.sub(r"\W", "_", raised.type) or "Error"
        cls = _RAISED[raised.type] = type(name, (SubmissionRaised, base), {"type_name": raised.type})
        cls.__str__ = lambda self: self.args[0] if self.args else ""  # KeyError's quotes aside
    try:
        return cls(raised.message)
    except Exception:  # noqa: BLE001 - an exception whose constructor wants other arguments
        fallback = type(cls.__name__, (SubmissionRaised, RuntimeError), {"type_name": raised.type})
        return fallback(raised.message)


class Link:
    """One part's conversation with the kernel. `ask(request)` runs one request there and returns its
    raw answer (or raises LinkBroken); every request after `deadline` (time.monotonic) raises
    LinkBroken at once, so that a test looping over a stand-in cannot outlive the check's time."""

    def __init__(self, ask: Callable[[dict], dict], deadline: float = math.inf):
        self._ask, self.deadline = ask, deadline
        self.requests = 0
        self._sent: list[torch.Tensor] = []  # the tensors requiring a gradient, as one call sends them

    def request(self, op: str, **fields):
        """The decoded value of one request's answer; raises the submission's exception if it raised."""
        if time.monotonic() > self.deadline:
            raise LinkBroken("the check's time is up (time limit)")
        self.requests += 1
        raw = self._ask({"op": op, **fields})
        problem = wire.answers_problem(raw)
        if problem:
            raise wire.Refused(problem)
        error = wire.raised(raw)
        if error:
            raise submission_error(error)
        if "value" not in raw:
            raise wire.Refused("its answer holds no value")
        return wire.decode(raw["value"]), raw.get("inputs", [])

    def get(self, op: str, **fields):
        return self.local(self.request(op, **fields)[0])

    # -----------------------------------------------------------------------------------------
    # Values sent to the kernel
    # -----------------------------------------------------------------------------------------

    def encode(self, value, depth: int = 0):
        if depth > 20:
            raise TypeError("a value nested more than 20 levels deep cannot be sent to the notebook's code")
        if isinstance(value, Remote):
            return {"__handle__": value._id}
        if isinstance(value, RemoteClass):
            return {"__handle__": value._id}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, torch.Tensor):
            needs = bool(value.requires_grad and torch.is_grad_enabled())
            if needs:
                self._sent.append(value)
            return {"__tensor__": _npy(value.detach().cpu().numpy()), "requires_grad": needs, "leaf": value.is_leaf}
        if isinstance(value, np.generic):
            return self.encode(value.item(), depth)
        if isinstance(value, np.ndarray):
            return {"__ndarray__": _npy(value)}
        if type(value).__name__ == "Structure" and hasattr(value, "lattice"):
            return {"__crystal__": {"lattice": {"__ndarray__": _npy(value.lattice.matrix)},
                                    "species": [site.specie.Z for site in value],
                                    "frac_coords": {"__ndarray__": _npy(value.frac_coords)}}}
        if isinstance(value, list):
            return [self.encode(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, dict):
            return {"__dict__": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        raise TypeError(f"a {type(value).__name__} cannot be sent to the notebook's code (numbers, strings, arrays, "
                        "tensors, crystals, lists, tuples, dicts and the notebook's own objects can)")

    # -----------------------------------------------------------------------------------------
    # Values received
    # -----------------------------------------------------------------------------------------

    def local(self, value, tensors: list | None = None):
        """A decoded value as the test uses it; each tensor also appended to `tensors` with its wire
        form (for `_Across`)."""
        if isinstance(value, wire.Tensor):
            tensor = torch.from_numpy(value.array.copy())
            if tensors is not None:
                tensors.append((tensor, value))
            return tensor
        if isinstance(value, wire.Handle):
            return RemoteClass.make(self, value) if value.kind == "class" else Remote(self, value)
        if isinstance(value, list):
            return [self.local(v, tensors) for v in value]
        if isinstance(value, tuple):
            return tuple(self.local(v, tensors) for v in value)
        if isinstance(value, dict):
            return {k: self.local(v, tensors) for k, v in value.items()}
        return value

    def call(self, target: dict, args: tuple, kwargs: dict):
        self._sent = []
        request = {"target": target, "args": [self.encode(a) for a in args],
                   "kwargs": {str(k): self.encode(v) for k, v in kwargs.items()}, "grad_enabled": torch.is_grad_enabled()}
        sent, self._sent = self._sent, []
        value, inputs = self.request("call", **request)
        tensors: list = []
        result = self.local(value, tensors)
        differentiable = [(t, w) for t, w in tensors if w.requires_grad and w.handle is not None]
        if not sent or not differentiable:
            return result
        if not (isinstance(inputs, list) and len(inputs) == len(sent) and all(type(h) is int for h in inputs)):
            raise wire.Refused("its answer does not name the inputs it kept for backpropagation")
        joined = _Across.apply(self, [w.handle for _, w in differentiable], inputs,
                               *[t for t, _ in differentiable], *sent)
        joined = joined if isinstance(joined, tuple) else (joined,)
        swap = {id(t): j for (t, _), j in zip(differentiable, joined)}
        return _replace(result, swap)

    def backward(self, outputs: list[int], grads: list[torch.Tensor], inputs: list[int]) -> list:
        value, _ = self.request("backward", outputs=outputs, inputs=inputs,
                                grads=[{"__ndarray__": _npy(g.detach().cpu().numpy())} for g in grads])
        if not (isinstance(value, list) and len(value) == len(inputs)):
            raise wire.Refused("its gradients are not one per input")
        return [None if g is None else torch.from_numpy(g.array.copy()) if isinstance(g, wire.Tensor)
                else _not_gradient(g) for g in value]


def _not_gradient(value):
    raise AssertionError(f"a gradient came back as a {type(value).__name__}, not a tensor")


def _npy(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _replace(value, swap: dict):
    if isinstance(value, torch.Tensor):
        return swap.get(id(value), value)
    if isinstance(value, list):
        return [_replace(v, swap) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace(v, swap) for v in value)
    if isinstance(value, dict):
        return {k: _replace(v, swap) for k, v in value.items()}
    return value


class _Across(torch.autograd.Function):
    """Joins the outputs of one remote call to the test's input tensors: forward hands back copies of
    the outputs the kernel computed; backward sends their gradients to the kernel, which
    backpropagates through the submission's code and answers the inputs' gradients."""

    @staticmethod
    def forward(ctx, link, output_handles, input_handles, *tensors):
        n = len(output_handles)
        outputs, inputs = tensors[:n], tensors[n:]
        ctx.link, ctx.output_handles, ctx.input_handles = link, output_handles, input_handles
        ctx.shapes = [(t.shape, t.dtype) for t in inputs]
        ctx.n_outputs = n
        return tuple(t.clone() for t in outputs)

    @staticmethod
    def backward(ctx, *grads):
        pairs = [(h, g) for h, g in zip(ctx.output_handles, grads) if g is not None]
        none = (None,) * (3 + ctx.n_outputs)
        if not pairs:
            return none + (None,) * len(ctx.shapes)
        got = ctx.link.backward([h for h, _ in pairs], [g for _, g in pairs], ctx.input_handles)
        for g, (shape, dtype) in zip(got, ctx.shapes):
            if g is not None and g.shape != shape:
                raise AssertionError(f"a gradient of shape {tuple(g.shape)} came back for an input of shape {tuple(shape)}")
        return none + tuple(None if g is None else g.to(dtype) for g, (_, dtype) in zip(got, ctx.shapes))


class Remote:
    """An object of the notebook's, kept in the kernel; used through requests."""

    __slots__ = ("_link", "_id", "_type")

    def __init__(self, link: Link, handle: wire.Handle):
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_id", handle.id)
        object.__setattr__(self, "_type", handle.type)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._link.get("getattr", target={"__handle__": self._id}, name=name)

    def __setattr__(self, name, value):
        raise TypeError(f"a test cannot set {name!r} on the notebook's {self._type}: set it through a method "
                        "(load_state_dict, or a parameter's copy_)")

    def __call__(self, *args, **kwargs):
        return self._link.call({"__handle__": self._id}, args, kwargs)

    def __getitem__(self, key):
        return self._link.get("getitem", target={"__handle__": self._id}, key=self._link.encode(key))

    def __len__(self) -> int:
        n = self._link.get("len", target={"__handle__": self._id})
        if not (type(n) is int and 0 <= n <= MAX_LENGTH):
            raise AssertionError(f"the length of the notebook's {self._type} is {str(n)[:40]}, not a length")
        return n

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"<the notebook's {self._type}>"


class _RemoteClassType(type):
    """The metaclass of RemoteClass stand-ins: calling one builds an instance in the kernel, and
    isinstance asks the kernel."""

    def __call__(cls, *args, **kwargs):
        return cls._link.call({"__handle__": cls._id}, args, kwargs)

    def __instancecheck__(cls, obj) -> bool:
        if not isinstance(obj, Remote) or obj._link is not cls._link:
            return False
        return cls._link.get("isinstance", target={"__handle__": obj._id}, cls={"__handle__": cls._id}) is True

    def __getattr__(cls, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return cls._link.get("getattr", target={"__handle__": cls._id}, name=name)

    def __repr__(cls) -> str:
        return f"<the notebook's class {cls.__name__}>"


class RemoteClass(metaclass=_RemoteClassType):
    """A class of the notebook's (GatedConv, CGCNN, ...): RemoteClass.make gives its stand-in."""

    _link: Link
    _id: int

    @staticmethod
    def make(link: Link, handle: wire.Handle) -> type:
        name = re.sub(r"\W", "_", handle.type) or "Class"
        if not name.isidentifier():
            name = f"_{name}"
        return _RemoteClassType(name, (RemoteClass,), {"_link": link, "_id": handle.id})


def standins(link: Link, names: list[str]) -> tuple[dict, list[str]]:
    """The notebook's variables `names` as stand-ins, and the names the notebook does not define (None
    for those, as otter passes them)."""
    found, missing = {}, []
    for name in names:
        try:
            found[name] = link.get("global", name=name)
        except NameError as err:
            if not isinstance(err, SubmissionRaised):
                raise
            found[name] = None
            missing.append(name)
    return found, missing
