"""The ``volqa`` command line: one Typer app, one module per command.

Each command module imports only Typer and :mod:`.options` at the top and its heavy libraries
(torch, pandas, Pillow) inside the command, so ``volqa --help`` stays fast. Messages go to
stderr; a user mistake never prints a traceback. Help is rendered as plain text (no Rich
type column), so flags read ``--resample`` rather than ``--resample <bool>``.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from typer.core import TyperCommand

__all__ = ["app"]


class Command(TyperCommand):
    """A command whose usage line writes arguments plainly (``volqa score [OPTIONS]
    MANIFEST``; Typer wraps required arguments in braces) and whose ``--metrics`` help lists
    the metric registry as it is when the help is shown."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        pieces = super().collect_usage_pieces(ctx)
        return [re.sub(r"^\{(.*)\}(\.\.\.)?$", r"\1\2", p) for p in pieces]

    def format_help(self, ctx: typer.Context, formatter) -> None:  # type: ignore[override]
        from .options import metrics_help

        for param in self.params:
            if param.name == "metrics":
                param.help = metrics_help()
        super().format_help(ctx, formatter)


app = typer.Typer(
    name="volqa",
    help="Reference-based quality metrics (3D SSIM, PSNR, NRMSE, MAE, MSE) for reconstructed "
    "medical volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"volqa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
    = False,
) -> None:
    """Reference-based quality metrics for reconstructed medical volumes."""


def _register() -> None:
    from . import compare, demo, merge, report, score

    app.command("score", cls=Command, epilog=score.EPILOG)(score.score)
    app.command("compare", cls=Command, epilog=compare.EPILOG)(compare.compare)
    app.command("report", cls=Command, epilog=report.EPILOG)(report.report)
    app.command("merge", cls=Command, epilog=merge.EPILOG)(merge.merge)
    app.add_typer(demo.demo_app, name="demo")


_register()
