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
def test_values(CGCNN, SharedConv, GatedConv, mean_pool, max_pool):
    import numpy as np
    import torch
    rng = np.random.default_rng(4)
    sizes = [3, 6, 1, 4]
    n, m, f, h, b = (sum(sizes), 5, 8, 12, 41)
    c = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    idx = np.stack([start[c[i]] + rng.integers(0, sizes[c[i]], m) for i in range(n)])
    x, e = (rng.uniform(size=(n, 92)), rng.uniform(size=(n, m, b)))
    args = (torch.tensor(x, dtype=torch.float32), torch.tensor(e, dtype=torch.float32), torch.tensor(idx))
    sp = lambda a: np.logaddexp(0, a)
    for conv, pool in [('gated', 'mean'), ('shared', 'max'), ('none', 'mean')]:
        model = CGCNN(atom_fea_len=f, n_conv=2, h_fea_len=h, conv=conv, pool=pool).eval()
        layer_type = {'gated': GatedConv, 'shared': SharedConv, 'none': None}[conv]
        assert len(model.convs) == (0 if layer_type is None else 2), f'conv={conv}: {len(model.convs)} layers, expected n_conv'
        assert all((type(layer) is layer_type for layer in model.convs)), f'conv={conv}: layers {[type(l).__name__ for l in model.convs]}'
        w = {}
        with torch.no_grad():
            for name, t in list(model.named_parameters()) + [(k, v) for k, v in model.named_buffers() if 'running' in k]:
                r = np.random.default_rng(sum((ord(ch) * (i + 1) for i, ch in enumerate(name))))
                w[name] = r.normal(0, 0.3, tuple(t.shape))
                if 'running_var' in name:
                    w[name] = 0.5 + np.abs(w[name])
                t.copy_(torch.tensor(w[name]))
        with torch.no_grad():
            got = model(*args, torch.tensor(c), len(sizes)).numpy()
        v = torch.tensor(x @ w['embedding.weight'].T + w['embedding.bias'], dtype=torch.float32)
        with torch.no_grad():
            for layer in model.convs:
                v = layer(v, args[1], args[2])
            crys = (mean_pool if pool == 'mean' else max_pool)(v, torch.tensor(c), len(sizes)).numpy().astype(float)
        hid = sp(sp(crys) @ w['conv_to_fc.weight'].T + w['conv_to_fc.bias'])
        want = (hid @ w['fc_out.weight'].T + w['fc_out.bias']).reshape(-1)
        assert got.shape == want.shape, f'conv={conv}, pool={pool}: shape {got.shape}, expected {want.shape}'
        assert np.abs(got - want).max() < 0.001, f'conv={conv}, pool={pool}: predictions differ from the recipe'

