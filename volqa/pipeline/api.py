"""The Python API of the pipeline: :func:`score_pair` and :func:`score_manifest`.

Both take the run's settings either as objects (``settings=Settings(...)``,
``execution=Execution(...)``) or as keyword options (``win_size=7, device="cpu"``; the names
of :meth:`volqa.Settings.from_options` and :meth:`volqa.Execution.from_options`), or both:
options then override the objects. An unknown option name is a ``TypeError``.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..errors import OutputError, SettingsError
from ..execution import Execution
from ..io.journal import JOURNAL_NAME
from ..io.lock import OutDirLock
from ..io.manifest import Manifest, preflight, read_manifest
from ..io.outdir import (
    SETTINGS_NAME,
    prepare_out_dir,
    read_json,
    refuse_overwriting_inputs,
    write_json,
)
from ..schema import output_columns
from ..settings import SETTINGS_FORMAT, Settings
from .batch import Batch
from .executors import Executor
from .memory import volume_limit
from .progress import printable, warn
from .resume import journal_records, plan_resume
from .row import RowFailure, RowJob, RowScorer
from .shards import resolve_shard, select_shard, shard_record

__all__ = ["score_pair", "score_manifest"]


def score_pair(
    reference: Any,
    test: Any,
    mask: Any = None,
    *,
    labels: Any = None,
    settings: Settings | None = None,
    execution: Execution | None = None,
    scorer: RowScorer | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score one reconstruction against its reference.

    Parameters
    ----------
    reference, test : str, PathLike or volqa.io.Volume
        Ground truth and reconstruction (NIfTI, MHA/MHD/NRRD, DICOM file or folder,
        ``"folder#<SeriesInstanceUID>"``).
    mask : str, PathLike or Volume, optional
        Binary or label mask (inside = non-zero) in the reference's geometry.
    labels : str, PathLike or Volume, optional
        Integer label map in the reference's geometry: the result then has a ``regions``
        key, one dict per non-zero label (``region``, ``n_voxels``, ``status``, ``note`` and
        each metric over the region; see :mod:`volqa.pipeline.regions`).
    settings, execution : Settings, Execution, optional
        The run's settings (default: volqa's defaults).
    scorer : RowScorer, optional
        Replaces the row scorer (to observe or fake the engine).
    **options
        Settings and Execution options, e.g. ``metrics="ssim,psnr"``, ``normalize="none"``,
        ``data_range=4024``, ``preset="skimage"``, ``win_size=7``, ``ssim_2d=0``,
        ``resample=True``, ``device="cpu"``, ``max_memory="512M"``,
        ``protocol="fastmri"``. Default metrics: ``ssim, psnr, nrmse, mae, mse`` plus
        ``ssim_masked`` when there is a mask (a protocol: its own set).

    Returns
    -------
    dict
        The metrics, ``shape``, ``spacing`` (mm), ``data_range``, the normalisation map
        (``norm_offset``, ``norm_scale``, ``norm_clip_low``, ``norm_clip_high``), the setting
        columns (:data:`volqa.schema.SETTING_COLUMNS`: ``normalize``, ``ssim_window``,
        ``ssim_win_size``, ...), ``reoriented``, ``resampled``, ``device``, ``seconds``,
        ``notes``, ``volqa_version``.

    Raises
    ------
    SettingsError
        Invalid options.
    InputError, GeometryError
        A volume cannot be read or used; the message names the file.
    """
    s_opts, e_opts = split_options(options)
    s = Settings.from_options(settings, **s_opts).for_manifest(mask is not None)
    ex = Execution.from_options(execution, **e_opts)
    ex.resolved_device()
    scorer = scorer or RowScorer()
    job = RowJob(0, "(pair)", reference, test, mask, max_volume_bytes=volume_limit(ex),
                 labels=labels)
    try:
        result = scorer.finish(scorer.prepare(job, s), s, ex)
    except RowFailure as failure:
        raise failure.cause from None
    fields = result.fields
    row = s.columns()
    row.update(fields)
    keys = [c.name for c in output_columns([], s.metrics or (),
                                           protocol=s.protocol is not None)
            if c.name not in ("status", "error", "ssim_map")]
    out = {k: row.get(k) for k in keys if k in row}
    if labels is not None:
        out["regions"] = result.regions
    return out


def score_manifest(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    execution: Execution | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    strict: bool = False,
    progress: bool = False,
    scorer: RowScorer | None = None,
    executor: Executor | str | None = None,
    command: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Score every row of a manifest; one output row per manifest row, in manifest order.

    Parameters
    ----------
    path : str or PathLike
        The manifest CSV (see :mod:`volqa.io.manifest`).
    out : str or PathLike, optional
        Output folder for ``settings.json``, ``journal.jsonl``, ``results.csv``,
        ``results.parquet`` and ``maps/``. Without it nothing is written (and ``resume`` and
        ``save_maps`` are unavailable).
    settings, execution, **options
        As in :func:`score_pair`. ``ssim_masked`` is in the default metrics when the manifest
        has a ``mask`` column (rows without a mask get an empty value); ``save_maps=True``
        writes each SSIM map to ``out/maps/`` as NIfTI in the reference's geometry, NaN where
        the window does not fit; ``workers`` read the next rows in background threads;
        ``max_volume_memory`` refuses, from its header, a volume larger than that.
        ``executor="processes"`` (``jobs=N``) scores rows in N worker processes,
        ``executor="dask"`` (``scheduler="tcp://host:8786"`` or ``"local:N"``) on a Dask
        cluster; ``threads`` sets the torch threads of each worker (default: the cores
        divided among the workers). ``shard="I/N"`` scores only the rows whose index is I
        modulo N (see :mod:`volqa.pipeline.shards`; join the parts with
        :func:`volqa.pipeline.merge.merge_parts`).
    resume : bool, default False
        Continue the batch in ``out``: the settings (and the shard) come from
        ``out/settings.json``, options given here override them (rows whose settings then
        differ are computed again, and the report says so); rows of ``out/journal.jsonl``
        that finished ``ok`` with the same subject, inputs and settings are reused.
    overwrite : bool, default False
        Start again in a non-empty ``out`` (deletes volqa's own files there only).
    fail_fast : bool, default False
        Stop after the first failed row (the finished rows are still written).
    strict : bool, default False
        A missing input file, or a test that is its reference file, is a manifest error
        (nothing scored) instead of a failed row or a warning.
    progress : bool, default False
        Progress bar on stderr. Warnings (missing files, a test that is its reference
        file, journal lines ignored, what resume reuses) go to stderr either way.
    scorer : RowScorer, optional
        Replaces the row scorer.
    executor : {"threads", "processes", "dask"} or Executor, optional
        Where rows run (the Execution option), or an executor object that replaces it.
    command : str, optional
        The command line that started the run, recorded in ``settings.json`` and the Parquet
        metadata (the CLI passes its own).

    Returns
    -------
    pandas.DataFrame
        The finished rows; ``status`` is ``"ok"`` or ``"error"``. ``attrs["volqa"]`` holds
        the run's metadata (settings, counts, what resume reused). With a ``labels`` column,
        ``attrs["regions"]`` holds the region table (also written as ``regions.csv`` and
        ``regions.parquet``).

    Raises
    ------
    ManifestError
        The manifest is invalid (nothing scored, nothing written).
    SettingsError
        Invalid options; ``out`` is not empty and neither ``resume`` nor ``overwrite``;
        ``out`` is locked by another run (:class:`~volqa.io.lock.OutputLockedError`); an
        output would replace or be written into an input.
    OutputError
        The output folder could not be written (the journal stays valid: resume later).
    BatchInterrupted
        SIGINT/SIGTERM; the finished rows were written first.
    """
    manifest = read_manifest(path, strict=strict)
    if isinstance(executor, str):
        options, executor = {**options, "executor": executor}, None
    s_opts, e_opts = split_options(options)
    if out is None and (resume or overwrite or s_opts.get("save_maps")):
        raise SettingsError("resume, overwrite and save_maps need an output folder (out=...).")
    stored_meta = read_json(Path(out) / SETTINGS_NAME) if resume and out is not None else None
    stored = None if stored_meta is None else _stored_settings(Path(out), stored_meta)
    s = Settings.from_options(settings or stored, **s_opts).for_manifest(manifest.has_mask)
    ex = Execution.from_options(execution, **e_opts)
    ex = replace(ex, shard=resolve_shard(ex.shard, stored_meta, str(out)))
    if ex.executor != "dask":  # a cluster's workers resolve the device on their side
        ex.resolved_device()
    part = select_shard(manifest, ex.shard)
    run = (len(manifest), fail_fast, progress, scorer, executor, command)
    if out is None:
        return _run(part, s, ex, None, [], None, *run)
    refuse_overwriting_inputs(out, _inputs(part))
    lock = OutDirLock(out)  # acquired by prepare_out_dir once the folder exists
    try:
        out_dir = prepare_out_dir(out, resume=resume, overwrite=overwrite, lock=lock)
        records, skipped = journal_records(out_dir / JOURNAL_NAME) if resume else ([], [])
        changed = s.differences(stored) if stored is not None else []
        return _run(part, s, ex, out_dir, records, (changed, skipped) if resume else None,
                    *run)
    finally:
        lock.release()


def _run(part: Manifest, s: Settings, ex: Execution, out_dir: Path | None,
         records: list[dict[str, Any]], resumed: tuple[list[str], list[str]] | None,
         manifest_rows: int, fail_fast: bool, progress: bool, scorer: RowScorer | None,
         executor: Executor | None, command: str | None) -> pd.DataFrame:
    """Plan (what resume reuses), record the settings, report, run the batch on ``part``
    (the manifest of ``manifest_rows`` rows, or the shard of it that this run scores)."""
    plan = plan_resume(part.rows, records, s.hash(), hash_inputs=out_dir is not None)
    changed, skipped = resumed or ([], [])
    meta = {
        "format": SETTINGS_FORMAT, "volqa_version": __version__,
        "manifest": str(part.path.resolve()), "command": command,
        "manifest_sha256": hashlib.sha256(part.path.read_bytes()).hexdigest(),
        "manifest_rows": manifest_rows, "shard": shard_record(ex.shard),
        "settings": s.as_dict(), "settings_hash": s.hash(), "execution": ex.as_dict(),
        "resume": {"reused": len(plan.reused), "computed": len(plan.todo),
                   "killed": len(plan.killed), "reasons": dict(plan.reasons),
                   "settings_changed": changed, "journal_lines_skipped": skipped}
        if resumed is not None else None,
    }
    if out_dir is not None:
        try:
            write_json(out_dir / SETTINGS_NAME, {k: v for k, v in meta.items() if k != "resume"})
        except OSError as exc:
            raise OutputError(f"cannot write to output folder {str(out_dir)!r} "
                              f"({SETTINGS_NAME}: {exc.strerror or exc}); free space or fix "
                              "the folder's permissions, or choose another --out") from None
    # warnings whether or not a progress bar is shown (--no-progress must not hide them)
    warn(preflight(part))
    if resumed is not None:
        warn(f"{JOURNAL_NAME}: {why}; the line is ignored" for why in skipped)
        why = f"; settings changed: {', '.join(changed)}" if changed else ""
        sys.stderr.write(f"volqa: resuming in {printable(str(out_dir))}: "
                         f"{plan.describe()}{printable(why)}\n")
    batch = Batch(part, s, ex, plan, out_dir, fail_fast, progress, scorer, executor, meta)
    return batch.run()


def _inputs(manifest: Manifest) -> list[tuple[str, str]]:
    """(what, path) of the manifest and every file it lists, for the overwrite check."""
    found = [("the manifest", str(manifest.path))]
    for row in manifest.rows:
        found += [(f"subject {row.subject_id!r}: {role}", getattr(row, role))
                  for role in ("reference", "test", "mask", "labels") if getattr(row, role)]
    return found


def _stored_settings(out_dir: Path, data: dict[str, Any]) -> Settings:
    """The Settings recorded in ``settings.json`` (``data``)."""
    if data.get("format") != SETTINGS_FORMAT or "settings" not in data:
        raise SettingsError(f"{str(out_dir / SETTINGS_NAME)!r} was written by another volqa "
                            f"version ({data.get('volqa_version')}); use --overwrite or "
                            "another --out")
    return Settings.from_dict(data["settings"])


def _option_names(method: Any) -> tuple[str, ...]:
    params = inspect.signature(method).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


SETTINGS_OPTIONS = _option_names(Settings.from_options)
EXECUTION_OPTIONS = _option_names(Execution.from_options)


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sort keyword options into (Settings options, Execution options).

    Raises
    ------
    TypeError
        An unknown name, with the closest known one.
    """
    known = SETTINGS_OPTIONS + EXECUTION_OPTIONS
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"unexpected keyword argument {name!r}{hint} (options: "
                            f"{', '.join(known)})")
    return ({k: v for k, v in options.items() if k in SETTINGS_OPTIONS},
            {k: v for k, v in options.items() if k in EXECUTION_OPTIONS})
