"""The results chart: each metric before and after, and its change with the 95% interval.

One row per metric. On the left, bars of the base model (grey) and the tuned model (blue); on
the right, the change with its interval and a line at zero (a filled dot: significant). Rates
and mean scores are in separate blocks, each with its own axes (points and score units do not
share a scale). Labels are in English: matplotlib's bundled font has no Japanese glyphs.

The PNG is byte-identical for the same metrics: matplotlib's default style (whatever the
user's matplotlibrc), the Agg backend, a fixed size and no "Software" or date metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apto_release.evals.results import Metric

#: The chart's file name: beside the results file by default, and in each repo the cards go to.
CHART_NAME = "eval_chart.png"
BEFORE_COLOUR = "#9e9e9e"
AFTER_COLOUR = "#1f77b4"
BETTER_COLOUR = "#2e7d32"
WORSE_COLOUR = "#c62828"
_BAR = 0.36


def plot_evaluation(metrics: Sequence[Metric], dest: str | Path) -> Path:
    """Write the chart of ``metrics`` (the overall rows of a results file) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from apto_release.io import atomic_path

    if not metrics:
        raise ValueError("no metrics to chart")
    blocks = [group for unit in ("%", "") if (group := [m for m in metrics if m.unit == unit])]
    with plt.style.context("default"):
        fig, axes = plt.subplots(
            len(blocks), 2, figsize=(9, 1.3 + 0.55 * len(metrics)), dpi=100, squeeze=False,
            gridspec_kw={"height_ratios": [len(b) for b in blocks], "width_ratios": [3, 2]},
        )
        for group, (left, right) in zip(blocks, axes):
            _values(left, group)
            _changes(right, group)
        axes[0][0].set_title("Before and after tuning", fontsize=10)
        axes[0][1].set_title("Change, with its 95% interval", fontsize=10)
        handles, labels = axes[0][0].get_legend_handles_labels()
        for label, face in (("significant change", "black"), ("not significant", "white")):
            handles.append(Line2D([], [], marker="o", color="black", markerfacecolor=face, linestyle=""))
            labels.append(label)
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))  # room for the legend below
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
        plt.close(fig)
    return Path(dest)


def _values(ax, metrics: Sequence[Metric]) -> None:
    """Bars of the value before and after, per metric (top to bottom in file order)."""
    unit = metrics[0].unit
    rows = range(len(metrics))
    befores, afters = [m.before for m in metrics], [m.after for m in metrics]
    ax.barh([y - _BAR / 2 for y in rows], befores, _BAR, color=BEFORE_COLOUR, label="base model")
    ax.barh([y + _BAR / 2 for y in rows], afters, _BAR, color=AFTER_COLOUR, label="tuned model")
    digits = 1 if unit == "%" else 2
    for y, before, after in zip(rows, befores, afters):
        ax.text(before, y - _BAR / 2, f" {before:.{digits}f}{unit}", va="center", fontsize=7)
        ax.text(after, y + _BAR / 2, f" {after:.{digits}f}{unit}", va="center", fontsize=7)
    top = 100 if unit == "%" else (5 if max(befores + afters) <= 5 else 10)  # the 1-5 or the 1-10 scale
    ax.set_xlim(0, top * 1.15)
    ax.set_yticks(list(rows), [m.label + (" (%)" if unit == "%" else "") for m in metrics], fontsize=8)
    ax.set_ylim(len(metrics) - 0.5, -0.5)  # the first metric on top, rows level with the right panel
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def _changes(ax, metrics: Sequence[Metric]) -> None:
    """The change per metric with its interval: green when it goes the good way, red otherwise."""
    unit = metrics[0].unit
    for y, m in enumerate(metrics):
        colour = {True: BETTER_COLOUR, False: WORSE_COLOUR, None: BEFORE_COLOUR}[m.improved]
        if m.ci95:
            ax.plot(m.ci95, [y, y], color=colour, linewidth=2, solid_capstyle="butt")
        ax.plot([m.change], [y], "o", color=colour, markerfacecolor=colour if m.significant else "white", markersize=6)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_ylim(len(metrics) - 0.5, -0.5)
    ax.set_yticks([])
    ax.set_xlabel("percentage points" if unit == "%" else "score", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
