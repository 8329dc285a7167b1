"""The reference CGCNN, the way Xie & Grossman's code (github.com/txie-93/cgcnn) does it, re-implemented
here from the equations of Phys. Rev. Lett. 120, 145301 (2018) and the defaults of that code's
`main.py` (no code copied): the speed and accuracy benchmarks and tests/test_performance.py compare
the solution against these.

    python -m benchmarks.reference_way      (from the repository root) prints the recipe's settings

- neighbour lists from `Structure.get_all_neighbors` (one Python object per neighbour), sorted in Python;
- the convolutions apply their linear map to the full per-edge concatenation z = v_i ⊕ v_j ⊕ u_ik
  (⊕ is concatenation), i.e. one (2F + B) x 2F product per edge;
- mean pooling by a Python loop over the crystals of a batch;
- `ReferenceTraining`: the reference training recipe (main.py's defaults): batches of 256 crystals
  drawn afresh every epoch (its training loader samples at random), SGD lr 0.01, momentum 0.9, no
  weight decay, the learning rate times 0.1 at epoch 100, MSE on normalised targets, a validation
  pass every epoch and the best validation MAE's weights kept. atom_fea_len 64, h_fea_len 128,
  n_conv 3 and one hidden layer after pooling are the solution's CGCNN defaults too, and its
  Gaussian grid (0 to 8 A in steps of 0.2, 41 centres) and element vectors are the reference's.

Where this differs from that code, on purpose: the crystals are split by the project's split.csv
(the reference splits at random, 80/10/10), targets are normalised with the training set's mean and
standard deviation (the reference samples 500 crystals of the whole data set, test set included),
and a crystal with fewer than 12 neighbours within 8 A is padded (the reference keeps fewer; no
perovskite here has fewer). The layers keep the solution's parameter names, so `load_state_dict`
moves weights between them.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from cgcnn_utils import GRAPH


def reference_neighbor_list(structure, radius: float = GRAPH.radius, max_num_nbr: int = GRAPH.max_num_nbr):
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


def reference_build_graphs(dataset, ids, embedding, radius: float = GRAPH.radius,
                           max_num_nbr: int = GRAPH.max_num_nbr) -> dict:
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


class ReferenceTraining:
    """The reference training recipe (txie-93/cgcnn main.py's defaults), one epoch per `epoch()` call.

    Each crystal's tensors (element vectors, Gaussian-expanded distances, neighbour indices) are made
    once, as the reference's data set caches each item; every epoch draws a new order of the training
    crystals (`seed` fixes the draws) and stacks them into batches of BATCH_SIZE, the last one smaller,
    as the reference's loader does. Then SGD on the MSE of normalised targets, the learning-rate step,
    a validation pass, and a copy of the weights whenever the validation MAE is the best so far
    (`restore_best` loads them). `state_at(epochs)` holds the best weights as they were after that many
    epochs, for the epochs asked for in `snapshots` (the reference's default run is EPOCHS)."""

    BATCH_SIZE, LR, MOMENTUM, WEIGHT_DECAY = 256, 0.01, 0.9, 0.0
    LR_MILESTONES, LR_GAMMA = [100], 0.1
    EPOCHS = 30  # main.py's default number of epochs

    def __init__(self, model, graphs: dict, targets: dict, train_ids: list, val_batches: list, normalizer,
                 gaussian_expand, seed: int = 0, snapshots=(EPOCHS,)):
        self.model, self.targets, self.train_ids = model, targets, list(train_ids)
        self.val_batches, self.normalizer = val_batches, normalizer
        self.items = {}
        for i in self.train_ids:
            g = graphs[i]
            nbr_fea = gaussian_expand(g.nbr_dist, dmin=0.0, dmax=GRAPH.radius, step=GRAPH.step)
            self.items[i] = (torch.from_numpy(np.asarray(g.atom_fea, dtype=np.float32)),
                             torch.as_tensor(np.asarray(nbr_fea), dtype=torch.float32),
                             torch.from_numpy(np.asarray(g.nbr_idx, dtype=np.int64)))
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.LR, momentum=self.MOMENTUM,
                                         weight_decay=self.WEIGHT_DECAY)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, self.LR_MILESTONES, self.LR_GAMMA)
        self.epochs, self.best_epoch, self.best_val, self.best_state = 0, 0, math.inf, None
        self.val_mae: list[float] = []
        self.snapshots, self._snapshots = set(snapshots), {}

    def batch(self, ids: list):
        """The crystals `ids` stacked into one cgcnn_utils.Batch (neighbour indices shifted)."""
        from cgcnn_utils import Batch
        atom_fea, nbr_fea, nbr_idx, crystal_idx, offset = [], [], [], [], 0
        for c, i in enumerate(ids):
            a, f, idx = self.items[i]
            atom_fea.append(a)
            nbr_fea.append(f)
            nbr_idx.append(idx + offset)
            crystal_idx.append(torch.full((len(a),), c, dtype=torch.int64))
            offset += len(a)
        return Batch(torch.cat(atom_fea), torch.cat(nbr_fea), torch.cat(nbr_idx), torch.cat(crystal_idx), len(ids),
                     torch.tensor([self.targets[i] for i in ids], dtype=torch.float32), list(ids))

    def epoch(self) -> float:
        """One epoch of training and its validation pass; returns the validation MAE (eV/atom)."""
        from cgcnn_utils import mae, predict
        model = self.model
        model.train()
        order = torch.randperm(len(self.train_ids), generator=self.generator).tolist()
        for start in range(0, len(order), self.BATCH_SIZE):
            b = self.batch([self.train_ids[k] for k in order[start:start + self.BATCH_SIZE]])
            pred = model(b.atom_fea, b.nbr_fea, b.nbr_idx, b.crystal_idx, b.n_crystals)
            loss = nn.functional.mse_loss(pred, self.normalizer.norm(b.target))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        val = mae(predict(model, self.val_batches, self.normalizer), self.targets)
        self.scheduler.step()
        self.epochs += 1
        self.val_mae.append(val)
        if val < self.best_val:
            self.best_val, self.best_epoch, self.best_state = val, self.epochs, copy.deepcopy(model.state_dict())
        if self.epochs in self.snapshots:
            self._snapshots[self.epochs] = (self.best_epoch, self.best_state)
        return val

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def state_at(self, epochs: int):
        """(best epoch, best weights) after `epochs` epochs, or None if the run stopped before."""
        return self._snapshots.get(epochs)


if __name__ == "__main__":
    r = ReferenceTraining
    print(f"reference recipe: batch {r.BATCH_SIZE} (redrawn every epoch), SGD lr {r.LR} momentum {r.MOMENTUM} "
          f"weight decay {r.WEIGHT_DECAY}, lr x{r.LR_GAMMA} at epochs {r.LR_MILESTONES}, MSE on normalised "
          f"targets, best validation epoch kept, {r.EPOCHS} epochs by default; graphs {GRAPH}")
