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

@test_case(points=1, hidden=False)
def test_small_example(SharedConv):
    """Eq. 3 on three atoms with weights set by name; expected values within 1e-4."""
    import torch
    conv = SharedConv(2, 1)
    with torch.no_grad():
        conv.fc_neighbor.weight.copy_(torch.tensor([[0.5, -0.3, 0.2], [0.1, 0.4, -0.6]]))
        conv.fc_self.weight.copy_(torch.tensor([[0.7, 0.0], [-0.2, 0.3]]))
        conv.fc_self.bias.copy_(torch.tensor([0.1, -0.2]))
        x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
        nbr_idx = torch.tensor([[1, 2], [0, 0], [1, 1]])
        nbr_fea = torch.tensor([[[1.0], [0.5]], [[0.2], [0.2]], [[0.0], [1.5]]])
        out = conv(x, nbr_fea, nbr_idx)
    expected = torch.tensor([[0.5544, 0.5981], [1.4479, 0.8893], [0.2014, 1.3133]])
    mistakes = {"softplus applied to each neighbour's term before the sum (Eq. 3 sums, then applies g)": [[1.6574, 1.1112], [2.127, 1.8022], [0.6044, 2.1855]], 'no self term v_i W_s + b': [[0.2873, 0.7981], [1.3724, 0.6733], [0.3412, 1.1032]]}
    assert tuple(out.shape) == (3, 2), f'output must have shape (N, F) = (3, 2), got {tuple(out.shape)}'
    for mistake, values in mistakes.items():
        assert not torch.allclose(out, torch.tensor(values), atol=0.001), f'got {out.tolist()}: {mistake}'
    assert torch.allclose(out, expected, atol=0.0001), f'got {out.tolist()}, expected {expected.tolist()} (within 1e-4): check Eq. 3 term by term'

