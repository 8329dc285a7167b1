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

