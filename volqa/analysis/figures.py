"""The report's figures (matplotlib, Agg backend): distributions, paired lines, difference plots,
rank blob plots. Each function returns a ``matplotlib.figure.Figure``; :func:`png_data` turns one
into an inline ``data:`` URI and :func:`save` writes it as PNG and SVG for a paper."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..schema import METRICS
from .compare import Comparison
from .stats import values_by_method

__all__ = ["distributions", "differences", "blobs", "png_data", "save"]

COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
          "#666666")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _label(metric: str) -> str:
    unit = METRICS[metric].unit
    arrow = "higher" if METRICS[metric].higher_is_better else "lower"
    return f"{metric}{f' ({unit})' if unit else ''}, {arrow} is better"


def _rows(comp: Comparison, group: Any):
    frame = comp.study.frame
    return frame if comp.study.group is None else frame[frame[comp.study.group] == group]


def distributions(comp: Comparison, group: Any, metric: str) -> Any:
    """Box plot per method with every subject as a point, and grey lines joining each
    subject's values across methods (paired)."""
    plt = _plt()
    study = comp.study
    table = values_by_method(_rows(comp, group), metric, study.by, study.subject,
                             study.methods)
    finite = table.where(np.isfinite(table))
    methods = list(finite.columns)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(methods), 3.6), layout="constrained")
    x = np.arange(len(methods))
    ax.plot(x, finite.to_numpy().T, color="0.75", lw=0.7, zorder=1)
    data = [finite[m].dropna().to_numpy() for m in methods]
    ax.boxplot([d if d.size else [np.nan] for d in data], positions=x, widths=0.5,
               showfliers=False, medianprops={"color": "black"}, zorder=2)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        ax.scatter(i + rng.uniform(-0.08, 0.08, d.size), d, s=12, zorder=3,
                   color=COLORS[i % len(COLORS)], edgecolor="white", linewidth=0.4)
    ax.set_xticks(x, [str(m) for m in methods])
    ax.set_ylabel(_label(metric))
    ax.set_title(f"{metric}: subjects per {study.by}" + _where(comp, group), fontsize=10)
    ax.grid(axis="y", color="0.92")
    return fig


def differences(comp: Comparison, group: Any, metric: str, baseline: Any) -> Any:
    """Bland–Altman plots of each method against ``baseline``: the mean of the two values
    against their difference (method - baseline), with the bias and the 95 % limits of
    agreement (bias ± 1.96 sd of the differences)."""
    plt = _plt()
    study = comp.study
    table = values_by_method(_rows(comp, group), metric, study.by, study.subject,
                             study.methods)
    others = [m for m in table.columns if m != baseline]
    fig, axes = plt.subplots(1, len(others), figsize=(3.4 * len(others), 3.2),
                             layout="constrained", squeeze=False)
    for ax, method, color in zip(axes[0], others, COLORS[1:] * 4, strict=False):
        both = table[[method, baseline]]
        both = both[np.isfinite(both).all(axis=1)]
        mean = both.mean(axis=1).to_numpy()
        diff = (both[method] - both[baseline]).to_numpy()
        ax.scatter(mean, diff, s=14, color=color, edgecolor="white", linewidth=0.4)
        if diff.size:
            bias = diff.mean()
            sd = diff.std(ddof=1) if diff.size > 1 else 0.0
            for y, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                ax.axhline(y, color="0.3", ls=style, lw=0.9)
            ax.text(0.02, 0.97, f"bias {bias:.3g}\nLoA ±{1.96 * sd:.3g}", va="top",
                    transform=ax.transAxes, fontsize=8)
        ax.axhline(0, color="0.8", lw=0.6)
        ax.set_xlabel(f"mean of {method} and {baseline}", fontsize=9)
        ax.set_ylabel(f"{method} - {baseline}", fontsize=9)
        ax.set_title(f"{metric}: {method} vs {baseline}" + _where(comp, group), fontsize=9)
    return fig


def blobs(comp: Comparison, group: Any, metric: str) -> Any | None:
    """challengeR's blob plot for each ranking scheme: a disc per method and rank whose area
    is the share of bootstrap replicates giving that rank, the observed rank as a cross, the
    median and 95 % interval of the bootstrap ranks as a line. None when not ranked."""
    if (group, metric) not in comp.rankings:
        return None
    plt = _plt()
    methods, rankings, n = comp.rankings[(group, metric)]
    m = len(methods)
    fig, axes = plt.subplots(1, len(rankings), figsize=(2.2 + 1.7 * m, 3.2),
                             layout="constrained", sharey=True)
    for ax, r in zip(np.atleast_1d(axes), rankings, strict=True):
        order = np.argsort(r.rank, kind="stable")
        shares = r.rank_shares()
        for x, i in enumerate(order):
            for k in range(m):
                if shares[i, k] > 0:
                    ax.scatter(x, k + 1, s=600 * shares[i, k], color=COLORS[i % len(COLORS)],
                               alpha=0.75, edgecolor="none")
            lo, mid, hi = np.percentile(r.boot_ranks[:, i], [2.5, 50, 97.5])
            ax.plot([x, x], [lo, hi], color="black", lw=1)
            ax.scatter(x, mid, color="black", s=8)
            ax.scatter(x, r.rank[i], marker="x", color="black", s=40)
        ax.set_xticks(range(m), [str(methods[i]) for i in order], rotation=30, ha="right")
        ax.set_yticks(range(1, m + 1))
        ax.set_ylim(m + 0.6, 0.4)
        ax.set_title(r.scheme, fontsize=9)
        ax.grid(color="0.93")
    np.atleast_1d(axes)[0].set_ylabel("rank (1 = best)")
    fig.suptitle(f"{metric}: rank stability, {n} subjects, {r.boot_ranks.shape[0]} bootstrap "
                 "replicates" + _where(comp, group), fontsize=10)
    return fig


def _where(comp: Comparison, group: Any) -> str:
    return "" if comp.study.group is None else f" ({comp.study.group} {group})"


def png_data(fig: Any, dpi: int = 110) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (and the figure closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def save(fig: Any, folder: Path, name: str) -> list[Path]:
    """Write the figure as ``name.png`` (200 dpi) and ``name.svg`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    return paths
