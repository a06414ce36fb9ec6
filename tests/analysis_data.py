"""Result tables for the analysis tests, written by volqa's own table writer (not collected).

Writing the rows directly (instead of scoring volumes) keeps the tests fast and lets each
test choose the metric values it needs; the files have the schema, the types and the
metadata of ``volqa score``'s output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from volqa import __version__
from volqa.io.tables import build_table, write_tables
from volqa.schema import output_columns
from volqa.settings import Settings

METRICS = ("ssim", "psnr", "mae")


def write_results(folder: Path, rows: Sequence[Mapping[str, Any]], *,
                  settings: Settings | None = None, covariates: Mapping[str, str] | None = None
                  ) -> tuple[Path, Path]:
    """``results.csv`` and ``results.parquet`` in ``folder`` holding ``rows``.

    Each row gives ``subject_id``, ``method`` and metric values (None: empty); ``status`` is
    ``ok`` unless the row says otherwise. ``covariates`` adds typed manifest columns.
    """
    settings = (settings or Settings()).for_manifest(has_mask=False)
    settings = Settings.from_options(settings, metrics=",".join(METRICS))
    manifest = {"subject_id": "string", "reference": "string", "test": "string",
                "method": "string", **(covariates or {})}
    columns = output_columns(manifest, settings.metrics or ())
    full = []
    for r in rows:
        row = {"reference": f"gt/{r['subject_id']}.nii.gz",
               "test": f"{r['method']}/{r['subject_id']}.nii.gz", "status": "ok",
               "volqa_version": __version__, **settings.columns(), **r}
        if row["status"] != "ok":
            row.setdefault("error", f"subject {r['subject_id']!r}: broken")
            row.update({m: None for m in METRICS})
        full.append(row)
    meta = {"settings": settings.as_dict(), "volqa_version": __version__,
            "manifest": str(folder / "manifest.csv"), "command": "volqa score manifest.csv"}
    folder.mkdir(parents=True, exist_ok=True)
    return write_tables(build_table(full, columns, meta), folder)


def study_rows(values: Mapping[str, Sequence[float | None]], metric: str = "ssim",
               **other: Sequence[float | None]) -> list[dict[str, Any]]:
    """Rows from ``{method: [value per subject]}`` (subjects ``s00``, ``s01``, ...)."""
    rows = []
    for method, vals in values.items():
        for i, v in enumerate(vals):
            row = {"subject_id": f"s{i:02d}", "method": method, metric: v}
            for name, per_method in other.items():
                row[name] = per_method[method][i]  # type: ignore[index]
            rows.append(row)
    return rows
