from otter.test_files import test_case

OK_FORMAT = False

name = "q1b"
points = 4
all_or_nothing = True

@test_case(points=1, hidden=False)
def test_srtio3_shells(neighbor_list):
    import numpy as np
    from pymatgen.core import Lattice, Structure
    a = 3.905
    s = Structure(Lattice.cubic(a), ['Sr', 'Ti', 'O', 'O', 'O'], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    idx, dist = neighbor_list(s, 8.0, 12)
    idx, dist = (np.asarray(idx), np.asarray(dist, dtype=float))
    assert idx.shape == (5, 12) and dist.shape == (5, 12), f'shapes {idx.shape}, {dist.shape}; expected (5, 12)'
    assert np.issubdtype(idx.dtype, np.integer), 'nbr_idx must hold integer indices'
    assert np.all(np.diff(dist, axis=1) >= -1e-08), 'each row of nbr_dist must be sorted, nearest first'
    assert np.abs(dist[1, :6] - a / 2).max() < 0.001 and sorted(idx[1, :6]) == [2, 2, 3, 3, 4, 4]
    assert np.abs(dist[1, 6:] - a * 3 ** 0.5 / 2).max() < 0.001 and set(idx[1, 6:]) == {0}
    assert np.abs(dist[0] - a / 2 ** 0.5).max() < 0.001 and sorted(idx[0]) == [2] * 4 + [3] * 4 + [4] * 4

@test_case(points=1, hidden=False)
def test_padding(neighbor_list):
    import numpy as np
    from pymatgen.core import Lattice, Structure
    a = 3.905
    s = Structure(Lattice.cubic(a), ['Sr', 'Ti', 'O', 'O', 'O'], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    idx, dist = neighbor_list(s, 3.0, 12)
    idx, dist = (np.asarray(idx), np.asarray(dist, dtype=float))
    assert np.abs(dist[1, :6] - a / 2).max() < 0.001, "Ti's six O neighbours come first"
    assert np.abs(dist[1, 6:] - 4.0).max() < 1e-06, 'padding distance must be radius + 1.0'
    assert list(idx[1, 6:]) == [1] * 6, 'padding must point to the atom itself'
    assert sorted(idx[2, :2]) == [1, 1] and np.abs(dist[2, 2:] - a / 2 ** 0.5).max() < 0.001
    assert set(idx[2, 2:]) <= {0, 3, 4}, 'tied neighbours must be the Sr and O at a/sqrt(2)'

