from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 4
all_or_nothing = True

@test_case(points=2, hidden=False)
def test_small_example(mean_pool, max_pool):
    import torch
    x = torch.tensor([[1.0, -2.0], [3.0, -4.0], [5.0, 6.0]])
    c = torch.tensor([0, 0, 1])
    mean, mx = (mean_pool(x, c, 2), max_pool(x, c, 2))
    assert tuple(mean.shape) == (2, 2) and tuple(mx.shape) == (2, 2), 'one row per crystal expected'
    assert torch.abs(mean - torch.tensor([[2.0, -3.0], [5.0, 6.0]])).max() < 1e-06, f'mean pooling gave {mean}'
    assert torch.abs(mx - torch.tensor([[3.0, -2.0], [5.0, 6.0]])).max() < 1e-06, f'max pooling gave {mx}'

@test_case(points=2, hidden=True)
def test_random_batches(mean_pool, max_pool):
    import numpy as np
    import torch
    rng = np.random.default_rng(21)
    sizes = [1, 5, 20, 3, 10, 2]
    c = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
    x = rng.normal(-1.0, 2.0, size=(len(c), 7)).astype(np.float32)
    order = rng.permutation(len(c))
    xt, ct = (torch.tensor(x[order]), torch.tensor(c[order]))
    got_mean = mean_pool(xt, ct, len(sizes)).detach().numpy()
    got_max = max_pool(xt, ct, len(sizes)).detach().numpy()
    want_mean = np.stack([x[c == i].mean(0) for i in range(len(sizes))])
    want_max = np.stack([x[c == i].max(0) for i in range(len(sizes))])
    assert got_mean.shape == want_mean.shape and np.abs(got_mean - want_mean).max() < 1e-05, 'mean pooling is wrong on a batch'
    assert got_max.shape == want_max.shape and np.abs(got_max - want_max).max() < 1e-05, 'max pooling is wrong on a batch'
    xg = torch.tensor(x[order], requires_grad=True)
    mean_pool(xg, ct, len(sizes)).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all(), 'gradients must flow through mean pooling'

