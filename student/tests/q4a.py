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

