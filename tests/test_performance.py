"""The fast forms of the solution compute what the reference way computes (benchmarks/reference_way.py):
the decomposed convolutions (outputs and gradients), vectorised pooling, the neighbour lists, and
the graph cache. No timing here: the benchmarks/ scripts measure speed."""

import copy

import numpy as np
import pytest
import torch

import cgcnn_utils
import graph_cache
from benchmarks import reference_way
from benchmarks.solution_code import solution_namespace

N_ATOMS, M, F, B = 23, 5, 6, 7  # small, with every dimension different so that a transposition shows
TOL = 1e-10  # float64


@pytest.fixture(scope="module")
def ns():
    return solution_namespace()


@pytest.fixture(scope="module")
def data():
    return cgcnn_utils.load_dataset()


def _inputs(seed=0):
    """atom_fea (N, F), nbr_fea (N, M, B) leaf tensors in float64, nbr_idx (N, M) with repeats."""
    g = torch.Generator().manual_seed(seed)
    atom_fea = torch.randn(N_ATOMS, F, generator=g, dtype=torch.float64, requires_grad=True)
    nbr_fea = torch.rand(N_ATOMS, M, B, generator=g, dtype=torch.float64, requires_grad=True)
    nbr_idx = torch.randint(0, N_ATOMS, (N_ATOMS, M), generator=g)
    return atom_fea, nbr_fea, nbr_idx


def _run(layer, inputs, weights):
    """Output, input gradients and parameter gradients of sum(out * weights)."""
    layer.zero_grad()
    atom_fea, nbr_fea, nbr_idx = (t.detach().requires_grad_(t.requires_grad) for t in inputs)
    out = layer(atom_fea, nbr_fea, nbr_idx)
    (out * weights).sum().backward()
    return out.detach(), [atom_fea.grad, nbr_fea.grad], {k: p.grad.clone() for k, p in layer.named_parameters()}


@pytest.mark.parametrize("conv", ["gated", "shared"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_decomposed_convolution_equals_concatenation_form(ns, conv, mode):
    torch.manual_seed(0)
    ours = ns[{"gated": "GatedConv", "shared": "SharedConv"}[conv]](F, B).double()
    reference = reference_way.REFERENCE_CONVS[conv](F, B).double()
    reference.load_state_dict(ours.state_dict())
    inputs = _inputs()
    if mode == "eval":  # batch-norm running statistics that are not the initial 0 and 1
        for layer in (ours, reference):
            layer.train()
            with torch.no_grad():
                layer(*_inputs(seed=1))
    for layer in (ours, reference):
        getattr(layer, mode)()
    weights = torch.randn(N_ATOMS, F, dtype=torch.float64)
    out_a, grads_a, params_a = _run(ours, inputs, weights)
    out_b, grads_b, params_b = _run(reference, inputs, weights)
    assert torch.allclose(out_a, out_b, rtol=0, atol=TOL)
    for name, a, b in zip(["atom_fea", "nbr_fea"], grads_a, grads_b):
        assert torch.allclose(a, b, rtol=0, atol=TOL), f"gradient w.r.t. {name} differs by {(a - b).abs().max():.1e}"
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        assert torch.allclose(params_a[name], params_b[name], rtol=0, atol=TOL), f"gradient of {name} differs"
    for key, value in ours.state_dict().items():  # running statistics updated alike in train mode
        assert torch.allclose(value.double(), reference.state_dict()[key].double(), rtol=0, atol=TOL), key


def test_mean_pool_equals_python_loop(ns):
    g = torch.Generator().manual_seed(0)
    crystal_idx = torch.tensor([0, 0, 1, 2, 2, 2, 1, 3, 3, 3, 3, 0])  # unsorted, unequal sizes
    atom_fea = torch.randn(len(crystal_idx), F, generator=g, dtype=torch.float64, requires_grad=True)
    a = ns["mean_pool"](atom_fea, crystal_idx, 4)
    b = reference_way.loop_mean_pool(atom_fea, crystal_idx, 4)
    assert torch.allclose(a, b, rtol=0, atol=TOL)
    grad_a, = torch.autograd.grad(a.sum(), atom_fea)
    grad_b, = torch.autograd.grad(b.sum(), atom_fea)
    assert torch.allclose(grad_a, grad_b, rtol=0, atol=TOL)


def test_model_equals_reference_way_model(ns):
    """Whole models with the same weights: the solution's CGCNN and the reference-way one."""
    torch.manual_seed(0)
    ours = ns["CGCNN"](orig_atom_fea_len=F, nbr_fea_len=B, atom_fea_len=8, h_fea_len=16).double().eval()
    reference = reference_way.reference_model(ns["CGCNN"], B, orig_atom_fea_len=F, atom_fea_len=8,
                                              h_fea_len=16).double().eval()
    reference.load_state_dict(ours.state_dict())
    atom_fea, nbr_fea, nbr_idx = _inputs()
    crystal_idx = torch.arange(N_ATOMS) % 3
    a, b = (m(atom_fea, nbr_fea, nbr_idx, crystal_idx, 3) for m in (ours, reference))
    assert a.shape == (3,) and torch.allclose(a, b, rtol=0, atol=TOL)


def _every_polymorph(data, per_polymorph=5):
    by_polymorph = {}
    for id_ in data.split:
        by_polymorph.setdefault(data.metadata[id_]["prototype"], []).append(id_)
    assert len(by_polymorph) == 4, sorted(by_polymorph)
    return [i for ids in by_polymorph.values() for i in ids[::len(ids) // per_polymorph][:per_polymorph]]


def test_graphs_equal_reference_way_graphs(ns, data):
    ids = _every_polymorph(data)
    assert len(ids) == 20
    ours = cgcnn_utils.build_graphs(data, ids, ns["embedding"], ns["atom_features"], ns["neighbor_list"],
                                    progress=False)
    reference_way.assert_same_graphs(ours, reference_way.reference_build_graphs(data, ids, ns["embedding"]))


def test_sorted_comparison_ignores_order_of_ties_only():
    idx = np.array([[1, 2, 3]])
    dist = np.array([[1.0, 2.0, 2.0]])
    reference_way.assert_same_graph(idx, dist, idx[:, [0, 2, 1]], dist)  # equidistant neighbours swapped
    with pytest.raises(AssertionError):
        reference_way.assert_same_graph(idx, dist, np.array([[1, 2, 4]]), dist)
    with pytest.raises(AssertionError):
        reference_way.assert_same_graph(idx, dist, idx, dist + 1e-6)


class _Counting:
    """neighbor_list wrappers that count their calls: a cache hit builds nothing."""

    calls = 0

    @staticmethod
    def neighbor_list(structure, radius, max_num_nbr):
        _Counting.calls += 1
        return solution_namespace()["neighbor_list"](structure, radius, max_num_nbr)

    @staticmethod
    def edited_neighbor_list(structure, radius, max_num_nbr):
        _Counting.calls += 1  # the same function with this comment added: other source, other key
        return solution_namespace()["neighbor_list"](structure, radius, max_num_nbr)


def test_graph_cache_hits_and_misses(ns, data, tmp_path):
    ids = _every_polymorph(data, per_polymorph=2)

    def build(neighbor_list=_Counting.neighbor_list, max_num_nbr=12):
        before = _Counting.calls
        graphs = graph_cache.cached_build_graphs(data, ids, ns["embedding"], ns["atom_features"], neighbor_list,
                                                 8.0, max_num_nbr, progress=False, cache_dir=tmp_path)
        return graphs, _Counting.calls - before

    first, built = build()
    assert built == len(ids) and len(list(tmp_path.glob("*.npz"))) == 1
    second, built = build()
    assert built == 0, "the second call should load the graphs from the cache"
    assert list(second) == ids
    for id_ in ids:
        for name in ("atom_fea", "nbr_idx", "nbr_dist"):
            a, b = getattr(first[id_], name), getattr(second[id_], name)
            assert a.dtype == b.dtype and a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-12), (id_, name)
    assert build(max_num_nbr=8)[1] == len(ids), "another max_num_nbr must not hit the cache"
    assert build(neighbor_list=_Counting.edited_neighbor_list)[1] == len(ids), "edited source must miss"
    assert len(list(tmp_path.glob("*.npz"))) == 3 and not list(tmp_path.glob("*.tmp"))


def test_graph_cache_key_covers_the_crystal_files(ns, data, tmp_path):
    ids = _every_polymorph(data, per_polymorph=1)
    edited = copy.copy(data)
    edited.root = tmp_path / "data"
    edited.root.mkdir()
    edited._structures = {}
    for id_ in ids:
        (edited.root / f"{id_}.cif").write_bytes((data.root / f"{id_}.cif").read_bytes())
    cache = tmp_path / "cache"
    args = (ids, ns["embedding"], ns["atom_features"], ns["neighbor_list"], 8.0, 12, False, cache)
    graph_cache.cached_build_graphs(edited, *args)
    path = edited.root / f"{ids[0]}.cif"
    path.write_text(path.read_text() + "\n# edited\n")
    graph_cache.cached_build_graphs(edited, *args)
    assert len(list(cache.glob("*.npz"))) == 2
