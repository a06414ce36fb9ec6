"""``volqa compare``: a thin shell over :func:`volqa.analysis.compare`.

Exit codes: 0 done; 2 usage or input error (not a volqa table, a missing column or metric, one
method only, no subject in common, tables scored with different settings, ...).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .options import (
    AllowSettingsOpt,
    BaselineOpt,
    ByOpt,
    CompareMetricsOpt,
    CompareOutOpt,
    FormatOpt,
    GroupOpt,
    NBootOpt,
    ResultsArg,
    SeedOpt,
    SubjectOpt,
    TableFormat,
    Test,
    TestOpt,
    command_line,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis import Comparison

EPILOG = ("Exit status: 0 done; 2 usage or input error (not a volqa table, unknown column or "
          "metric, one method only, no subject in common, different settings).")


def compare(
    ctx: typer.Context,
    results: ResultsArg,
    by: ByOpt = "method",
    subject: SubjectOpt = "subject_id",
    metrics: CompareMetricsOpt = None,
    baseline: BaselineOpt = None,
    group: GroupOpt = None,
    test: TestOpt = Test("wilcoxon"),
    n_boot: NBootOpt = 1000,
    seed: SeedOpt = 0,
    allow_different_settings: AllowSettingsOpt = False,
    out: CompareOutOpt = Path("volqa_compare"),
    fmt: FormatOpt = TableFormat("text"),
) -> None:
    """Compare methods on volqa result tables: descriptives, paired tests, rankings; print the
    paper table and write summary, pairwise, ranking (CSV + Parquet) and long.parquet to OUT."""
    from ..analysis.tables import paper_table
    from ..errors import VolqaError

    try:
        comparison = run(ctx, results, by, subject, metrics, baseline, group, test, n_boot,
                         seed, allow_different_settings)
        written = comparison.write(out)
    except VolqaError as exc:
        typer.echo(f"volqa: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(paper_table(comparison, fmt.value), nl=False)
    for note in comparison.notes:
        typer.echo(f"note: {note}")
    names = sorted({p.name for p in written})
    typer.echo(f"wrote {', '.join(names)} to {out}")


def run(ctx: typer.Context, results: list[Path], by: str, subject: str, metrics: str | None,
        baseline: str | None, group: str | None, test: Enum, n_boot: int, seed: int,
        allow_different_settings: bool) -> Comparison:
    """:func:`volqa.analysis.compare` with the options of ``compare`` and ``report``; the
    command line is recorded in the options."""
    from ..analysis import compare as run_compare

    comparison = run_compare(
        list(results), by=by, subject=subject,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        baseline=baseline, group=group, test=test.value, n_boot=n_boot, seed=seed,
        allow_different_settings=allow_different_settings)
    comparison.options["command"] = command_line(ctx)
    return comparison
