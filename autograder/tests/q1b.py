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

@test_case(points=2, hidden=True)
def test_against_reference(neighbor_list):
    import numpy as np
    from collections import Counter
    from pymatgen.core import Lattice, Structure

    def check(s, radius, m):
        idx, dist = neighbor_list(s, radius, m)
        idx, dist = (np.asarray(idx), np.asarray(dist, dtype=float))
        n = len(s)
        assert idx.shape == (n, m) and dist.shape == (n, m), f'shape {idx.shape}, expected {(n, m)}'
        for i, nbrs in enumerate(s.get_all_neighbors(radius)):
            ref = sorted(((nb.nn_distance, nb.index) for nb in nbrs))
            k = min(m, len(ref))
            ref_d = np.array([d for d, _ in ref])
            ref_i = np.array([j for _, j in ref], dtype=int)
            want = np.r_[ref_d[:k], np.full(m - k, radius + 1.0)]
            assert np.abs(dist[i] - want).max() < 0.0001, f'atom {i}: distances {dist[i]} != {want}'
            assert list(idx[i, k:]) == [i] * (m - k), f'atom {i}: padding must point to atom {i}'
            for d in np.unique(np.round(ref_d[:k], 4)):
                shell = Counter(ref_i[np.abs(ref_d - d) < 0.001])
                chosen = Counter(idx[i, :k][np.abs(want[:k] - d) < 0.001])
                assert not chosen - shell, f'atom {i}: neighbours {dict(chosen)} are not at {d:.3f} A'
    rng = np.random.default_rng(3)
    s = Structure.from_spacegroup('Pnma', Lattice.orthorhombic(5.5, 7.8, 5.45), ['La', 'Mn', 'O', 'O'], [[0.03, 0.25, 0.99], [0, 0, 0.5], [0.49, 0.25, 0.07], [0.28, 0.04, 0.72]])
    for i in range(len(s)):
        s.translate_sites([i], rng.normal(0, 0.05, 3), frac_coords=False)
    check(s, 6.0, 12)
    check(Structure(Lattice.cubic(4.0), ['Ba', 'Zr', 'O', 'O', 'O'], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), 5.0, 16)
    sparse = Structure(Lattice.orthorhombic(9.0, 10.0, 11.0), ['Cs', 'I'], [[0, 0, 0], rng.uniform(0.3, 0.7, 3)])
    check(sparse, 7.0, 8)

