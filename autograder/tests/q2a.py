from otter.test_files import test_case

OK_FORMAT = False

name = "q2a"
points = 4
all_or_nothing = True

@test_case(points=2, hidden=False)
def test_shape_and_symmetry(SharedConv):
    import torch
    torch.manual_seed(0)
    n, m, f, b = (7, 4, 5, 3)
    conv = SharedConv(f, b)
    x, e = (torch.randn(n, f), torch.randn(n, m, b))
    idx = torch.randint(0, n, (n, m))
    with torch.no_grad():
        out = conv(x, e, idx)
        assert tuple(out.shape) == (n, f), f'output must have shape (N, F) = {(n, f)}, got {tuple(out.shape)}'
        perm = torch.randperm(n)
        inv = torch.argsort(perm)
        out_p = conv(x[perm], e[perm], inv[idx[perm]])
        assert torch.abs(out_p - out[perm]).max() < 1e-05, 'renumbering the atoms must renumber the output'
        cols = torch.randperm(m)
        assert torch.abs(conv(x, e[:, cols], idx[:, cols]) - out).max() < 1e-05, 'neighbour order must not matter'

@test_case(points=2, hidden=True)
def test_values(SharedConv):
    import numpy as np
    import torch
    n, m, f, b = (9, 5, 6, 4)
    conv = SharedConv(f, b)
    weights = {}
    with torch.no_grad():
        for name, p in conv.named_parameters():
            rng = np.random.default_rng(sum((ord(c) * (i + 1) for i, c in enumerate(name))))
            weights[name] = rng.normal(0, 0.4, tuple(p.shape))
            p.copy_(torch.tensor(weights[name]))
    rng = np.random.default_rng(5)
    x, e = (rng.normal(size=(n, f)), rng.uniform(size=(n, m, b)))
    idx = rng.integers(0, n, size=(n, m))
    with torch.no_grad():
        got = conv(torch.tensor(x, dtype=torch.float32), torch.tensor(e, dtype=torch.float32), torch.tensor(idx)).numpy()
    z = np.concatenate([x[idx], e], axis=2)
    pre = (z @ weights['fc_neighbor.weight'].T).sum(axis=1) + x @ weights['fc_self.weight'].T + weights['fc_self.bias']
    want = np.logaddexp(0, pre)
    assert got.shape == want.shape, f'shape {got.shape}, expected {want.shape}'
    assert np.abs(got - want).max() < 0.0001, f'values differ from Eq. 3 by up to {np.abs(got - want).max():.3g}'

