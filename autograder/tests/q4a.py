from otter.test_files import test_case

OK_FORMAT = False

name = "q4a"
points = 3
all_or_nothing = True

@test_case(points=1, hidden=False)
def test_shape_and_invariance(CGCNN):
    import torch
    torch.manual_seed(2)
    sizes = [5, 10, 2]
    n, m = (sum(sizes), 6)
    c = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    start = torch.tensor([0, 5, 15])
    idx = torch.stack([start[c[i]] + torch.randint(0, sizes[c[i]], (m,)) for i in range(n)])
    x, e = (torch.rand(n, 92), torch.rand(n, m, 41))
    model = CGCNN(atom_fea_len=16, n_conv=2, h_fea_len=24).eval()
    with torch.no_grad():
        out = model(x, e, idx, c, 3)
        assert tuple(out.shape) == (3,), f'one prediction per crystal, shape (3,), expected; got {tuple(out.shape)}'
        perm = torch.randperm(n)
        inv = torch.argsort(perm)
        out_p = model(x[perm], e[perm], inv[idx[perm]], c[perm], 3)
        assert torch.abs(out_p - out).max() < 1e-05, 'the prediction must not depend on how atoms are numbered'

@test_case(points=2, hidden=True)
def test_values(CGCNN):
    import numpy as np
    import torch
    rng = np.random.default_rng(4)
    sizes = [3, 6, 1, 4]
    n, m, f, h, b = (sum(sizes), 5, 8, 12, 41)
    c = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    idx = np.stack([start[c[i]] + rng.integers(0, sizes[c[i]], m) for i in range(n)])
    x, e = (rng.uniform(size=(n, 92)), rng.uniform(size=(n, m, b)))
    sp = lambda a: np.logaddexp(0, a)
    for conv, pool in [('gated', 'mean'), ('shared', 'max'), ('none', 'mean')]:
        model = CGCNN(atom_fea_len=f, n_conv=2, h_fea_len=h, conv=conv, pool=pool).eval()
        w = {}
        with torch.no_grad():
            for name, t in list(model.named_parameters()) + [(k, v) for k, v in model.named_buffers() if 'running' in k]:
                r = np.random.default_rng(sum((ord(ch) * (i + 1) for i, ch in enumerate(name))))
                w[name] = r.normal(0, 0.3, tuple(t.shape))
                if 'running_var' in name:
                    w[name] = 0.5 + np.abs(w[name])
                t.copy_(torch.tensor(w[name]))
        with torch.no_grad():
            got = model(torch.tensor(x, dtype=torch.float32), torch.tensor(e, dtype=torch.float32), torch.tensor(idx), torch.tensor(c), len(sizes)).numpy()
        v = x @ w['embedding.weight'].T + w['embedding.bias']
        for layer in range(2 if conv != 'none' else 0):
            p = f'convs.{layer}.'
            if conv == 'gated':
                z = np.concatenate([np.repeat(v[:, None], m, axis=1), v[idx], e], axis=2)
                g = z @ w[p + 'fc_full.weight'].T + w[p + 'fc_full.bias']
                g = (g - w[p + 'bn1.running_mean']) / np.sqrt(w[p + 'bn1.running_var'] + 1e-05) * w[p + 'bn1.weight'] + w[p + 'bn1.bias']
                s = (1 / (1 + np.exp(-g[..., :f])) * sp(g[..., f:])).sum(1)
                s = (s - w[p + 'bn2.running_mean']) / np.sqrt(w[p + 'bn2.running_var'] + 1e-05) * w[p + 'bn2.weight'] + w[p + 'bn2.bias']
                v = sp(v + s)
            else:
                z = np.concatenate([v[idx], e], axis=2)
                v = sp((z @ w[p + 'fc_neighbor.weight'].T).sum(1) + v @ w[p + 'fc_self.weight'].T + w[p + 'fc_self.bias'])
        red = np.mean if pool == 'mean' else np.max
        crys = np.stack([red(v[c == i], axis=0) for i in range(len(sizes))])
        hid = sp(sp(crys) @ w['conv_to_fc.weight'].T + w['conv_to_fc.bias'])
        want = (hid @ w['fc_out.weight'].T + w['fc_out.bias']).reshape(-1)
        assert got.shape == want.shape, f'conv={conv}, pool={pool}: shape {got.shape}, expected {want.shape}'
        assert np.abs(got - want).max() < 0.001, f'conv={conv}, pool={pool}: predictions differ from the recipe'

