"""Part 4b's test set: the held-out crystals as graphs, and a trained model's MAE on them, computed in
the grading process with the master's own solution code (`master_tests.load_solution`): its
`atom_features`, `neighbor_list` and `gaussian_expand` build the graphs, its `CGCNN` (in float64, eval
mode) holds the submission's trained parameters. Nothing the kernel computes is a prediction, and the
held-out crystals never reach the kernel.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HELDOUT_ATOMS = 256  # atoms per batch of the held-out set: bounded memory
# The largest network evaluated (the notebook's defaults: 64, 3, 128): a state past these is refused
# before anything is allocated for it.
MAX_ATOM_FEA_LEN, MAX_N_CONV, MAX_H_FEA_LEN = 256, 6, 1024
KEEP = "keep the CGCNN class you were given (its __init__, layer names and shapes) and train it"


class StateError(ValueError):
    """A state dict that is not the notebook's CGCNN; the message says what to keep."""


@dataclass(frozen=True)
class Heldout:
    batches: list[tuple]  # (atom_fea, nbr_fea, nbr_idx, crystal_idx, n_crystals), float64 tensors
    labels: np.ndarray  # eV/atom, in the order of the batches' crystals
    edge_features: int  # B, the Gaussians per distance


def load(path: Path, solution, graph: dict) -> Heldout:
    """The held-out crystals of `path` (heldout.json: CIF and label by id) as the solution builds graphs."""
    from pymatgen.core import Structure
    entries = json.loads(Path(path).read_text())
    with warnings.catch_warnings():  # CIF parsing notes about rounded occupancies
        warnings.simplefilter("ignore")  # the rounding notes of pymatgen's CIF parser
        structures = [Structure.from_str(entries[i]["cif"], fmt="cif") for i in sorted(entries)]
    graphs = []
    for s in structures:
        idx, dist = solution.neighbor_list(s, graph["radius"], graph["max_num_nbr"])
        graphs.append((np.asarray(solution.atom_features(s, solution.embedding), dtype=np.float64),
                       np.asarray(idx, dtype=np.int64), np.asarray(dist, dtype=np.float64)))
    batches, chunk, atoms = [], [], 0
    for g in graphs + [None]:
        if chunk and (g is None or atoms + len(g[0]) > HELDOUT_ATOMS):
            batches.append(_collate(chunk, solution, graph))
            chunk, atoms = [], 0
        if g is not None:
            chunk.append(g)
            atoms += len(g[0])
    labels = np.array([float(entries[i]["label"]) for i in sorted(entries)])
    return Heldout(batches, labels, batches[0][1].shape[-1])


def _collate(graphs: list[tuple], solution, graph: dict) -> tuple:
    offsets = np.cumsum([0] + [len(g[0]) for g in graphs[:-1]])
    dist = np.concatenate([g[2] for g in graphs])
    nbr_fea = np.asarray(solution.gaussian_expand(dist, dmin=0.0, dmax=graph["radius"], step=graph["step"]))
    return (torch.from_numpy(np.concatenate([g[0] for g in graphs])), torch.from_numpy(nbr_fea.astype(np.float64)),
            torch.from_numpy(np.concatenate([g[1] + off for g, off in zip(graphs, offsets)])),
            torch.from_numpy(np.concatenate([np.full(len(g[0]), k) for k, g in enumerate(graphs)])), len(graphs))


def model_for(state: dict[str, np.ndarray], pool: str, solution, orig: int, b: int):
    """The solution's CGCNN holding `state` if the state is exactly that network's (names and shapes,
    sizes within MAX_*), in float64 and eval mode; raises StateError naming the first difference
    before anything is computed with the state."""
    shapes = {name: tuple(np.shape(value)) for name, value in state.items()}
    if len(shapes.get("embedding.weight", ())) != 2 or len(shapes.get("conv_to_fc.weight", ())) != 2:
        raise StateError(f"the model has no embedding.weight or conv_to_fc.weight of two dimensions: {KEEP}")
    f, h = shapes["embedding.weight"][0], shapes["conv_to_fc.weight"][0]
    layers = {name.split(".")[1] for name in shapes if name.startswith("convs.")}
    for what, value, limit in (("atom_fea_len", f, MAX_ATOM_FEA_LEN), ("h_fea_len", h, MAX_H_FEA_LEN),
                               ("n_conv", len(layers), MAX_N_CONV)):
        if value > limit:
            raise StateError(f"the model's {what} is {value}, more than the {limit} the grader evaluates: train "
                             f"with a smaller {what} (the notebook's default fits the time limits)")
    conv = "gated" if any(".fc_full." in k for k in shapes) else "shared" if any(".fc_neighbor." in k for k in shapes) else "none"
    if layers != {str(k) for k in range(len(layers))}:
        raise StateError(f"the model's convolution layers are not numbered 0 to {len(layers) - 1}: {KEEP}")
    model = solution.CGCNN(orig_atom_fea_len=orig, nbr_fea_len=b, atom_fea_len=f, n_conv=len(layers) if layers else 0,
                           h_fea_len=h, conv=conv, pool=pool)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for name, shape in want.items():
        if name not in shapes:
            raise StateError(f"the model has no {name} (a CGCNN with conv={conv!r} has one): {KEEP}")
        if shapes[name] != shape:
            raise StateError(f"the model's {name} has shape {shapes[name][:8]}, where the notebook's CGCNN with "
                             f"atom_fea_len={f}, h_fea_len={h} for {orig} atom and {b} edge features has {shape}: {KEEP}")
    extra = sorted(n for n in set(shapes) - set(want) if not (n.endswith(".num_batches_tracked") and math.prod(shapes[n]) <= 1))
    if extra:
        raise StateError(f"the model has a parameter {extra[0][:80]!r} that the notebook's CGCNN has not: {KEEP}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(state[k], dtype=np.float32)) for k in want}, strict=False)
    return model.double().eval()


class _SearchingWithin:
    """The solution, searching neighbours within `radius` whatever radius it is given: the notebook's
    RADIUS sets the search, while the Gaussians keep the support module's span (cgcnn_utils.collate)."""

    def __init__(self, solution, radius: float):
        self._solution, self._radius = solution, radius

    def neighbor_list(self, structure, radius, max_num_nbr):
        return self._solution.neighbor_list(structure, self._radius, max_num_nbr)

    def __getattr__(self, name):
        return getattr(self._solution, name)


def load_as_trained(path: Path, solution, graph: dict, default: dict) -> Heldout:
    """`load` with the graph settings a notebook trained with (graph_of): its neighbours' radius and
    number, the default's Gaussian span."""
    return load(path, _SearchingWithin(solution, graph["radius"]), dict(default, max_num_nbr=graph["max_num_nbr"]))


GRAPH_NAMES = {"radius": "RADIUS", "max_num_nbr": "MAX_NUM_NBR"}  # the notebook's graph settings, by name
GRAPH_RANGES = {"radius": (1.0, 12.0), "max_num_nbr": (1, 32)}  # what the grader builds graphs with


def graph_of(link, default: dict) -> tuple[dict, str]:
    """The graph settings the notebook trained with (its RADIUS and MAX_NUM_NBR, where it defines them
    as numbers within GRAPH_RANGES), else `default`'s; and a note for the student when they differ."""
    from . import remote, wire
    try:
        found, _ = remote.standins(link, list(GRAPH_NAMES.values()))
    except (remote.SubmissionRaised, remote.LinkBroken, wire.Refused):
        return dict(default), ""
    graph = dict(default)
    for key, name in GRAPH_NAMES.items():
        value, (low, high) = found.get(name), GRAPH_RANGES[key]
        kind = int if key == "max_num_nbr" else (int, float)
        if isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high:
            graph[key] = value
    changed = [f"{GRAPH_NAMES[k]} = {graph[k]}" for k in GRAPH_NAMES if graph[k] != default[k]]
    return graph, (f"The held-out crystals' graphs were built with your notebook's {', '.join(changed)}." if changed else "")


def pooling_of(link, solution) -> tuple[str | None, str]:
    """Which pooling the trained `model` applies, "mean" or "max", by what its `pool` computes on three
    crystals with interleaved atoms, against the solution's: a functools.partial, a lambda or a renamed
    function counts for what it does, not for its name. (None, why) for anything else."""
    from . import remote, wire
    x = torch.tensor([[0.5, -1.5], [2.0, -3.0], [4.0, 5.0], [-2.0, -1.0], [1.0, 0.25], [3.0, 3.5]])
    c = torch.tensor([2, 0, 2, 0, 1, 1])  # three crystals, their atoms interleaved
    try:
        model = remote.standins(link, ["model"])[0]["model"]
        with torch.no_grad():
            got = model.pool(x, c, 3)
    except (remote.SubmissionRaised, remote.LinkBroken, wire.Refused, AttributeError, TypeError) as err:
        return None, f"the model's pooling (model.pool) could not be run on a test batch ({type(err).__name__}: {str(err)[:200]})"
    for kind in ("mean", "max"):
        want = getattr(solution, f"{kind}_pool")(x, c, 3)
        if isinstance(got, torch.Tensor) and got.shape == want.shape and float((got - want).abs().max()) < 1e-6:
            return kind, ""
    return None, ("the model's pooling (model.pool) computes neither mean nor max pooling on a test batch: keep the "
                  "pool option's functions")


def mae(model, heldout: Heldout, mean: float, std: float) -> float | None:
    """The model's test MAE (eV/atom), or None when a prediction is not a finite number."""
    with torch.no_grad(), np.errstate(all="ignore"):
        predictions = np.concatenate([model(*batch).reshape(-1).numpy() for batch in heldout.batches]) * std + mean
    if predictions.shape != heldout.labels.shape or not np.all(np.isfinite(predictions)):
        return None
    return float(np.mean(np.abs(predictions - heldout.labels)))
