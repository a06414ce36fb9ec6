#!/usr/bin/env python
"""Fit uniform noise to a target by maximising SSIM and save the steps as an animated GIF.

The same command as ``volqa demo fit`` (volqa/cli/demo.py); run ``--help`` for the options::

    python scripts/ssim_fit_demo.py --out docs/fit_demo_2d.gif
    python scripts/ssim_fit_demo.py --dims 3 --every 10 --out docs/fit_demo_3d.gif
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

# Importable from a source checkout that was not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volqa.cli.demo import fit_command  # noqa: E402


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(fit_command)
    app()


if __name__ == "__main__":
    main()
