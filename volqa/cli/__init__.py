"""The ``volqa`` command line (the app and its commands are in :mod:`volqa.cli.root`)."""

from __future__ import annotations

from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point (``volqa``).

    Ctrl-C at any moment outside a batch, the imports included, exits 130 without a traceback
    (a running batch handles SIGINT itself: it writes its rows and prints the resume command).
    """
    try:
        from .root import app

        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def __getattr__(name: str) -> Any:
    if name == "app":
        from .root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
