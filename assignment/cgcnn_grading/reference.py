"""The grader's own CGCNN, in numpy: what each part of the notebook must compute, written the literal
way (one product per edge, batch statistics by formula), independently of the notebook's torch
solution. Runs in the grading process only. All functions compute in float64.

Shapes: N atoms, M neighbours per atom, F atom features, B edge features (Gaussians), C crystals.
A `state` is {parameter or buffer name: array}, named as the notebook's modules name them
(`fc_full.weight`, `bn1.running_mean`, `convs.0.fc_full.bias`, ...); `prefix` selects one layer.
"""

from __future__ import annotations

import math

import numpy as np

BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default


def softplus(a: np.ndarray) -> np.ndarray:
    """log(1 + exp(a)), elementwise, without overflow."""
    return np.logaddexp(0.0, a)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-a)), elementwise, without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(a, dtype=np.float64)))


def linear(state: dict, prefix: str, a: np.ndarray) -> np.ndarray:
    """a @ W.T (+ b): (..., in) -> (..., out), W = state[prefix + 'weight'], b if the layer has one."""
    out = np.asarray(a, dtype=np.float64) @ np.asarray(state[prefix + "weight"], dtype=np.float64).T
    bias = state.get(prefix + "bias")
    return out if bias is None else out + np.asarray(bias, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Part 1: the crystal graph
# ---------------------------------------------------------------------------------------------

def atom_features(structure, embedding: dict) -> np.ndarray:
    """The element vector of each site, in site order: (N, 92)."""
    return np.array([embedding[site.specie.Z] for site in structure], dtype=np.float64)


def sorted_neighbours(structure, radius: float) -> list[list[tuple[float, int]]]:
    """For each site, every neighbour within `radius` as (distance, index), sorted by both; by
    pymatgen's per-site neighbour objects (not the array route of `get_neighbor_list`)."""
    return [sorted((nb.nn_distance, nb.index) for nb in nbrs) for nbrs in structure.get_all_neighbors(radius)]


def crystal_graph(structure, embedding: dict, radius: float, max_num_nbr: int):
    """The graph the notebook's solution builds: atom features (N, 92), and each atom's `max_num_nbr`
    nearest neighbours within `radius` as indices and distances (N, M), ties in pymatgen's order,
    rows padded with the atom itself at radius + 1."""
    n = len(structure)
    centres, points, _, dists = structure.get_neighbor_list(r=radius)
    nbr_idx = np.repeat(np.arange(n)[:, None], max_num_nbr, axis=1)
    nbr_dist = np.full((n, max_num_nbr), radius + 1.0)
    for i in range(n):
        mine = np.flatnonzero(centres == i)
        nearest = mine[np.argsort(dists[mine], kind="stable")][:max_num_nbr]
        nbr_idx[i, :len(nearest)], nbr_dist[i, :len(nearest)] = points[nearest], dists[nearest]
    return atom_features(structure, embedding), nbr_idx, nbr_dist


def batch(structures: list, embedding: dict, radius: float, max_num_nbr: int, step: float) -> dict:
    """`cgcnn_forward`'s inputs for these crystals as one batch: atom_fea (N, 92), nbr_fea (N, M, K),
    nbr_idx (N, M) into the batch, crystal_idx (N,), n_crystals."""
    parts, offset = [], 0
    for c, structure in enumerate(structures):
        atom_fea, nbr_idx, nbr_dist = crystal_graph(structure, embedding, radius, max_num_nbr)
        parts.append((atom_fea, gaussian_expand(nbr_dist, 0.0, radius, step), nbr_idx + offset, np.full(len(atom_fea), c)))
        offset += len(atom_fea)
    atom_fea, nbr_fea, nbr_idx, crystal_idx = (np.concatenate(a) for a in zip(*parts))
    return {"atom_fea": atom_fea, "nbr_fea": nbr_fea, "nbr_idx": nbr_idx, "crystal_idx": crystal_idx,
            "n_crystals": len(structures)}


def split_batch(inputs: dict, max_atoms: int) -> list[dict]:
    """Inputs made by `batch`, split into batches of whole crystals of at most `max_atoms` atoms (or
    one crystal, if it is larger): the same predictions in eval mode, in bounded memory. Needs what
    `batch` guarantees: crystals in order, each atom's neighbours inside its crystal."""
    crystal_idx, nbr_idx = np.asarray(inputs["crystal_idx"]), np.asarray(inputs["nbr_idx"])
    starts = np.r_[np.searchsorted(crystal_idx, np.arange(inputs["n_crystals"])), len(crystal_idx)]
    parts, first = [], 0
    while first < inputs["n_crystals"]:
        last = first + 1
        while last < inputs["n_crystals"] and starts[last + 1] - starts[first] <= max_atoms:
            last += 1
        a, b = starts[first], starts[last]
        if nbr_idx[a:b].size and (nbr_idx[a:b].min() < a or nbr_idx[a:b].max() >= b):
            raise ValueError("split_batch: a neighbour outside its crystal (inputs not made by `batch`)")
        parts.append({"atom_fea": inputs["atom_fea"][a:b], "nbr_fea": inputs["nbr_fea"][a:b],
                      "nbr_idx": nbr_idx[a:b] - a, "crystal_idx": crystal_idx[a:b] - first, "n_crystals": last - first})
        first = last
    return parts


def gaussian_centres(dmin: float, dmax: float, step: float) -> np.ndarray:
    """The K = round((dmax - dmin) / step) + 1 centres dmin, dmin + step, ..., dmax: (K,)."""
    return dmin + step * np.arange(int(round((dmax - dmin) / step)) + 1)


def gaussian_expand(distances, dmin=0.0, dmax=8.0, step=0.2, var=None) -> np.ndarray:
    """exp(-(d - mu_k)^2 / sigma^2), sigma = var or step: shape distances.shape + (K,)."""
    sigma = step if var is None else var
    d = np.asarray(distances, dtype=np.float64)[..., None]
    return np.exp(-((d - gaussian_centres(dmin, dmax, step)) ** 2) / sigma ** 2)


# ---------------------------------------------------------------------------------------------
# Part 2: convolutions
# ---------------------------------------------------------------------------------------------

def shared_conv(state: dict, atom_fea, nbr_fea, nbr_idx, prefix: str = "") -> np.ndarray:
    """Eq. 3: g(sum_j W_c [v_j, u_ij] + W_s v_i + b): (N, F), (N, M, B), (N, M) -> (N, F)."""
    x = np.asarray(atom_fea, dtype=np.float64)
    z = np.concatenate([x[nbr_idx], np.asarray(nbr_fea, dtype=np.float64)], axis=2)  # (N, M, F + B)
    pre = linear(state, prefix + "fc_neighbor.", z).sum(axis=1) + linear(state, prefix + "fc_self.", x)
    return softplus(pre)


def batch_norm(state: dict, prefix: str, a: np.ndarray, train: bool) -> np.ndarray:
    """BatchNorm1d on rows: (R, D) -> (R, D); batch mean and biased variance in train mode, the
    running statistics in eval mode."""
    if train:
        mean, var = a.mean(axis=0), a.var(axis=0)
    else:
        mean, var = state[prefix + "running_mean"], state[prefix + "running_var"]
    scale = np.asarray(state[prefix + "weight"], dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + BN_EPS)
    return (a - np.asarray(mean, dtype=np.float64)) * scale + np.asarray(state[prefix + "bias"], dtype=np.float64)


def gated_conv(state: dict, atom_fea, nbr_fea, nbr_idx, prefix: str = "", train: bool = False) -> np.ndarray:
    """Eq. 4 with batch norm and residual: z_ij = [v_i, v_j, u_ij]; (f | s) = BN1(W z_ij + b);
    v_i' = g(v_i + BN2(sum_j sigmoid(f) * g(s))): (N, F), (N, M, B), (N, M) -> (N, F)."""
    x = np.asarray(atom_fea, dtype=np.float64)
    n, m = np.shape(nbr_idx)
    f = x.shape[1]
    z = np.concatenate([np.repeat(x[:, None], m, axis=1), x[nbr_idx], np.asarray(nbr_fea, dtype=np.float64)], axis=2)
    g = linear(state, prefix + "fc_full.", z).reshape(n * m, 2 * f)
    g = batch_norm(state, prefix + "bn1.", g, train).reshape(n, m, 2 * f)
    summed = (sigmoid(g[..., :f]) * softplus(g[..., f:])).sum(axis=1)
    return softplus(x + batch_norm(state, prefix + "bn2.", summed, train))


def numerical_gradient(function, a, h: float = 1e-6) -> np.ndarray:
    """d sum(function(a)) / d a by central differences, in float64: a's shape."""
    a = np.asarray(a, dtype=np.float64)
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (np.sum(function(up)) - np.sum(function(down))) / (2 * h)
    return grad


# ---------------------------------------------------------------------------------------------
# Part 3: pooling
# ---------------------------------------------------------------------------------------------

def _members(crystal_idx, n_crystals: int) -> list[np.ndarray]:
    crystal_idx = np.asarray(crystal_idx)
    return [np.flatnonzero(crystal_idx == c) for c in range(n_crystals)]


def mean_pool(atom_fea, crystal_idx, n_crystals: int) -> np.ndarray:
    """Mean of each crystal's rows (zeros for an empty crystal): (N, F), (N,) -> (C, F)."""
    x = np.asarray(atom_fea, dtype=np.float64)
    return np.stack([x[rows].mean(axis=0) if len(rows) else np.zeros(x.shape[1])
                     for rows in _members(crystal_idx, n_crystals)])


def max_pool(atom_fea, crystal_idx, n_crystals: int) -> np.ndarray:
    """Featurewise maximum of each crystal's rows (zeros for an empty crystal): (N, F), (N,) -> (C, F)."""
    x = np.asarray(atom_fea, dtype=np.float64)
    return np.stack([x[rows].max(axis=0) if len(rows) else np.zeros(x.shape[1])
                     for rows in _members(crystal_idx, n_crystals)])


def mean_pool_grad(crystal_idx, n_crystals: int, n_features: int) -> np.ndarray:
    """d sum(mean_pool) / d atom_fea: 1 / (atoms in the atom's crystal) everywhere in its row: (N, F)."""
    counts = np.bincount(np.asarray(crystal_idx), minlength=n_crystals)
    return np.repeat((1.0 / counts[np.asarray(crystal_idx)])[:, None], n_features, axis=1)


def max_pool_grad(atom_fea, crystal_idx, n_crystals: int) -> np.ndarray:
    """d sum(max_pool) / d atom_fea, for inputs without ties: 1 at each crystal's featurewise
    argmax, 0 elsewhere: (N, F)."""
    x = np.asarray(atom_fea, dtype=np.float64)
    grad = np.zeros_like(x)
    for rows in _members(crystal_idx, n_crystals):
        if len(rows):
            grad[rows[x[rows].argmax(axis=0)], np.arange(x.shape[1])] = 1.0
    return grad


# ---------------------------------------------------------------------------------------------
# Part 4: the network
# ---------------------------------------------------------------------------------------------

def cgcnn_head(state: dict, pooled) -> np.ndarray:
    """fc_out(g(conv_to_fc(g(pooled)))): (C, F) -> (C,) predictions."""
    hidden = softplus(linear(state, "conv_to_fc.", softplus(np.asarray(pooled, dtype=np.float64))))
    return linear(state, "fc_out.", hidden).reshape(-1)


def cgcnn_forward(state: dict[str, np.ndarray], atom_fea, nbr_fea, nbr_idx, crystal_idx, n_crystals,
                  conv="gated", pool="mean") -> np.ndarray:
    """The whole network in eval mode, from a state dict of the notebook's CGCNN (embedding.*,
    convs.{k}.*, conv_to_fc.*, fc_out.*; as many layers as `convs.{k}` in it):
    (N, 92), (N, M, B), (N, M), (N,), C -> (C,). A state from a submission is checked first with
    `check_state` (scoring.heldout_mae does): shapes that broadcast would otherwise reach the arithmetic.
    (This function's code is in calibration.json's fingerprint: the check stays beside it.)"""
    layer = {"gated": gated_conv, "shared": shared_conv, "none": None}[conv]
    pooling = {"mean": mean_pool, "max": max_pool}[pool]
    n_conv = len({name.split(".")[1] for name in state if name.startswith("convs.")})
    if (layer is None) != (n_conv == 0):
        raise ValueError(f"conv={conv!r} but the state has {n_conv} convolution layers")
    v = linear(state, "embedding.", atom_fea)
    for k in range(n_conv):
        v = layer(state, v, nbr_fea, nbr_idx, prefix=f"convs.{k}.")
    return cgcnn_head(state, pooling(v, crystal_idx, n_crystals))


# ---------------------------------------------------------------------------------------------
# The notebook's parameters, by name: what a state must hold before any arithmetic
# ---------------------------------------------------------------------------------------------

# The largest network the grader evaluates on the held-out crystals: the notebook's default is
# atom_fea_len 64, n_conv 3, h_fea_len 128 (0.3 s of CPU time on the 965 held-out atoms; its training
# takes 78 s of the 240 s a cell may use, and a layer's cost grows as atom_fea_len squared). These
# bound the grader's time whatever a state declares: at these, 18 s and 52 MB (scoring.HELDOUT_ATOMS
# atoms at a time); at 512, 8 and 4096, 100 s.
MAX_ATOM_FEA_LEN = 256
MAX_N_CONV = 6
MAX_H_FEA_LEN = 1024


class StateError(ValueError):
    """A state dict that is not the notebook's CGCNN; the message says what to keep."""


def shared_shapes(f: int, b: int, prefix: str = "") -> dict:
    """SharedConv(f, b)'s parameters: fc_neighbor (no bias) and fc_self."""
    return {prefix + "fc_neighbor.weight": (f, f + b), prefix + "fc_self.weight": (f, f), prefix + "fc_self.bias": (f,)}


def batch_norm_shapes(prefix: str, d: int) -> dict:
    """BatchNorm1d(d)'s parameters and running statistics. Not num_batches_tracked: a 0-d buffer
    (encode_array sends it as shape (1,), which cannot be copied into it), and one that BatchNorm1d
    with its default momentum never reads."""
    return {prefix + k: (d,) for k in ("weight", "bias", "running_mean", "running_var")}


def gated_shapes(f: int, b: int, prefix: str = "") -> dict:
    """GatedConv(f, b)'s parameters: fc_full, bn1 over 2f, bn2 over f."""
    return ({prefix + "fc_full.weight": (2 * f, 2 * f + b), prefix + "fc_full.bias": (2 * f,)}
            | batch_norm_shapes(prefix + "bn1.", 2 * f) | batch_norm_shapes(prefix + "bn2.", f))


def cgcnn_shapes(f: int, n_conv: int, h: int, b: int = 41, conv: str = "gated", orig: int = 92) -> dict:
    """CGCNN(orig, b, f, n_conv, h, conv)'s parameters and buffers, by name."""
    layer = {"gated": gated_shapes, "shared": shared_shapes, "none": None}[conv]
    shapes = {"embedding.weight": (f, orig), "embedding.bias": (f,)}
    for k in range(n_conv if layer else 0):
        shapes |= layer(f, b, f"convs.{k}.")
    return shapes | {"conv_to_fc.weight": (h, f), "conv_to_fc.bias": (h,), "fc_out.weight": (1, h), "fc_out.bias": (1,)}


def check_state(state: dict, conv: str, orig: int, b: int) -> int:
    """The number of convolution layers of `state` if it is exactly the notebook's CGCNN with layers
    of type `conv` for inputs of `orig` atom and `b` edge features: every parameter and buffer named
    and shaped as CGCNN's __init__ makes them (atom_fea_len, n_conv and h_fea_len read from the state,
    within MAX_*), nothing else. Raises StateError naming the first difference: a state whose shapes
    would broadcast (a bias of shape (500000, 1, 1)) never reaches the arithmetic."""
    shapes = {name: tuple(np.shape(value)) for name, value in state.items()}
    keep = "keep the CGCNN class you were given (its __init__, layer names and shapes) and train it"
    if len(shapes.get("embedding.weight", ())) != 2 or len(shapes.get("conv_to_fc.weight", ())) != 2:
        raise StateError(f"the model has no embedding.weight or conv_to_fc.weight of two dimensions: {keep}")
    f, h = shapes["embedding.weight"][0], shapes["conv_to_fc.weight"][0]
    layers = {name.split(".")[1] for name in shapes if name.startswith("convs.")}
    n_conv = len(layers)
    for what, value, limit in (("atom_fea_len", f, MAX_ATOM_FEA_LEN), ("h_fea_len", h, MAX_H_FEA_LEN),
                               ("n_conv", n_conv, MAX_N_CONV)):
        if value > limit:
            raise StateError(f"the model's {what} is {value}, more than the {limit} the grader evaluates: train "
                             f"with a smaller {what} (the notebook's default fits the time limits)")
    if conv == "none" and n_conv:
        raise StateError(f"conv='none' but the model has {n_conv} convolution layers: {keep}")
    want = cgcnn_shapes(f, n_conv, h, b, conv, orig)
    if layers != {str(k) for k in range(n_conv)}:
        raise StateError(f"the model's convolution layers are not numbered 0 to {n_conv - 1}: {keep}")
    for name, shape in want.items():
        if name not in shapes:
            raise StateError(f"the model has no {name} (a CGCNN with conv={conv!r} has one): {keep}")
        if shapes[name] != shape:
            raise StateError(f"the model's {name} has shape {shapes[name][:8]}, where the notebook's CGCNN with "
                             f"atom_fea_len={f}, h_fea_len={h} for {orig} atom and {b} edge features has {shape}: "
                             f"{keep}")
    # BatchNorm's step counter (0-d, never read in eval mode) may come along; nothing else may
    extra = sorted(n for n in set(shapes) - set(want) if not (n.endswith(".num_batches_tracked") and
                                                             math.prod(shapes[n]) <= 1))
    if extra:
        raise StateError(f"the model has a parameter {extra[0][:80]!r} that the notebook's CGCNN has not: {keep}")
    return n_conv
