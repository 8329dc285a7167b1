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
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(write_baselines(), indent=1))
