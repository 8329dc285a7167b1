"""The support module's figures tell their series apart without colour (issue 28): each variant of
Part 5's loss plot and each polymorph of the parity plots has a marker of its own as well as a
colour of a colour-blind-safe palette."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import cgcnn_utils  # noqa: E402

VARIANTS = ["conv=gated", "conv=shared", "conv=none", "M=4", "M=8", "no batch norm", "ReLU", "max pooling"]
POLYMORPHS = ["cubic", "orthorhombic", "rhombohedral", "tetragonal"]


def _distinct(styles: list[tuple]) -> bool:
    return len(set(styles)) == len(styles)


def test_the_first_eight_series_differ_in_marker_and_colour_and_neighbours_in_line_style():
    styles = [cgcnn_utils.series_style(k) for k in range(8)]
    assert _distinct([s["marker"] for s in styles]) and _distinct([s["color"] for s in styles])
    assert all(a["linestyle"] != b["linestyle"] for a, b in zip(styles, styles[1:]))


def test_each_variant_of_the_loss_plot_has_its_own_marker_colour_and_legend_entry():
    history = {"train_loss": [1.0 / (e + 1) for e in range(30)]}
    fig = cgcnn_utils.plot_histories({name: [history, history] for name in VARIANTS})
    ax = fig.axes[0]
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert list(legend) == VARIANTS
    markers = [h.get_marker() for h in legend.values()]
    colours = [mcolors.to_hex(h.get_color()) for h in legend.values()]
    assert _distinct(markers) and all(m not in ("", "None", None) for m in markers), markers
    assert _distinct(colours) and set(colours) <= {c.lower() for c in cgcnn_utils.PALETTE}, colours
    assert len(ax.lines) == 2 * len(VARIANTS), "one line per seed"
    plt.close(fig)


@pytest.mark.parametrize("plot", ["parity", "differences"])
def test_each_polymorph_of_the_scatter_plots_has_its_own_marker(plot):
    ids = [f"X{k}O3_{p}" for k in range(3) for p in POLYMORPHS]
    groups = {i: i.split("_")[1] for i in ids}
    targets = {i: -2.0 - 0.01 * n for n, i in enumerate(ids)}
    pred = {i: t + 0.02 for i, t in targets.items()}
    if plot == "parity":
        fig = cgcnn_utils.plot_parity(pred, targets, groups)
    else:
        diffs = cgcnn_utils.polymorph_differences(pred, targets, {i: i.split("_")[0] for i in ids})
        fig = cgcnn_utils.plot_polymorph_differences(diffs, groups)
    ax = fig.axes[0]
    shown = {c.get_label(): c for c in ax.collections}
    groups_shown = sorted({groups[i] for i in (diffs if plot != "parity" else ids)})
    assert sorted(shown) == groups_shown
    paths = [tuple(map(tuple, c.get_paths()[0].vertices.round(3))) for c in shown.values()]
    assert _distinct(paths), "two polymorphs drawn with the same marker"
    plt.close(fig)
