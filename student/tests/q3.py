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

