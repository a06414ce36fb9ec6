"""``volqa merge``: a thin shell over :func:`volqa.pipeline.merge.merge_parts`.

Exit codes: 0 merged, every row ok; 1 merged, some rows failed; 2 the parts cannot be merged
(other manifest or settings, missing or duplicated rows; nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EPILOG = ("Exit status: 0 merged and every row ok; 1 merged, some rows failed; 2 the parts "
          "cannot be merged (other manifest or settings, missing or duplicated rows), nothing "
          "written.")

PartsArg = Annotated[list[Path], typer.Argument(
    metavar="DIR", help="Output folders of `volqa score --shard I/N` runs.", exists=True,
    file_okay=False,
    show_default=False)]
MergedOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="Folder for the merged results.csv, results.parquet, settings.json "
    "and journal.jsonl.", file_okay=False, show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace volqa's files in a non-empty --out.")]


def merge(parts: PartsArg, out: MergedOpt, overwrite: OverwriteOpt = False) -> None:
    """Join the output folders of shards into one table, in manifest order."""
    from ..errors import SettingsError
    from ..pipeline.merge import merge_parts
    from ..pipeline.summary import summarize
    from ..schema import METRICS

    try:
        table = merge_parts(parts, out, overwrite=overwrite)
    except SettingsError as exc:
        typer.echo(f"volqa: {exc}", err=True)
        raise typer.Exit(2) from None
    rows = table.to_pylist()
    typer.echo(summarize(rows, [m for m in METRICS.names() if m in table.column_names],
                         total=len(rows)))
    typer.echo(f"merged {len(parts)} part(s) into {out / 'results.csv'} and "
               f"{out / 'results.parquet'}")
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)
