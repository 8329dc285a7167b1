"""Structure-blind baselines on the perovskite test set, written to data/baselines.json.

A model that sees only the formula cannot tell polymorphs apart, so these MAEs are the floor that
CGCNN has to beat for the test to show what the crystal graph adds:
- mean predictor: the training mean, for every entry;
- composition-only: the element embedding of `atom_init.json` averaged over the atoms of the formula,
  then ridge regression (closed form, features centred), alpha chosen on the validation set;
- formula lookup: the lowest training label of the same formula plus the median, over the training
  formulas, of the entry's polymorph above its formula's lowest. With the split by composition no test
  formula is in the training set, so it does not apply; the count says so.

Run `python baselines.py` (or `make_dataset.write_baselines()`, which the generator calls).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from pymatgen.core import Composition

DATA = Path(__file__).parent / "data"
PEROVSKITES = DATA / "perovskites"
OUTPUT = DATA / "baselines.json"
RIDGE_ALPHAS = [10.0 ** k for k in range(-6, 4)]  # searched on the validation set


def load(root: Path = PEROVSKITES) -> list[dict]:
    """Rows of metadata.csv with their split and float label."""
    with open(root / "split.csv", newline="") as f:
        split = {r["id"]: r["split"] for r in csv.DictReader(f)}
    with open(root / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["split"], r["y"] = split[r["id"]], float(r["formation_energy_per_atom"])
    return rows


def composition_features(formula: str, embedding: dict[str, list[float]]) -> np.ndarray:
    """Mean of the atoms' embedding vectors, weighted by the formula's amounts."""
    comp = Composition(formula)
    vectors = [np.asarray(embedding[str(el.Z)]) * amt for el, amt in comp.items()]
    return np.sum(vectors, axis=0) / comp.num_atoms


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of ridge regression on centred features (intercept not penalised)."""
    mx, my = x.mean(axis=0), y.mean()
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, float(my - mx @ w)


def _mae(pred, y) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(y))))


def baselines(root: Path = PEROVSKITES) -> dict:
    """The MAEs (eV/atom) of the structure-blind baselines, with what they were fitted on."""
    rows = load(root)
    embedding = json.loads((root / "atom_init.json").read_text())
    part = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    y = {s: np.array([r["y"] for r in part[s]]) for s in part}
    x = {s: np.array([composition_features(r["formula"], embedding) for r in part[s]]) for s in part}

    val_mae = {}
    for alpha in RIDGE_ALPHAS:
        w, b = ridge_fit(x["train"], y["train"], alpha)
        val_mae[alpha] = _mae(x["val"] @ w + b, y["val"])
    alpha = min(RIDGE_ALPHAS, key=lambda a: (val_mae[a], a))
    w, b = ridge_fit(x["train"], y["train"], alpha)

    train_lowest: dict[str, float] = {}
    for r in part["train"]:
        train_lowest[r["formula"]] = min(r["y"], train_lowest.get(r["formula"], np.inf))
    above = {}  # polymorph -> median height above its formula's lowest, in the training set
    for p in sorted({r["prototype"] for r in rows}):
        heights = [r["y"] - train_lowest[r["formula"]] for r in part["train"] if r["prototype"] == p]
        above[p] = float(np.median(heights)) if heights else 0.0
    seen = [r for r in part["test"] if r["formula"] in train_lowest]
    test_formulas = {r["formula"] for r in part["test"]}
    return {
        "units": "eV/atom, mean absolute error of formation_energy_per_atom on the test set",
        "n": {s: len(part[s]) for s in part},
        "mean_predictor": {"test_mae": round(_mae(np.full(len(y["test"]), y["train"].mean()), y["test"]), 4),
                           "value": round(float(y["train"].mean()), 4)},
        "composition_ridge": {"test_mae": round(_mae(x["test"] @ w + b, y["test"]), 4),
                              "val_mae": round(val_mae[alpha], 4), "alpha": alpha,
                              "features": "mean atom_init.json vector over the atoms of the formula"},
        "formula_lookup": {"test_formulas": len(test_formulas),
                           "test_formulas_in_train": len({r["formula"] for r in seen}),
                           "test_entries_covered": len(seen),
                           "test_mae_on_covered": round(_mae([train_lowest[r["formula"]] + above[r["prototype"]]
                                                              for r in seen],
                                                             [r["y"] for r in seen]), 4) if seen else None},
    }


def write_baselines(root: Path = PEROVSKITES, path: Path = OUTPUT) -> dict:
    result = baselines(root)
    result["classification"] = classification_baselines(root.parent / "classification")
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


# ------------------------------------------------------------------------- classification set

CLASSIFICATION = DATA / "classification"


def _tolerance_rule(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The range [lo, hi] of the tolerance factor, with lo and hi among the values of `t`, that makes
    "perovskite iff lo <= t <= hi" most accurate on (t, y); ties: the narrowest, then the lowest.
    Returns (lo, hi, accuracy)."""
    values = np.unique(t)
    best = (-1.0, 0.0, 0.0, 0.0)
    for i, lo in enumerate(values):
        for hi in values[i:]:
            acc = float(np.mean(((t >= lo) & (t <= hi)) == y))
            key = (acc, -(hi - lo), -lo)
            if key > (best[0], -(best[2] - best[1]), -best[1]):
                best = (acc, float(lo), float(hi), acc)
    return best[1], best[2], best[3]


def classification_baselines(root: Path = CLASSIFICATION) -> dict:
    """Structure-blind rules on the classification set: the stoichiometry rule ("A:B:O = 1:1:3 means
    perovskite") and the tolerance-factor rule (perovskite iff t lies in a range chosen on the training
    set), with the class balance and the structure types in each split."""
    with open(root / "split.csv", newline="") as f:
        split = {r["id"]: r["split"] for r in csv.DictReader(f)}
    with open(root / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    parts = ("train", "val", "test")
    part = {s: [r for r in rows if split[r["id"]] == s] for s in parts}
    y = {s: np.array([int(r["is_perovskite"]) for r in part[s]]) for s in parts}
    t = {s: np.array([float(r["tolerance_factor"]) for r in part[s]]) for s in parts}

    def abo3(formula):
        amounts = sorted(Composition(formula).get_el_amt_dict().items(), key=lambda kv: kv[0] == "O")
        return len(amounts) == 3 and amounts[-1][0] == "O" and [a for _, a in amounts] == [1, 1, 3]

    stoich = {s: np.array([abo3(r["formula"]) for r in part[s]]) for s in parts}
    lo, hi, train_acc = _tolerance_rule(t["train"], y["train"])
    types = sorted({r["prototype"] if r["is_perovskite"] == "0" else "perovskite" for r in rows})
    return {
        "units": "accuracy (fraction of entries classified correctly)",
        "n": {s: len(part[s]) for s in parts},
        "positive_share": {s: round(float(y[s].mean()), 4) for s in parts},
        "types": {k: {s: sum((r["prototype"] if r["is_perovskite"] == "0" else "perovskite") == k for r in part[s])
                      for s in parts} for k in types},
        "stoichiometry_rule": {"rule": "A:B:O = 1:1:3 means perovskite",
                               "test_accuracy": round(float(np.mean(stoich["test"] == y["test"])), 4)},
        "tolerance_factor_rule": {"rule": "perovskite iff lo <= t <= hi, range chosen on the training set",
                                  "range": [lo, hi], "train_accuracy": round(train_acc, 4),
                                  "test_accuracy": round(float(np.mean(((t["test"] >= lo) & (t["test"] <= hi))
                                                                       == y["test"])), 4)},
    }


if __name__ == "__main__":
    print(json.dumps(write_baselines(), indent=1))
