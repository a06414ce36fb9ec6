"""The progress bar of a batch and how it names rows.

A row is named by its subject; when a subject has several rows (one per method, say), by the
subject and the covariates that tell its rows apart (``sub-01 method=unet``), else by the
shortest end of the test path that does (``sub-01 unet/s01.nii.gz``). Everything volqa shows
on the terminal goes through :func:`printable`, so a subject id or a path cannot move the
cursor, retitle the window or clear the screen.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..io.manifest import PATH_COLUMNS, Manifest, ManifestRow
from ..io.paths import split_series

__all__ = ["printable", "row_labels", "distinct_tails", "Progress"]

_MAX_LABEL = 60


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters (C0, DEL, C1, and other non-printable characters such
    as bidirectional overrides) shown as escapes, e.g. ``\\x1b``; ``keep_newlines`` leaves
    line breaks (``\\n``) in place for messages of several lines."""
    keep = " \n" if keep_newlines else " "
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def row_labels(manifest: Manifest) -> dict[int, str]:
    """A short, terminal-safe name for every row (see the module docstring)."""
    by_subject: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in manifest.rows:
        by_subject[row.subject_id].append(row)
    covariates = [c for c in manifest.columns if c not in ("subject_id", *PATH_COLUMNS)]
    labels = {}
    for subject, rows in by_subject.items():
        differ = [c for c in covariates if len({r.values[c] for r in rows}) > 1]
        tails = distinct_tails([split_series(r.test)[0] for r in rows])
        for row, tail in zip(rows, tails, strict=True):
            label = subject
            if len(rows) > 1:
                label += " " + (" ".join(f"{c}={row.values[c]}" for c in differ) or tail)
            label = printable(label)
            labels[row.index] = label if len(label) <= _MAX_LABEL else label[:_MAX_LABEL - 1] + "…"
    return labels


def distinct_tails(paths: Sequence[str]) -> list[str]:
    """The fewest trailing path components that tell ``paths`` apart (all of them if none)."""
    parts = [os.path.normpath(p).split(os.sep) for p in paths]
    for k in range(1, max(len(p) for p in parts) + 1):
        tails = ["/".join(p[-k:]) for p in parts]
        if len(set(tails)) == len(tails):
            return tails
    return ["/".join(p) for p in parts]


class Progress:
    """A tqdm bar on stderr (disabled when ``enabled`` is False)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar: Any = tqdm(total=total, initial=done, file=sys.stderr, disable=not enabled,
                             unit="row", dynamic_ncols=True, leave=True)
        self.failed = 0

    def start(self, label: str) -> None:
        self.bar.set_description_str(label)

    def done(self, ok: bool) -> None:
        self.failed += not ok
        self.bar.update(1)
        self.bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        self.bar.close()


def warn(messages: Iterable[str]) -> None:
    """One ``volqa: warning: ...`` line per message on stderr (escaped)."""
    for m in messages:
        sys.stderr.write(f"volqa: warning: {printable(m)}\n")
