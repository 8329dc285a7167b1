from otter.test_files import test_case

OK_FORMAT = False

name = "q1c"
points = 2
all_or_nothing = True

@test_case(points=1, hidden=False)
def test_defaults(gaussian_expand):
    import numpy as np
    g = np.asarray(gaussian_expand(np.array([0.0, 1.0, 2.5])))
    assert g.shape == (3, 41), f'3 distances x 41 Gaussians expected, got {g.shape}'
    assert abs(g[0, 0] - 1) < 1e-06 and abs(g[1, 5] - 1) < 1e-06, 'a distance on a centre gives 1'
    assert abs(g[1, 4] - np.exp(-1)) < 1e-06, 'one step away from a centre gives exp(-1)'
    assert abs(g[2, 12] - np.exp(-0.25)) < 1e-06, '2.5 A is half a step from the centre at 2.4 A'
    assert np.asarray(gaussian_expand(np.ones((2, 3)))).shape == (2, 3, 41), "keep the input's shape"

@test_case(points=1, hidden=True)
def test_other_grids(gaussian_expand):
    import numpy as np
    rng = np.random.default_rng(11)
    d = rng.uniform(0.5, 7.0, size=(6, 5))
    for dmin, dmax, step, var in [(0.5, 6.0, 0.5, 0.3), (1.0, 5.0, 0.25, None), (0.0, 3.0, 0.1, 0.15)]:
        got = np.asarray(gaussian_expand(d, dmin=dmin, dmax=dmax, step=step, var=var), dtype=float)
        sigma = step if var is None else var
        k = int(round((dmax - dmin) / step)) + 1
        centres = dmin + step * np.arange(k)
        want = np.exp(-(d[..., None] - centres) ** 2 / sigma ** 2)
        assert got.shape == want.shape, f'grid {dmin}..{dmax} step {step}: shape {got.shape}, expected {want.shape}'
        assert np.abs(got - want).max() < 1e-06, f'values differ for grid {dmin}..{dmax} step {step} var {var}'

