"""Shards: a deterministic partition of a manifest's rows for job arrays.

Shard ``I/N`` (``0 <= I < N``) holds the rows whose 0-based manifest index is I modulo N:
every N-th row, as nnU-Net's ``-part_id I -num_parts N``. Every row is in exactly one shard,
shards differ in size by at most one row, and the partition depends only on the row count, so
N array tasks (``--shard $SLURM_ARRAY_TASK_ID/N``) cover the manifest without talking to each
other. Each shard writes a complete output folder of its own (results, journal,
``settings.json`` recording the shard, the manifest's content hash and its row count), which
``--resume`` continues on its own and :func:`volqa.pipeline.merge.merge_parts` joins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..errors import SettingsError
from ..io.manifest import Manifest

__all__ = ["shard_indices", "select_shard", "shard_record", "stored_shard", "resolve_shard"]


def shard_indices(total: int, shard: tuple[int, int] | None) -> range:
    """The manifest indices of ``shard`` among ``total`` rows (all of them for None)."""
    if shard is None:
        return range(total)
    i, n = shard
    return range(i, total, n)


def select_shard(manifest: Manifest, shard: tuple[int, int] | None) -> Manifest:
    """The manifest restricted to one shard (rows keep their manifest index)."""
    if shard is None:
        return manifest
    keep = set(shard_indices(len(manifest), shard))
    return replace(manifest, rows=tuple(r for r in manifest.rows if r.index in keep))


def shard_record(shard: tuple[int, int] | None) -> dict[str, int] | None:
    """``{"index": I, "count": N}`` for ``settings.json`` (None: the whole manifest)."""
    return None if shard is None else {"index": shard[0], "count": shard[1]}


def stored_shard(meta: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The shard recorded in a ``settings.json`` (None: the whole manifest, or no record)."""
    rec = (meta or {}).get("shard")
    return None if not rec else (int(rec["index"]), int(rec["count"]))


def resolve_shard(given: tuple[int, int] | None, meta: Mapping[str, Any] | None,
                  out: str) -> tuple[int, int] | None:
    """The shard of a resumed run: the one ``OUT/settings.json`` records.

    Raises
    ------
    SettingsError
        ``given`` differs from the recorded one (an output folder holds one shard).
    """
    if meta is None:
        return given
    stored = stored_shard(meta)
    if given is not None and given != stored:
        def name(s: tuple[int, int] | None) -> str:
            return "the whole manifest" if s is None else f"shard {s[0]}/{s[1]}"
        raise SettingsError(
            f"{out!r} holds the results of {name(stored)}, but --shard {given[0]}/{given[1]} "
            "was given; resume a folder with the shard it started with (omit --shard to take "
            "it from settings.json), or give another --out."
        )
    return stored
