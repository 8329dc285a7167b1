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

@test_case(points=1, hidden=True)
def test_other_crystals(atom_features, embedding):
    import numpy as np
    from pymatgen.core import Lattice, Structure
    rng = np.random.default_rng(7)
    s = Structure.from_spacegroup('Pnma', Lattice.orthorhombic(5.6, 7.7, 5.4), ['Gd', 'Fe', 'O', 'O'], [[0.01, 0.25, 0.98], [0, 0, 0.5], [0.57, 0.25, 0.08], [0.29, 0.04, 0.71]])
    sites = list(s)
    order = rng.permutation(len(sites))
    s = Structure.from_sites([sites[i] for i in order])
    for struct in [s, Structure(Lattice.cubic(4.2), ['Mg', 'O'], [[0, 0, 0], [0.5, 0.5, 0.5]])]:
        x = np.asarray(atom_features(struct, embedding), dtype=np.float64)
        ref = np.array([embedding[site.specie.Z] for site in struct], dtype=np.float64)
        assert x.shape == ref.shape, f'shape {x.shape}, expected {ref.shape}'
        assert np.abs(x - ref).max() < 1e-06, 'rows must follow the order of the sites'

