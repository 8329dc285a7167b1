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

@test_case(points=1, hidden=False)
def test_interleaved_crystals_and_gradients(mean_pool, max_pool):
    """Three crystals whose atoms are interleaved, as in any batch built from shuffled graphs, and the
    gradients that training needs; expected values within 1e-6."""
    import torch
    values = [[1.0, -2.0], [3.0, -4.0], [5.0, 6.0], [-1.0, -3.0], [2.0, 0.5]]
    c = torch.tensor([1, 0, 1, 0, 2])
    x = torch.tensor(values, requires_grad=True)
    mean = mean_pool(x, c, 3)
    sums = torch.zeros(3, 2).index_add_(0, c, x.detach())
    assert not (tuple(mean.shape) == (3, 2) and torch.allclose(mean, sums, atol=1e-06)), "mean pooling gave each crystal's sum of atom features, not their mean: divide by each crystal's number of atoms (the formation energy per atom does not grow with the cell)"
    want = torch.tensor([[1.0, -3.5], [3.0, 2.0], [2.0, 0.5]])
    assert tuple(mean.shape) == (3, 2) and torch.allclose(mean, want, atol=1e-06), f'mean pooling gave {mean.tolist()} for crystal_idx {c.tolist()}, expected {want.tolist()}'
    mean.sum().backward()
    assert x.grad is not None, 'no gradient reached the atom features through mean pooling: use torch operations'
    want = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [1.0, 1.0]])
    assert torch.allclose(x.grad, want, atol=1e-06), f"mean pooling's gradient is {x.grad.tolist()}, expected 1 / (atoms of the crystal): {want.tolist()}"
    x = torch.tensor(values, requires_grad=True)
    mx = max_pool(x, c, 3)
    want = torch.tensor([[3.0, -3.0], [5.0, 6.0], [2.0, 0.5]])
    assert tuple(mx.shape) == (3, 2) and torch.allclose(mx, want, atol=1e-06), f'max pooling gave {mx.tolist()} for crystal_idx {c.tolist()}, expected {want.tolist()}'
    assert mx.requires_grad, "max pooling's result has no gradient: use torch operations, not numpy or .detach()"
    mx.sum().backward()
    want = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    assert x.grad is not None and torch.allclose(x.grad, want, atol=1e-06), f"max pooling's gradient is {(None if x.grad is None else x.grad.tolist())}, expected 1 where an atom holds its crystal's maximum: {want.tolist()}"

