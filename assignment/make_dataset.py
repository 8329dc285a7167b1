"""Generate, relax and label the perovskite data set (run it as `python build.py data`).

What it does, in order (see data/DATACARD.md for the why):
1. Builds ABO3 perovskites in four polymorphs (cubic Pm-3m, tetragonal P4mm, rhombohedral R-3c,
   orthorhombic Pnma) for charge-balanced A/B pairs whose Goldschmidt tolerance factor, from
   pymatgen's Shannon radii, lies in [0.75, 1.10]; and non-perovskite oxides in eight other structure
   types for the classification set.
2. Relaxes cell and positions with CHGNet (BFGS, fmax 0.05 eV/A, at most 300 steps), in worker
   processes of one torch thread each, so that an entry's result does not depend on scheduling.
3. Labels each entry with its energy per atom and its formation energy per atom against elemental
   references relaxed with the same potential (metals: the lowest of fcc, bcc, hcp and, for group
   14, diamond; oxygen: an O2 molecule in a 12 A box).
4. Drops unconverged relaxations, volume changes over 30 % and broken cation-oxygen coordination,
   and logs why in data/rejected.csv.
5. Writes the CGCNN directory format under data/perovskites and data/classification.

Every relaxation is appended to data/.cache/relaxations.jsonl as it finishes, so an interrupted run
resumes where it stopped; the output directories are replaced only once everything is written.
CHGNet is needed only here: `pip install -r requirements-data.txt`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections import Counter
from itertools import product
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Species, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from baselines import write_baselines
from embedding import check_covered, load_embedding, write_atom_init

DATA = Path(__file__).parent / "data"
CACHE = DATA / ".cache" / "relaxations.jsonl"
SEED = 2018  # fixes the classification sample and the splits
FMAX = 0.05  # eV/A
MAX_STEPS = 300
MAX_VOLUME_CHANGE = 0.30
TOLERANCE_RANGE = (0.75, 1.10)
R_OXYGEN = Species("O", -2).get_shannon_radius("VI")  # 1.40 A
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

# Rules applied to the relaxed structures (see `apply_rules`); each is stated once here.
SYMPREC = 0.1  # A: the polymorph label comes from the space group at this tolerance
SYMPREC_FINE = 0.01  # A: recorded too, to show distortions below SYMPREC
# Crystal system of the relaxed space group -> polymorph label; other systems are rejected.
POLYMORPH_OF_SYSTEM = {"cubic": "cubic", "tetragonal": "tetragonal", "trigonal": "rhombohedral",
                       "orthorhombic": "orthorhombic"}
# Two entries of one formula are the same structure under this matcher (no volume scaling).
TIGHT_MATCHER = {"ltol": 0.05, "stol": 0.05, "angle_tol": 1.0, "scale": False}
DEGENERATE_EV_PER_ATOM = 0.002  # labels closer than this are one structure for any model
B_BOND_RATIO_LIMIT = 1.25  # longest / shortest B-O bond of a perovskite octahedron, exclusive
# Trivalent lanthanides in order of Z (Pm and the divalent Eu are not in the set as A3+).
LANTHANIDES = ["La", "Ce", "Pr", "Nd", "Sm", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu"]
LANTHANIDE_OFFSET_LIMIT = 0.10  # eV/atom: mean offset from the neighbours' interpolation
# Dropped whatever the check says: the Materials Project Yb pseudopotential (Yb_3, f electrons in the
# core, fitted for Yb3+) gives wrong Yb energies, and CHGNet, trained on those energies, inherits them.
DROPPED_ELEMENTS = {"Yb": "Materials Project's Yb_3 pseudopotential error, inherited by CHGNet"}

# Perovskite sites: oxidation state of A -> A cations, and of B -> B cations (A + B = 6).
A_SITE = {
    1: ["Na", "K", "Rb", "Cs", "Ag"],
    2: ["Ca", "Sr", "Ba", "Pb", "Eu", "Cd"],
    3: ["La", "Ce", "Pr", "Nd", "Sm", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Y", "Bi"],
}
B_SITE = {
    5: ["Nb", "Ta", "V", "Sb"],
    4: ["Ti", "Zr", "Hf", "Sn", "Ge", "Mn", "Mo", "Ru", "Ir", "Ce", "Pb", "V", "Cr", "Fe", "Nb", "Rh"],
    3: ["Al", "Ga", "In", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Rh"],
}
POLYMORPHS = ["cubic", "tetragonal", "rhombohedral", "orthorhombic"]
SPACE_GROUPS = {"cubic": "Pm-3m", "tetragonal": "P4mm", "rhombohedral": "R-3c", "orthorhombic": "Pnma"}

# Non-perovskite structure types: prototype -> list of (cation, oxidation state) tuples.
_RE3 = ["La", "Pr", "Nd", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Y", "Bi"]
OTHER_TYPES = {
    "rocksalt": [((m, 2),) for m in ["Mg", "Ca", "Sr", "Ba", "Mn", "Fe", "Co", "Ni", "Cd", "Eu", "Zn"]],
    "rutile": [((m, 4),) for m in ["Ti", "Sn", "Ge", "Mn", "Ru", "Ir", "Cr", "V", "Mo", "W", "Os",
                                   "Rh", "Pb", "Nb"]],
    "fluorite": [((m, 4),) for m in ["Ce", "Zr", "Hf", "Pr", "Tb", "Th", "U"]],
    "corundum": [((m, 3),) for m in ["Al", "Ga", "Cr", "Fe", "V", "Ti", "Rh", "In", "Mn", "Co"]],
    "spinel": [((a, 2), (b, 3)) for a, b in product(["Mg", "Zn", "Fe", "Co", "Ni", "Mn", "Cu", "Cd"],
                                                    ["Al", "Ga", "Cr", "Fe", "Co", "Mn", "V", "Rh", "In"])
               if a != b]
    + [((a, 4), (b, 2)) for a, b in product(["Ti", "Sn", "Ge", "Mn", "V"],
                                            ["Mg", "Zn", "Co", "Ni", "Mn", "Fe"]) if a != b],
    "ilmenite": [((a, 2), (b, 4)) for a, b in product(["Mg", "Fe", "Mn", "Co", "Ni", "Zn", "Cd"],
                                                      ["Ti", "Sn", "Ge", "Mn"]) if a != b]
    + [((a, 1), (b, 5)) for a, b in product(["Li", "Na"], ["Nb", "Ta", "Sb", "V"])],
    "pyrochlore": [((a, 3), (b, 4)) for a, b in product(_RE3, ["Ti", "Sn", "Zr", "Hf", "Ru", "Ir"])],
    "ruddlesden_popper": [((a, 2), (b, 4)) for a, b in product(["Ca", "Sr", "Ba"],
                                                               ["Ti", "Zr", "Hf", "Sn", "Mn", "Ru",
                                                                "Ir", "Mo"])]
    + [((a, 3), (b, 2)) for a, b in product(["La", "Pr", "Nd", "Sm", "Gd"], ["Ni", "Cu", "Co"])],
}
# Cation counts (in the order of OTHER_TYPES' tuples), then oxygen, per formula unit.
STOICHIOMETRY = {"rocksalt": (1, 1), "rutile": (1, 2), "fluorite": (1, 2), "corundum": (2, 3),
                 "spinel": (1, 2, 4), "ilmenite": (1, 1, 3), "pyrochlore": (2, 2, 7),
                 "ruddlesden_popper": (2, 1, 4)}
N_CLASSIFICATION_POSITIVES = 320
ENTRY_KEYS = ("id", "formula", "prototype", "family", "cations", "tolerance_factor")  # copied into records


class PrototypeError(ValueError):
    """A structure prototype that cannot be built as asked."""


# ---------------------------------------------------------------------------------------------
# Radii and structures
# ---------------------------------------------------------------------------------------------

def shannon_radius(element: str, oxidation: int, cns: tuple[str, ...]) -> float:
    """Shannon radius (A) for the first coordination number in `cns` that pymatgen tabulates."""
    try:
        species = Species(element, oxidation)
    except ValueError as err:
        raise PrototypeError(f"unknown element {element!r}: not in the periodic table") from err
    for cn in cns:
        for spin in ("", "High Spin"):
            try:
                return float(species.get_shannon_radius(cn, spin=spin))
            except (KeyError, ValueError):
                continue
    raise PrototypeError(f"no Shannon radius for {element}{oxidation:+d} in coordination {cns}")


def tolerance_factor(a: str, a_ox: int, b: str, b_ox: int) -> float:
    """Goldschmidt t = (rA + rO) / (sqrt(2) (rB + rO)); A in CN XII (VIII where XII is not tabulated)."""
    r_a = shannon_radius(a, a_ox, ("XII", "VIII"))
    r_b = shannon_radius(b, b_ox, ("VI",))
    return (r_a + R_OXYGEN) / (math.sqrt(2) * (r_b + R_OXYGEN))


def _pseudocubic(a: str, a_ox: int, b: str, b_ox: int) -> float:
    r_a = shannon_radius(a, a_ox, ("XII", "VIII"))
    r_b = shannon_radius(b, b_ox, ("VI",))
    # Mean of the B-O-B and A-O estimates, scaled down because Shannon radii overestimate oxide bonds.
    return 0.975 * 0.5 * (2 * (r_b + R_OXYGEN) + math.sqrt(2) * (r_a + R_OXYGEN))


def perovskite(a: str, b: str, polymorph: str, a_ox: int, b_ox: int) -> Structure:
    """An ABO3 perovskite in one of POLYMORPHS, scaled from Shannon radii (the primitive cell)."""
    ap = _pseudocubic(a, a_ox, b, b_ox)
    if polymorph == "cubic":
        s = Structure.from_spacegroup("Pm-3m", Lattice.cubic(ap), [b, a, "O"],
                                      [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    elif polymorph == "tetragonal":  # BaTiO3-type: B and O displaced along c
        s = Structure.from_spacegroup("P4mm", Lattice.tetragonal(0.995 * ap, 1.02 * ap), [a, b, "O", "O"],
                                      [[0, 0, 0], [0.5, 0.5, 0.52], [0.5, 0.5, -0.02], [0.5, 0, 0.49]])
    elif polymorph == "rhombohedral":  # LaAlO3-type a-a-a- tilts; O at x = 1/2 would be untilted
        s = Structure.from_spacegroup("R-3c", Lattice.hexagonal(math.sqrt(2) * ap, 2 * math.sqrt(3) * ap),
                                      [a, b, "O"], [[0, 0, 0.25], [0, 0, 0], [0.46, 0, 0.25]])
    elif polymorph == "orthorhombic":  # GdFeO3-type a-b+a- tilts, CaTiO3 coordinates
        s = Structure.from_spacegroup("Pnma", Lattice.orthorhombic(math.sqrt(2) * ap, 2 * ap, math.sqrt(2) * ap),
                                      [a, b, "O", "O"],
                                      [[0.0065, 0.25, 0.9885], [0, 0, 0.5], [0.5711, 0.25, 0.0828],
                                       [0.2897, 0.0373, 0.7108]])
    else:
        raise PrototypeError(f"unknown perovskite polymorph {polymorph!r}: choose from {POLYMORPHS}")
    return _checked(s.get_primitive_structure(), f"{a}{b}O3", polymorph)


def other_oxide(prototype: str, cations: tuple[tuple[str, int], ...]) -> Structure:
    """A non-perovskite oxide of structure type `prototype` (a key of OTHER_TYPES), primitive cell."""
    radii = [shannon_radius(el, ox, ("VI", "VIII", "IV")) for el, ox in cations]
    mo = radii[0] + R_OXYGEN  # cation-oxygen bond length estimate, scales each prototype
    els = [el for el, _ in cations]
    if prototype == "rocksalt":
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(2 * mo), [els[0], "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    elif prototype == "rutile":
        f = mo / 1.965
        s = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59 * f, 2.96 * f), [els[0], "O"],
                                      [[0, 0, 0], [0.305, 0.305, 0]])
    elif prototype == "fluorite":
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4 * mo / math.sqrt(3)), [els[0], "O"],
                                      [[0, 0, 0], [0.25, 0.25, 0.25]])
    elif prototype == "corundum":
        f = mo / 1.935
        s = Structure.from_spacegroup("R-3c", Lattice.hexagonal(4.76 * f, 12.99 * f), [els[0], "O"],
                                      [[0, 0, 0.352], [0.306, 0, 0.25]])
    elif prototype == "spinel":  # A on tetrahedral 8a, B on octahedral 16d (origin choice 2)
        f = (radii[1] + R_OXYGEN) / 1.935
        s = Structure.from_spacegroup("Fd-3m:2", Lattice.cubic(8.08 * f), [els[0], els[1], "O"],
                                      [[0.125] * 3, [0.5] * 3, [0.26] * 3])
    elif prototype == "ilmenite":
        f = (sum(radii) / 2 + R_OXYGEN) / 2.07
        s = Structure.from_spacegroup("R-3", Lattice.hexagonal(5.09 * f, 14.09 * f), [els[0], els[1], "O"],
                                      [[0, 0, 0.355], [0, 0, 0.146], [0.317, 0.020, 0.245]])
    elif prototype == "pyrochlore":  # A2B2O7, origin choice 2
        f = (radii[1] + R_OXYGEN) / 2.005
        s = Structure.from_spacegroup("Fd-3m:2", Lattice.cubic(10.4 * f), [els[0], els[1], "O", "O"],
                                      [[0.5] * 3, [0] * 3, [0.33, 0.125, 0.125], [0.375] * 3])
    elif prototype == "ruddlesden_popper":  # A2BO4, n = 1
        f = (radii[1] + R_OXYGEN) / 2.005
        s = Structure.from_spacegroup("I4/mmm", Lattice.tetragonal(3.88 * f, 12.6 * f), [els[0], els[1], "O", "O"],
                                      [[0, 0, 0.355], [0, 0, 0], [0, 0.5, 0], [0, 0, 0.16]])
    else:
        raise PrototypeError(f"unknown structure type {prototype!r}: choose from {sorted(OTHER_TYPES)}")
    return _checked(s.get_primitive_structure(), "".join(els), prototype)


def _checked(s: Structure, label: str, prototype: str) -> Structure:
    """Reject a malformed prototype: overlapping atoms or a formula that is not charge balanced."""
    dist = s.distance_matrix + np.eye(len(s)) * 100
    if dist.min() < 1.2:
        raise PrototypeError(f"malformed prototype {prototype} for {label}: atoms {dist.min():.2f} A apart")
    return s


# ---------------------------------------------------------------------------------------------
# The list of entries
# ---------------------------------------------------------------------------------------------

def perovskite_entries() -> list[dict]:
    entries = []
    for a_ox, b_ox in [(1, 5), (2, 4), (3, 3)]:
        for a, b in product(A_SITE[a_ox], B_SITE[b_ox]):
            if a == b:
                continue
            t = tolerance_factor(a, a_ox, b, b_ox)
            if not TOLERANCE_RANGE[0] <= t <= TOLERANCE_RANGE[1]:
                continue
            formula = f"{a}{b}O3"  # the ABO3 convention, not pymatgen's electronegativity order
            for polymorph in POLYMORPHS:
                entries.append({"id": f"{formula}_{polymorph}", "formula": formula, "prototype": polymorph,
                                "family": "perovskite", "cations": [[a, a_ox], [b, b_ox]],
                                "tolerance_factor": round(t, 4)})
    return entries


def other_entries() -> list[dict]:
    entries = []
    seen = set()
    for prototype, cation_sets in OTHER_TYPES.items():
        for cations in cation_sets:
            counts = dict(zip([el for el, _ in cations], STOICHIOMETRY[prototype][:-1]))
            formula = Composition({**counts, "O": STOICHIOMETRY[prototype][-1]}).reduced_formula
            if (formula, prototype) in seen:  # MnFe2O4 arises as 2-3 and as 4-2 spinel: keep one
                continue
            seen.add((formula, prototype))
            entries.append({"id": f"{formula}_{prototype}", "formula": formula, "prototype": prototype,
                            "family": prototype, "cations": [list(c) for c in cations],
                            "tolerance_factor": None})
    return entries


def build_structure(entry: dict) -> Structure:
    cations = [tuple(c) for c in entry["cations"]]
    if entry["family"] == "perovskite":
        (a, a_ox), (b, b_ox) = cations
        return perovskite(a, b, entry["prototype"], a_ox, b_ox)
    return other_oxide(entry["prototype"], tuple(cations))


# ---------------------------------------------------------------------------------------------
# Relaxation (runs in worker processes)
# ---------------------------------------------------------------------------------------------

_OPTIMIZER = None


def _init_worker() -> None:
    global _OPTIMIZER
    import torch
    torch.set_num_threads(1)  # one thread per worker: results do not depend on scheduling
    warnings.filterwarnings("ignore")
    from chgnet.model import CHGNet, StructOptimizer
    with _quiet():
        _OPTIMIZER = StructOptimizer(model=CHGNet.load(verbose=False), optimizer_class="BFGS")


class _quiet:
    """Silence CHGNet's prints (it reports the device on every load)."""

    def __enter__(self):
        self._old = sys.stdout
        sys.stdout = io.StringIO()

    def __exit__(self, *exc):
        sys.stdout = self._old


def relax(structure: Structure, relax_cell: bool = True) -> dict:
    """Relax with CHGNet; return the final structure, energy per atom and convergence facts."""
    if _OPTIMIZER is None:
        _init_worker()
    with _quiet():
        result = _OPTIMIZER.relax(structure, fmax=FMAX, steps=MAX_STEPS, relax_cell=relax_cell,
                                  verbose=False)
        final = result["final_structure"]
        energy = float(_OPTIMIZER.calculator.model.predict_structure(final)["e"])
    traj = result["trajectory"]
    steps = len(traj.energies)
    max_force = float(np.linalg.norm(traj.forces[-1], axis=1).max())
    return {"structure": final, "energy_per_atom": energy, "steps": steps,
            "converged": optimizer_converged(steps), "max_force": max_force}


def optimizer_converged(steps: int) -> bool:
    """Whether BFGS stopped on its own test (max force below FMAX, in the cell filter's coordinates)
    rather than at MAX_STEPS. `steps` counts trajectory frames: the start, one per iteration and the
    final frame CHGNet adds. The atomic max force recomputed from the trajectory is not the quantity the
    optimizer tested (the cell filter transforms the forces), so it is recorded but not judged."""
    return steps - 2 < MAX_STEPS


def relax_entry(entry: dict) -> dict:
    """Build, relax and check one entry; never raises (a failure becomes a rejection reason)."""
    record = {k: entry[k] for k in ENTRY_KEYS}
    start = time.perf_counter()
    try:
        initial = build_structure(entry)
        out = relax(initial)
    except Exception as err:  # a crash in one relaxation must not stop the other 1,600
        record.update(rejected=f"relaxation failed: {type(err).__name__}: {err}")
        return record
    final = out.pop("structure")
    volume_change = final.volume / initial.volume - 1
    record.update(out, cif=final.to(fmt="cif"), sites=len(final), volume_change=round(volume_change, 4),
                  seconds=round(time.perf_counter() - start, 2))
    try:
        record["space_group"] = SpacegroupAnalyzer(final, symprec=0.1).get_space_group_symbol()
    except Exception:  # spglib can fail on a badly distorted cell; the rejection checks follow
        record["space_group"] = "unknown"
    return record


def rejection_reason(record: dict) -> str | None:
    """Why a relaxed entry is unphysical or failed, or None. Judged when the set is written (not in
    the worker), so that the criteria can be refined without relaxing anything again."""
    if "cif" not in record:
        return record.get("rejected", "relaxation failed")
    if not optimizer_converged(record["steps"]):
        return f"not converged: {record['steps']} steps, max force {record['max_force']:.3f} eV/A"
    # A record rebuilt from the committed files has no start volume: it passed this test when relaxed.
    if record.get("volume_change") is not None and abs(record["volume_change"]) > MAX_VOLUME_CHANGE:
        return f"volume changed by {100 * record['volume_change']:+.0f} %"
    if not math.isfinite(record["energy_per_atom"]):
        return "energy is not finite"
    final = structure_of(record)
    entry = record
    for i, site in enumerate(final):
        el = site.specie.symbol
        if el == "O":
            continue
        ox = dict((c[0], c[1]) for c in entry["cations"])[el]
        bond = shannon_radius(el, ox, ("VI", "VIII", "IV")) + R_OXYGEN
        # 1.5 bond lengths: wide enough for the long apical bond of a polar (5+1) octahedron, far
        # short of the next O shell (about 2.3 bond lengths in a perovskite)
        n_o = sum(1 for n in final.get_neighbors(site, 1.5 * bond) if n.specie.symbol == "O")
        is_b_site = entry["family"] == "perovskite" and el == entry["cations"][1][0]
        if is_b_site and n_o != 6:
            return f"broken B-O coordination: {el} on site {i} has {n_o} O neighbours, not 6"
        if n_o < 3:
            return f"broken coordination: {el} on site {i} has {n_o} O neighbours"
    return None


# ---------------------------------------------------------------------------------------------
# Rules on the relaxed structures (run on relaxation records, from the cache or the committed files)
# ---------------------------------------------------------------------------------------------

_STRUCTURES: dict[str, Structure] = {}


def structure_of(record: dict) -> Structure:
    """The relaxed structure of a record, parsed once."""
    if record["id"] not in _STRUCTURES:
        _STRUCTURES[record["id"]] = Structure.from_str(record["cif"], fmt="cif")
    return _STRUCTURES[record["id"]]


def label_symmetry(record: dict) -> None:
    """Space groups at SYMPREC and SYMPREC_FINE, and the polymorph named from the first."""
    s = structure_of(record)
    try:
        coarse = SpacegroupAnalyzer(s, symprec=SYMPREC)
        record["space_group"] = coarse.get_space_group_symbol()
        record["space_group_fine"] = SpacegroupAnalyzer(s, symprec=SYMPREC_FINE).get_space_group_symbol()
        system, order = coarse.get_crystal_system(), len(coarse.get_point_group_operations())
    except Exception:  # spglib can fail on a badly distorted cell: judged as having no symmetry
        record["space_group"] = record["space_group_fine"] = "unknown"
        system, order = "unknown", 1
    record["crystal_system"], record["point_group_order"] = system, order
    is_perovskite = record["family"] == "perovskite"
    record["polymorph"] = POLYMORPH_OF_SYSTEM.get(system, system) if is_perovskite else record["prototype"]


def b_octahedron(record: dict) -> tuple[int, float]:
    """Fewest O around any B site (within 1.5 ideal bond lengths) and the largest longest/shortest
    B-O ratio among the six nearest O of a B site."""
    s = structure_of(record)
    (b, b_ox) = record["cations"][1]
    cutoff = 1.5 * (shannon_radius(b, b_ox, ("VI",)) + R_OXYGEN)
    fewest, worst = 6, 1.0
    for site in s:
        if site.specie.symbol != b:
            continue
        bonds = sorted(n.nn_distance for n in s.get_neighbors(site, cutoff) if n.specie.symbol == "O")
        fewest = min(fewest, len(bonds))
        if len(bonds) >= 6:
            worst = max(worst, bonds[5] / bonds[0])
    return fewest, worst


def octahedron_reason(record: dict) -> str | None:
    """A perovskite whose B octahedron is broken into a pyramid (the long bond of a (5+1) polar
    distortion is no bond) is not the perovskite its label says."""
    if record["family"] != "perovskite":
        return None
    fewest, ratio = b_octahedron(record)
    if fewest < 6 or ratio >= B_BOND_RATIO_LIMIT:
        return (f"distorted B octahedron: longest/shortest B-O {ratio:.2f} (limit {B_BOND_RATIO_LIMIT}),"
                f" {fewest} O within the cutoff")
    return None


def symmetry_reason(record: dict) -> str | None:
    """A perovskite that relaxed into a crystal system outside the four polymorph families."""
    if record["family"] == "perovskite" and record["crystal_system"] not in POLYMORPH_OF_SYSTEM:
        return f"relaxed symmetry {record['space_group']} ({record['crystal_system']}) is none of the polymorphs"
    return None


def _a_cation(record: dict) -> str:
    return record["cations"][0][0]


def lanthanide_offsets(records: list[dict], refs: dict, excluded=()) -> dict[str, tuple[float, int]]:
    """Mean offset (eV/atom) of each lanthanide's labels from the linear interpolation in Z between its
    nearest lanthanide neighbours (skipping `excluded`), over the B cations all three share, comparing
    each formula's lowest formation energy; with the number of B cations compared. The ends of the
    series (La, Lu) have one neighbour and are not measured."""
    lowest: dict[tuple[str, str], float] = {}
    for r in records:
        if r["family"] == "perovskite" and _a_cation(r) in LANTHANIDES:
            key = (_a_cation(r), r["cations"][1][0])
            ef = formation_energy(r["formula"], r["energy_per_atom"], refs)
            lowest[key] = min(ef, lowest.get(key, math.inf))
    series = [el for el in LANTHANIDES if el not in excluded]
    z = {el: Element(el).Z for el in series}
    offsets = {}
    for lo, el, hi in zip(series, series[1:], series[2:]):
        w = (z[el] - z[lo]) / (z[hi] - z[lo])
        diffs = [lowest[(el, b)] - ((1 - w) * lowest[(lo, b)] + w * lowest[(hi, b)])
                 for (a, b) in lowest if a == el and (lo, b) in lowest and (hi, b) in lowest]
        if diffs:
            offsets[el] = (float(np.mean(diffs)), len(diffs))
    return offsets


def failing_lanthanides(records: list[dict], refs: dict) -> tuple[dict[str, str], dict[str, dict]]:
    """Lanthanides to drop: DROPPED_ELEMENTS, then, one at a time, the one with the largest mean offset
    above LANTHANIDE_OFFSET_LIMIT (an outlier also shifts its neighbours' interpolation, so they are
    measured again without it). Returns the reasons, and the offsets before any exclusion ("first")
    and after the last ("final")."""
    first = lanthanide_offsets(records, refs)
    dropped = {el: f"{why} (mean offset {first[el][0]:+.3f} eV/atom)" if el in first else why
               for el, why in DROPPED_ELEMENTS.items()}
    while True:
        offsets = lanthanide_offsets(records, refs, excluded=dropped)
        bad = {el: v for el, v in offsets.items() if abs(v[0]) > LANTHANIDE_OFFSET_LIMIT}
        if not bad:
            return dropped, {"first": first, "final": offsets}
        el = max(bad, key=lambda e: abs(bad[e][0]))
        dropped[el] = (f"mean offset {bad[el][0]:+.3f} eV/atom from its neighbours' interpolation over "
                       f"{bad[el][1]} B cations (limit {LANTHANIDE_OFFSET_LIMIT})")


def _keep_order(record: dict) -> tuple:
    """Which entry of a merged group stays: the most symmetric relaxed structure, then the smaller
    cell, then the lower energy (then the id, for determinism)."""
    return (-record["point_group_order"], len(structure_of(record)), record["energy_per_atom"], record["id"])


def merge_reasons(records: list[dict]) -> dict[str, tuple[str, str]]:
    """Entries of one formula that relaxed into each other (TIGHT_MATCHER) or whose labels lie within
    DEGENERATE_EV_PER_ATOM are one entry: each group (transitively closed) keeps one (`_keep_order`).
    Returns id -> (id kept, rule) for the others."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    matcher = StructureMatcher(**TIGHT_MATCHER, primitive_cell=False)  # given primitive cells, found once
    primitive = {r["id"]: structure_of(r).get_primitive_structure() for r in records}
    by_formula: dict[str, list[dict]] = {}
    for r in records:
        by_formula.setdefault(r["formula"], []).append(r)
    reasons = {}
    for group in by_formula.values():
        group = sorted(group, key=_keep_order)
        parent = list(range(len(group)))

        def root(i):
            while parent[i] != i:
                i = parent[i]
            return i

        why = {}
        for i, j in ((i, j) for i in range(len(group)) for j in range(i + 1, len(group))):
            if abs(group[i]["energy_per_atom"] - group[j]["energy_per_atom"]) <= DEGENERATE_EV_PER_ATOM:
                rule = f"labels within {1000 * DEGENERATE_EV_PER_ATOM:.0f} meV/atom"
            elif matcher.fit(primitive[group[i]["id"]], primitive[group[j]["id"]]):
                rule = "same structure under the tight matcher"
            else:
                continue
            a, b = sorted((root(i), root(j)))
            parent[b] = a  # the root is the group's first entry in `_keep_order`: the one kept
            why.setdefault(b, rule)
        for j in range(len(group)):
            if root(j) != j:
                reasons[group[j]["id"]] = (group[root(j)]["id"], why[j])
    return reasons


def reference_candidates(element: str) -> list[tuple[str, Structure]]:
    """Elemental reference candidates: fcc, bcc, hcp (and diamond for group 14); O as an O2 molecule."""
    if element == "O":
        return [("O2", Structure(Lattice.cubic(12.0), ["O", "O"], [[0, 0, 0], [1.21 / 12, 0, 0]],
                                 coords_are_cartesian=False))]
    r = float(Element(element).atomic_radius or 1.5)
    cands = [("fcc", Structure.from_spacegroup("Fm-3m", Lattice.cubic(2 * math.sqrt(2) * r), [element], [[0, 0, 0]])),
             ("bcc", Structure.from_spacegroup("Im-3m", Lattice.cubic(4 * r / math.sqrt(3)), [element], [[0, 0, 0]])),
             ("hcp", Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(2 * r, 1.633 * 2 * r), [element],
                                               [[1 / 3, 2 / 3, 0.25]]))]
    if Element(element).group == 14:
        cands.append(("diamond", Structure.from_spacegroup("Fd-3m:2", Lattice.cubic(8 * r / math.sqrt(3)),
                                                           [element], [[0.125] * 3])))
    return [(name, s.get_primitive_structure()) for name, s in cands]


def relax_reference(task: tuple[str, str]) -> dict:
    element, name = task
    structure = dict(reference_candidates(element))[name]
    out = relax(structure, relax_cell=(element != "O"))
    return {"id": f"ref:{element}:{name}", "element": element, "structure_type": name,
            "energy_per_atom": out["energy_per_atom"], "converged": out["converged"], "steps": out["steps"]}


# ---------------------------------------------------------------------------------------------
# Driver: cache, parallel relaxation, output
# ---------------------------------------------------------------------------------------------

def _load_cache() -> dict[str, dict]:
    done = {}
    if CACHE.exists():
        for line in CACHE.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by an interruption: that entry runs again
            done[rec["id"]] = rec
    return done


def _run_parallel(func, tasks, keys, done, workers, desc):
    from multiprocessing import get_context
    from tqdm import tqdm
    todo = [(k, t) for k, t in zip(keys, tasks) if k not in done]
    if not todo:
        return
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE, "a") as cache, tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc) as bar:
        if workers <= 1:
            results = map(func, [t for _, t in todo])
        else:
            pool = get_context("spawn").Pool(workers, initializer=_init_worker)
            results = pool.imap_unordered(func, [t for _, t in todo], chunksize=1)
        for rec in results:
            done[rec["id"]] = rec
            cache.write(json.dumps(rec) + "\n")
            cache.flush()
            bar.update(1)
        if workers > 1:
            pool.close()
            pool.join()


def elements_of(entries) -> list[str]:
    return sorted({c[0] for e in entries for c in e["cations"]} | {"O"})


def references(entries, done, workers, known: dict | None = None) -> dict[str, dict]:
    """The lowest-energy elemental reference of each element, relaxing the candidates of those not
    `known` (elements with committed references, when rewriting from the committed data)."""
    known = known or {}
    tasks = [(el, name) for el in elements_of(entries) if el not in known for name, _ in reference_candidates(el)]
    _run_parallel(relax_reference, tasks, [f"ref:{el}:{n}" for el, n in tasks], done, workers, "references")
    refs = {el: known[el] for el in elements_of(entries) if el in known}
    for el, name in tasks:
        rec = done[f"ref:{el}:{name}"]
        if el not in refs or rec["energy_per_atom"] < refs[el]["energy_per_atom"]:
            refs[el] = {"structure_type": name, "energy_per_atom": rec["energy_per_atom"]}
    return refs


def formation_energy(formula: str, energy_per_atom: float, refs: dict[str, dict]) -> float:
    comp = Composition(formula)
    mu = sum(amt * refs[el.symbol]["energy_per_atom"] for el, amt in comp.items()) / comp.num_atoms
    return energy_per_atom - mu


def all_entries() -> list[dict]:
    return perovskite_entries() + other_entries()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _entry_key(formula: str, built_as: str) -> tuple[str, str]:
    """Matches a committed row to its entry whatever the formula's element order."""
    return Composition(formula).reduced_formula, built_as


def committed_records(entries: list[dict]) -> dict[str, dict]:
    """Relaxation records rebuilt from the committed data set, for the entries it holds: the relaxed CIF,
    energy and step count of every kept entry, and the stored reason (and energy, where written) of every
    rejected one. Not in them: the max force and the wall time of each relaxation."""
    by_key = {_entry_key(e["formula"], e["prototype"]): e for e in entries}
    out: dict[str, dict] = {}
    for root in (DATA / "perovskites", DATA / "classification"):
        for row in _rows(root / "metadata.csv") if (root / "metadata.csv").exists() else []:
            entry = by_key.get(_entry_key(row["formula"], row.get("built_as", row["prototype"])))
            if entry is None or entry["id"] in out:
                continue
            out[entry["id"]] = {k: entry[k] for k in ENTRY_KEYS} | {
                "cif": (root / f"{row['id']}.cif").read_text(), "energy_per_atom": float(row["energy_per_atom"]),
                "steps": int(row["relaxation_steps"]), "sites": int(row["sites"]), "max_force": None,
                "volume_change": float(row["volume_change"]) if row.get("volume_change") else None,
                "seconds": None}
    for row in _rows(DATA / "rejected.csv") if (DATA / "rejected.csv").exists() else []:
        entry = by_key.get(_entry_key(row.get("formula") or row["id"].rsplit("_", 1)[0], row["prototype"]))
        if entry is None or entry["id"] in out:
            continue
        out[entry["id"]] = {k: entry[k] for k in ENTRY_KEYS} | {"rejected": row["reason"]}
        if row.get("energy_per_atom"):
            out[entry["id"]]["energy_per_atom"] = float(row["energy_per_atom"])
    return out


def committed_references() -> dict[str, dict]:
    path = DATA / "references.json"
    return json.loads(path.read_text())["energy_per_atom_eV"] if path.exists() else {}


def generate(workers: int = 2, limit: int | None = None, from_committed: bool = False) -> None:
    """Relax what is neither cached nor (with `from_committed`) in the committed data, then write."""
    started = time.perf_counter()
    entries = all_entries()
    if limit:  # a quick partial run, for development: keeps every prototype represented
        rng = random.Random(SEED)
        entries = rng.sample(entries, min(limit, len(entries)))
    DATA.mkdir(parents=True, exist_ok=True)
    write_atom_init(DATA / "atom_init.json")
    check_covered(elements_of(entries), load_embedding(DATA / "atom_init.json"))
    done = _load_cache()
    cached = len(done)
    known_refs = committed_references() if from_committed else {}
    if from_committed:
        for key, rec in committed_records(entries).items():
            done.setdefault(key, rec)
    refs = references(entries, done, workers, known_refs)
    before = len(done)
    _run_parallel(relax_entry, entries, [e["id"] for e in entries], done, workers, "structures")
    records = [done[e["id"]] for e in entries]
    old = json.loads((DATA / "generation.json").read_text()) if (DATA / "generation.json").exists() else {}
    timing = {key: old.get(key) for key in TIMING_KEYS}
    if len(done) > before or not from_committed:  # something was relaxed: this run's clock counts
        timing.update(relaxation_seconds_total=round(sum(r.get("seconds") or 0 for r in records), 1),
                      wall_seconds_last_run=round(time.perf_counter() - started, 1))
        if cached == 0 and not from_committed:  # from an empty cache: a full regeneration
            timing["wall_seconds_full_regeneration"] = timing["wall_seconds_last_run"]
    write_dataset(records, refs, timing)
    write_baselines()
    write_card()


TIMING_KEYS = ["relaxation_seconds_total", "wall_seconds_last_run", "wall_seconds_full_regeneration",
               "conditions"]


def chemistry_stratum(record: dict) -> str:
    """A cation family (its oxidation state) and B cation family (3d, 4d/5d, p block, f block): the
    split deals formulas out within each such stratum, so every split spreads over the chemistry."""
    (_, a_ox), (b, _) = record["cations"][0], record["cations"][-1]  # a binary oxide is its own A and B
    el = Element(b)
    family = {"p": "p", "f": "f", "s": "s"}.get(el.block) or ("3d" if el.row == 4 else "4d5d")
    return f"A{a_ox}+_B{family}"


def composition_split(records: list[dict], group_of, fractions: dict[str, float], rng: random.Random) -> dict[str, str]:
    """Split by formula: all entries of a formula go to one split. Within each chemistry stratum the
    formulas are shuffled (seeded) and dealt one by one to the split furthest below its share, counting
    both the stratum's entries and, for each group (polymorph or structure type) the formula has, that
    group's entries, so that every group is represented in every split in about its share."""
    by_formula: dict[str, list[dict]] = {}
    for r in records:
        by_formula.setdefault(r["formula"], []).append(r)
    totals = Counter(group_of(r) for r in records) + Counter(chemistry_stratum(r) for r in records)
    count, dealt = {s: Counter() for s in fractions}, Counter()
    split = {}
    strata: dict[str, list[str]] = {}
    for formula, rs in sorted(by_formula.items()):
        strata.setdefault(chemistry_stratum(rs[0]), []).append(formula)
    for stratum in sorted(strata):
        formulas = strata[stratum]
        rng.shuffle(formulas)
        for formula in formulas:
            rs = by_formula[formula]
            keys = [group_of(r) for r in rs] + [stratum] * len(rs)

            def deficit(s):  # entries short of the split's share so far, relative to each key's total
                return sum((fractions[s] * (dealt[k] + 1) - count[s][k]) / totals[k] for k in keys)

            chosen = max(fractions, key=deficit)  # ties: the order of `fractions`
            for r, k in zip(rs, keys):
                split[r["name"]] = chosen
            count[chosen].update(keys)
            dealt.update(keys)
    return split


# Rules in the order they are applied, each named by the start of the reasons it writes.
RULES = [("relaxation failed", "relaxation failed"), ("not converged", "not converged"),
         ("volume change", "volume changed"), ("energy not finite", "energy is not finite"),
         ("broken coordination", "broken"), ("distorted B octahedron", "distorted B octahedron"),
         ("relaxed out of the polymorph families", "relaxed symmetry"),
         ("lanthanide label artefact (Yb and the interpolation check)", "label artefact"),
         ("merged with another entry of the formula", "merged into")]
LATE_RULES = ("label artefact", "merged into")  # judged on labels of entries that passed the others


def rule_of(reason: str) -> str:
    return next(name for name, prefix in RULES if reason.startswith(prefix))


def _reject(record: dict, reason: str | None) -> None:
    if reason:
        record["rejected"] = reason


def apply_rules(records: list[dict], refs: dict) -> tuple[list[dict], dict]:
    """Judge every record that has a structure (a record without one keeps its stored reason), in the
    order of RULES; return the kept records and the lanthanide offsets measured."""
    for r in records:
        if "cif" in r:
            r.pop("rejected", None)
            _reject(r, rejection_reason(r))
            if "rejected" not in r:
                label_symmetry(r)
                _reject(r, octahedron_reason(r) or symmetry_reason(r))
    alive = [r for r in records if "rejected" not in r]
    late = [r for r in records if r.get("rejected", "").startswith(LATE_RULES) and "energy_per_atom" in r]
    dropped, offsets = failing_lanthanides(alive + late, refs)
    for r in alive:
        bad = [el for el, _ in r["cations"] if el in dropped]
        _reject(r, f"label artefact of {bad[0]}: {dropped[bad[0]]}" if bad else None)
    alive = [r for r in alive if "rejected" not in r]
    merged = merge_reasons([r for r in alive if r["family"] == "perovskite"])
    kept = [r for r in alive if r["id"] not in merged]
    names = output_names(kept)
    for r in alive:
        if r["id"] in merged:
            kept_id, rule = merged[r["id"]]
            r["rejected"] = f"merged into {names[kept_id]}: {rule}"
    for r in kept:
        r["name"] = names[r["id"]]
        r["formation_energy_per_atom"] = formation_energy(r["formula"], r["energy_per_atom"], refs)
    return kept, offsets


def output_names(kept: list[dict]) -> dict[str, str]:
    """File names: formula_polymorph from the relaxed structure; where two kept entries of one formula
    share a polymorph, the one not built as it is suffixed with what it was built as."""
    count: dict[tuple[str, str], int] = {}
    for r in kept:
        count[(r["formula"], r["polymorph"])] = count.get((r["formula"], r["polymorph"]), 0) + 1
    names = {}
    for r in kept:
        name = f"{r['formula']}_{r['polymorph']}"
        if count[(r["formula"], r["polymorph"])] > 1 and r["prototype"] != r["polymorph"]:
            name += f"_from_{r['prototype']}"
        names[r["id"]] = name
    return names


METADATA_COLUMNS = ["id", "formula", "prototype", "built_as", "space_group", "space_group_symprec_0.01",
                    "sites", "energy_per_atom", "formation_energy_per_atom", "tolerance_factor",
                    "relaxation_steps", "converged", "volume_change"]


def write_dataset(records: list[dict], refs: dict, timing: dict) -> None:
    """Judge the records, write both sets into a temporary directory, then swap it in: never a
    half-written data set."""
    rng = random.Random(SEED)
    tmp = DATA / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "perovskites").mkdir(parents=True)
    (tmp / "classification").mkdir()
    kept, offsets = apply_rules(records, refs)
    _write_rejected(tmp / "rejected.csv", records)

    perovs = [r for r in kept if r["family"] == "perovskite"]
    split = composition_split(perovs, lambda r: r["polymorph"], SPLIT_FRACTIONS, rng)
    _write_set(tmp / "perovskites", perovs, "formation_energy_per_atom", split)

    negatives = [r for r in kept if r["family"] != "perovskite"]
    positives = rng.sample(sorted(perovs, key=lambda r: r["name"]), min(N_CLASSIFICATION_POSITIVES, len(perovs)))
    cls = sorted(positives + negatives, key=lambda r: r["name"])
    for r in cls:
        r["is_perovskite"] = int(r["family"] == "perovskite")
    split = composition_split(cls, lambda r: "perovskite" if r["is_perovskite"] else r["prototype"],
                              SPLIT_FRACTIONS, rng)
    _write_set(tmp / "classification", cls, "is_perovskite", split)

    (tmp / "references.json").write_text(json.dumps(
        {"method": "CHGNet relaxation; metals: lowest of fcc/bcc/hcp(/diamond); O: O2 molecule in 12 A box",
         "energy_per_atom_eV": {el: refs[el] for el in sorted(refs)}}, indent=1))
    (tmp / "generation.json").write_text(json.dumps(_provenance(timing, offsets), indent=1))
    for name in ["perovskites", "classification", "rejected.csv", "references.json", "generation.json"]:
        target = DATA / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp / name, target)
    shutil.rmtree(tmp)


def _write_rejected(path: Path, records: list[dict]) -> None:
    """Every dropped entry, its rule's reason and, where it has one, its energy (so that a rewrite from
    the committed files measures the lanthanide offsets on the same labels)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prototype", "formula", "reason", "energy_per_atom"])
        for r in records:
            if "rejected" in r:
                energy = f"{r['energy_per_atom']:.6f}" if "energy_per_atom" in r else ""
                w.writerow([r["id"], r["prototype"], r["formula"], r["rejected"], energy])


def _write_set(root: Path, records: list[dict], target: str, split: dict[str, str]) -> None:
    shutil.copy(DATA / "atom_init.json", root / "atom_init.json")
    with open(root / "id_prop.csv", "w", newline="") as f:
        w = csv.writer(f)
        for r in records:
            w.writerow([r["name"], f"{r[target]:.6f}" if isinstance(r[target], float) else r[target]])
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METADATA_COLUMNS + (["is_perovskite"] if target == "is_perovskite" else []))
        for r in records:
            row = [r["name"], r["formula"], r["polymorph"], r["prototype"], r["space_group"],
                   r["space_group_fine"], len(structure_of(r)), f"{r['energy_per_atom']:.6f}",
                   f"{r['formation_energy_per_atom']:.6f}",
                   "" if r["tolerance_factor"] is None else r["tolerance_factor"], r["steps"],
                   optimizer_converged(r["steps"]), "" if r["volume_change"] is None else r["volume_change"]]
            w.writerow(row + ([r["is_perovskite"]] if target == "is_perovskite" else []))
    with open(root / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split"])
        for r in records:
            w.writerow([r["name"], split[r["name"]]])
    for r in records:
        (root / f"{r['name']}.cif").write_text(r["cif"])


def _provenance(timing: dict, offsets: dict) -> dict:
    import importlib.metadata as md
    return {"chgnet": md.version("chgnet"), "model": "CHGNet 0.3.0 pretrained weights (inside the wheel)",
            "torch": md.version("torch"), "pymatgen": md.version("pymatgen"), "optimizer": "BFGS",
            "fmax_eV_per_A": FMAX, "max_steps": MAX_STEPS, "seed": SEED,
            "lanthanide_offsets_eV_per_atom": {
                el: {"mean_offset": round(v, 4), "b_cations": n,
                     "mean_offset_after_exclusions": round(offsets["final"][el][0], 4) if el in offsets["final"] else None}
                for el, (v, n) in offsets["first"].items()},
            **timing}


def write_card() -> None:
    """DATACARD.md and label_histogram.png, from the files as written (not from memory)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import embedding

    def rows(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    gen = json.loads((DATA / "generation.json").read_text())
    pv = rows(DATA / "perovskites" / "metadata.csv")
    pv_split = {r["id"]: r["split"] for r in rows(DATA / "perovskites" / "split.csv")}
    cl = rows(DATA / "classification" / "metadata.csv")
    cl_split = {r["id"]: r["split"] for r in rows(DATA / "classification" / "split.csv")}
    rejected = rows(DATA / "rejected.csv")
    refs = json.loads((DATA / "references.json").read_text())["energy_per_atom_eV"]
    base = json.loads((DATA / "baselines.json").read_text())

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p in POLYMORPHS:
        ax.hist([float(r["formation_energy_per_atom"]) for r in pv if r["prototype"] == p], bins=40,
                alpha=0.6, label=p)
    ax.set(xlabel="formation energy (eV/atom)", ylabel="entries", title="perovskite labels by polymorph")
    ax.legend()
    fig.tight_layout()
    fig.savefig(DATA / "label_histogram.png", dpi=110)
    plt.close(fig)

    def table(records, split, key):
        groups = sorted({key(r) for r in records})
        lines = ["| group | train | val | test | total |", "|---|---|---|---|---|"]
        for g in groups + ["all"]:
            sel = [r for r in records if g == "all" or key(r) == g]
            n = {p: sum(split[r["id"]] == p for r in sel) for p in ("train", "val", "test")}
            lines.append(f"| {g} | {n['train']} | {n['val']} | {n['test']} | {len(sel)} |")
        return "\n".join(lines)

    stats = ["| polymorph | entries | mean | std | min | max |", "|---|---|---|---|---|---|"]
    for p in POLYMORPHS + ["all"]:
        v = np.array([float(r["formation_energy_per_atom"]) for r in pv if p in ("all", r["prototype"])])
        stats.append(f"| {p} | {len(v)} | {v.mean():.3f} | {v.std():.3f} | {v.min():.3f} | {v.max():.3f} |")
    def removed(name, perovskite):
        return sum(rule_of(r["reason"]) == name and (r["prototype"] in POLYMORPHS) == perovskite for r in rejected)

    rule_table = "\n".join(["| rule (in the order applied) | perovskites removed | other oxides removed |",
                            "|---|---|---|"]
                           + [f"| {name} | {removed(name, True)} | {removed(name, False)} |" for name, _ in RULES]
                           + [f"| all | {sum(r['prototype'] in POLYMORPHS for r in rejected)} |"
                              f" {sum(r['prototype'] not in POLYMORPHS for r in rejected)} |"])
    offsets = gen.get("lanthanide_offsets_eV_per_atom", {})
    def after(v):
        return "excluded" if v["mean_offset_after_exclusions"] is None else f"{v['mean_offset_after_exclusions']:+.3f}"

    offset_table = "\n".join(
        ["| A cation | mean offset (eV/atom) | after the exclusions | B cations compared | kept |", "|---|---|---|---|---|"]
        + [f"| {el} | {v['mean_offset']:+.3f} | {after(v)} | {v['b_cations']} |"
           f" {'no' if any(r['reason'].startswith(f'label artefact of {el}:') for r in rejected) else 'yes'} |"
           for el, v in offsets.items()])
    compositions = {r["formula"] for r in pv}
    multi = sum(1 for c in compositions if sum(r["formula"] == c for r in pv) > 1)
    full = gen.get("wall_seconds_full_regeneration")
    measured = (f"**{full / 60:.0f} minutes** wall time for the last run from an empty cache" if full
                else "not measured yet (no run from an empty cache)")
    card = f"""# Data card: CHGNet-relaxed perovskites and oxides

Generated by this project with `python build.py data` (code: `assignment/make_dataset.py`,
`assignment/embedding.py`); nothing here was downloaded or copied from another data set.

## Contents
- `perovskites/`: {len(pv)} ABO3 perovskites, regression target `formation_energy_per_atom` (eV/atom),
  CGCNN directory format (`id_prop.csv`, one CIF per id, `atom_init.json`) plus `metadata.csv` and
  the fixed split `split.csv`. {len(compositions)} compositions, {multi} of them in more than one polymorph.
- `classification/`: {len(cl)} oxides, target `is_perovskite` (1 or 0), same format; the perovskites
  are a seeded sample of the set above (same ids and CIFs).
- `references.json`: CHGNet energies of the elemental references; `rejected.csv`: every dropped
  relaxation and why; `generation.json`: versions, settings and timings of the last run.

## How it was made
1. **Structures** (pymatgen `Structure.from_spacegroup`). A cations with oxidation state +1 (Na, K, Rb,
   Cs, Ag), +2 (Ca, Sr, Ba, Pb, Eu, Cd) or +3 (La, Ce, Pr, Nd, Sm, Gd, Tb, Dy, Ho, Er, Tm, Yb, Lu, Y,
   Bi), paired with charge-balancing B cations (+5, +4, +3; see `A_SITE`, `B_SITE`). Pairs are kept when
   the Goldschmidt tolerance factor t = (rA + rO) / (sqrt(2) (rB + rO)), from pymatgen's Shannon radii
   (A in 12-fold coordination, 8-fold where 12 is not tabulated; B and O in 6-fold), lies in
   [{TOLERANCE_RANGE[0]}, {TOLERANCE_RANGE[1]}]. Each pair is built in four polymorphs: cubic Pm-3m (5 atoms),
   tetragonal P4mm with B and O displaced along c (5), rhombohedral R-3c with a-a-a- tilts (10) and
   orthorhombic Pnma GdFeO3-type a-b+a- tilts (20), lattice scaled from the radii.
   Non-perovskites: rocksalt, rutile, fluorite, corundum, spinel, ilmenite, pyrochlore and
   Ruddlesden-Popper A2BO4 (a layered perovskite relative: a hard negative).
2. **Relaxation**: CHGNet {gen['chgnet']} ({gen['model']}), torch {gen['torch']}, cell and positions
   with ASE {gen['optimizer']} through CHGNet's `StructOptimizer`, fmax {gen['fmax_eV_per_A']} eV/A, at most
   {gen['max_steps']} steps, one torch thread per worker process. A final static CHGNet evaluation of the
   relaxed structure gives the energy.
3. **Labels**: energy per atom, and formation energy per atom
   E_f = E/N - sum_el x_el mu_el with mu_el the lowest CHGNet energy per atom among fcc, bcc and hcp (and
   diamond for group 14) after relaxation, and for oxygen half the energy of a relaxed O2 molecule in a
   12 A box.
4. **Rules on the relaxed structures** (`apply_rules`, in this order; every dropped entry is in
   `rejected.csv` with its reason):
   - *relaxation*: failed, or not converged, meaning that BFGS stopped at its step limit ({gen['max_steps']})
     rather than on its own test against the fmax the relaxation used ({gen['fmax_eV_per_A']} eV/A, the one
     constant `FMAX`; the optimizer tests the forces of the cell filter, so the atomic maximum force
     recomputed afterwards can lie a little above fmax and is not judged again); volume changed by more
     than {int(MAX_VOLUME_CHANGE * 100)} %; energy not finite; a cation with fewer than three O within 1.5
     ideal bond lengths, or a perovskite B cation without six;
   - *distorted B octahedron*: the longest of a perovskite B cation's six B-O bonds is at least
     {B_BOND_RATIO_LIMIT} times the shortest (tetragonal starts that kept a five-coordinated,
     square-pyramidal B, with the sixth O 1.3 to 1.6 bond lengths away). The limit also removes strongly
     polar structures that exist: PbTiO3's Ti-O bonds are 1.77 and 2.39 A in experiment (ratio 1.35), so
     its tetragonal entry goes; the set keeps only moderately polar octahedra;
   - *polymorph from the relaxed structure*: the space group is recorded at symprec {SYMPREC} A
     (`space_group`) and {SYMPREC_FINE} A (`space_group_symprec_0.01`); the polymorph label (`prototype`
     column) is the crystal system at {SYMPREC} A (cubic, tetragonal, trigonal = rhombohedral,
     orthorhombic), and `built_as` says which prototype the relaxation started from. A perovskite that
     relaxed into another crystal system (monoclinic, triclinic) is dropped;
   - *lanthanide labels*: Yb is dropped ({DROPPED_ELEMENTS['Yb']}: its Yb(3+) labels sit far above
     the interpolation between Tm and Lu). Every other lanthanide A cation is checked the same way: for
     each B cation, the lowest formation energy of Ln-B-O3 against the linear interpolation in Z between
     the nearest lanthanide neighbours with the same B; a lanthanide whose mean offset exceeds
     {LANTHANIDE_OFFSET_LIMIT} eV/atom is dropped (worst first, then the others measured again without it,
     because an outlier shifts its neighbours' interpolation; La and Lu, at the ends, are not measured).
     Offsets before any exclusion and after the last (Tm's first offset is Yb's shadow: with Yb skipped
     it is interpolated between Er and Lu):

{offset_table}

   - *merged entries*: entries of one formula that relaxed into each other, i.e. match under
     pymatgen's StructureMatcher with ltol = stol = {TIGHT_MATCHER['ltol']}, angle_tol = {TIGHT_MATCHER['angle_tol']:.0f} degree
     and no volume scaling, or whose labels lie within {1000 * DEGENERATE_EV_PER_ATOM:.0f} meV/atom, are one entry
     (groups closed transitively). The one kept has the most symmetric relaxed structure (largest point
     group at {SYMPREC} A), then the smaller cell, then the lower energy.

   Entries removed by each rule (the relaxation rules' counts are those of the run that relaxed the
   entries; the two pyrochlores it counted as not converged stopped after 8 and 10 BFGS steps on the
   optimizer's own test, so the present test would have kept them):

{rule_table}
5. **Split by composition** (`composition_split`, seed {gen['seed']}): all entries of a formula go to
   the same split, so every test formula is unseen in training (a model cannot score by recalling
   another polymorph of the same formula). Formulas are grouped into chemistry strata (the A cation's
   oxidation state and the B cation's family: 3d, 4d/5d, p block, f block), shuffled, and dealt one by
   one to the split furthest below its share (80/10/10) of both the stratum's entries and the entries
   of each polymorph the formula has, so that every polymorph and every stratum is represented in
   validation and test in about its share. The classification set is split the same way, by formula
   over positives and negatives together, with the structure type in place of the polymorph.

## Counts
Perovskites, by polymorph and split:

{table(pv, pv_split, lambda r: r["prototype"])}

Classification set, by structure type and split:

{table(cl, cl_split, lambda r: "perovskite" if r["is_perovskite"] == "1" else r["prototype"])}

## Structure-blind baselines (test set, `baselines.json`, written by `baselines.py`)
| model | test MAE (eV/atom) |
|---|---|
| mean predictor (training mean) | {base['mean_predictor']['test_mae']:.3f} |
| composition only: mean `atom_init.json` vector + ridge (alpha {base['composition_ridge']['alpha']:g}, chosen on validation) | {base['composition_ridge']['test_mae']:.3f} |
| formula lookup (training label of the same formula) | applies to {base['formula_lookup']['test_formulas_in_train']} of {base['formula_lookup']['test_formulas']} test formulas |

A structure-blind model predicts the same value for every polymorph of a formula; the threshold for
CGCNN should lie below the composition-only MAE.

## Labels
Formation energy per atom (eV/atom):

{chr(10).join(stats)}

![label histogram](label_histogram.png)

Elemental references (eV/atom): {", ".join(f"{el} {v['energy_per_atom']:.3f} ({v['structure_type']})" for el, v in refs.items())}.

## Element embedding (`atom_init.json`)
92 numbers per element, Z = 1 to {embedding.Z_MAX}, one-hot blocks in this order (an unknown property
leaves its block zero):

| block | size | bins |
|---|---|---|
| group | 19 | groups 1-18, plus one for lanthanides and actinides |
| period | 7 | 1-7 |
| electronegativity (Pauling) | 10 | equal over [0.5, 4.0] |
| covalent radius (pymatgen atomic radius, A) | 10 | equal over [0.25, 2.25] |
| valence electrons | 12 | 1-12 (group; group - 10 for p block; 3 for f block) |
| first ionisation energy (eV) | 10 | equal in log over [3, 25] |
| electron affinity (eV) | 10 | equal over [-1, 3.7] |
| block | 4 | s, p, d, f |
| atomic volume (A^3/atom, from molar volume) | 10 | equal in log over [1.5, 100] |

An element outside the table raises an error that names it (`embedding.check_covered`).

## Known limits
- Labels come from CHGNet, a universal potential trained on Materials Project DFT (PBE/PBE+U)
  relaxations, not from DFT itself. Its authors report an energy error of about 30 meV/atom on their
  test set (Deng et al., *Nat. Mach. Intell.* 5, 1031, 2023). Formation energies inherit the
  potential's errors for the elemental references too: SrTiO3 comes out about 0.15 eV/atom more
  negative than the experimental standard enthalpy of formation (-3.47 eV/atom).
- Most compositions are hypothetical; a low energy here is not a synthesis prediction. No magnetic
  ordering, temperature or zero-point effects are modelled.
- The polymorph label is what the relaxation found, not what was built: many tetragonal and some
  rhombohedral and orthorhombic starts relax back to the cubic cell (and are merged with it).
- The elemental references are the lowest of a few simple structures, not each element's true ground
  state (for example Ga, Sb, Bi, Mn); formation energies of compounds with those elements carry that
  offset.

## Licence
The structures, labels and embedding are generated by this project and released with it under
CC BY 4.0. CHGNet (BSD-3-Clause) and pymatgen (MIT) are used as tools only.

## Regenerating
`pip install -r requirements-data.txt`, then `python build.py data` (`--workers N`, default 2). It is
seeded and resumable: finished relaxations are cached in `data/.cache/` and an interrupted run resumes;
the data directories are swapped in only when complete. Measured on this project's 2-core machine:
{measured}, with two workers ({gen['relaxation_seconds_total'] / 60:.0f} worker-minutes of relaxation),
{gen.get('conditions', 'conditions not recorded')}. Results are deterministic up to floating-point noise (within 1 meV/atom,
checked by the test suite on a handful of entries).

**Rewriting without relaxing**: `python make_dataset.py --from-committed` takes every entry that the
cache lacks from the committed data set (its relaxed CIF, energy and step count, or its stored
rejection reason and energy) and the committed elemental references, relaxes only what is in neither,
and re-applies the rules, the split and the card. It differs from a full regeneration in that a rebuilt
entry has no start structure, maximum force or timing: its volume change is not tested again (it passed
that test when it was relaxed, and the `volume_change` column is empty), an entry rejected before is not
judged again, and the timing figures above are those of the last run that relaxed something. Run twice,
it writes byte-identical files.
"""
    (DATA / "DATACARD.md").write_text(card)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="relaxation processes (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="relax only a random sample (development)")
    parser.add_argument("--fresh", action="store_true", help="ignore the cache of earlier relaxations")
    parser.add_argument("--from-committed", action="store_true",
                        help="take entries missing from the cache from the committed data set (relaxed CIFs,"
                             " labels, rejections, references): re-applies the rules without relaxing them")
    args = parser.parse_args(argv)
    try:
        import chgnet  # noqa: F401
    except ImportError:
        sys.exit("CHGNet is needed to regenerate the data: pip install -r requirements-data.txt")
    if args.fresh and CACHE.exists():
        CACHE.unlink()
    generate(workers=args.workers, limit=args.limit, from_committed=args.from_committed)


if __name__ == "__main__":
    main()
