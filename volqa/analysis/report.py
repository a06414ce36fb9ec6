"""``volqa report``: one self-contained HTML file from a comparison.

Sections: provenance (volqa versions, every scoring setting, the manifests and command lines),
the paper table and the pairwise tests, per metric the distributions with paired lines and the
difference (Bland–Altman) plots against the baseline, the rankings with their bootstrap
stability (blob plots), the failed rows with their errors, and the worst subjects of each
method as slices (:mod:`.panels`). Figures are inline PNG (``data:`` URIs) and the styles are
in the page, so it opens offline and loads nothing; ``figures`` also writes every figure as PNG
and SVG. The page is rendered by jinja2 from ``templates/report.html.j2`` (autoescaped).
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_write
from ..pipeline.summary import number_format
from .compare import Comparison
from .figures import blobs, differences, distributions, png_data, save
from .panels import slice_panels
from .tables import paper_table

__all__ = ["write_report"]

#: Columns of text (left-aligned); numbers are right-aligned.
_TEXT = {"metric", "method", "versus", "scheme", "left out", "subject", "error"}


def _html(frame: pd.DataFrame, text: set[str] = _TEXT) -> str:
    """A table of text cells (already formatted), escaped."""
    if frame.empty:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=text" if c in text else ""}>{html.escape(str(v))}</td>'
                         for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
        for row in frame.itertuples(index=False))
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _p(v: float) -> str:
    return "" if v != v else (f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}")


def _pairwise(comp: Comparison) -> str:
    """The pairwise table for reading: differences with their intervals in the metric's
    number format, p and Holm-adjusted p, effect size, wins/ties/losses, who is left out."""
    rows = []
    for _, r in comp.pairwise.iterrows():
        part = comp.pairwise[comp.pairwise["metric"] == r["metric"]]
        fmt = number_format(part[["mean_diff", "median_diff"]].abs().to_numpy().ravel())
        ci = lambda a, b: f"[{fmt(a)}, {fmt(b)}]"  # noqa: E731
        rows.append({
            **({comp.study.group: r[comp.study.group]} if comp.study.group else {}),
            "metric": r["metric"], "method": r["method"], "versus": r["versus"], "n": r["n"],
            "mean diff [95 % CI]": f"{fmt(r['mean_diff'])} "
            + ci(r["mean_diff_ci_low"], r["mean_diff_ci_high"]),
            "median diff [95 % CI]": f"{fmt(r['median_diff'])} "
            + ci(r["median_diff_ci_low"], r["median_diff_ci_high"]),
            "p": _p(r["p"]), "p Holm": _p(r["p_holm"]),
            r["effect"]: "" if r["effect_size"] != r["effect_size"] else
            f"{r['effect_size']:.3f}",
            "wins/ties/ losses": f"{r['wins']}/{r['ties']}/{r['losses']}",
            "left out": r["left_out"] or "",
        })  # fmt: skip
    return _html(pd.DataFrame(rows).fillna(""), _TEXT | {comp.study.group})


def _ranking(comp: Comparison) -> str:
    rows = []
    for _, r in comp.ranking.iterrows():
        rows.append({
            **({comp.study.group: r[comp.study.group]} if comp.study.group else {}),
            "metric": r["metric"], "scheme": r["scheme"], "method": r["method"],
            "rank": r["rank"], "ranked value": f"{r['value']:.4g}",
            "bootstrap rank: median [95 %]": f"{r['boot_rank_median']:g} "
            f"[{r['boot_rank_low']:g}, {r['boot_rank_high']:g}]",
            "share rank 1": f"{r['share_rank_1']:.2f}",
            "Kendall τ median": f"{r['kendall_tau_median']:.2f}",
        })  # fmt: skip
    return _html(pd.DataFrame(rows), _TEXT | {comp.study.group})


def _failed(comp: Comparison) -> str:
    study = comp.study
    bad = study.frame[~study.frame["_ok"]]
    if bad.empty:
        return ""
    cols = [c for c in (study.group, study.subject, study.by, "error")
            if c is not None and c in bad.columns]
    shown = bad[cols].astype(object).fillna("")
    return _html(shown, _TEXT | set(cols))


def _settings(table: Any) -> list[tuple[str, str]]:
    flat = []
    for key, value in (table.settings or {}).items():
        if isinstance(value, dict):
            flat += [(f"{key}.{k}", str(v)) for k, v in value.items()]
        else:
            flat.append((key, str(value)))
    return flat


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(p) for p in parts if p is not None))


def write_report(comp: Comparison, out: str | os.PathLike[str], *,
                 figures: str | os.PathLike[str] | None = None, baseline: Any = None,
                 worst: int = 2, progress: bool = False) -> Path:
    """Write the report of ``comp`` to the HTML file ``out``.

    Parameters
    ----------
    comp : Comparison
    out : path
        The HTML file (written atomically; its folder must exist).
    figures : path, optional
        Also write every figure as PNG and SVG into this folder.
    baseline : optional
        Method of the difference plots (default: the comparison's baseline, else the first
        method).
    worst : int, default 2
        Worst subjects per method shown as slices (0: none); ranked by ``ssim`` when it was
        compared, else by the first metric.
    progress : bool
        A progress bar on stderr while the volumes are read.
    """
    import jinja2

    path = Path(out)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not "
                         "exist; create it or choose another --out.")
    study = comp.study
    baseline = baseline if baseline is not None else (comp.options["baseline"]
                                                      if comp.options["baseline"] is not None
                                                      else study.methods[0])
    fig_dir = Path(figures) if figures is not None else None
    written: list[Path] = []

    def emit(fig: Any, *name: Any) -> dict[str, str]:
        if fig_dir is not None:
            written.extend(save(fig, fig_dir, _slug(*name)))
        return {"src": png_data(fig), "alt": " ".join(str(n) for n in name if n is not None)}

    metrics, blob_figs = [], []
    for metric in study.metrics:
        figs = []
        for group, _ in study.groups():
            figs.append(emit(distributions(comp, group, metric), "distribution", metric, group))
            figs.append(emit(differences(comp, group, metric, baseline), "difference", metric,
                             group))
            blob = blobs(comp, group, metric)
            if blob is not None:
                blob_figs.append(emit(blob, "ranks", metric, group))
        metrics.append({"name": metric, "direction": study.direction(metric), "figures": figs})
    worst_metric = "ssim" if "ssim" in study.metrics else study.metrics[0]
    panels = []
    for p in (slice_panels(comp, worst_metric, worst, progress=progress) if worst else []):
        src = emit(p.figure, "worst", p.method, p.subject)["src"] if p.figure else None
        panels.append({"method": p.method, "subject": p.subject, "value": p.value, "src": src,
                       "problem": p.problem})
    o = comp.options
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("volqa.analysis").joinpath(
        "templates/report.html.j2").read_text(encoding="utf-8"))
    page = template.render(
        title=", ".join(str(m) for m in study.methods), version=__version__,
        when=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), by=study.by,
        subject=study.subject, group=study.group,
        override="; ".join(study.settings_override), command=o.get("command") or "(Python API)",
        statistics=(f"{'Wilcoxon signed-rank' if o['test'] == 'wilcoxon' else 'paired t'} "
                    f"test, Holm adjustment, 95 % BCa bootstrap intervals ({o['n_boot']} "
                    f"replicates, seed {o['seed']}), baseline {o['baseline']}"),
        inputs=[{"path": str(t.path), "rows": t.rows, "settings": _settings(t),
                 **{k: t.meta.get(k) for k in ("volqa_version", "manifest", "command")}}
                for t in study.tables],
        paper=paper_table(comp, "html"),
        pairwise=_pairwise(comp), ranking=_ranking(comp),
        notes=comp.notes, metrics=metrics, blobs=blob_figs, alpha=o["alpha"],
        n_boot=o["n_boot"], failed=_failed(comp), panels=panels, worst_n=worst,
        worst_metric=worst_metric,
    )
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path
