"""Accuracy of the data set's CHGNet labels against experimental thermochemistry (issue 12, item 5).

Two comparisons, written to data/experiment.json by `main()` (``python -m experiment``):

(a) Formation energies. For each ternary perovskite below that is in the data set, the label
    `formation_energy_per_atom` of the formula's lowest polymorph (training and validation splits only:
    test labels stay held out; metadata.csv) against the
    experimental standard enthalpy of formation at 298.15 K per atom (kJ/mol / 96.485 / 5).
(b) Reaction energies from the binary oxides, e.g. CaO + TiO2 -> CaTiO3. The binary oxides are built
    here from their published ground-state structures and relaxed with CHGNet exactly as the data set
    was (`make_dataset.relax`: same FMAX, MAX_STEPS, BFGS, one torch thread); the perovskite energy is
    the label `energy_per_atom` of the formula's lowest polymorph. Experiment: the calorimetric
    enthalpy of formation from the oxides, or dHf(ABO3) - sum dHf(oxides) from the tables.
A third table (c) gives the binary oxides' own CHGNet formation energies (from the data set's elemental
references, data/references.json) against the same tables: it shows where the error of (a) comes from.

How the list was chosen. Only values that could be traced to a tabulation or a calorimetric paper are
included; nothing is estimated, interpolated or taken from a correlation (such as Yokokawa's
tolerance-factor fits). Ternaries: the three alkaline-earth titanates of the NBS tables / Robie &
Hemingway; BaCeO3 and SrCeO3 (Cordfunke et al.); BiFeO3 (Phapale et al.); and the perovskites whose
enthalpies of formation from the oxides were measured by high-temperature oxide-melt solution
calorimetry in Navrotsky's laboratory (LaAlO3, LaGaO3, LaScO3, LaInO3, LaCrO3, LaFeO3, LaCoO3, LaNiO3,
KTaO3). For the calorimetric "from oxides" values the enthalpy of formation from the elements is
derived here as dH_ox + sum nu_i dHf(oxide_i) with the NBS binary values below (the papers' own
auxiliary data differ by a few kJ/mol). No Pb, Nb, Zr, Hf or Sn perovskite is included: no value for
them could be sourced with confidence while this module was written. 15 ternaries; 11 have a reaction
from oxides that CHGNet can be compared on (LaCoO3 and LaNiO3 form with uptake of O2, whose CHGNet
energy is the reference under test; KTaO3 and BiFeO3 would need Ta2O5 and alpha-Bi2O3, whose
structures are not built here).

The binary values are from the NBS tables (Wagman et al. 1982); CaTiO3 from Robie & Hemingway 1995.
They were transcribed by hand: a reader should check each value against the cited table or paper
before relying on it (each row names its source). As a cross-check only (no value was taken from it), the
binary values agree within about 5 kJ/mol with the compilation of experimental enthalpies that ships
with pymatgen (analysis/compatibility/exp_compounds.json.gz), far below the errors discussed here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
OUTPUT = DATA / "experiment.json"
METADATA = DATA / "perovskites" / "metadata.csv"
REFERENCES = DATA / "references.json"
KJ_PER_MOL_PER_EV = 96.485  # 1 eV per formula unit = 96.485 kJ/mol
SEED = 2018

SOURCES = {
    "Wagman1982": "D. D. Wagman, W. H. Evans, V. B. Parker, R. H. Schumm, I. Halow, S. M. Bailey, "
                  "K. L. Churney and R. L. Nuttall, The NBS tables of chemical thermodynamic properties, "
                  "J. Phys. Chem. Ref. Data 11, Suppl. 2 (1982).",
    "Robie1995": "R. A. Robie and B. S. Hemingway, Thermodynamic properties of minerals and related "
                 "substances at 298.15 K and 1 bar (10^5 pascals) pressure and at higher temperatures, "
                 "U.S. Geological Survey Bulletin 2131 (1995).",
    "Cordfunke1998": "E. H. P. Cordfunke, A. S. Booij and M. E. Huntelaar, The thermochemical properties "
                     "of BaCeO3(s) and SrCeO3(s) from T = (5 to 1500) K, J. Chem. Thermodyn. 30, 437-447 "
                     "(1998).",
    "Phapale2008": "S. Phapale, R. Mishra and D. Das, Standard enthalpy of formation and heat capacity of "
                   "compounds in the pseudo-binary Bi2O3-Fe2O3 system, J. Nucl. Mater. 373, 137-141 (2008).",
    "Cheng2003": "J. Cheng and A. Navrotsky, Enthalpies of formation of LaBO3 perovskites (B = Al, Ga, Sc, "
                 "and In), J. Mater. Res. 18, 2501-2508 (2003).",
    "Cheng2005": "J. Cheng, A. Navrotsky, X.-D. Zhou and H. U. Anderson, Enthalpies of formation of LaMO3 "
                 "perovskites (M = Cr, Fe, Co, and Ni), J. Mater. Res. 20, 191-200 (2005).",
    "Zlotnik2015": "S. Zlotnik, S. K. Sahu, A. Navrotsky and P. M. Vilarinho, Pyrochlore and perovskite "
                   "potassium tantalate: enthalpies of formation and phase transformation, Chem. Eur. J. "
                   "21, 5231-5237 (2015).",
}
# cited in the card's discussion, not for any value in the tables
DISCUSSION_SOURCES = {
    "Wang2006": "L. Wang, T. Maxisch and G. Ceder, Oxidation energies of transition metal oxides within "
                "the GGA+U framework, Phys. Rev. B 73, 195107 (2006).",
    "Jain2011": "A. Jain, G. Hautier, S. P. Ong, C. J. Moore, C. C. Fischer, K. A. Persson and G. Ceder, "
                "Formation enthalpies by mixing GGA and GGA+U calculations, Phys. Rev. B 84, 045115 (2011).",
    "Deng2023": "B. Deng, P. Zhong, K. Jun, J. Riebesell, K. Han, C. J. Bartel and G. Ceder, CHGNet as a "
                "pretrained universal neural network potential for charge-informed atomistic modelling, "
                "Nat. Mach. Intell. 5, 1031-1041 (2023).",
}

# Standard enthalpies of formation of the binary oxides at 298.15 K, kJ/mol (crystalline, the stable
# polymorph at 298 K), with the structure CHGNet relaxes for (b).
BINARY_OXIDES = {
    "CaO": (-635.09, "Wagman1982"),
    "SrO": (-592.0, "Wagman1982"),
    "BaO": (-553.5, "Wagman1982"),
    "TiO2": (-944.0, "Wagman1982"),      # rutile
    "CeO2": (-1088.7, "Wagman1982"),
    "La2O3": (-1793.7, "Wagman1982"),    # hexagonal A-type
    "Al2O3": (-1675.7, "Wagman1982"),    # corundum
    "Ga2O3": (-1089.1, "Wagman1982"),    # beta (monoclinic)
    "Sc2O3": (-1908.82, "Wagman1982"),   # bixbyite
    "In2O3": (-925.79, "Wagman1982"),    # bixbyite
    "Cr2O3": (-1139.7, "Wagman1982"),    # corundum (eskolaite)
    "Fe2O3": (-824.2, "Wagman1982"),     # hematite
    "CoO": (-237.94, "Wagman1982"),      # rocksalt
    "NiO": (-239.7, "Wagman1982"),       # rocksalt
    "K2O": (-361.5, "Wagman1982"),       # antifluorite
    "Ta2O5": (-2046.0, "Wagman1982"),
    "Bi2O3": (-573.88, "Wagman1982"),    # alpha (monoclinic)
}

# Ternary perovskites. kind "elements": dHf from the elements as published; kind "oxides": enthalpy of
# formation from the binary oxides (and O2 where listed) as published. `oxides` is the balanced
# reaction nu_i oxide_i (+ o2 O2) -> ABO3.
TERNARIES = {
    "CaTiO3": {"kind": "elements", "value": -1660.6, "unc": 1.7, "source": "Robie1995",
               "oxides": {"CaO": 1, "TiO2": 1}},
    "SrTiO3": {"kind": "elements", "value": -1672.4, "unc": None, "source": "Wagman1982",
               "oxides": {"SrO": 1, "TiO2": 1}},
    "BaTiO3": {"kind": "elements", "value": -1659.8, "unc": None, "source": "Wagman1982",
               "oxides": {"BaO": 1, "TiO2": 1}},
    "BaCeO3": {"kind": "elements", "value": -1690.0, "unc": 2.5, "source": "Cordfunke1998",
               "oxides": {"BaO": 1, "CeO2": 1}},
    "SrCeO3": {"kind": "elements", "value": -1687.1, "unc": 2.7, "source": "Cordfunke1998",
               "oxides": {"SrO": 1, "CeO2": 1}},
    "BiFeO3": {"kind": "elements", "value": -768.4, "unc": 2.9, "source": "Phapale2008",
               "oxides": {"Bi2O3": 0.5, "Fe2O3": 0.5}},
    "LaAlO3": {"kind": "oxides", "value": -69.61, "unc": 3.23, "source": "Cheng2003",
               "oxides": {"La2O3": 0.5, "Al2O3": 0.5}},
    "LaGaO3": {"kind": "oxides", "value": -52.39, "unc": 1.99, "source": "Cheng2003",
               "oxides": {"La2O3": 0.5, "Ga2O3": 0.5}},
    "LaScO3": {"kind": "oxides", "value": -38.64, "unc": 2.30, "source": "Cheng2003",
               "oxides": {"La2O3": 0.5, "Sc2O3": 0.5}},
    "LaInO3": {"kind": "oxides", "value": -23.99, "unc": 2.31, "source": "Cheng2003",
               "oxides": {"La2O3": 0.5, "In2O3": 0.5}},
    "LaCrO3": {"kind": "oxides", "value": -70.06, "unc": 2.79, "source": "Cheng2005",
               "oxides": {"La2O3": 0.5, "Cr2O3": 0.5}},
    "LaFeO3": {"kind": "oxides", "value": -64.58, "unc": 2.32, "source": "Cheng2005",
               "oxides": {"La2O3": 0.5, "Fe2O3": 0.5}},
    "LaCoO3": {"kind": "oxides", "value": -107.64, "unc": 1.77, "source": "Cheng2005",
               "oxides": {"La2O3": 0.5, "CoO": 1}, "o2": 0.25},
    "LaNiO3": {"kind": "oxides", "value": -57.31, "unc": 2.55, "source": "Cheng2005",
               "oxides": {"La2O3": 0.5, "NiO": 1}, "o2": 0.25},
    "KTaO3": {"kind": "oxides", "value": -203.63, "unc": 2.92, "source": "Zlotnik2015",
              "oxides": {"K2O": 0.5, "Ta2O5": 0.5}},
}


# ---------------------------------------------------------------------------------------------
# Binary-oxide structures for CHGNet (published prototypes; the relaxation refines them)
# ---------------------------------------------------------------------------------------------

def _rocksalt(m: str, a: float):
    from pymatgen.core import Lattice, Structure
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [m, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _corundum(m: str, a: float, c: float, z: float, x: float):
    from pymatgen.core import Lattice, Structure
    return Structure.from_spacegroup("R-3c", Lattice.hexagonal(a, c), [m, "O"], [[0, 0, z], [x, 0, 0.25]])


def _bixbyite(m: str, a: float, x_m: float, o: tuple[float, float, float]):
    from pymatgen.core import Lattice, Structure
    return Structure.from_spacegroup("Ia-3", Lattice.cubic(a), [m, m, "O"],
                                     [[0.25, 0.25, 0.25], [x_m, 0, 0.25], list(o)])


def oxide_structures() -> dict[str, tuple[str, object]]:
    """The binary oxides of the reactions in (b): name -> (polymorph, pymatgen Structure, primitive).
    Lattice parameters and positions are the experimental room-temperature structures (ICSD-type
    values, rounded); CHGNet relaxes cell and positions, so only the structure type matters."""
    from pymatgen.core import Lattice, Structure
    S = Structure.from_spacegroup
    out = {
        "CaO": ("rocksalt Fm-3m", _rocksalt("Ca", 4.811)),
        "SrO": ("rocksalt Fm-3m", _rocksalt("Sr", 5.160)),
        "BaO": ("rocksalt Fm-3m", _rocksalt("Ba", 5.523)),
        "TiO2": ("rutile P4_2/mnm", S("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                      [[0, 0, 0], [0.3048, 0.3048, 0]])),
        "CeO2": ("fluorite Fm-3m", S("Fm-3m", Lattice.cubic(5.411), ["Ce", "O"], [[0, 0, 0], [0.25] * 3])),
        "La2O3": ("A-type P-3m1", S("P-3m1", Lattice.hexagonal(3.938, 6.136), ["La", "O", "O"],
                                    [[1 / 3, 2 / 3, 0.2467], [0, 0, 0], [1 / 3, 2 / 3, 0.6470]])),
        "Al2O3": ("corundum R-3c", _corundum("Al", 4.759, 12.991, 0.3523, 0.3064)),
        "Cr2O3": ("corundum R-3c", _corundum("Cr", 4.959, 13.594, 0.3475, 0.3058)),
        "Fe2O3": ("corundum R-3c (hematite)", _corundum("Fe", 5.035, 13.747, 0.3553, 0.3059)),
        "Ga2O3": ("beta C2/m", S("C2/m", Lattice.monoclinic(12.214, 3.0371, 5.7981, 103.83),
                                 ["Ga", "Ga", "O", "O", "O"],
                                 [[0.0904, 0, 0.7948], [0.3414, 0, 0.6857], [0.1674, 0, 0.1011],
                                  [0.4957, 0, 0.2553], [0.8279, 0, 0.4365]])),
        "Sc2O3": ("bixbyite Ia-3", _bixbyite("Sc", 9.845, -0.0355, (0.3917, 0.1543, 0.3801))),
        "In2O3": ("bixbyite Ia-3", _bixbyite("In", 10.117, -0.0335, (0.3905, 0.1529, 0.3832))),
    }
    # a check on the choice of polymorph, not used in the reactions
    checks = {"Ga2O3:alpha": ("corundum R-3c (alpha, metastable)",
                              _corundum("Ga", 4.983, 13.433, 0.3554, 0.3049))}
    return {k: (name, s.get_primitive_structure()) for k, (name, s) in (out | checks).items()}


def relax_oxides() -> dict[str, dict]:
    """Relax every oxide of `oxide_structures` with make_dataset.relax (seeded; one torch thread)."""
    import random

    import torch
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    import make_dataset
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    out = {}
    for key, (polymorph, structure) in oxide_structures().items():
        res = make_dataset.relax(structure)
        final = res["structure"]
        out[key] = {"formula": final.composition.reduced_formula, "polymorph": polymorph,
                    "sites": len(final), "energy_per_atom": round(res["energy_per_atom"], 6),
                    "converged": bool(res["converged"]), "steps": res["steps"],
                    "space_group_relaxed": SpacegroupAnalyzer(final, symprec=0.1).get_space_group_symbol(),
                    "volume_per_atom": round(final.volume / len(final), 4)}
        print(f"{key:12s} {out[key]['energy_per_atom']:.6f} eV/atom  {out[key]['space_group_relaxed']}"
              f"  steps {res['steps']}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# The comparison (pure arithmetic on the committed data: what the tests recompute)
# ---------------------------------------------------------------------------------------------

def atoms_per_formula(formula: str) -> float:
    from pymatgen.core import Composition
    return Composition(formula).num_atoms


def dhf_from_elements(formula: str) -> float:
    """Experimental standard enthalpy of formation from the elements, kJ/mol."""
    t = TERNARIES[formula]
    if t["kind"] == "elements":
        return t["value"]
    return t["value"] + sum(nu * BINARY_OXIDES[ox][0] for ox, nu in t["oxides"].items())


def dh_from_oxides(formula: str) -> float:
    """Experimental enthalpy of the reaction from the binary oxides (and O2), kJ/mol."""
    t = TERNARIES[formula]
    if t["kind"] == "oxides":
        return t["value"]
    return t["value"] - sum(nu * BINARY_OXIDES[ox][0] for ox, nu in t["oxides"].items())


def lowest_labels(metadata_rows: list[dict]) -> dict[str, dict]:
    """formula -> the row of its lowest polymorph (by energy_per_atom, which orders formation energy
    identically within a formula)."""
    best = {}
    for r in metadata_rows:
        f = r["formula"]
        if f not in best or float(r["energy_per_atom"]) < float(best[f]["energy_per_atom"]):
            best[f] = r
    return best


def read_metadata(path: Path = METADATA) -> list[dict]:
    """The data set's rows outside the test split: the card and experiment.json ship to students, and
    a test formula's row (its label, or its error beside the experimental value) would give away a
    held-out label."""
    import csv
    with open(path.parent / "split.csv", newline="") as fh:
        held_out = {r["id"] for r in csv.DictReader(fh) if r["split"] == "test"}
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["id"] not in held_out]


def formation_rows(metadata_rows: list[dict]) -> list[dict]:
    best = lowest_labels(metadata_rows)
    rows = []
    for f, t in TERNARIES.items():
        if f not in best:
            continue
        n = atoms_per_formula(f)
        exp = dhf_from_elements(f) / KJ_PER_MOL_PER_EV / n
        label = float(best[f]["formation_energy_per_atom"])
        rows.append({"formula": f, "entry": best[f]["id"], "prototype": best[f]["prototype"],
                     "exp_kind": t["kind"], "exp_value_kJ_mol": t["value"], "exp_uncertainty_kJ_mol": t["unc"],
                     "source": t["source"],
                     "binary_sources": sorted({BINARY_OXIDES[o][1] for o in t["oxides"]})
                     if t["kind"] == "oxides" else [],
                     "exp_dHf_kJ_mol": round(dhf_from_elements(f), 4),
                     "exp_eV_per_atom": exp, "chgnet_eV_per_atom": label, "error_eV_per_atom": label - exp})
    return rows


def reaction_rows(metadata_rows: list[dict], oxides: dict[str, dict]) -> list[dict]:
    best = lowest_labels(metadata_rows)
    rows = []
    for f, t in TERNARIES.items():
        if f not in best or t.get("o2") or any(o not in oxides for o in t["oxides"]):
            continue
        n = atoms_per_formula(f)
        e_abo3 = float(best[f]["energy_per_atom"]) * n
        e_ox = sum(nu * atoms_per_formula(o) * oxides[o]["energy_per_atom"] for o, nu in t["oxides"].items())
        chg = (e_abo3 - e_ox) * KJ_PER_MOL_PER_EV
        exp = dh_from_oxides(f)
        rows.append({"formula": f, "entry": best[f]["id"],
                     "reaction": " + ".join(("" if nu == 1 else f"{nu:g} ") + o for o, nu in t["oxides"].items())
                     + f" -> {f}",
                     "source": t["source"],
                     "binary_sources": sorted({BINARY_OXIDES[o][1] for o in t["oxides"]})
                     if t["kind"] == "elements" else [],
                     "exp_kJ_mol": exp, "chgnet_kJ_mol": chg, "error_kJ_mol": chg - exp,
                     "exp_eV_per_atom": exp / KJ_PER_MOL_PER_EV / n,
                     "chgnet_eV_per_atom": chg / KJ_PER_MOL_PER_EV / n,
                     "error_eV_per_atom": (chg - exp) / KJ_PER_MOL_PER_EV / n})
    return rows


def oxide_rows(oxides: dict[str, dict], refs: dict[str, dict]) -> list[dict]:
    """(c) the binary oxides' CHGNet formation energies from the data set's elemental references."""
    from pymatgen.core import Composition
    rows = []
    for key, rec in oxides.items():
        if ":" in key:
            continue
        comp = Composition(key)
        n = comp.num_atoms
        mu = sum(amt * refs[el.symbol]["energy_per_atom"] for el, amt in comp.items()) / n
        chg = rec["energy_per_atom"] - mu
        exp = BINARY_OXIDES[key][0] / KJ_PER_MOL_PER_EV / n
        rows.append({"formula": key, "polymorph": rec["polymorph"], "source": BINARY_OXIDES[key][1],
                     "exp_kJ_mol": BINARY_OXIDES[key][0], "exp_eV_per_atom": exp,
                     "chgnet_eV_per_atom": chg, "error_eV_per_atom": chg - exp,
                     "error_eV_per_O": (chg - exp) * n / comp["O"]})
    return rows


def _cations(formula: str) -> list[str]:
    from pymatgen.core import Composition
    return [el.symbol for el in Composition(formula) if el.symbol != "O"]


def summarize(formation: list[dict], reactions: list[dict], oxides: list[dict]) -> dict:
    fe = [r["error_eV_per_atom"] for r in formation]
    by_cation = {}
    for r in formation:
        for c in _cations(r["formula"]):
            by_cation.setdefault(c, []).append(r["error_eV_per_atom"])
    worst = sorted(formation, key=lambda r: -abs(r["error_eV_per_atom"]))[:5]
    re_kj = [r["error_kJ_mol"] for r in reactions]
    re_ev = [r["error_eV_per_atom"] for r in reactions]
    ox = [r["error_eV_per_atom"] for r in oxides]
    return {
        "formation": {"n": len(fe), "mean_signed_error_eV_per_atom": float(np.mean(fe)),
                      "mean_absolute_error_eV_per_atom": float(np.mean(np.abs(fe))),
                      "max_absolute_error_eV_per_atom": float(np.max(np.abs(fe))),
                      "worst": [r["formula"] for r in worst],
                      "mean_signed_error_by_cation_eV_per_atom":
                          {c: float(np.mean(v)) for c, v in sorted(by_cation.items())}},
        "reaction": {"n": len(re_kj), "mean_signed_error_kJ_mol": float(np.mean(re_kj)),
                     "mean_absolute_error_kJ_mol": float(np.mean(np.abs(re_kj))),
                     "mean_signed_error_eV_per_atom": float(np.mean(re_ev)),
                     "mean_absolute_error_eV_per_atom": float(np.mean(np.abs(re_ev)))},
        "binary_oxides": {"n": len(ox), "mean_signed_error_eV_per_atom": float(np.mean(ox)),
                          "mean_absolute_error_eV_per_atom": float(np.mean(np.abs(ox)))},
    }


def build(oxides: dict[str, dict], metadata_rows: list[dict] | None = None, refs: dict | None = None) -> dict:
    metadata_rows = read_metadata() if metadata_rows is None else metadata_rows
    refs = json.loads(REFERENCES.read_text())["energy_per_atom_eV"] if refs is None else refs
    formation = formation_rows(metadata_rows)
    reactions = reaction_rows(metadata_rows, oxides)
    ox = oxide_rows(oxides, refs)
    return {"description": "CHGNet labels against experimental standard enthalpies of formation (298.15 K); "
                           "see assignment/experiment.py",
            "kJ_per_mol_per_eV": KJ_PER_MOL_PER_EV,
            "sources": SOURCES | DISCUSSION_SOURCES,
            "binary_oxides_experiment_kJ_mol": {k: {"value": v, "source": s} for k, (v, s) in BINARY_OXIDES.items()},
            "ternaries_experiment": {k: dict(v) for k, v in TERNARIES.items()},
            "chgnet_binary_oxides": oxides,
            "formation": formation, "reactions": reactions, "binary_oxide_formation": ox,
            "summary": summarize(formation, reactions, ox)}


def load() -> dict:
    return json.loads(OUTPUT.read_text())


# ---------------------------------------------------------------------------------------------
# The data card's section
# ---------------------------------------------------------------------------------------------

def _cite(key: str) -> str:
    return {"Wagman1982": "Wagman et al. 1982", "Robie1995": "Robie & Hemingway 1995",
            "Cordfunke1998": "Cordfunke et al. 1998", "Phapale2008": "Phapale et al. 2008",
            "Cheng2003": "Cheng & Navrotsky 2003", "Cheng2005": "Cheng et al. 2005",
            "Zlotnik2015": "Zlotnik et al. 2015"}[key]


def card_section(data: dict | None = None) -> str:
    """The data card's "Accuracy against experiment" section (markdown), from data/experiment.json."""
    d = load() if data is None else data
    s = d["summary"]
    f, r, o = s["formation"], s["reaction"], s["binary_oxides"]
    lines = ["## Accuracy against experiment", "",
             "The labels are CHGNet energies, not measurements. Against tabulated experimental standard "
             f"enthalpies of formation (298.15 K) for {f['n']} perovskites of the data set, the formation "
             f"energies (the formula's lowest polymorph) are off by {f['mean_absolute_error_eV_per_atom']:.3f} "
             f"eV/atom on average (mean signed error {f['mean_signed_error_eV_per_atom']:+.3f} eV/atom, largest "
             f"{f['max_absolute_error_eV_per_atom']:.3f}): several times the ~0.03 eV/atom energy error that "
             "CHGNet's authors report against its DFT training data (Deng et al. 2023). Reaction energies from the "
             f"binary oxides, relaxed with CHGNet in the same way, are much closer: mean absolute error "
             f"{r['mean_absolute_error_kJ_mol']:.1f} kJ/mol per formula unit "
             f"({r['mean_absolute_error_eV_per_atom']:.3f} eV/atom) over {r['n']} reactions.", "",
             "| compound | experiment dHf (kJ/mol) | source | experiment (eV/atom) | label (eV/atom) | "
             "label - experiment |", "|---|---|---|---|---|---|"]
    for row in d["formation"]:
        src = _cite(row["source"])
        if row["exp_kind"] == "oxides":
            src += f" (from oxides, {row['exp_value_kJ_mol']:g} kJ/mol) + {', '.join(_cite(b) for b in row['binary_sources'])}"
        lines.append(f"| {row['formula']} | {row['exp_dHf_kJ_mol']:.1f} | {src} | {row['exp_eV_per_atom']:.3f} | "
                     f"{row['chgnet_eV_per_atom']:.3f} | {row['error_eV_per_atom']:+.3f} |")
    by = f["mean_signed_error_by_cation_eV_per_atom"]
    lines += ["", "Mean signed error of the rows containing each cation (eV/atom): "
              + ", ".join(f"{c} {v:+.3f}" for c, v in sorted(by.items(), key=lambda kv: kv[1])) + ". "
              f"Largest errors: {', '.join(f['worst'])}.", "",
              "| reaction | experiment (kJ/mol) | CHGNet (kJ/mol) | difference (kJ/mol) | difference (eV/atom) |",
              "|---|---|---|---|---|"]
    for row in d["reactions"]:
        lines.append(f"| {row['reaction']} | {row['exp_kJ_mol']:.1f} | {row['chgnet_kJ_mol']:.1f} | "
                     f"{row['error_kJ_mol']:+.1f} | {row['error_eV_per_atom']:+.3f} |")
    lines += ["", f"Reaction energies: mean signed error {r['mean_signed_error_kJ_mol']:+.1f} kJ/mol, mean absolute "
              f"error {r['mean_absolute_error_kJ_mol']:.1f} kJ/mol ({r['mean_absolute_error_eV_per_atom']:.3f} eV/atom); "
              f"{sum(row['error_kJ_mol'] > 0 for row in d['reactions'])} of {r['n']} differences are positive, i.e. "
              "CHGNet tends to make the perovskites less stable against their oxides than they are. "
              "Experiment: the calorimetric enthalpy from the oxides where one was measured, otherwise "
              "dHf(ABO3) - sum dHf(oxides) from the same tables. CHGNet: the label's total energy minus the "
              "binary oxides' CHGNet energies (ground-state polymorphs built from their published structures "
              "and relaxed like the data set; energies in data/experiment.json).", "",
              "| binary oxide | polymorph | experiment (eV/atom) | CHGNet formation energy (eV/atom) | "
              "difference (eV/atom) | difference (eV per O) |", "|---|---|---|---|---|---|"]
    for row in d["binary_oxide_formation"]:
        lines.append(f"| {row['formula']} | {row['polymorph']} | {row['exp_eV_per_atom']:.3f} | "
                     f"{row['chgnet_eV_per_atom']:.3f} | {row['error_eV_per_atom']:+.3f} | {row['error_eV_per_O']:+.3f} |")
    per_o = sorted(d["binary_oxide_formation"], key=lambda row: row["error_eV_per_O"])
    per_atom = sorted(d["binary_oxide_formation"], key=lambda row: row["error_eV_per_atom"])
    lines += ["", f"The binary oxides, from the same elemental references, are off by "
              f"{o['mean_absolute_error_eV_per_atom']:.3f} eV/atom on average (mean signed "
              f"{o['mean_signed_error_eV_per_atom']:+.3f}), as much as the perovskites: the error sits in the "
              "elemental references and cancels in reactions between oxides. It is not one shift per O atom "
              f"(from {per_o[0]['error_eV_per_O']:+.2f} eV per O for {per_o[0]['formula']} to "
              f"{per_o[-1]['error_eV_per_O']:+.2f} for {per_o[-1]['formula']}), so most of it depends on the "
              "metal: " + ", ".join(x["formula"] for x in per_atom if abs(x["error_eV_per_atom"]) >= 0.1)
              + " are off by 0.1 eV/atom or more, " + ", ".join(x["formula"] for x in per_atom
                                                               if abs(x["error_eV_per_atom"]) < 0.06)
              + " by less than 0.06.", "",
              "**What the labels can and cannot stand for.** They are good for comparing polymorphs of a "
              "formula and compounds with each other, and for reaction energies from the binary oxides, where "
              "the elemental references cancel. They are not absolute formation enthalpies. The formation "
              "energy subtracts CHGNet energies of the metals (the lowest of fcc, bcc and hcp, "
              "data/references.json) and of an isolated O2 molecule, and these references carry most of the "
              "error. An O2 molecule is far from the crystals CHGNet was trained on, and the DFT behind its "
              "training data (PBE, PBE+U for some transition-metal oxides) overbinds O2 by about 1.4 eV per "
              "molecule; Materials Project compensates this and the GGA/GGA+U mixing with fitted per-element "
              "energy shifts (Wang et al. 2006; Jain et al. 2011), which are fitted to experiment in the "
              "aggregate and do not make every element right. The labels here apply no further correction. "
              "Because the error depends on the elements and not on the structure, ranking compounds of "
              "different elements by formation energy is affected, ranking polymorphs of one formula is not.", "",
              "Values were transcribed by hand from the sources below; check them there before relying on "
              "them. Only compounds with a traceable published value are listed; none with Pb, Nb, Zr, Hf "
              "or Sn could be sourced, so the comparison does not cover those B cations.", "",
              "Sources:", ""]
    used = {row["source"] for row in d["formation"]} | {b for row in d["formation"] for b in row["binary_sources"]} \
        | {row["source"] for row in d["binary_oxide_formation"]}
    for key, text in d["sources"].items():
        if key in used or key in DISCUSSION_SOURCES:
            lines.append(f"- {text}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reuse-oxides", action="store_true",
                   help="take the binary oxides' CHGNet energies from the existing experiment.json "
                        "(recompute the tables only, e.g. after the labels changed)")
    args = p.parse_args(argv)
    oxides = load()["chgnet_binary_oxides"] if args.reuse_oxides else relax_oxides()
    data = build(oxides)
    OUTPUT.write_text(json.dumps(data, indent=1) + "\n")
    s = data["summary"]
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
