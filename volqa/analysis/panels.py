"""The worst subjects of each method as orthogonal slices: reference, test, |difference| and the
SSIM map, through the voxel of the lowest local SSIM.

The volumes are read again from the paths in the table (relative paths resolve against the
manifest's folder recorded in the table's metadata) and prepared exactly as they were scored:
:class:`volqa.pipeline.RowScorer` reads, aligns and normalises them under the run's recorded
:class:`~volqa.settings.Settings`. The SSIM map is the one ``--save-maps`` wrote when the table
names it, else it is computed for these subjects only (on the CPU). A subject that cannot be
read again gets a panel that says why; the report goes on.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..schema import METRICS
from ..settings import Settings
from .compare import Comparison

__all__ = ["Panel", "worst_rows", "slice_panels"]


@dataclass
class Panel:
    """One subject of one method: a figure, or why there is none."""

    method: Any
    subject: Any
    value: float
    figure: Any = None
    problem: str | None = None


def worst_rows(comp: Comparison, metric: str, n: int) -> list[tuple[Any, Any, float, int]]:
    """``(method, subject, value, frame row)`` of the ``n`` worst ok rows per method by
    ``metric`` (lowest when higher is better), methods in order."""
    frame, study = comp.study.frame, comp.study
    out = []
    values = frame[metric].astype(float)
    for method in study.methods:
        mine = frame[(frame[study.by] == method) & frame["_ok"] & np.isfinite(values)]
        key = mine[metric].astype(float)
        order = key.sort_values(ascending=METRICS[metric].higher_is_better, kind="stable")
        for idx in order.index[:n]:
            out.append((method, frame.at[idx, study.subject], float(key[idx]), idx))
    return out


def _resolve(text: Any, table: Any) -> str | None:
    """A path from the table, relative paths against the recorded manifest's folder (else
    the table's folder)."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text == "":
        return None
    path = os.path.expanduser(str(text))
    if os.path.isabs(path.split("#")[0]):
        return path
    manifest = table.meta.get("manifest")
    base = Path(manifest).parent if manifest else table.path.parent
    return str(base / path)


def _volumes(comp: Comparison, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """(reference, test, SSIM map, mask or None, voxel spacing) of a frame row, prepared as
    scored, the map in the volume's shape."""
    from ..io.nifti import read_nifti
    from ..pipeline.row import RowJob, RowScorer, padded_map

    row = comp.study.frame.loc[idx]
    table = comp.study.tables[int(row["_table"])]
    if not table.settings:
        raise ValueError(f"{table.path} records no settings (no Parquet metadata or "
                         "settings.json), so the volumes cannot be normalised as scored")
    settings = Settings.from_dict(table.settings)
    job = RowJob(0, str(row[comp.study.subject]), _resolve(row.get("reference"), table),
                 _resolve(row.get("test"), table), _resolve(row.get("mask"), table))
    if job.reference is None or job.test is None:
        raise ValueError("the table has no reference/test paths")
    scorer = RowScorer()
    prepared = scorer.prepare(job, settings)
    saved = row.get("ssim_map")
    if isinstance(saved, str) and saved:  # NaN where the window does not fit: read as is
        map_path = table.path.parent / saved
        smap = read_nifti(map_path, str(map_path)).array
    else:
        result = scorer.engine_metrics(prepared, settings, "cpu", None, keep_map=True)
        smap = padded_map(result.map, prepared.ref.shape)
    return prepared.ref, prepared.test, smap, prepared.mask, prepared.reference.spacing


def _figure(ref: np.ndarray, test: np.ndarray, smap: np.ndarray, mask: Any, spacing: Any,
            title: str) -> Any:
    from .figures import _plt

    plt = _plt()
    inside = smap if mask is None or not np.isfinite(smap[mask]).any() else np.where(
        mask, smap, np.nan)
    where = np.unravel_index(np.nanargmin(inside), smap.shape)
    diff = np.abs(test.astype(np.float64) - ref)
    lo, hi = float(np.min(ref)), float(np.max(ref))
    columns = (("reference", ref, "gray", (lo, hi)), ("test", test, "gray", (lo, hi)),
               ("|difference|", diff, "magma", (0, float(np.max(diff)) or 1)),
               ("SSIM map", smap, "viridis", (float(np.nanmin(smap)), 1.0)))
    fig, axes = plt.subplots(3, 4, figsize=(9.6, 8.0), layout="constrained")
    for r, axis in enumerate((2, 1, 0)):  # slices across voxel axes k, j, i
        rest = [a for a in range(3) if a != axis]
        for c, (name, vol, cmap, (vmin, vmax)) in enumerate(columns):
            ax = axes[r, c]
            cut = np.take(vol, where[axis], axis=axis)
            image = ax.imshow(cut.T, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                              interpolation="nearest",
                              aspect=float(spacing[rest[1]]) / float(spacing[rest[0]]))
            ax.scatter(where[rest[0]], where[rest[1]], marker="+", color="red", s=60, lw=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=10)
            if r == 2 and c >= 2:
                fig.colorbar(image, ax=axes[:, c], location="bottom", shrink=0.8)
            if c == 0:
                ax.set_ylabel(f"voxel axis {'ijk'[axis]} = {where[axis]}", fontsize=9)
    region = "inside the mask " if inside is not smap else ""
    fig.suptitle(f"{title}; lowest local SSIM {region}{inside[where]:.3f} at voxel "
                 f"{tuple(int(w) for w in where)}", fontsize=10)
    return fig


def slice_panels(comp: Comparison, metric: str, n: int, *, progress: bool = False
                 ) -> list[Panel]:
    """The panels of the ``n`` worst subjects per method by ``metric``; a progress bar on
    stderr while the volumes are read."""
    from tqdm.auto import tqdm

    rows = worst_rows(comp, metric, n)
    panels = []
    with tqdm(rows, desc="reading volumes", unit="subject", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for method, subject, value, idx in bar:
            bar.set_postfix_str(f"{subject} {method}", refresh=False)
            panel = Panel(method, subject, value)
            try:
                ref, test, smap, mask, spacing = _volumes(comp, idx)
                panel.figure = _figure(ref, test, smap, mask, spacing,
                                       f"{subject}, {method}: {metric} {value:.4g}")
            except Exception as exc:  # noqa: BLE001 - the report says why, and goes on
                panel.problem = str(exc) or type(exc).__name__
            panels.append(panel)
    return panels
