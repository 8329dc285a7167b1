"""Is it a perovskite? The solution's CGCNN as a classifier on the classification set, by structure type.

    python -m benchmarks.classification [--seed 0] [--epochs 30]      (from the repository root)

The recipe of the notebook's Part 6 solution cell: the solution's graphs (cgcnn_utils.GRAPH, from
graph_cache), CGCNN(n_conv=2) with its last layer replaced by two outputs and LogSoftmax, NLL loss,
Adam (lr 3e-3), 30 epochs of batches of 64 shuffled with the seed, one torch thread. It prints the test
accuracy overall and for each structure type (how many of the type's test entries it calls a
perovskite), the 2 x 2 confusion matrix, and the structure-blind rules of baselines.json for comparison.
About 2 CPU minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch
from torch import nn

import baselines
import cgcnn_utils
import graph_cache
from benchmarks.solution_code import solution_namespace
from cgcnn_utils import GRAPH


def structure_type(row: dict) -> str:
    return "perovskite" if row["is_perovskite"] == "1" else row["prototype"]


def run(seed: int = 0, epochs: int = 30, batch_size: int = 64) -> dict:
    torch.set_num_threads(1)
    ns = solution_namespace()
    cls = cgcnn_utils.load_dataset(cgcnn_utils.CLASSIFICATION_DIR)
    ids = [i for part in ("train", "val", "test") for i in cls.ids(part)]
    graphs = graph_cache.cached_build_graphs(cls, ids, ns["embedding"], ns["atom_features"], ns["neighbor_list"],
                                             GRAPH.radius, GRAPH.max_num_nbr, progress=False)
    batches = {p: cgcnn_utils.make_batches(graphs, cls.targets, cls.ids(p), ns["gaussian_expand"], batch_size,
                                           shuffle=(p == "train"), seed=seed) for p in ("train", "test")}
    torch.manual_seed(seed)
    clf = ns["CGCNN"](n_conv=2)
    clf.fc_out = nn.Sequential(nn.Linear(128, 2), nn.LogSoftmax(dim=1))
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    start = time.process_time()
    for _ in range(epochs):
        clf.train()
        for b in batches["train"]:
            opt.zero_grad()
            out = clf(b.atom_fea, b.nbr_fea, b.nbr_idx, b.crystal_idx, b.n_crystals)
            loss = nn.functional.nll_loss(out.reshape(b.n_crystals, 2), b.target.long())
            loss.backward()
            opt.step()
    clf.eval()
    predicted = {}
    with torch.no_grad():
        for b in batches["test"]:
            out = clf(b.atom_fea, b.nbr_fea, b.nbr_idx, b.crystal_idx, b.n_crystals).reshape(b.n_crystals, 2)
            predicted.update(zip(b.ids, out.argmax(1).tolist()))
    truth = {i: int(cls.targets[i]) for i in predicted}
    confusion = np.zeros((2, 2), dtype=int)
    for i, p in predicted.items():
        confusion[truth[i], p] += 1
    by_type: dict[str, Counter] = {}
    for i, p in predicted.items():
        c = by_type.setdefault(structure_type(cls.metadata[i]), Counter())
        c["n"] += 1
        c["correct"] += int(p == truth[i])
        c["called_perovskite"] += p
    return {"seed": seed, "epochs": epochs, "cpu_seconds": round(time.process_time() - start, 1),
            "test_accuracy": round(float(np.trace(confusion) / confusion.sum()), 4),
            "confusion": confusion.tolist(),
            "by_type": {t: dict(c) for t, c in sorted(by_type.items())},
            "wrong": sorted(i for i in predicted if predicted[i] != truth[i])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    result = run(args.seed, args.epochs)
    rules = baselines.classification_baselines()
    print(f"CGCNN classifier, seed {result['seed']}, {result['epochs']} epochs "
          f"({result['cpu_seconds']} CPU s of training): test accuracy {result['test_accuracy']:.3f}")
    print("confusion (rows: true non-perovskite, perovskite; columns: predicted):", result["confusion"])
    print(f"{'type':<22}{'test entries':>13}{'correct':>9}{'accuracy':>10}{'called perovskite':>19}")
    for t, c in result["by_type"].items():
        print(f"{t:<22}{c['n']:>13}{c['correct']:>9}{c['correct'] / c['n']:>10.3f}{c['called_perovskite']:>19}")
    print(f"stoichiometry rule (A:B:O = 1:1:3 means perovskite): test accuracy "
          f"{rules['stoichiometry_rule']['test_accuracy']:.3f}")
    lo, hi = rules["tolerance_factor_rule"]["range"]
    print(f"tolerance-factor rule ({lo:.3f} <= t <= {hi:.3f}, chosen on the training set): test accuracy "
          f"{rules['tolerance_factor_rule']['test_accuracy']:.3f}")
    print("misclassified:", ", ".join(result["wrong"]) or "none")
    print(json.dumps({k: v for k, v in result.items() if k != "wrong"}))


if __name__ == "__main__":
    main()
