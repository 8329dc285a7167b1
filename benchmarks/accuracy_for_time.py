"""Accuracy for the same training time: the project's recipe against the reference CGCNN recipe.

    python benchmarks/accuracy_for_time.py [--quick] [--seeds 0 1 2] [--threads N]

For each seed (weight initialisation and batch order, as SEED in the notebook):
  project     the notebook's training: the solution's CGCNN, cgcnn_utils.fit (Adam lr 3e-3, cosine decay,
              60 epochs, best validation epoch restored); its wall time is the budget
  reference   the reference recipe: the same architecture written the reference way
              (benchmarks/reference_way.py), the same initial weights and batches (64 crystals, shuffled
              once), SGD lr 0.01 momentum 0.9, no weight decay, MSE on normalised targets; epochs
              (with a validation pass each, as fit does) until the next one would overrun the budget;
              best validation epoch restored (the reference's lr step at epoch 100 is never reached)
Both: 3 gated convolutions, 64 atom / 128 hidden features, 12 neighbours within 8 A. Reported: test
MAE in eV/atom (labels from metadata.csv), with the mean predictor and a composition-only model
(mean of the atoms' 92-dimensional embedding vectors, ridge regression with alpha chosen on the
validation set) for scale. Both recipes run with the torch thread count that fit chooses for the
notebook (cgcnn_utils.cpu_budget), or --threads N. About 5 minutes with 1 thread on an idle 2-core
machine (2 threads are several times slower while other jobs compete for the cores); --quick: 1 seed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from solution_code import notebook_setup, solution_namespace  # first: it puts assignment/ on sys.path

import cgcnn_utils
import reference_way

EPOCHS = 60  # the notebook's EPOCHS


def train_for_budget(model, train_epoch, setup: dict, optimizer, budget: float) -> dict:
    """Train whole epochs while the next one (estimated by the slowest so far) fits in `budget`
    seconds; restore the best validation epoch. Returns epochs, best_epoch (1-based), seconds."""
    best, best_state, best_epoch, epochs, slowest = float("inf"), None, 0, 0, 0.0
    start = time.perf_counter()
    while time.perf_counter() - start + slowest <= budget:
        begin = time.perf_counter()
        train_epoch(model, setup["train_batches"], optimizer, setup["normalizer"])
        val_mae = cgcnn_utils.mae(cgcnn_utils.predict(model, setup["val_batches"], setup["normalizer"]),
                                  setup["targets"])
        epochs += 1
        slowest = max(slowest, time.perf_counter() - begin)
        if val_mae < best:
            best, best_state, best_epoch = val_mae, copy.deepcopy(model.state_dict()), epochs
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"epochs": epochs, "best_epoch": best_epoch, "seconds": time.perf_counter() - start}


def test_mae(model, setup: dict) -> float:
    """MAE (eV/atom) of `model` on the test set."""
    return cgcnn_utils.mae(cgcnn_utils.predict(model, setup["test_batches"], setup["normalizer"]), setup["targets"])


def composition_baselines(setup: dict) -> dict:
    """Test MAE (eV/atom) of the mean predictor and of ridge regression on each crystal's mean
    embedding vector (X: (crystals, 92)), alpha chosen by validation MAE; closed form in numpy."""
    data, graphs, targets = setup["data"], setup["graphs"], setup["targets"]
    parts = {p: data.ids(p) for p in ("train", "val", "test")}
    x = {p: np.stack([graphs[i].atom_fea.mean(axis=0) for i in ids]).astype(np.float64) for p, ids in parts.items()}
    y = {p: np.array([targets[i] for i in ids]) for p, ids in parts.items()}
    x_mean, y_mean = x["train"].mean(axis=0), y["train"].mean()
    xc = x["train"] - x_mean  # centred: the intercept is y_mean and is not penalised

    def ridge(alpha):
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ (y["train"] - y_mean))
        return lambda part: np.abs((x[part] - x_mean) @ w + y_mean - y[part]).mean()

    fits = {alpha: ridge(alpha) for alpha in 10.0 ** np.arange(-10, 4)}
    alpha = min(fits, key=lambda a: fits[a]("val"))
    return {"mean predictor": float(np.abs(y["test"] - y_mean).mean()),
            f"mean embedding + ridge (alpha {alpha:g})": float(fits[alpha]("test"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed only: a smoke run")
    parser.add_argument("--threads", type=int, help="torch threads for both recipes (default: fit's choice)")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    if args.threads:
        torch.set_num_threads(args.threads)
        cgcnn_utils.cpu_budget = lambda: args.threads  # fit sets torch's thread count from it
    ns = solution_namespace()
    results = {"project": [], "reference": []}
    print("test MAE in eV/atom")
    for seed in seeds:
        setup = notebook_setup(seed)
        nbr_fea_len = setup["train_batches"][0].nbr_fea.shape[-1]
        torch.manual_seed(seed)
        ours = ns["CGCNN"](nbr_fea_len=nbr_fea_len)
        reference = reference_way.reference_model(ns["CGCNN"], nbr_fea_len)
        reference.load_state_dict(ours.state_dict())  # the same starting point
        history = cgcnn_utils.fit(ours, ns["train_epoch"], setup["train_batches"], setup["val_batches"],
                                  setup["normalizer"], setup["targets"], EPOCHS, progress=False)
        threads = torch.get_num_threads()  # fit's choice, kept for the reference recipe
        sgd = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0)
        ref = train_for_budget(reference, ns["train_epoch"], setup, sgd, history["seconds"])
        mae = {"project": test_mae(ours, setup), "reference": test_mae(reference, setup)}
        for name, value in mae.items():
            results[name].append(value)
        best = 1 + int(np.argmin(history["val_mae"]))
        print(f"  seed {seed}: project {mae['project']:.3f} ({EPOCHS} epochs in {history['seconds']:.1f} s, "
              f"best {best}); reference {mae['reference']:.3f} ({ref['epochs']} epochs in {ref['seconds']:.1f} s, best "
              f"{ref['best_epoch']}); ratio {mae['project'] / mae['reference']:.2f}; torch threads {threads}")
    mean = {name: statistics.mean(v) for name, v in results.items()}
    spread = {name: f" +- {statistics.stdev(v):.3f}" if len(v) > 1 else "" for name, v in results.items()}
    print(f"over {len(seeds)} seed(s): project {mean['project']:.3f}{spread['project']}, reference "
          f"{mean['reference']:.3f}{spread['reference']}; "
          f"project / reference = {mean['project'] / mean['reference']:.2f}")
    for name, value in composition_baselines(setup).items():
        print(f"for scale: {name} {value:.3f}")


if __name__ == "__main__":
    main()
