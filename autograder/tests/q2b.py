from otter.test_files import test_case

OK_FORMAT = False

name = "q2b"
points = 4
all_or_nothing = True

@test_case(points=2, hidden=False)
def test_shape_and_symmetry(GatedConv):
    import torch
    torch.manual_seed(1)
    n, m, f, b = (8, 4, 6, 3)
    conv = GatedConv(f, b).eval()
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
def test_values(GatedConv):
    import numpy as np
    import torch
    n, m, f, b = (10, 4, 5, 3)
    conv = GatedConv(f, b)
    w = {}
    with torch.no_grad():
        for name, t in list(conv.named_parameters()) + [(k, v) for k, v in conv.named_buffers() if 'running' in k]:
            rng = np.random.default_rng(sum((ord(c) * (i + 1) for i, c in enumerate(name))))
            w[name] = rng.normal(0, 0.5, tuple(t.shape))
            if 'running_var' in name:
                w[name] = 0.5 + np.abs(w[name])
            t.copy_(torch.tensor(w[name]))
    rng = np.random.default_rng(9)
    x, e = (rng.normal(size=(n, f)), rng.uniform(size=(n, m, b)))
    idx = rng.integers(0, n, size=(n, m))
    sp = lambda a: np.logaddexp(0, a)

    def bn(a, name, train):
        mean, var = (a.mean(0), a.var(0)) if train else (w[name + '.running_mean'], w[name + '.running_var'])
        return (a - mean) / np.sqrt(var + 1e-05) * w[name + '.weight'] + w[name + '.bias']

    def reference(train):
        z = np.concatenate([np.repeat(x[:, None], m, axis=1), x[idx], e], axis=2)
        g = (z @ w['fc_full.weight'].T + w['fc_full.bias']).reshape(n * m, 2 * f)
        g = bn(g, 'bn1', train).reshape(n, m, 2 * f)
        s = (1 / (1 + np.exp(-g[..., :f])) * sp(g[..., f:])).sum(axis=1)
        return sp(x + bn(s, 'bn2', train))
    args = (torch.tensor(x, dtype=torch.float32), torch.tensor(e, dtype=torch.float32), torch.tensor(idx))
    with torch.no_grad():
        got_eval = conv.eval()(*args).numpy()
        got_train = conv.train()(*args).numpy()
    assert np.abs(got_eval - reference(False)).max() < 0.0001, 'eval mode (running statistics) differs from Eq. 4'
    assert np.abs(got_train - reference(True)).max() < 0.0001, 'train mode (batch statistics) differs from Eq. 4'

