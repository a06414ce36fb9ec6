"""The paper table of a comparison as text, Markdown or LaTeX.

One block per group (one block without a group column); a row pair per metric — ``mean ± sd``
and ``median [Q1, Q3]`` — and a column per method. The best mean of each metric (in its
direction) is marked (``*`` in text, bold in Markdown and LaTeX); with a baseline, a method
whose Holm-adjusted p against the baseline is below 0.05 gets a dagger. Every number of one
metric has one format (:func:`volqa.pipeline.summary.number_format`).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from ..pipeline.summary import number_format
from ..schema import METRICS
from .compare import Comparison

__all__ = ["FORMATS", "paper_table"]

FORMATS = ("text", "markdown", "latex")
SIGNIFICANCE = 0.05


def _cells(comp: Comparison, block: pd.DataFrame, pairs: pd.DataFrame
           ) -> tuple[list[str], list[list[str]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Header, rows of cell text, and the (row, column) cells that are best / significant."""
    methods = [m for m in comp.study.methods if m in set(block["method"])]
    header = ["metric", ""] + [str(m) for m in methods]
    rows, best, significant = [], [], []
    baseline = comp.options["baseline"]
    for metric in comp.study.metrics:
        part = block[block["metric"] == metric].set_index("method")
        if part.empty:
            continue
        fmt = number_format(comp.summary.loc[comp.summary["metric"] == metric,
                                             ["mean", "sd", "median", "q1", "q3"]]
                            .to_numpy().ravel())
        arrow = "↑" if METRICS[metric].higher_is_better else "↓"
        unit = f" ({METRICS[metric].unit})" if METRICS[metric].unit else ""
        means = part["mean"].reindex(methods)
        top = means.max() if METRICS[metric].higher_is_better else means.min()
        mean_row = [f"{metric} {arrow}{unit}", "mean ± sd"]
        median_row = ["", "median [IQR]"]
        for j, m in enumerate(methods):
            r = part.loc[m] if m in part.index else None
            if r is None or r["n"] == 0:
                mean_row.append("–")
                median_row.append("–")
                continue
            mean_row.append(f"{fmt(r['mean'])} ± {fmt(r['sd'])}")
            median_row.append(f"{fmt(r['median'])} [{fmt(r['q1'])}, {fmt(r['q3'])}]")
            if not math.isnan(top) and r["mean"] == top:
                best.append((len(rows), j + 2))
            hit = pairs[(pairs["metric"] == metric) & (pairs["method"] == m)
                        & (pairs["versus"] == baseline)] if baseline is not None else []
            if len(hit) and hit["p_holm"].iloc[0] < SIGNIFICANCE:
                significant.append((len(rows), j + 2))
        rows += [mean_row, median_row]
    return header, rows, best, significant


def _mark(text: str, fmt: str, best: bool, significant: bool) -> str:
    if fmt == "html":
        text = html.escape(text)
        text = f"<b>{text}</b>" if best else text
        return text + ("<sup>†</sup>" if significant else "")
    if fmt == "latex":
        text = text.replace("±", r"$\pm$")
        text = rf"\textbf{{{text}}}" if best else text
        return text + (r"$^\dagger$" if significant else "")
    if fmt == "markdown":
        text = f"**{text}**" if best else text
        return text + ("†" if significant else "")
    return text + ("*" if best else "") + ("†" if significant else "")


def _render(header: list[str], rows: list[list[str]], fmt: str) -> list[str]:
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(
            f"<td>{html.escape(c) if i < 2 else c}</td>" for i, c in enumerate(r)) + "</tr>"
            for r in rows)
        return [f'<table class="paper"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                "</table>"]
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return out + ["| " + " | ".join(r) + " |" for r in rows]
    if fmt == "latex":
        out = [r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\hline",
               " & ".join(_tex(h) for h in header) + r" \\", r"\hline"]
        out += [" & ".join(_tex(c) if i < 2 else c for i, c in enumerate(r)) + r" \\"
                for r in rows]
        return out + [r"\hline", r"\end{tabular}"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                       for i, c in enumerate(r)).rstrip() for r in [header, *rows]]
    return lines


def _tex(text: str) -> str:
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("↑", r"$\uparrow$"),
                 ("↓", r"$\downarrow$"), ("±", r"$\pm$")):
        text = text.replace(a, b)
    return text


def paper_table(comp: Comparison, fmt: str = "text") -> str:
    """The paper table (see the module docstring) with a legend line under each block."""
    if fmt not in (*FORMATS, "html"):
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    study, out = comp.study, []
    blocks: list[tuple[Any, pd.DataFrame, pd.DataFrame]] = [(None, comp.summary, comp.pairwise)]
    if study.group is not None:
        blocks = [(g, comp.summary[comp.summary[study.group] == g],
                   comp.pairwise[comp.pairwise[study.group] == g]
                   if len(comp.pairwise) else comp.pairwise)
                  for g in pd.unique(comp.summary[study.group])]
    for group, block, pairs in blocks:
        header, rows, best, significant = _cells(comp, block, pairs)
        for i, row in enumerate(rows):
            for j in range(2, len(row)):
                row[j] = _mark(row[j], fmt, (i, j) in best, (i, j) in significant)
        if group is not None:
            title = f"{study.group} = {group}"
            out.append({"markdown": f"**{title}**\n", "latex": f"% {title}",
                        "html": f"<h4>{html.escape(title)}</h4>"}.get(fmt, title))
        out += _render(header, rows, fmt)
        if fmt == "markdown":
            out.append("")  # a line right under a Markdown table would be read as a row
        legend = _legend(comp, block, fmt)
        out.append(f'<p class="legend">{html.escape(legend)}</p>' if fmt == "html" else legend)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _legend(comp: Comparison, block: pd.DataFrame, fmt: str) -> str:
    n = block.groupby("method")["n"].max()
    counts = ", ".join(f"{m} {int(n[m])}" for m in comp.study.methods if m in n.index)
    best = "*" if fmt == "text" else "bold"
    text = (f"n subjects: {counts}. {best}: best mean (↑ higher / ↓ lower is better)")
    baseline = comp.options["baseline"]
    if baseline is not None:
        test = ("Wilcoxon signed-rank" if comp.options["test"] == "wilcoxon"
                else "paired t-test")
        text += (f"; †: p < {SIGNIFICANCE:g} against {baseline} ({test}, Holm-adjusted "
                 "over the methods of each metric)")
    text += "."
    if comp.study.settings_override:
        text += " Tables scored with different settings: " + "; ".join(
            comp.study.settings_override) + "."
    return _tex(text) if fmt == "latex" else text
