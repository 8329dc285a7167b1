"""Support code for the CGCNN assignment: data loading, batching, training loop, plots, and the PDF
of the written questions.

Everything a student does *not* write lives here, so that the notebook stays about the ideas. The
parts the student writes (encoding, convolutions, pooling, the model, one training epoch) are passed
in as functions, never imported from here: this module contains no answer.

Shapes used throughout (N atoms in a batch, M neighbours per atom, C crystals, G Gaussians):
    atom_fea     (N, 92)   float32  element embedding of each atom
    nbr_idx      (N, M)    int64    index (into the batch) of each atom's neighbours
    nbr_fea      (N, M, G) float32  Gaussian-expanded neighbour distances
    crystal_idx  (N,)      int64    which crystal of the batch each atom belongs to
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data" / "perovskites"
CLASSIFICATION_DIR = HERE / "data" / "classification"


@dataclass(frozen=True)
class GraphSettings:
    """The crystal graph's settings, stated once: the notebook, this module, the grader and the
    benchmarks read them here. The Gaussian grid runs from 0 to the cut-off radius."""

    radius: float = 8.0  # A: neighbours within it
    max_num_nbr: int = 12  # M, the nearest neighbours kept per atom
    step: float = 0.2  # A: spacing (and width) of the Gaussians: 41 of them from 0 to 8 A


GRAPH = GraphSettings()


class DataError(ValueError):
    """A data set file that is missing or cannot be read; the message names it."""


# ---------------------------------------------------------------------------------------------
# Loading the CGCNN directory format
# ---------------------------------------------------------------------------------------------

def load_embedding(root: Path | str = DATA_DIR) -> dict[int, np.ndarray]:
    """Read `atom_init.json`: {atomic number Z: 92-dimensional float32 vector}."""
    path = Path(root) / "atom_init.json"
    if not path.is_file():
        raise DataError(f"element embedding {path} is missing: the data directory is incomplete")
    try:
        raw = json.loads(path.read_text())
        return {int(z): np.asarray(v, dtype=np.float32) for z, v in raw.items()}
    except (ValueError, TypeError) as err:
        raise DataError(f"element embedding {path} is not a JSON object of Z -> list: {err}") from err


def _read_csv(path: Path, header: bool) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path.name} is missing from {path.parent}")
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    return rows[1:] if header else rows


@dataclass
class CrystalDataset:
    """A CGCNN data directory: `id_prop.csv`, one CIF per id, `split.csv`, `metadata.csv`.

    `targets` holds the labels of `id_prop.csv` (in the student release the test ids have none);
    `split` maps every id to "train", "val" or "test"; `metadata` maps id to a dict of its row.
    """

    root: Path
    targets: dict[str, float]
    split: dict[str, str]
    metadata: dict[str, dict[str, str]]
    _structures: dict = field(default_factory=dict, repr=False)

    def ids(self, part: str) -> list[str]:
        """The ids of one part of the split, in file order."""
        if part not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test', not {part!r}")
        return [i for i, p in self.split.items() if p == part]

    def structure(self, id_: str):
        """The pymatgen Structure of one entry, read from `<id>.cif` (cached)."""
        if id_ not in self._structures:
            from pymatgen.core import Structure
            path = self.root / f"{id_}.cif"
            if not path.is_file():
                raise DataError(f"id {id_!r} is listed but its file {path.name} is missing from {self.root}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pymatgen warns about CIF rounding
                    self._structures[id_] = Structure.from_file(str(path))
            except Exception as err:  # pymatgen raises several types for a broken CIF
                raise DataError(f"could not read {path.name} in {self.root}: {err}") from err
        return self._structures[id_]


def load_dataset(root: Path | str = DATA_DIR) -> CrystalDataset:
    """Read a CGCNN data directory, checking that every listed id has its CIF."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} not found")
    targets = {}
    for row in _read_csv(root / "id_prop.csv", header=False):
        try:
            targets[row[0]] = float(row[1])
        except (IndexError, ValueError) as err:
            raise DataError(f"id_prop.csv in {root}: bad row {row!r} (expected id,number)") from err
    split = {row[0]: row[1] for row in _read_csv(root / "split.csv", header=True)}
    with open(root / "metadata.csv", newline="") as f:
        metadata = {row["id"]: row for row in csv.DictReader(f)}
    missing = [i for i in list(targets) + list(split) if not (root / f"{i}.cif").is_file()]
    if missing:
        raise DataError(f"{len(missing)} id(s) listed in {root} have no CIF file, "
                        f"for example {missing[0]}.cif")
    return CrystalDataset(root, targets, split, metadata)


# ---------------------------------------------------------------------------------------------
# Graphs and batches
# ---------------------------------------------------------------------------------------------

@dataclass
class CrystalGraph:
    """One crystal: atom features (n, 92), neighbour indices (n, M), neighbour distances (n, M)."""

    atom_fea: np.ndarray
    nbr_idx: np.ndarray
    nbr_dist: np.ndarray


def build_graphs(dataset: CrystalDataset, ids: list[str], embedding, atom_features: Callable,
                 neighbor_list: Callable, radius: float = GRAPH.radius, max_num_nbr: int = GRAPH.max_num_nbr,
                 progress: bool = True) -> dict[str, CrystalGraph]:
    """Turn crystals into graphs with the student's `atom_features` and `neighbor_list`."""
    from tqdm.auto import tqdm
    graphs = {}
    for id_ in tqdm(ids, desc="graphs", disable=not progress, leave=False):
        s = dataset.structure(id_)
        idx, dist = neighbor_list(s, radius, max_num_nbr)
        graphs[id_] = CrystalGraph(np.asarray(atom_features(s, embedding), dtype=np.float32),
                                   np.asarray(idx, dtype=np.int64), np.asarray(dist, dtype=np.float64))
    return graphs


@dataclass
class Batch:
    """Several crystals stacked into one disconnected graph (see the module docstring for shapes)."""

    atom_fea: "torch.Tensor"
    nbr_fea: "torch.Tensor"
    nbr_idx: "torch.Tensor"
    crystal_idx: "torch.Tensor"
    n_crystals: int
    target: "torch.Tensor"
    ids: list[str]


def collate(graphs: list[CrystalGraph], targets, ids, gaussian_expand: Callable) -> Batch:
    """Stack graphs: neighbour indices are shifted by the number of atoms before each crystal."""
    import torch
    offsets = np.cumsum([0] + [len(g.atom_fea) for g in graphs[:-1]])
    nbr_idx = np.concatenate([g.nbr_idx + off for g, off in zip(graphs, offsets)])
    dist = np.concatenate([g.nbr_dist for g in graphs])
    crystal_idx = np.concatenate([np.full(len(g.atom_fea), i) for i, g in enumerate(graphs)])
    return Batch(atom_fea=torch.from_numpy(np.concatenate([g.atom_fea for g in graphs])),
                 nbr_fea=torch.as_tensor(np.asarray(gaussian_expand(dist, dmin=0.0, dmax=GRAPH.radius,
                                                                    step=GRAPH.step)), dtype=torch.float32),
                 nbr_idx=torch.from_numpy(nbr_idx.astype(np.int64)),
                 crystal_idx=torch.from_numpy(crystal_idx.astype(np.int64)),
                 n_crystals=len(graphs),
                 target=torch.tensor(np.asarray(targets, dtype=np.float32)),
                 ids=list(ids))


def make_batches(graphs: dict[str, CrystalGraph], targets: dict[str, float], ids: list[str],
                 gaussian_expand: Callable, batch_size: int = 64, shuffle: bool = False,
                 seed: int = 0) -> list[Batch]:
    """Cut `ids` into batches (shuffled with `seed` if asked); a missing target becomes NaN."""
    order = list(ids)
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batches.append(collate([graphs[i] for i in chunk], [targets.get(i, np.nan) for i in chunk],
                               chunk, gaussian_expand))
    return batches


class Normalizer:
    """Standardise targets with the training set's mean and standard deviation."""

    def __init__(self, values):
        values = np.asarray(list(values), dtype=np.float64)
        self.mean, self.std = float(values.mean()), float(values.std() or 1.0)

    def norm(self, x):
        return (x - self.mean) / self.std

    def denorm(self, x):
        return x * self.std + self.mean


def predict(model, batches: list[Batch], normalizer: Normalizer) -> dict[str, float]:
    """Predictions in eV/atom for every crystal of `batches`, with the model in eval mode."""
    import torch
    model.eval()
    out = {}
    with torch.no_grad():
        for b in batches:
            pred = normalizer.denorm(model(b.atom_fea, b.nbr_fea, b.nbr_idx, b.crystal_idx, b.n_crystals))
            out.update(zip(b.ids, pred.reshape(-1).tolist()))
    return out


def mae(pred: dict[str, float], targets: dict[str, float]) -> float:
    """Mean absolute error over the ids of `pred`."""
    return float(np.mean([abs(pred[i] - targets[i]) for i in pred]))


def cpu_budget() -> int:
    """How many CPUs this process really has: its affinity mask, capped by its cgroup's CPU quota.

    torch starts one thread per CPU it sees, and a container limited to a fraction of the machine
    (Gradescope's default is 0.5 CPU) still sees them all; the threads then wait for each other in
    turns of the quota: at half a CPU, grading took 160 CPU seconds instead of 49 and the training
    cell ran into the grader's time limit. OMP_NUM_THREADS, where set (the autograder sets 1), wins."""
    import os
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.rstrip("/")
        try:
            if "cpu" in controllers.split(","):  # cgroup v1
                base = Path(f"/sys/fs/cgroup/cpu{path}")
                if not base.is_dir():  # in a container the own cgroup is mounted at the root
                    base = Path("/sys/fs/cgroup/cpu")
                quota, period = (int((base / f"cpu.cfs_{k}_us").read_text()) for k in ("quota", "period"))
            elif controllers == "":  # cgroup v2: "quota period" or "max period"
                text = (Path(f"/sys/fs/cgroup{path}") / "cpu.max").read_text().split()
                quota, period = (-1 if text[0] == "max" else int(text[0])), int(text[1])
            else:
                continue
        except (OSError, ValueError, IndexError):
            continue
        if quota > 0:
            cpus = min(cpus, max(1, int(quota / period)))
    return max(1, cpus)


def fit(model, train_epoch: Callable, train_batches, val_batches, normalizer, targets,
        epochs: int, lr: float = 3e-3, weight_decay: float = 0.0, progress: bool = True) -> dict:
    """Train for `epochs` with Adam and cosine learning-rate decay, calling the student's
    `train_epoch(model, batches, optimizer, normalizer)` once per epoch.

    Returns the history: per epoch the training loss, training MAE and validation MAE (eV/atom),
    and the wall time. The best validation state is restored at the end.
    """
    import copy
    import torch
    from tqdm.auto import tqdm
    torch.set_num_threads(cpu_budget())
    # Sums over gathered neighbours are otherwise added in an order that varies from run to run on more
    # than one thread: with this, the same notebook trains the same model on the same thread count.
    torch.use_deterministic_algorithms(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history = {"train_loss": [], "train_mae": [], "val_mae": [], "seconds": 0.0}
    best, best_state = float("inf"), None
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="epochs", disable=not progress)
    for _ in bar:
        loss, train_mae = train_epoch(model, train_batches, optimizer, normalizer)
        scheduler.step()
        val_mae = mae(predict(model, val_batches, normalizer), targets)
        history["train_loss"].append(float(loss))
        history["train_mae"].append(float(train_mae))
        history["val_mae"].append(val_mae)
        if val_mae < best:
            best, best_state = val_mae, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{loss:.3f}", val_mae=f"{val_mae:.3f}")
    history["seconds"] = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

def plot_structure(structure, ax, title: str = "", polyhedra_around: str | None = None, bond: float = 3.0):
    """Draw a crystal on a 3-D matplotlib axis: the unit cell's edges, its atoms (sized by atomic
    radius, one colour per element, O red) and, around every atom of element `polyhedra_around` (the
    B cation), the polyhedron of its O neighbours within `bond` A, periodic images included (the O
    images that complete a polyhedron are drawn too)."""
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection
    from scipy.spatial import ConvexHull
    elements = sorted({site.specie.symbol for site in structure} - {"O"})
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive", "tab:cyan"]
    colour = {el: palette[k % len(palette)] for k, el in enumerate(elements)} | {"O": "tab:red"}
    if polyhedra_around:  # the first such atom at the centre of the cell, where its polyhedron fits
        structure = structure.copy()
        first = next(site.frac_coords for site in structure if site.specie.symbol == polyhedra_around)
        structure.translate_sites(range(len(structure)), 0.5 - first, to_unit_cell=True)
    m = structure.lattice.matrix
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(corners[a] - corners[b]).sum() == 1]
    ax.add_collection3d(Line3DCollection([[corners[a] @ m, corners[b] @ m] for a, b in edges], colors="k",
                                         linewidths=0.8))
    extra = []
    if polyhedra_around:
        for site in structure:
            if site.specie.symbol != polyhedra_around:
                continue
            ligands = sorted((n for n in structure.get_neighbors(site, bond) if n.specie.symbol == "O"),
                             key=lambda n: n.nn_distance)
            points = np.array([n.coords for n in ligands])
            if len(points) >= 4:
                faces = [points[simplex] for simplex in ConvexHull(points).simplices]
                ax.add_collection3d(Poly3DCollection(faces, facecolor=colour[polyhedra_around], alpha=0.25,
                                                     edgecolor="grey", linewidths=0.3))
                extra.extend(points)
    for el in elements + ["O"]:
        xyz = np.array([site.coords for site in structure if site.specie.symbol == el])
        if el == "O" and extra:
            xyz = np.unique(np.round(np.vstack([xyz, extra]), 4), axis=0)
        from pymatgen.core import Element
        size = (14 * float(Element(el).atomic_radius or 1.0)) ** 2
        ax.scatter(*xyz.T, s=size, color=colour[el], edgecolor="k", linewidth=0.4, depthshade=False, label=el)
    span = np.vstack([corners @ m] + ([np.array(extra)] if extra else []))
    ax.set_box_aspect(np.ptp(span, axis=0))
    ax.set_axis_off()
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, markerscale=0.5, frameon=False)
    return ax


def plot_crystal_graph(structure, nbr_idx, nbr_dist, title: str = ""):
    """Left: the atoms of the unit cell. Right: its crystal graph, one node per atom and one edge
    per neighbour (periodic images fold back onto the atoms of the cell, so edges repeat)."""
    import matplotlib.pyplot as plt
    from pymatgen.core import Element
    fig = plt.figure(figsize=(10, 4.5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    xyz = structure.cart_coords
    species = [s.specie.symbol for s in structure]
    colours = {el: plt.cm.tab10(i) for i, el in enumerate(sorted(set(species)))}
    for el in sorted(set(species)):
        pts = xyz[[i for i, s in enumerate(species) if s == el]]
        ax.scatter(*pts.T, s=60 + 150 * float(Element(el).atomic_radius or 1), color=colours[el], label=el)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ structure.lattice.matrix
    for a in range(8):
        for b in range(a + 1, 8):
            if bin(a ^ b).count("1") == 1:  # cube edges join corners that differ in one axis
                ax.plot(*corners[[a, b]].T, color="grey", lw=0.7)
    ax.set_title(title or structure.composition.reduced_formula)
    ax.legend(loc="upper left")
    ax2 = fig.add_subplot(1, 2, 2)
    n = len(structure)
    angle = 2 * np.pi * np.arange(n) / n
    pos = np.c_[np.cos(angle), np.sin(angle)]
    counts: dict[tuple[int, int], int] = {}
    for i in range(n):
        for j in np.asarray(nbr_idx)[i]:
            key = (min(i, int(j)), max(i, int(j)))
            counts[key] = counts.get(key, 0) + 1
    for (i, j), c in counts.items():
        ax2.plot(*pos[[i, j]].T, color="steelblue", lw=0.5 + 0.4 * c, alpha=0.6)
    for i in range(n):
        ax2.scatter(*pos[i], s=400, color=colours[species[i]], zorder=3)
        ax2.annotate(f"{species[i]}{i}", pos[i], ha="center", va="center", fontsize=8, zorder=4)
    ax2.set_title(f"crystal graph: {n} nodes, {np.asarray(nbr_idx).size} edges (width = multiplicity)")
    ax2.set_aspect("equal")
    ax2.axis("off")
    fig.tight_layout()
    return fig


# Series told apart without colour: each has a marker and a line style of its own as well as a colour
# of Okabe and Ito's palette, which readers with any common colour-vision deficiency tell apart.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]


def series_style(k: int) -> dict:
    """The k-th series' colour, marker and line style (matplotlib keywords): any two of the first
    eight differ in marker and colour, and neighbours in line style too."""
    return {"color": PALETTE[k % len(PALETTE)], "marker": MARKERS[k % len(MARKERS)],
            "linestyle": LINESTYLES[k % len(LINESTYLES)]}


def plot_history(history: dict):
    """Training loss and MAE curves."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(history["train_loss"], color=PALETTE[0])
    a.set(xlabel="epoch", ylabel="MSE loss (normalised)", yscale="log", title="training loss")
    b.plot(history["train_mae"], label="train", color=PALETTE[0])
    b.plot(history["val_mae"], label="validation", color=PALETTE[1], linestyle="--")
    b.set(xlabel="epoch", ylabel="MAE (eV/atom)", yscale="log", title="mean absolute error")
    b.legend()
    fig.tight_layout()
    return fig


def plot_histories(histories: dict[str, list[dict]]):
    """Training loss per epoch of several variants (one style each, series_style; one line per seed),
    so that a run that blows up or stalls shows beside the others."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (name, runs) in enumerate(histories.items()):
        for j, history in enumerate(runs):
            epochs = len(history["train_loss"])
            ax.plot(range(1, epochs + 1), history["train_loss"], **series_style(k), markersize=4,
                    markevery=max(1, epochs // 6), lw=1.2, alpha=0.8, label=name if j == 0 else None)
    ax.set(xlabel="epoch", ylabel="MSE loss (normalised targets)", yscale="log",
           title="training loss of each variant (one line per seed)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_parity(pred: dict[str, float], targets: dict[str, float], groups: dict[str, str], title=""):
    """Predicted against true values, each group (polymorph) with its marker and colour."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    ids = [i for i in pred if i in targets]
    for k, g in enumerate(sorted({groups[i] for i in ids})):
        sel = [i for i in ids if groups[i] == g]
        style = series_style(k)
        ax.scatter([targets[i] for i in sel], [pred[i] for i in sel], s=14, alpha=0.7, label=g,
                   color=style["color"], marker=style["marker"])
    lims = [min(targets[i] for i in ids) - 0.1, max(targets[i] for i in ids) + 0.1]
    ax.plot(lims, lims, "k--", lw=1)
    ax.set(xlim=lims, ylim=lims, xlabel="CHGNet formation energy (eV/atom)",
           ylabel="CGCNN prediction (eV/atom)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def errors_by_group(pred: dict[str, float], targets: dict[str, float], groups: dict[str, str]) -> dict:
    """{group: (count, MAE in eV/atom)}, for the ids of `pred` that have a target."""
    out = {}
    for g in sorted({groups[i] for i in pred if i in targets}):
        sel = [i for i in pred if i in targets and groups[i] == g]
        out[g] = (len(sel), float(np.mean([abs(pred[i] - targets[i]) for i in sel])))
    return out


def polymorph_differences(pred: dict[str, float], targets: dict[str, float],
                          formulas: dict[str, str]) -> dict[str, tuple[float, float]]:
    """{id: (true, predicted)} energy of each polymorph above its formula's lowest polymorph (eV/atom),
    for the formulas with at least two polymorphs among the ids of `pred` that have a target. The
    lowest is the formula's lowest *true* label; both differences are taken against that entry (which
    itself is left out). A model that reads only the formula predicts the same value for every
    polymorph of a formula, so all its predicted differences are 0."""
    by_formula: dict[str, list[str]] = {}
    for i in pred:
        if i in targets:
            by_formula.setdefault(formulas[i], []).append(i)
    out = {}
    for ids in by_formula.values():
        if len(ids) < 2:
            continue
        low = min(sorted(ids), key=lambda i: targets[i])
        for i in sorted(ids):
            if i != low:
                out[i] = (targets[i] - targets[low], pred[i] - pred[low])
    return out


def plot_polymorph_differences(diffs: dict[str, tuple[float, float]], groups: dict[str, str], title=""):
    """Predicted against true energy above the formula's lowest polymorph, each group with its marker
    and colour, with the MAE of the differences beside that of a composition-only model (which
    predicts 0 for every one)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    true = np.array([t for t, _ in diffs.values()])
    predicted = np.array([p for _, p in diffs.values()])
    for n, g in enumerate(sorted({groups[i] for i in diffs})):
        sel = [k for k, i in enumerate(diffs) if groups[i] == g]
        style = series_style(n)
        ax.scatter(true[sel], predicted[sel], s=16, alpha=0.7, label=g, color=style["color"], marker=style["marker"])
    hi = max(float(np.abs(np.concatenate([true, predicted])).max()), 0.01) * 1.1
    ax.plot([-hi, hi], [-hi, hi], "k--", lw=1)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlim=(-0.02 * hi, hi), ylim=(min(-0.05 * hi, 1.2 * float(predicted.min())), hi), xlabel="CHGNet: above the formula's lowest (eV/atom)",
           ylabel="CGCNN: above that polymorph (eV/atom)",
           title=f"{title}\nMAE {np.abs(predicted - true).mean():.3f}; composition only "
                 f"{np.abs(true).mean():.3f} eV/atom ({len(true)} polymorphs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def check_saved(notebook: str | Path) -> bool:
    """Say whether the notebook as saved on disk holds outputs (the export zips the saved file, so
    unsaved outputs and answers would not reach the course staff); True when it does."""
    import nbformat
    path = Path(notebook)
    if not path.is_file():
        print(f"{path} not found: run this cell in the notebook's folder (on Colab, download the notebook instead)")
        return False
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    with_outputs = sum(bool(c.get("outputs")) for c in cells)
    if with_outputs == 0:
        print(f"{path.name} as saved has no outputs: save it (File > Save, or Ctrl+S), then run this cell again. "
              "Running the notebook headless (jupyter nbconvert --execute --inplace)? It writes the file when the run "
              "ends: afterwards, open the notebook and run the Submit cells alone")
        return False
    print(f"{path.name} as saved: {with_outputs} of {len(cells)} code cells have outputs. If you ran cells since "
          "you last saved, save again before exporting.")
    return True


# ---------------------------------------------------------------------------------------------
# The written questions as a PDF (for the Gradescope assignment graded by hand)
# ---------------------------------------------------------------------------------------------

class PDFError(RuntimeError):
    """The PDF of the written questions could not be made; the message says what to do."""


PDF_TIMEOUT = 300  # s for the browser to start, load the page and typeset its maths (generous: a busy machine)
# A notebook is anyone's submission (the staff print every student's), so the page is built from data
# checked here and printed under a policy that lets it run nothing and fetch nothing of its own:
# - the notebook is rebuilt from what the PDF shows (_printable): no metadata reaches nbconvert's
#   template except an image's width and height, as numbers (nbconvert writes them unquoted: a width
#   of "1 onerror=..." was a script), and every output is capped before anything renders it;
# - Markdown and HTML keep text, tables and inline (data:) images only (_clean_html);
# - the page is served from memory at an origin of its own, under a Content-Security-Policy: scripts
#   only from MathJax's folder, images only data:, no frames, objects, connections or inline scripts;
#   every other request is refused, and an http: page cannot load file: URLs at all.
PDF_MAX_NOTEBOOK = 100 * 2**20  # bytes of a notebook read at all (Gradescope takes uploads up to 100 MB)
PDF_MAX_TEXT = 100_000  # characters kept of one output's text or one cell's source (some 30 printed pages)
PDF_MAX_IMAGE = 5_000_000  # characters of one image's base64 (3.7 MB: a figure is some 100 kB)
PDF_MAX_TOTAL = 4_000_000  # characters of all the questions' outputs (each counts 1,000 at least); then left out
PAGE_ORIGIN = "http://cgcnn-pdf.invalid"  # the page's origin, served from memory (.invalid never resolves)
PAGE_URL = f"{PAGE_ORIGIN}/questions.html"
MATHJAX_CONFIG_URL = f"{PAGE_ORIGIN}/mathjax-config.js"  # nbconvert's configuration, as a file: no inline script
LOCAL_MATHJAX = f"{PAGE_ORIGIN}/mathjax/"  # a local MathJax 2 folder, served from disk
MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/"  # nbconvert's MathJax: only where none is installed
# MathJax's combined configuration: TeX in, HTML out, with the Safe extension. nbconvert's CommonHTML one
# where the folder has it (the CDN's, Debian's libjs-mathjax); otherwise the HTML-CSS one that
# jupyter-server-mathjax (the student's requirements) ships with its STIX-Web fonts.
MATHJAX_CONFIGS = ("TeX-AMS_CHTML-full", "TeX-AMS-MML_HTMLorMML-full")
MATHJAX_SCRIPT = f"MathJax.js?config={MATHJAX_CONFIGS[0]},Safe"
# nbconvert's inline configuration (its mathjax.html.j2), loaded before MathJax.js, which reads window.MathJax
_MATHJAX_CONFIG = """window.MathJax = {
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  displayAlign: "center", messageStyle: "none", CommonHTML: {linebreaks: {automatic: true}},
  "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web",
               linebreaks: {automatic: true}}
};
"""
# otter's via_html template (which extends nbconvert's classic one) with the page's head replaced: the
# policy first, no jQuery, require.js, mermaid or widgets from CDNs, MathJax and its configuration as files
_PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
<meta http-equiv="Content-Security-Policy" content="{{ resources.page_policy | escape_html }}">
{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}
<script src="{{ resources.mathjax_config_url | escape_html }}"></script>
<script src="{{ resources.mathjax_url | escape_html }}"></script>
{%- endblock html_head_js_mathjax -%}
"""
# Resolves once MathJax 2 has typeset the page (its queue runs in order: startup, typesetting, then
# this); false when MathJax did not load, so the maths would print as raw TeX. (Evaluated through the
# browser's DevTools protocol, which the page's policy does not govern.)
_MATHJAX_DONE = ("() => new Promise(done => window.MathJax && window.MathJax.Hub ? "
                 "MathJax.Hub.Queue(() => done(true)) : done(false))")
# What a notebook's Markdown and HTML outputs keep in the PDF: text, lists, tables and images, links to
# the web. No scripts, frames, objects or styles: an <iframe src="file:///..."> would print a local file
# (nbconvert's own sanitiser keeps too little, not even paragraphs or headings). No ids either: an
# element's id becomes a global of the page's scripts (<div id="MathJax">).
PDF_TAGS = ["a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt", "em", "h1",
            "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong",
            "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"]
PDF_ATTRIBUTES = {"*": ["class", "title"], "a": ["href"], "img": ["src", "alt", "width", "height"],
                  "td": ["colspan", "rowspan"], "th": ["colspan", "rowspan"]}
PDF_HELP = ("a PDF needs Chrome, Chromium or Edge installed (none was found that starts), or playwright's own "
            "browser: `python -m playwright install chromium` (once, about 150 MB); then run this cell again. "
            "Or print the notebook from your browser (File > Print, Save as PDF), and when you upload it "
            "mark the pages of questions 5 and 6")
# Browsers looked for when none is named, after playwright's own download: Chrome and Edge where their
# installers put them (playwright's channels know where, on Linux, macOS and Windows), then a Chromium
# by name on PATH or in macOS's Applications.
BROWSER_CHANNELS = ("chrome", "msedge")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "chromium-headless-shell")
CHROMIUM_APPS = ("/Applications/Chromium.app/Contents/MacOS/Chromium",)


def installed_mathjax() -> Path | None:
    """The MathJax 2 folder jupyter-server-mathjax installs (student/requirements.txt), found without
    importing it (it would import the Jupyter server); None when it is not installed."""
    import importlib.util
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "static" / "MathJax.js").is_file():
            return Path(folder) / "static"
    return None


def mathjax_script(folder: str | Path | None) -> str:
    """MathJax.js with the first of MATHJAX_CONFIGS that `folder` holds (None: the CDN, which has all)."""
    if folder is None:
        return MATHJAX_SCRIPT
    for config in MATHJAX_CONFIGS:
        if (Path(folder) / "config" / f"{config}.js").is_file():
            return f"MathJax.js?config={config},Safe"
    raise PDFError(f"{folder} holds none of MathJax's configurations {', '.join(MATHJAX_CONFIGS)}: "
                   "is it a MathJax 2 folder?")


def browsers() -> list[dict]:
    """playwright's launch options for each browser to try, in order, when none is named: playwright's
    own download, Chrome's and Edge's channels, then each Chromium found by name."""
    import shutil
    found = [path for path in (*map(shutil.which, CHROMIUM_NAMES), *CHROMIUM_APPS) if path and Path(path).is_file()]
    return [{}, *({"channel": channel} for channel in BROWSER_CHANNELS),
            *({"executable_path": path} for path in dict.fromkeys(found))]


def page_policy(mathjax: str) -> str:
    """The page's Content-Security-Policy, MathJax 2 loaded from the folder at URL `mathjax`."""
    return ("default-src 'none'; "
            f"script-src {mathjax} {MATHJAX_CONFIG_URL}; "  # files only: no inline script, handler or eval
            f"style-src 'unsafe-inline' {mathjax}; font-src {mathjax}; "  # the template's styles, MathJax's fonts
            "img-src data:; "  # nbconvert embeds output images as data: URIs; nothing else is fetched
            "frame-src 'none'; child-src 'none'; worker-src 'none'; object-src 'none'; connect-src 'none'; "
            "media-src 'none'; manifest-src 'none'; base-uri 'none'; form-action 'none'")


def questions_html(notebook: str | Path, mathjax: str = MATHJAX_CDN, script: str = MATHJAX_SCRIPT) -> str:
    """The page that questions_pdf prints: otter's filtered export of `notebook` (as saved), only the
    cells between the `<!-- BEGIN QUESTION -->` and `<!-- END QUESTION -->` markers that otter assign
    puts around each hand-graded question (its prompt, the cells inside it with their outputs, the
    answer), a page break between questions, in otter's HTML template, MathJax 2 from the folder at
    URL `mathjax` (nbconvert's CDN by default) started by `script` (mathjax_script). The notebook may be anyone's submission: only what the
    PDF shows is kept of it, checked and capped (_printable), Markdown and HTML outputs are cleaned
    (_clean_html), and the page carries its Content-Security-Policy (page_policy). Raises PDFError."""
    try:
        import jinja2
        import nbconvert
        from otter.export.exporters.base_exporter import TEMPLATE_DIR
        from otter.export.exporters.utils import NEW_PAGE_CELL_SOURCE
        from otter.export.exporters.via_html import PDFViaHTMLExporter
        from traitlets.config import Config
    except ImportError as err:
        raise PDFError(f"{err.name} is not installed: pip install -r requirements.txt") from err
    path = Path(notebook)
    if path.is_file() and path.stat().st_size > PDF_MAX_NOTEBOOK:
        raise PDFError(f"{path.name} is {path.stat().st_size / 2**20:.0f} MB: a notebook of more than "
                       f"{PDF_MAX_NOTEBOOK / 2**20:.0f} MB is not printed (clear the largest outputs and save it)")
    try:
        nb = PDFViaHTMLExporter.load_notebook(str(path), filtering=True, pagebreaks=True)
    except Exception as err:  # unreadable JSON, not a notebook
        raise PDFError(f"{path.name} could not be read as a notebook ({type(err).__name__}: {err})") from err
    while nb.cells and nb.cells[-1].source.strip() == NEW_PAGE_CELL_SOURCE:
        nb.cells.pop()  # what is left of the cell after the last question: a page break, then a blank page
    if not nb.cells:
        raise PDFError(f"{path.name} has no question marked for the PDF (otter's `<!-- BEGIN QUESTION -->`): "
                       "use the notebook of the assignment as released, with its cells in place")
    config = Config()
    config.HTMLExporter.template_name = "via_html"  # otter's template for its PDF via HTML
    config.HTMLExporter.extra_template_basedirs = [str(TEMPLATE_DIR)]
    config.HTMLExporter.template_file = "cgcnn_pdf.html.j2"  # _PAGE_TEMPLATE, which extends it
    config.HTMLExporter.sanitize_html = True
    config.HTMLExporter.embed_images = False  # True would read the files a Markdown image names, as data: URIs
    config.HTMLExporter.filters = {"clean_html": _clean_html}  # the template sanitises with this filter
    exporter = nbconvert.HTMLExporter(config=config,
                                      extra_loaders=[jinja2.DictLoader({"cgcnn_pdf.html.j2": _PAGE_TEMPLATE})])
    resources = {"page_policy": page_policy(mathjax), "mathjax_config_url": MATHJAX_CONFIG_URL}
    exporter.mathjax_url = mathjax + script
    try:
        return exporter.from_notebook_node(_printable(nb), resources=resources)[0]
    except Exception as err:  # a Markdown cell naming an attachment it does not hold, and the like
        raise PDFError(f"{path.name} could not be rendered ({type(err).__name__}: {err})") from err


def questions_pdf(notebook: str | Path, dest: str | Path, mathjax_dir: str | Path | None = None,
                  chromium: str | Path | None = None, sandbox: bool | None = None,
                  timeout: float = PDF_TIMEOUT) -> Path:
    """Write the PDF of the hand-graded questions of `notebook` (as saved) to `dest` and return it:
    the page of questions_html, printed by a headless chromium once MathJax has typeset its maths.
    `mathjax_dir` is a local MathJax 2 folder (default: jupyter-server-mathjax's, installed_mathjax;
    nbconvert's CDN only where that is not installed); `chromium` the browser's executable (default:
    the first of browsers() that starts); `sandbox` whether chromium's own sandbox is on (default:
    unless running as root, which chromium refuses; a browser found, not named, that cannot start
    with it is started again without it). The page is served from memory at PAGE_ORIGIN; the browser
    gets the page, the configuration, MathJax's files, and nothing else. Raises PDFError."""
    import asyncio
    import concurrent.futures
    import importlib.util
    import os
    if importlib.util.find_spec("playwright") is None:
        raise PDFError("playwright, which drives the browser, is not installed: pip install -r requirements.txt")
    path, dest = Path(notebook), Path(dest)
    mathjax_dir = mathjax_dir if mathjax_dir is not None else installed_mathjax()
    mathjax = LOCAL_MATHJAX if mathjax_dir is not None else MATHJAX_CDN
    html = questions_html(path, mathjax, mathjax_script(mathjax_dir))
    policy = page_policy(mathjax)
    if sandbox is None:
        sandbox = not hasattr(os, "geteuid") or os.geteuid() != 0
    # each browser with chromium's sandbox, then (a browser found, where user namespaces are refused)
    # without it: for the student's own notebook on the student's machine; the page's policy holds
    tries = ([({"executable_path": str(chromium)}, sandbox)] if chromium is not None else
             [(options, with_sandbox) for options in browsers() for with_sandbox in dict.fromkeys([sandbox, False])])

    async def serve(route) -> None:
        """The page's requests: the page, MathJax's configuration and files; everything else refused."""
        url = route.request.url
        if url == PAGE_URL:
            await route.fulfill(body=html, content_type="text/html; charset=utf-8",
                                headers={"Content-Security-Policy": policy})
        elif url == MATHJAX_CONFIG_URL:
            await route.fulfill(body=_MATHJAX_CONFIG, content_type="text/javascript")
        elif mathjax_dir is not None and url.startswith(LOCAL_MATHJAX):
            file = _mathjax_file(Path(mathjax_dir), url[len(LOCAL_MATHJAX):])
            await (route.fulfill(path=file) if file else route.abort("blockedbyclient"))
        elif mathjax_dir is None and url.startswith(MATHJAX_CDN):
            await route.continue_()
        else:
            await route.abort("blockedbyclient")

    async def launch(pw):
        from playwright.async_api import Error
        for n, (options, with_sandbox) in enumerate(tries):
            try:
                return await pw.chromium.launch(**options, chromium_sandbox=with_sandbox, timeout=timeout * 1000)
            except Error as err:
                if n + 1 == len(tries):
                    why = str(err).strip().splitlines()[0]
                    raise PDFError(f"chromium could not start ({why}): " + (
                        PDF_HELP if chromium is None else f"check {chromium}")) from err

    async def print_page() -> bytes:
        from playwright.async_api import async_playwright
        async with async_playwright() as pw:
            browser = await launch(pw)
            try:
                context = await browser.new_context(service_workers="block", accept_downloads=False)
                await context.route("**/*", serve)  # the context's: popups too
                page = await context.new_page()
                await page.emulate_media(media="print")
                await page.goto(PAGE_URL, wait_until="load", timeout=timeout * 1000)
                try:
                    typeset = await asyncio.wait_for(page.evaluate(_MATHJAX_DONE), timeout)
                except asyncio.TimeoutError:
                    raise PDFError(f"MathJax did not finish typesetting {path.name} within {timeout:g} s") from None
                if not typeset:
                    raise PDFError(f"MathJax did not load (from {mathjax_dir or MATHJAX_CDN + ': are you online?'}), "
                                   "so the maths would print as raw TeX")
                return await page.pdf(print_background=True)
            finally:
                await browser.close()

    # playwright's API needs an event loop of its own: Jupyter's kernel already runs one in this thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pdf = pool.submit(asyncio.run, print_page()).result()
    dest.write_bytes(pdf)
    return dest


def _mathjax_file(folder: Path, rest: str) -> Path | None:
    """The file of the MathJax folder `folder` at URL path `rest` (query dropped), or None: no way out of
    the folder (no `..`, no absolute path), regular files only."""
    from urllib.parse import unquote, urlsplit
    parts = unquote(urlsplit(rest).path).split("/")
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    file = folder.joinpath(*parts)
    return file if file.is_file() else None


# The notebook as the PDF shows it ------------------------------------------------------------------

_PRINTED = ("text/html", "text/markdown", "text/latex", "image/svg+xml", "image/png", "image/jpeg", "text/plain")
_RASTER = ("image/png", "image/jpeg")  # the outputs whose width and height nbconvert writes into the page
_ATTACHED = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")  # a Markdown cell's pasted images
_OUTPUT_COST = 1_000  # characters each output counts against PDF_MAX_TOTAL, however small


def _printable(nb):
    """A new notebook holding only what the PDF shows of `nb`: markdown and code cells (source, execution
    count, Markdown's pasted images), their outputs (streams, errors, the displayed data nbconvert's HTML
    prints), each value of the type nbformat says, images base64 only, an image's width and height
    numbers or nothing, no other metadata (nbconvert writes `filenames` as an image's source, `isolated`
    as an iframe). Each text is cut at PDF_MAX_TEXT characters, an image over PDF_MAX_IMAGE left out,
    and the outputs after PDF_MAX_TOTAL characters too; the PDF says where."""
    import nbformat
    budget = [PDF_MAX_TOTAL]
    cells = []
    for cell in nb.cells:
        kind = cell.get("cell_type")
        source, cut = _cut(_text(cell.get("source")))
        if kind == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
            attachments = {name: {mime: data for mime, data in files.items() if mime in _ATTACHED and _base64(data)}
                           for name, files in (_dict(cell.get("attachments")) or {}).items()
                           if isinstance(name, str) and isinstance(files, dict)}
            attachments = {name: files for name, files in attachments.items() if files}
            if attachments:
                new.attachments = attachments
                budget[0] -= sum(len(data) for files in attachments.values() for data in files.values())
            cells.append(new)
            if cut:  # a cell of its own: the cut may fall inside a tag or a comment, which would swallow it
                cells.append(nbformat.v4.new_markdown_cell(_cut_note(cut, "this cell's text")))
        elif kind == "code":
            count = cell.get("execution_count")
            new = nbformat.v4.new_code_cell(source + (f"\n# {_cut_note(cut, 'this cell')}" if cut else ""),
                                            execution_count=count if _integer(count) else None)
            new.outputs = _outputs(cell.get("outputs"), budget)
            cells.append(new)
        # raw cells: nbconvert's HTML leaves them out
    return nbformat.v4.new_notebook(cells=cells, metadata={"language_info": {"name": "python"}})


def _outputs(outputs, budget: list[int]) -> list:
    import nbformat
    kept, left_out = [], 0
    for output in outputs if isinstance(outputs, list) else []:
        if not isinstance(output, dict):
            continue
        if budget[0] <= 0:
            left_out += 1
            continue
        new, notes = _output(output)
        if new is not None:
            kept.append(new)
            budget[0] -= _OUTPUT_COST + _size(new)
        kept += [nbformat.v4.new_output("stream", name="stdout", text=f"[{note}]\n") for note in notes]
    if left_out:
        kept.append(nbformat.v4.new_output("stream", name="stdout", text=(
            f"[{left_out} more output(s) of this cell left out of the PDF: it prints {PDF_MAX_TOTAL:,} characters "
            "of outputs at most]\n")))
    return kept


def _output(output) -> tuple[object | None, list[str]]:
    """One output as the PDF shows it, and the notes on what was cut or left out of it."""
    import nbformat
    kind, notes = output.get("output_type"), []
    if kind == "stream":
        text, cut = _cut(_text(output.get("text")))
        notes += [_cut_note(cut, "this output")] if cut else []
        return nbformat.v4.new_output("stream", name="stderr" if output.get("name") == "stderr" else "stdout",
                                      text=text), notes
    if kind == "error":
        traceback = output.get("traceback")
        lines = "\n".join(line for line in traceback if isinstance(line, str)) if isinstance(traceback, list) else ""
        lines, cut = _cut(lines)
        notes += [_cut_note(cut, "this traceback")] if cut else []
        return nbformat.v4.new_output("error", ename=_cut(_text(output.get("ename")))[0],
                                      evalue=_cut(_text(output.get("evalue")))[0], traceback=[lines]), notes
    if kind not in ("display_data", "execute_result"):
        return None, notes
    data, metadata = {}, {}
    given, given_metadata = _dict(output.get("data")) or {}, _dict(output.get("metadata")) or {}
    for mime in _PRINTED:
        value = _text(given.get(mime))
        if mime not in given or not value:
            continue
        if mime.startswith("image/"):
            if len(value) > PDF_MAX_IMAGE:
                notes.append(f"an image of {len(value) * 3 / 4 / 2**20:.1f} MB left out of the PDF: it prints "
                             f"images up to {PDF_MAX_IMAGE * 3 / 4 / 2**20:.1f} MB")
                continue
            if mime != "image/svg+xml" and not _base64(value):
                notes.append(f"an {mime} output left out of the PDF: its data is not base64")
                continue
            if mime in _RASTER:
                sizes = {**given_metadata, **(_dict(given_metadata.get(mime)) or {})}
                numbers = {k: round(sizes[k]) for k in ("width", "height") if _number(sizes.get(k))}
                if numbers:
                    metadata[mime] = numbers
        else:
            value, cut = _cut(value)
            notes += [_cut_note(cut, f"this output's {mime}")] if cut else []
        data[mime] = value
    if not data:
        return None, notes
    if kind == "execute_result":
        count = output.get("execution_count")
        return nbformat.v4.new_output(kind, data=data, metadata=metadata,
                                      execution_count=count if _integer(count) else None), notes
    return nbformat.v4.new_output(kind, data=data, metadata=metadata), notes


def _text(value) -> str:
    """A notebook's text field: a string, or a list of strings (nbformat's multiline form); else ''."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return ""


def _dict(value) -> dict | None:
    return value if isinstance(value, dict) else None


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    """A width or height nbconvert may write into an <img>: a positive number of pixels."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 10_000


def _base64(value) -> bool:
    import re
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9+/=\s]*", value) is not None


def _cut(text: str) -> tuple[str, int]:
    """`text` cut at PDF_MAX_TEXT characters, and how many were cut."""
    return (text, 0) if len(text) <= PDF_MAX_TEXT else (text[:PDF_MAX_TEXT], len(text) - PDF_MAX_TEXT)


def _cut_note(cut: int, what: str) -> str:
    return (f"{cut:,} more characters of {what} cut here: the PDF prints the first {PDF_MAX_TEXT:,} characters "
            "of an output or a cell")


def _size(output) -> int:
    return sum(len(v) for v in (output.get("text"), *(output.get("data") or {}).values(), *output.get("traceback", []))
               if isinstance(v, str))


# HTML from Markdown and outputs --------------------------------------------------------------------

_CLEANER = []  # bleach's Cleaner, made on first use (bleach is imported only for a PDF)


def _clean_html(html) -> str:
    """HTML rendered from a notebook's Markdown or outputs, with only PDF_TAGS and PDF_ATTRIBUTES left,
    links only to the web, images only inline (data:image/...), width and height numbers only; an image
    whose source is anything else (a file's path, a file: or web URL) becomes its alt text."""
    if not _CLEANER:
        import bleach
        from bleach.html5lib_shim import Filter

        class ImagesAsText(Filter):
            """<img> whose source the attributes' check dropped: its alt text, marked as left out."""

            def __iter__(self):
                for token in super().__iter__():
                    if (token["type"] in ("StartTag", "EmptyTag") and token["name"] == "img"
                            and (None, "src") not in token["data"]):
                        alt = token["data"].get((None, "alt"), "")
                        yield {"type": "Characters", "data": f"[image not printed{': ' + alt if alt else ''}: "
                                                             "only images inside the notebook are]"}
                    else:
                        yield token

        _CLEANER.append(bleach.sanitizer.Cleaner(tags=PDF_TAGS, attributes=_allowed_attribute,
                                                 protocols=["http", "https", "mailto", "data"], strip=True,
                                                 filters=[ImagesAsText]))
    return _CLEANER[0].clean(str(html))


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    import re
    if name not in PDF_ATTRIBUTES["*"] + PDF_ATTRIBUTES.get(tag, []):
        return False
    if tag == "img" and name == "src":
        return re.match(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]", value) is not None
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:"))
    if name in ("width", "height", "colspan", "rowspan"):
        return re.fullmatch(r"\d{1,5}%?", value.strip()) is not None
    return True


def written_pdf(notebook: str | Path) -> Path | None:
    """The Submit section's PDF of questions 5 and 6 (with the experiments' table and figures) from
    the notebook as saved, beside it, for the Gradescope assignment graded by hand; says what to do
    when it cannot be made (no browser, on Colab, not saved). Returns the PDF's path, or None."""
    path = Path(notebook)
    if not check_saved(path):
        return None
    dest = path.with_name(f"{path.stem}_written.pdf")
    try:
        questions_pdf(path, dest)
    except PDFError as err:
        print(f"No PDF: {err}")
        return None
    print(f"wrote {dest.name}: upload it to the Gradescope assignment of the written questions and mark the "
          "pages of each question")
    return dest


# ---------------------------------------------------------------------------------------------
# Cells that need the student's code
# ---------------------------------------------------------------------------------------------

class until_written:
    """`with until_written():` runs a cell's work, or, while a function it calls is still the released
    stub (which raises NotImplementedError), skips the rest of the cell and says which one: every
    cell of the notebook runs from the start, before anything is written."""

    def __enter__(self):
        return self

    def __exit__(self, kind, err, traceback):
        if kind is not None and issubclass(kind, NotImplementedError):
            print(f"Skipped until you have written it: {err}")
            return True
        return False


if __name__ == "__main__":  # `python cgcnn_utils.py NOTEBOOK`: the written questions' PDF outside Jupyter
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: python cgcnn_utils.py cgcnn_perovskites.ipynb  (writes the written questions' PDF beside it)")
    sys.exit(0 if written_pdf(sys.argv[1]) else 1)
