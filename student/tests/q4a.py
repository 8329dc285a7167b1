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
def test_small_example(CGCNN, mean_pool, max_pool):
    """The network with no convolution layer (so that only forward's own steps and your pooling count),
    two crystals of 2 and 3 atoms, weights set by name, each pooling: the head applied to your own
    pooling of the embedded atoms (part 3 tests the pooling itself); expected values within 1e-4."""
    import torch
    from torch.nn.functional import softplus
    x = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    crystal_idx = torch.tensor([0, 0, 1, 1, 1])
    nbr_idx, nbr_fea = (torch.tensor([[1], [0], [3], [4], [2]]), torch.zeros(5, 1, 1))
    weights = {'embedding.weight': [[0.5, -1.0, 0.2], [0.3, 0.8, -0.6]], 'embedding.bias': [0.1, -0.3], 'conv_to_fc.weight': [[1.2, -0.7], [0.4, 0.9]], 'conv_to_fc.bias': [-0.5, 0.2], 'fc_out.weight': [[0.8, -1.1]], 'fc_out.bias': [0.3]}
    w = {k: torch.tensor(v) for k, v in weights.items()}
    embedded = x @ w['embedding.weight'].T + w['embedding.bias']
    for pool, own_pool in (('mean', mean_pool), ('max', max_pool)):
        model = CGCNN(orig_atom_fea_len=3, nbr_fea_len=1, atom_fea_len=2, h_fea_len=2, conv='none', pool=pool)
        model.load_state_dict(w)
        with torch.no_grad():
            out = model(x, nbr_fea, nbr_idx, crystal_idx, 2)
            pooled = own_pool(embedded, crystal_idx, 2)
            expected = (softplus(softplus(pooled) @ w['conv_to_fc.weight'].T + w['conv_to_fc.bias']) @ w['fc_out.weight'].T + w['fc_out.bias']).squeeze(-1)
            mistakes = {'the head without its two softplus: it is softplus, conv_to_fc, softplus, fc_out': ((pooled @ w['conv_to_fc.weight'].T + w['conv_to_fc.bias']) @ w['fc_out.weight'].T + w['fc_out.bias']).squeeze(-1)}
            if pool == 'max':
                mistakes['the pool option ignored: self.pool is the pooling that `pool` chose'] = (softplus(softplus(mean_pool(embedded, crystal_idx, 2)) @ w['conv_to_fc.weight'].T + w['conv_to_fc.bias']) @ w['fc_out.weight'].T + w['fc_out.bias']).squeeze(-1)
        assert tuple(out.shape) == (2,), f'one prediction per crystal, shape (2,), expected; got {tuple(out.shape)}'
        for mistake, values in mistakes.items():
            if not torch.allclose(values, expected, atol=0.001):
                assert not torch.allclose(out, values, atol=0.001), f'pool={pool}: got {out.tolist()}: {mistake}'
        assert torch.allclose(out, expected, atol=0.0001), f'pool={pool}: got {out.tolist()}, expected {expected.tolist()} (within 1e-4, from your own {pool} pooling)'

