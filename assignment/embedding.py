"""The 92-dimensional element embedding (`atom_init.json`), generated from pymatgen's periodic table.

In the spirit of CGCNN's own encoding (Xie & Grossman 2018, Table S2): each element is the
concatenation of one-hot blocks, one per property. A property that pymatgen does not know for an
element (the electronegativity of a noble gas, say) leaves its block all zero: "unknown".

Block                    size  categories
group                      19  groups 1..18, and one category for the lanthanides and actinides
period                      7  periods 1..7
electronegativity          10  Pauling, 10 equal bins over [0.5, 4.0]
covalent radius            10  pymatgen's atomic radius (A), 10 equal bins over [0.25, 2.25]
valence electrons          12  1..12: group for groups 1-12, group - 10 for 13-18, 3 for the f block
first ionisation energy    10  eV, 10 bins equal in log over [3, 25]
electron affinity          10  eV, 10 equal bins over [-1, 3.7]
block                       4  s, p, d, f
atomic volume              10  A^3 per atom (molar volume / N_A), 10 bins equal in log over [1.5, 100]
                          ---
                           92

Values outside a range fall into the first or last bin. `python -m embedding` (or
`python build.py data`) writes the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pymatgen.core import Element

#: Elements covered: H (1) to Fm (100), like the original CGCNN file.
Z_MAX = 100
AVOGADRO = 6.02214076e23

# (name, low, high, bins, log-spaced): the documented bins; see the module docstring.
CONTINUOUS = [
    ("electronegativity", 0.5, 4.0, 10, False),
    ("covalent_radius", 0.25, 2.25, 10, False),
    ("first_ionisation_energy", 3.0, 25.0, 10, True),
    ("electron_affinity", -1.0, 3.7, 10, False),
    ("atomic_volume", 1.5, 100.0, 10, True),
]
BLOCKS = ["s", "p", "d", "f"]
FEATURE_LENGTH = 19 + 7 + 10 + 10 + 12 + 10 + 10 + 4 + 10


def _one_hot(index: int | None, size: int) -> list[float]:
    vec = [0.0] * size
    if index is not None:
        vec[index] = 1.0
    return vec


def _bin(value: float | None, low: float, high: float, bins: int, log: bool) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    if log:
        if value <= 0:
            return 0
        value, low, high = math.log(value), math.log(low), math.log(high)
    frac = (value - low) / (high - low)
    return min(bins - 1, max(0, int(frac * bins)))


def _safe(getter):
    try:
        value = getter()
    except (KeyError, ValueError, TypeError, AttributeError, IndexError):
        return None
    return None if value is None else float(value)


def element_properties(el: Element) -> dict:
    """The raw properties one element's vector is built from (None where pymatgen has none)."""
    f_block = el.block == "f"
    group = None if f_block else int(el.group)
    if f_block:
        valence = 3
    elif group <= 12:
        valence = group
    else:
        valence = group - 10
    molar_volume = _safe(lambda: el.molar_volume)  # cm^3/mol
    return {
        "group": group,
        "period": int(el.row) if not f_block else (6 if el.Z <= 71 else 7),
        "electronegativity": _safe(lambda: el.X),
        "covalent_radius": _safe(lambda: el.atomic_radius),
        "valence_electrons": valence,
        "first_ionisation_energy": _safe(lambda: el.ionization_energies[0]),
        "electron_affinity": _safe(lambda: el.electron_affinity),
        "block": el.block,
        "atomic_volume": None if molar_volume is None else molar_volume * 1e24 / AVOGADRO,
    }


def element_vector(z: int) -> list[float]:
    """The 92 features of the element with atomic number z."""
    props = element_properties(Element.from_Z(z))
    vec = _one_hot(18 if props["group"] is None else props["group"] - 1, 19)
    vec += _one_hot(props["period"] - 1, 7)
    for name, low, high, bins, log in CONTINUOUS[:2]:
        vec += _one_hot(_bin(props[name], low, high, bins, log), bins)
    vec += _one_hot(props["valence_electrons"] - 1, 12)
    for name, low, high, bins, log in CONTINUOUS[2:4]:
        vec += _one_hot(_bin(props[name], low, high, bins, log), bins)
    vec += _one_hot(BLOCKS.index(props["block"]), 4)
    name, low, high, bins, log = CONTINUOUS[4]
    vec += _one_hot(_bin(props[name], low, high, bins, log), bins)
    vec_len = len(vec)
    assert vec_len == FEATURE_LENGTH, vec_len
    return vec


def make_embedding() -> dict[str, list[float]]:
    """{str(Z): 92 floats} for Z = 1..100, the key format of CGCNN's atom_init.json."""
    return {str(z): element_vector(z) for z in range(1, Z_MAX + 1)}


def write_atom_init(path: Path) -> None:
    path.write_text(json.dumps(make_embedding()))


def load_embedding(path: Path) -> dict[int, np.ndarray]:
    """Read atom_init.json into {Z: float32 vector}; a clear error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"element embedding {path} not found: run `python build.py data`")
    try:
        raw = json.loads(path.read_text())
        return {int(z): np.asarray(v, dtype=np.float32) for z, v in raw.items()}
    except (ValueError, TypeError) as err:
        raise ValueError(f"element embedding {path} is not a JSON object of Z -> list: {err}") from err


def check_covered(symbols, embedding: dict[int, np.ndarray]) -> None:
    """Raise a clear error for an element the embedding does not cover."""
    for symbol in symbols:
        try:
            z = Element(symbol).Z
        except ValueError as err:
            raise ValueError(f"unknown element {symbol!r}: not in the periodic table") from err
        if z not in embedding:
            raise ValueError(f"element {symbol} (Z={z}) is not covered by the element embedding "
                             f"(it covers Z=1..{max(embedding)})")


if __name__ == "__main__":
    write_atom_init(Path(__file__).parent / "data" / "atom_init.json")
