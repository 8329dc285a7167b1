from otter.test_files import test_case

OK_FORMAT = False

name = "q2b"
points = 4
all_or_nothing = True

@test_case(points=1, hidden=False)
def test_shape_and_symmetry(GatedConv):
    import torch
    torch.manual_seed(1)
    n, m, f, b = (8, 4, 6, 3)
    conv = GatedConv(f, b).eval()
    x, e = (torch.randn(n, f), torch.randn(n, m, b))
    idx = torch.randint(0, n, (n, m))
    with torch.no_grad():
        out = conv(x.clone(), e, idx)
        assert tuple(out.shape) == (n, f), f'output must have shape (N, F) = {(n, f)}, got {tuple(out.shape)}'
        perm = torch.randperm(n)
        inv = torch.argsort(perm)
        out_p = conv(x[perm].clone(), e[perm], inv[idx[perm]])
        assert torch.abs(out_p - out[perm]).max() < 1e-05, 'renumbering the atoms must renumber the output'
        cols = torch.randperm(m)
        assert torch.abs(conv(x.clone(), e[:, cols], idx[:, cols]) - out).max() < 1e-05, 'neighbour order must not matter'

@test_case(points=1, hidden=False)
def test_small_example(GatedConv):
    """Eq. 4 on three atoms with weights set by name, in eval mode (batch norm with its initial running
    statistics) and in train mode (batch statistics); expected values within 1e-4."""
    import torch
    conv = GatedConv(2, 1)
    with torch.no_grad():
        conv.fc_full.weight.copy_(torch.tensor([[0.3, -0.2, 0.5, 0.1, -0.4], [-0.1, 0.4, 0.2, -0.3, 0.6], [0.2, 0.1, -0.5, 0.4, 0.3], [0.6, -0.3, 0.1, 0.2, -0.2]]))
        conv.fc_full.bias.copy_(torch.tensor([0.1, -0.1, 0.2, 0.0]))
        x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
        nbr_idx = torch.tensor([[1, 2], [0, 0], [1, 1]])
        nbr_fea = torch.tensor([[[1.0], [0.5]], [[0.2], [0.2]], [[0.0], [1.5]]])
        out, x0 = ({}, x.clone())
        for mode in ('eval', 'train'):
            out[mode] = conv.train(mode == 'train')(x, nbr_fea, nbr_idx)
            assert torch.equal(x, x0), f'{mode} mode: GatedConv changed its input atom_fea in place (atom_fea += ... or atom_fea.add_(...)): the next call sees other features, and backward fails in training; write out = atom_fea + ... instead'
    expected = {'eval': [[2.7492, 1.2723], [1.1124, 2.7416], [0.7178, 1.6699]], 'train': [[2.4906, 1.3976], [0.3566, 2.3031], [0.1914, 0.5495]]}
    mistakes = {'the concatenation order: it is centre v_i, neighbour v_j, edge u_ik': ([[1.8113, 1.0196], [2.0338, 2.9191], [0.6542, 1.7335]], [[0.7051, 0.5173], [1.5998, 3.4052], [0.2208, 0.7022]]), "the halves swapped: the first F columns of fc_full's output are the filter (sigmoid), the last F the core": ([[2.2486, 1.1328], [1.13, 3.0275], [0.5629, 1.7572]], [[2.4973, 0.4598], [0.4272, 3.4344], [0.1555, 0.7639]]), 'no sigmoid on the filter': ([[1.3192, 0.4203], [0.7772, 2.9884], [0.0779, 1.4365]], [[2.0525, 0.2284], [0.9594, 3.0627], [0.0876, 1.577]]), 'no residual connection (v_i + ...)': ([[1.8535, 1.2723], [1.1124, 1.0865], [1.3491, 0.9502]], [[1.6238, 1.3976], [0.3566, 0.7969], [0.4531, 0.2386]]), 'bn1 over each neighbour slot on its own: it normalises all N x M edges together': (expected['eval'], [[2.4985, 1.4042], [0.3832, 2.2904], [0.1755, 0.5518]])}
    for k, mode in enumerate(('eval', 'train')):
        assert tuple(out[mode].shape) == (3, 2), f'{mode} mode: output shape {tuple(out[mode].shape)}, expected (3, 2)'
        for mistake, values in mistakes.items():
            if values[k] != expected[mode]:
                assert not torch.allclose(out[mode], torch.tensor(values[k]), atol=0.001), f'{mode} mode: got {out[mode].tolist()}: {mistake}'
        assert torch.allclose(out[mode], torch.tensor(expected[mode]), atol=0.0001), f'{mode} mode: got {out[mode].tolist()}, expected {expected[mode]} (within 1e-4)'

@test_case(points=1, hidden=False)
def test_backward(GatedConv):
    """Training runs backward through the layer, whose input is another layer's output."""
    import torch
    torch.manual_seed(3)
    n, m, f, b = (6, 3, 4, 2)
    conv = GatedConv(f, b).train()
    leaf = torch.randn(n, f, requires_grad=True)
    x = leaf * 1.0
    out = conv(x, torch.rand(n, m, b), torch.randint(0, n, (n, m)))
    try:
        out.sum().backward()
    except RuntimeError as err:
        if 'inplace' not in str(err):
            raise
        raise AssertionError(f'backward through GatedConv failed: an in-place operation on the input (atom_fea += ... or atom_fea.add_(...)) breaks autograd, and training stops at its first batch; write out = atom_fea + ... instead (torch: {err})') from None
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), 'no finite gradient reached the atom features'

