"""One row: read -> align -> normalise -> metrics -> fields. No batch, no globals, picklable.

:class:`RowScorer` scores a :class:`RowJob` under a :class:`~volqa.Settings` and an
:class:`~volqa.Execution` in two stages, so that an executor can overlap them:

- :meth:`RowScorer.prepare` reads the volumes (:mod:`volqa.io`), puts test and mask on the
  reference's grid (:mod:`.geometry`), normalises (:mod:`.normalize`) and computes the
  CPU metrics of the registry;
- :meth:`RowScorer.finish` computes the engine metrics on the chosen device under the
  out-of-memory policy (:mod:`.devices`) and writes the SSIM map when asked.

Both raise :class:`RowFailure`, whose message names the subject, the file and the cause;
:meth:`RowScorer.score` turns a failure into an ``error`` row. A volqa error
(:class:`~volqa.errors.VolqaError`) gives its message; any other exception is a bug and is
recorded with its type name. Subclass :class:`RowScorer` and override
:meth:`~RowScorer.engine_metrics` to observe or replace the engine (tests do). An executor may
pass a :class:`~.cache.ReadCache`, through which references and masks are read (a reference
listed for several rows is then read once).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import SettingsError, VolqaError
from ..execution import Execution
from ..io.volume import Volume
from ..schema import METRICS
from ..settings import Settings
from .cache import SHARED_ROLES, ReadCache
from .devices import is_oom, run_with_oom_fallback
from .memory import header_bytes
from .protocols import intensity_notes, make_context, prepare
from .regions import RegionScores, label_values, region_metrics, region_rows, score_regions

__all__ = ["RowJob", "RowResult", "Prepared", "EngineResult", "RowFailure", "WorkerLost",
           "RowScorer", "padded_map"]

Source = str | os.PathLike[str] | Volume


@dataclass(frozen=True)
class RowJob:
    """One pair to score (what an executor sends to a worker).

    Attributes
    ----------
    index : int
        Position in the manifest (0 for a single pair).
    subject_id : str
    reference, test : str, PathLike or Volume
    mask : str, PathLike, Volume or None
    map_path : str or None
        Where to write the SSIM map (``--save-maps``); None writes none.
    max_volume_bytes : int or None
        Refuse, from its header, a volume whose float32 array would be larger.
    solo : bool
        Run this row with nothing else in flight (no read-ahead around it): a row that was
        in flight when an earlier run was killed.
    labels : str, PathLike, Volume or None
        An integer label map: every metric is also scored per label (:mod:`.regions`).
    """

    index: int
    subject_id: str
    reference: Source
    test: Source
    mask: Source | None = None
    map_path: str | None = None
    max_volume_bytes: int | None = None
    solo: bool = False
    labels: Source | None = None

    def files(self) -> dict[str, str]:
        """``role -> path`` for messages."""
        def name(v: Any) -> str:
            if isinstance(v, Volume):
                return v.source
            return os.fspath(v) if isinstance(v, str | os.PathLike) else f"<{type(v).__name__}>"
        return {role: name(v) for role, v in (("reference", self.reference), ("test", self.test),
                                               ("mask", self.mask), ("labels", self.labels))
                if v is not None}


@dataclass
class RowResult:
    """The computed fields of one row (status, error, metrics, row facts, notes, ...)."""

    index: int
    fields: dict[str, Any]
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fields.get("status") == "ok"


@dataclass
class Prepared:
    """A row after :meth:`RowScorer.prepare`: the normalised pair and what is known so far."""

    job: RowJob
    reference: Volume  # its geometry is needed for --save-maps
    ref: np.ndarray
    test: np.ndarray
    mask: np.ndarray | None
    data_range: float
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    labels: np.ndarray | None = None  # the label map on the reference grid
    label_values: np.ndarray | None = None  # its non-zero labels
    regions: RegionScores | None = None  # the CPU metrics per label


@dataclass
class EngineResult:
    """What :meth:`RowScorer.engine_metrics` returns."""

    values: dict[str, float | None]
    notes: list[str] = field(default_factory=list)
    map: np.ndarray | None = None  # float32 SSIM map (engine shape) when asked for
    regions: RegionScores | None = None  # the engine metrics per label


class RowFailure(Exception):
    """A row could not be scored; ``str()`` is the row's message, ``cause`` the original error.

    ``fields`` and ``notes`` hold what was known before the failure (shape, spacing, ...).
    """

    def __init__(self, message: str, cause: BaseException, fields: Mapping[str, Any] = (),
                 notes: list[str] | None = None, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.cause = cause
        self.fields = dict(fields)
        self.notes = list(notes or [])
        self.seconds = seconds


class WorkerLost(VolqaError):
    """The process or machine scoring a row died (killed, out of memory, crashed)."""


def _message(job: RowJob, role: str | None, exc: BaseException) -> str:
    files = job.files()
    if isinstance(exc, VolqaError):
        msg = str(exc)
    elif is_oom(exc):
        detail = str(exc).strip() or "MemoryError"
        msg = (f"out of memory ({detail}); free memory, use fewer --workers, or lower "
               "--max-volume-memory so that volumes this large are refused before reading")
    else:
        msg = f"{type(exc).__name__}: {exc}"
    head = f"subject {job.subject_id!r}"
    if role is not None and files.get(role) and files[role] not in msg:
        head += f", {role} {files[role]!r}"
    elif role is None and not any(p in msg for p in files.values() if p):
        head += " (" + ", ".join(f"{r} {p!r}" for r, p in files.items() if p) + ")"
    return f"{head}: {msg}"


def _read(source: Source, role: str, max_bytes: int | None,
          cache: ReadCache | None = None) -> Volume:
    from ..io.readers import read_volume

    if isinstance(source, Volume):
        return source
    if isinstance(source, str | os.PathLike):
        if cache is not None and role in SHARED_ROLES:
            return cache.get(source, lambda: read_volume(source, max_bytes=max_bytes))
        return read_volume(source, max_bytes=max_bytes)
    raise SettingsError(f"{role} must be a path or a volqa.io.Volume; got {type(source).__name__}.")


def _same_voxels(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays of one grid are equal, compared in full only when a sample of every
    4099th voxel is (almost never, for a reconstruction and its reference)."""
    if a.shape != b.shape:
        return False
    a, b = a.reshape(-1), b.reshape(-1)
    return bool(np.array_equal(a[::4099], b[::4099]) and np.array_equal(a, b))


def _selected(settings: Settings) -> list[Any]:
    if settings.metrics is None:
        raise SettingsError("the metric set is not resolved: use Settings.for_manifest()")
    return [METRICS[m] for m in settings.metrics]


class RowScorer:
    """Scores rows; stateless, so one instance serves every thread or worker process."""

    def score(self, job: RowJob, settings: Settings, execution: Execution,
              cache: ReadCache | None = None) -> RowResult:
        """Both stages; a failure becomes an ``error`` row (never raises for a bad row)."""
        try:
            return self.finish(self.prepare(job, settings, cache), settings, execution)
        except RowFailure as failure:
            return self.failed(job, failure)

    def lost(self, job: RowJob, why: str, host: str | None) -> RowResult:
        """The ``error`` row of a job whose worker died: ``why`` says how (the executor
        knows it, the row does not); ``host`` is the dead worker's machine, if known."""
        cause = WorkerLost(why)
        result = self.failed(job, RowFailure(_message(job, None, cause), cause))
        result.fields["host"] = host
        return result

    def failed(self, job: RowJob, failure: RowFailure) -> RowResult:
        """The ``error`` row for a failure (no metric, not even those already computed)."""
        fields = {k: v for k, v in failure.fields.items() if k not in METRICS}
        fields.update(status="error", error=str(failure), seconds=failure.seconds,
                      host=socket.gethostname(),
                      notes="; ".join(failure.notes) or None, volqa_version=__version__)
        return RowResult(job.index, fields)

    def prepare(self, job: RowJob, settings: Settings, cache: ReadCache | None = None
                ) -> Prepared:
        """Read, align, normalise and compute the CPU metrics of one row (the reference and
        the mask through ``cache`` when one is given).

        Raises
        ------
        RowFailure
        """
        from .geometry import align_to_reference, align_volume
        from .masks import binarize_mask

        t0 = time.perf_counter()
        fields: dict[str, Any] = {}
        notes: list[str] = []
        role: str | None = "reference"
        try:
            ref_v = _read(job.reference, "reference", job.max_volume_bytes, cache)
            fields["shape"] = "x".join(str(n) for n in ref_v.shape)
            fields["spacing"] = "x".join(f"{s:g}" for s in ref_v.spacing)
            role = "test"
            test_v = _read(job.test, "test", job.max_volume_bytes)
            mask_v = None
            if job.mask is not None:
                role = "mask"
                mask_v = _read(job.mask, "mask", job.max_volume_bytes, cache)
            labels_v = None
            if job.labels is not None:
                role = "labels"
                labels_v = _read(job.labels, "labels", job.max_volume_bytes, cache)
            role = None
            test_v, mask_v, alignment = align_to_reference(
                ref_v, test_v, mask_v, resample=settings.resample,
                min_coverage=settings.min_coverage)
            reoriented, resampled = alignment.reoriented, alignment.resampled
            if labels_v is not None:
                role = "labels"
                labels_v, how, moved = align_volume(ref_v, labels_v, "labels",
                                                    resample=settings.resample)
                reoriented = "; ".join(r for r in (reoriented, how) if r)
                resampled = resampled or moved
                labels, values = labels_v.array, label_values(labels_v.array,
                                                              source=labels_v.source)
                if not values.size:
                    notes.append("labels: no non-zero label, so no region rows")
            if _same_voxels(ref_v.array, test_v.array):
                notes.append("test: voxel for voxel the reference itself (a copy of it?), so "
                             "it scores as a perfect reconstruction")
            fields["reoriented"] = reoriented or None
            fields["resampled"] = resampled
            fields["coverage"] = alignment.coverage
            for r, v in (("reference", ref_v), ("test", test_v), ("mask", mask_v),
                         ("labels", labels_v)):
                if v is not None:
                    notes.extend(f"{r}: {n}" for n in v.notes)
            mask = None
            if mask_v is not None:
                role = "mask"
                mask, note = binarize_mask(mask_v.array, source=mask_v.source)
                if note:
                    notes.append(note)
            role = "reference"
            notes.extend(intensity_notes(ref_v.array, test_v.array, settings))
            norm, raw = prepare(ref_v.array, test_v.array, settings)
            role = None
            fields["data_range"] = norm.data_range
            fields.update(norm.fields())
            ctx = make_context(norm.reference, norm.test, mask, norm.data_range, settings,
                               raw=raw)
            fields.update(ctx.compute(m for m in _selected(settings) if not m.engine))
            notes.extend(ctx.notes)
            regions = None
            if labels_v is not None:
                role = "labels"
                regions = score_regions(ctx, labels, values,
                                        [m for m in region_metrics(settings.metrics or ())
                                         if not m.engine])
                role = None
        except Exception as exc:  # noqa: BLE001 - every failure becomes the row's error
            raise RowFailure(_message(job, role, exc), exc, fields, notes,
                             time.perf_counter() - t0) from exc
        prepared = Prepared(job, ref_v, norm.reference, norm.test, mask, norm.data_range, fields,
                            notes, time.perf_counter() - t0)
        if labels_v is not None:
            prepared.labels, prepared.label_values, prepared.regions = labels, values, regions
        return prepared

    def finish(self, p: Prepared, settings: Settings, execution: Execution) -> RowResult:
        """Engine metrics under the out-of-memory policy, then the map (``ok`` row).

        Raises
        ------
        RowFailure
        """
        t0 = time.perf_counter()
        keep_map = p.job.map_path is not None
        fields = dict(p.fields)
        notes = list(p.notes)
        try:
            result, device, retries = run_with_oom_fallback(
                lambda dev, budget: self.engine_metrics(p, settings, dev, budget, keep_map),
                execution.resolved_device(), execution.max_memory)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            raise RowFailure(_message(p.job, None, exc), exc, fields, notes,
                             p.seconds + time.perf_counter() - t0) from exc
        notes += retries + result.notes
        fields.update(result.values, status="ok", error=None, device=device,
                      host=socket.gethostname())
        if keep_map and result.map is not None:
            try:
                _save_map(result.map, p.reference, Path(p.job.map_path))  # type: ignore[arg-type]
                fields["ssim_map"] = p.job.map_path
            except OSError as exc:  # the metrics stand; only the map is missing
                notes.append(f"SSIM map not saved to {p.job.map_path}: "
                             f"{exc.strerror or exc}")
        fields["seconds"] = p.seconds + (time.perf_counter() - t0)
        fields["notes"] = "; ".join(notes) or None
        fields["volqa_version"] = __version__
        rows = []
        if p.label_values is not None:
            rows = region_rows(p.label_values, region_metrics(settings.metrics or ()),
                               *(r for r in (p.regions, result.regions) if r is not None))
        return RowResult(p.job.index, fields, rows)

    def memory_estimate(self, job: RowJob) -> int:
        """Bytes the prepared row holds, from the headers: 2 x its volumes' float32 arrays
        (the volumes and their normalised copies); 0 for what cannot be estimated (the row
        will fail when read)."""
        total = 0
        for source in (job.reference, job.test, job.mask):
            if isinstance(source, Volume):
                total += source.array.nbytes
            elif isinstance(source, str | os.PathLike):
                total += header_bytes(source) or 0
        return 2 * total

    def engine_metrics(self, p: Prepared, settings: Settings, device: str,
                       max_memory: int | None, keep_map: bool) -> EngineResult:
        """The registry's engine metrics of a prepared pair on ``device`` (one attempt)."""
        ctx = make_context(p.ref, p.test, p.mask, p.data_range, settings, device=device,
                           max_memory=max_memory, keep_map=keep_map)
        values = ctx.compute(m for m in _selected(settings) if m.engine)
        regions = None
        if p.labels is not None:
            regions = score_regions(ctx, p.labels, p.label_values,  # type: ignore[arg-type]
                                    [m for m in region_metrics(settings.metrics or ())
                                     if m.engine])
        return EngineResult(values, ctx.notes, ctx.ssim_map() if keep_map else None, regions)


def padded_map(smap: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An SSIM map (engine shape) in an array of the volume's ``shape``, NaN where the
    window does not fit (what ``--save-maps`` writes)."""
    from ..engine.tiling import map_region

    full = np.full(shape, np.nan, dtype=np.float32)
    full[map_region(shape, smap.shape)] = smap
    return full


def _save_map(smap: np.ndarray, reference: Volume, path: Path) -> None:
    """Write the map NaN-padded to the reference shape, in the reference's geometry."""
    from ..io.nifti import write_nifti

    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(padded_map(smap, reference.shape), reference, path)
