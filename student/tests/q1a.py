from otter.test_files import test_case

OK_FORMAT = False

name = "q1a"
points = 2
all_or_nothing = True

@test_case(points=1, hidden=False)
def test_srtio3(atom_features, embedding):
    import numpy as np
    from pymatgen.core import Lattice, Structure
    s = Structure(Lattice.cubic(3.905), ['Sr', 'Ti', 'O', 'O', 'O'], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    x = np.asarray(atom_features(s, embedding))
    assert x.shape == (5, 92), f'expected one row of 92 features per atom, shape (5, 92); got {x.shape}'
    assert x.dtype == np.float32, f'expected float32, got {x.dtype}'
    for i, z in enumerate([38, 22, 8, 8, 8]):
        assert np.abs(x[i] - embedding[z]).max() < 1e-06, f'row {i} should be the vector of Z={z}'

