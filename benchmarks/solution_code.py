"""The reference solution's functions and classes, taken from the master notebook, and its data pipeline.

    python -m benchmarks.solution_code      (from the repository root) lists what it takes from the notebook

The solution exists only in the notebook's code cells that start with `def ` or `class ` (students
receive those cells as stubs), so benchmarks and tests exec those cells into a namespace, as
tests/test_notebook_tests.py does. Each cell is registered with `linecache` under its own name, as
IPython does, so that `inspect.getsource` works on the results (the graph cache hashes that source).

The repository's modules are installed (`pip install --no-build-isolation -e .`): nothing here edits
sys.path. The graph settings are cgcnn_utils.GRAPH's; the notebook's batch size and epochs are read
from its training cell, so that the benchmarks train as the notebook does.
"""

from __future__ import annotations

import functools
import linecache
import re

import cgcnn_utils
from cgcnn_utils import GRAPH

NOTEBOOK = cgcnn_utils.HERE / "cgcnn_perovskites.ipynb"  # the master notebook (assignment/)
EVAL_BATCH = 256  # the notebook's batch size for validation (and here for the test set)


@functools.lru_cache(maxsize=None)
def solution_namespace() -> dict:
    """{name: object} after running the solution cells: atom_features, neighbor_list, gaussian_expand,
    SharedConv, GatedConv, mean_pool, max_pool, CGCNN, train_epoch, plus np, torch, nn, embedding."""
    import nbformat
    import numpy as np
    import torch
    from torch import nn

    ns = {"np": np, "torch": torch, "nn": nn, "embedding": cgcnn_utils.load_embedding()}
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    for number, cell in enumerate(cells):
        if cell.cell_type == "code" and cell.source.startswith(("def ", "class ")):
            name = f"<solution cell {number}>"
            linecache.cache[name] = (len(cell.source), None, cell.source.splitlines(True), name)
            exec(compile(cell.source, name, "exec"), ns)
    return ns


@functools.lru_cache(maxsize=None)
def notebook_settings() -> dict:
    """{"batch_size": ..., "epochs": ...} from the notebook's training cell (`BATCH_SIZE, EPOCHS = 64, 60`)."""
    import nbformat
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        found = re.search(r"^BATCH_SIZE, EPOCHS = (\d+), (\d+)", cell.source, re.M)
        if cell.cell_type == "code" and found:
            return {"batch_size": int(found[1]), "epochs": int(found[2])}
    raise LookupError(f"{NOTEBOOK.name} has no line `BATCH_SIZE, EPOCHS = ...`: update benchmarks/solution_code.py")


def notebook_graphs(data=None) -> dict:
    """{id: CrystalGraph} for every crystal (train, val and test), with the solution's atom_features
    and neighbor_list and GRAPH's radius and max_num_nbr, from the disk cache (graph_cache)."""
    import graph_cache
    ns = solution_namespace()
    data = data or cgcnn_utils.load_dataset()
    ids = [i for part in ("train", "val", "test") for i in data.ids(part)]
    return graph_cache.cached_build_graphs(data, ids, ns["embedding"], ns["atom_features"], ns["neighbor_list"],
                                           GRAPH.radius, GRAPH.max_num_nbr, progress=False)


def notebook_setup(seed: int = 0, batch_size: int | None = None) -> dict:
    """What the notebook's training cell prepares, with the solution's functions and cached graphs:
    data, graphs, normalizer (the training set's), targets (eV/atom for every id: the repository's data
    set holds the test labels too, which the notebook no longer sees), train_batches (shuffled once with
    `seed`, the notebook's batch size unless given), val_batches and test_batches (256 crystals each).
    The test batches are for the benchmarks only: the notebook has no test set."""
    ns = solution_namespace()
    data = cgcnn_utils.load_dataset()
    targets = dict(data.targets)
    graphs = notebook_graphs(data)
    out = {"data": data, "graphs": graphs, "targets": targets,
           "normalizer": cgcnn_utils.Normalizer([targets[i] for i in data.ids("train")])}
    batch_size = batch_size or notebook_settings()["batch_size"]
    for part in ("train", "val", "test"):
        out[f"{part}_batches"] = cgcnn_utils.make_batches(graphs, targets, data.ids(part), ns["gaussian_expand"],
                                                          batch_size if part == "train" else EVAL_BATCH,
                                                          shuffle=part == "train", seed=seed)
    return out


if __name__ == "__main__":
    names = [k for k in solution_namespace() if not k.startswith("__") and k not in ("np", "torch", "nn", "embedding")]
    print(f"from {NOTEBOOK}: {', '.join(names)}\nsettings {notebook_settings()}; graphs {GRAPH}")
