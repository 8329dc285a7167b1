"""Baselines written the way the reference CGCNN is usually written, straight from the equations of
Xie & Grossman, Phys. Rev. Lett. 120, 145301 (2018): the speed and accuracy benchmarks and
tests/test_performance.py compare the solution against these.

- neighbour lists from `Structure.get_all_neighbors` (one Python object per neighbour), sorted in Python;
- the convolutions apply their linear map to the full per-edge concatenation z = v_i ⊕ v_j ⊕ u_ik
  (⊕ is concatenation), i.e. one (2F + B) x 2F product per edge;
- mean pooling by a Python loop over the crystals of a batch.

The layers keep the solution's parameter names, so `load_state_dict` moves weights between them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def reference_neighbor_list(structure, radius: float = 8.0, max_num_nbr: int = 12):
    """(nbr_idx, nbr_dist), both (n_atoms, max_num_nbr): the nearest neighbours of each site, padded
    as the solution pads (own index, distance radius + 1)."""
    n = len(structure)
    nbr_idx = np.repeat(np.arange(n)[:, None], max_num_nbr, axis=1)
    nbr_dist = np.full((n, max_num_nbr), radius + 1.0)
    for i, neighbours in enumerate(structure.get_all_neighbors(radius)):
        nearest = sorted(neighbours, key=lambda nb: nb.nn_distance)[:max_num_nbr]
        nbr_idx[i, :len(nearest)] = [nb.index for nb in nearest]
        nbr_dist[i, :len(nearest)] = [nb.nn_distance for nb in nearest]
    return nbr_idx, nbr_dist


def reference_atom_features(structure, embedding):
    """(n_atoms, 92) float32: the element vector of each site."""
    return np.array([embedding[site.specie.Z] for site in structure], dtype=np.float32)


def sorted_pairs(nbr_idx, nbr_dist):
    """Each atom's neighbours as (distance, index) pairs sorted by distance then index, so that two
    lists that order equidistant neighbours differently compare equal: (n, M) distances and indices.
    Distances are rounded to 1e-6 A for the sort only, so that round-off cannot reorder a tie."""
    order = np.lexsort((nbr_idx, np.round(nbr_dist, 6)), axis=1)
    return np.take_along_axis(nbr_dist, order, 1), np.take_along_axis(nbr_idx, order, 1)


def assert_same_graph(idx_a, dist_a, idx_b, dist_b, tol: float = 1e-8, name: str = "") -> None:
    """Raise AssertionError unless two neighbour lists hold the same (distance, index) pairs per atom."""
    da, ia = sorted_pairs(np.asarray(idx_a), np.asarray(dist_a))
    db, ib = sorted_pairs(np.asarray(idx_b), np.asarray(dist_b))
    assert da.shape == db.shape, f"{name}: shapes {da.shape} and {db.shape} differ"
    assert np.allclose(da, db, rtol=0, atol=tol), f"{name}: distances differ by {np.abs(da - db).max():.2e}"
    assert np.array_equal(ia, ib), f"{name}: neighbour indices differ"


def reference_build_graphs(dataset, ids, embedding, radius: float = 8.0, max_num_nbr: int = 12) -> dict:
    """{id: cgcnn_utils.CrystalGraph} built the reference way (CIF parsing included on a fresh dataset)."""
    from cgcnn_utils import CrystalGraph
    graphs = {}
    for id_ in ids:
        s = dataset.structure(id_)
        nbr_idx, nbr_dist = reference_neighbor_list(s, radius, max_num_nbr)
        graphs[id_] = CrystalGraph(reference_atom_features(s, embedding), nbr_idx, nbr_dist)
    return graphs


def assert_same_graphs(graphs: dict, reference: dict, tol: float = 1e-8) -> None:
    """Raise AssertionError unless two {id: CrystalGraph} hold the same ids, atom features (float32
    copies of the embedding: within 1e-7) and neighbour lists (sorted comparison, distances within `tol`)."""
    assert list(graphs) == list(reference), "the two sets of graphs hold different ids"
    for id_, g in graphs.items():
        r = reference[id_]
        same = g.atom_fea.shape == r.atom_fea.shape and np.allclose(g.atom_fea, r.atom_fea, rtol=0, atol=1e-7)
        assert same and g.atom_fea.dtype == r.atom_fea.dtype, f"{id_}: atom features differ"
        assert_same_graph(g.nbr_idx, g.nbr_dist, r.nbr_idx, r.nbr_dist, tol, id_)


class ReferenceSharedConv(nn.Module):
    """Eq. 3: v_i' = g(sum_jk W_c (v_j ⊕ u_ik) + W_s v_i + b), the map applied to every edge."""

    def __init__(self, atom_fea_len, nbr_fea_len):
        super().__init__()
        self.fc_neighbor = nn.Linear(atom_fea_len + nbr_fea_len, atom_fea_len, bias=False)
        self.fc_self = nn.Linear(atom_fea_len, atom_fea_len)
        self.softplus = nn.Softplus()

    def forward(self, atom_fea, nbr_fea, nbr_idx):
        """atom_fea (N, F), nbr_fea (N, M, B), nbr_idx (N, M) -> (N, F)."""
        z = torch.cat([atom_fea[nbr_idx], nbr_fea], dim=2)  # (N, M, F + B)
        return self.softplus(self.fc_neighbor(z).sum(dim=1) + self.fc_self(atom_fea))


class ReferenceGatedConv(nn.Module):
    """Eq. 4 with batch norm: v_i' = g(v_i + BN(sum_jk sigma(z W_f + b_f) * g(z W_s + b_s))),
    z = v_i + v_j + u_ik; W_f and W_s stacked in one linear map applied to every edge."""

    def __init__(self, atom_fea_len, nbr_fea_len):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)
        self.sigmoid = nn.Sigmoid()
        self.softplus1 = nn.Softplus()
        self.softplus2 = nn.Softplus()

    def forward(self, atom_fea, nbr_fea, nbr_idx):
        """atom_fea (N, F), nbr_fea (N, M, B), nbr_idx (N, M) -> (N, F)."""
        n, m = nbr_idx.shape
        f = self.atom_fea_len
        z = torch.cat([atom_fea[:, None, :].expand(n, m, f), atom_fea[nbr_idx], nbr_fea], dim=2)
        gated = self.bn1(self.fc_full(z).view(n * m, 2 * f)).view(n, m, 2 * f)
        nbr_filter, nbr_core = gated.chunk(2, dim=2)
        summed = (self.sigmoid(nbr_filter) * self.softplus1(nbr_core)).sum(dim=1)
        return self.softplus2(atom_fea + self.bn2(summed))


def loop_mean_pool(atom_fea, crystal_idx, n_crystals):
    """(N, F), (N,) -> (n_crystals, F): torch.mean over each crystal's rows, one crystal at a time."""
    return torch.stack([atom_fea[crystal_idx == c].mean(dim=0) for c in range(n_crystals)])


REFERENCE_CONVS = {"gated": ReferenceGatedConv, "shared": ReferenceSharedConv}


def reference_model(CGCNN, nbr_fea_len: int, conv: str = "gated", **kwargs) -> nn.Module:
    """The solution's CGCNN class (passed in) with reference-way convolutions and loop pooling; same
    parameter names, so `reference.load_state_dict(solution.state_dict())` gives the same function."""
    model = CGCNN(nbr_fea_len=nbr_fea_len, conv=conv, **kwargs)
    f = model.embedding.out_features
    model.convs = nn.ModuleList([REFERENCE_CONVS[conv](f, nbr_fea_len) for _ in model.convs])
    model.pool = loop_mean_pool
    return model
