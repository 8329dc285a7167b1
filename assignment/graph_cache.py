"""Graphs kept on disk between runs, for the benchmarks and tests that build every graph many times
(not shipped to students: the notebook builds its graphs once per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from cgcnn_utils import GRAPH, HERE, CrystalDataset, CrystalGraph, build_graphs



def cached_build_graphs(dataset: CrystalDataset, ids: list[str], embedding, atom_features: Callable,
                        neighbor_list: Callable, radius: float = GRAPH.radius, max_num_nbr: int = GRAPH.max_num_nbr,
                        progress: bool = True, cache_dir: Path | str | None = None) -> dict[str, CrystalGraph]:
    """`build_graphs`, with the graphs kept on disk: parsing CIFs and searching neighbours is most of
    the time of building them, and it repeats identically on every run of the notebook.

    One .npz per key under `cache_dir` (default data/.cache/graphs, ignored by git). The key hashes the
    ids and their CIF files, the embedding, radius, max_num_nbr and the source code of `atom_features`
    and `neighbor_list`: changing any of them builds (and stores) the graphs again. The file holds the
    graphs concatenated over atoms, atom_fea (sum n, 92), nbr_idx and nbr_dist (sum n, M), and each
    crystal's atom count, counts (len(ids),).
    """
    import hashlib
    import inspect
    import marshal
    import os
    key = hashlib.sha256(repr((float(radius), int(max_num_nbr), list(ids))).encode())
    for func in (atom_features, neighbor_list):
        try:
            key.update(inspect.getsource(func).encode())
        except (OSError, TypeError):  # no source kept: the compiled code may miss, never wrongly hit
            key.update(marshal.dumps(func.__code__))
    for z in sorted(embedding):
        key.update(str(z).encode() + np.asarray(embedding[z], dtype=np.float32).tobytes())
    for id_ in ids:
        key.update((Path(dataset.root) / f"{id_}.cif").read_bytes())
    path = Path(cache_dir or HERE / "data" / ".cache" / "graphs") / f"graphs-{key.hexdigest()[:32]}.npz"
    names = ("atom_fea", "nbr_idx", "nbr_dist")
    if path.is_file():
        with np.load(path) as stored:
            starts = np.cumsum(stored["counts"])[:-1]
            parts = [np.split(stored[name], starts) for name in names]
        return {id_: CrystalGraph(*arrays) for id_, *arrays in zip(ids, *parts)}
    graphs = build_graphs(dataset, ids, embedding, atom_features, neighbor_list, radius, max_num_nbr, progress)
    try:
        arrays = {name: np.concatenate([getattr(graphs[i], name) for i in ids]) for name in names}
    except ValueError:  # no ids, or ragged arrays from an unfinished neighbor_list: nothing to keep
        return graphs
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # written whole, then renamed: a reader never sees half a file
        np.savez(f, counts=np.array([len(graphs[i].atom_fea) for i in ids]), **arrays)
    os.replace(tmp, path)
    return graphs
