"""``volqa report``: a thin shell over :func:`volqa.analysis.compare` and
:func:`volqa.analysis.report.write_report`.

Exit codes: 0 written; 2 usage or input error (as ``volqa compare``, or an unusable --out).
"""

from __future__ import annotations

import typer

from .options import (
    AllowSettingsOpt,
    BaselineOpt,
    ByOpt,
    CompareMetricsOpt,
    FiguresOpt,
    GroupOpt,
    NBootOpt,
    ProgressOpt,
    ReportOutOpt,
    ResultsArg,
    SeedOpt,
    SubjectOpt,
    Test,
    TestOpt,
    WorstOpt,
)

EPILOG = ("Exit status: 0 written; 2 usage or input error (not a volqa table, unknown column "
          "or metric, one method only, no subject in common, different settings, unusable "
          "--out).")


def report(
    ctx: typer.Context,
    results: ResultsArg,
    out: ReportOutOpt,
    by: ByOpt = "method",
    subject: SubjectOpt = "subject_id",
    metrics: CompareMetricsOpt = None,
    baseline: BaselineOpt = None,
    group: GroupOpt = None,
    test: TestOpt = Test("wilcoxon"),
    n_boot: NBootOpt = 1000,
    seed: SeedOpt = 0,
    allow_different_settings: AllowSettingsOpt = False,
    figures: FiguresOpt = None,
    worst: WorstOpt = 2,
    progress: ProgressOpt = True,
) -> None:
    """Write one self-contained HTML report (tables, figures, rankings, failed rows, the worst
    subjects as slices) comparing the methods of volqa result tables."""
    from ..analysis.report import write_report
    from ..errors import VolqaError
    from .compare import run

    try:
        comparison = run(ctx, results, by, subject, metrics, baseline, group, test, n_boot,
                         seed, allow_different_settings)
        path = write_report(comparison, out, figures=figures, worst=worst, progress=progress)
    except VolqaError as exc:
        typer.echo(f"volqa: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}" + (f" and the figures to {figures}" if figures else ""))
