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
        perm = torch.cat([s0 + torch.randperm(s) for s0, s in zip(start.tolist(), sizes)])
        inv = torch.argsort(perm)
        out_p = model(x[perm], e[perm], inv[idx[perm]], c[perm], 3)
        assert torch.abs(out_p - out).max() < 1e-05, 'the prediction must not depend on how the atoms of a crystal are numbered'

@test_case(points=1, hidden=False)
def test_small_example(CGCNN):
    """The network with no convolution layer (so that only forward's own steps and your pooling count),
    two crystals of 2 and 3 atoms, weights set by name, each pooling; expected values within 1e-4."""
    import torch
    x = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    crystal_idx = torch.tensor([0, 0, 1, 1, 1])
    nbr_idx, nbr_fea = (torch.tensor([[1], [0], [3], [4], [2]]), torch.zeros(5, 1, 1))
    expected = {'mean': [-1.1113, -0.574], 'max': [-1.2135, -0.6774]}
    mistakes = {'the head without its two softplus: it is softplus, conv_to_fc, softplus, fc_out': ([-1.6655, 0.2313], [-1.768, -0.008]), 'the pool option ignored: self.pool is the pooling that `pool` chose': (expected['mean'], expected['mean'])}
    for k, pool in enumerate(('mean', 'max')):
        model = CGCNN(orig_atom_fea_len=3, nbr_fea_len=1, atom_fea_len=2, h_fea_len=2, conv='none', pool=pool)
        with torch.no_grad():
            model.embedding.weight.copy_(torch.tensor([[0.5, -1.0, 0.2], [0.3, 0.8, -0.6]]))
            model.embedding.bias.copy_(torch.tensor([0.1, -0.3]))
            model.conv_to_fc.weight.copy_(torch.tensor([[1.2, -0.7], [0.4, 0.9]]))
            model.conv_to_fc.bias.copy_(torch.tensor([-0.5, 0.2]))
            model.fc_out.weight.copy_(torch.tensor([[0.8, -1.1]]))
            model.fc_out.bias.copy_(torch.tensor([0.3]))
            out = model(x, nbr_fea, nbr_idx, crystal_idx, 2)
        assert tuple(out.shape) == (2,), f'one prediction per crystal, shape (2,), expected; got {tuple(out.shape)}'
        for mistake, values in mistakes.items():
            if values[k] != expected[pool]:
                assert not torch.allclose(out, torch.tensor(values[k]), atol=0.001), f'pool={pool}: got {out.tolist()}: {mistake}'
        assert torch.allclose(out, torch.tensor(expected[pool]), atol=0.0001), f"pool={pool}: got {out.tolist()}, expected {expected[pool]} (within 1e-4; if part 3's checks fail, fix those first)"

