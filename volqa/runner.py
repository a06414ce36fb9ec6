"""Score reference/test pairs: one pair (:func:`score_pair`) or a manifest (:func:`score_manifest`).

Data flow of one row: read the volumes (:mod:`volqa.io`) -> put test and mask on the
reference's grid (:mod:`volqa.geometry`) -> normalise intensities (:mod:`volqa.normalize`) ->
voxel-wise metrics (:mod:`volqa.metrics`) and SSIM (the :mod:`volqa.ssim` engine) -> one
output row (:mod:`volqa.results`).

Execution of a manifest
-----------------------
- Reading, aligning, normalising and the voxel-wise metrics of the next ``workers`` rows run in
  background threads while SSIM of the current row runs in the calling thread; rows are still
  finished and written in manifest order.
- A row that fails gets ``status="error"`` and an ``error`` naming the subject, the file and the
  cause; the batch goes on (``fail_fast=True`` stops after the first failed row). A volqa error
  (:class:`~volqa.errors.VolqaError`) gives its message; any other exception is recorded with
  its type name, since it is a bug.
- A listed file that does not exist fails its row (``strict=True`` makes it a manifest error).
- CUDA out of memory: the row is retried on the same device with half the slab budget, then on
  the CPU; the ``device`` column records where it ran and ``notes`` says why.
- Every finished row is appended to ``journal.jsonl`` in the output folder and fsynced;
  ``resume=True`` reuses rows that finished ``ok`` with the same subject, input files (path,
  size and modification time) and settings; rows that failed, or whose inputs or settings
  changed, are computed again.
- SIGINT/SIGTERM: the first signal lets the current row finish, then the tables are written and
  :class:`BatchInterrupted` is raised; a second signal drops the current row at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, SettingsError, VolqaError
from .manifest import Manifest, ManifestRow, missing_files, read_manifest, split_series
from .metrics import binarize_mask, error_stats
from .normalize import (
    DEFAULT_NORMALIZE,
    DEFAULT_PERCENTILES,
    check_normalize_settings,
    normalize_pair,
)
from .results import (
    ALL_METRICS,
    JOURNAL_NAME,
    MAPS_DIR,
    Journal,
    build_table,
    load_journal,
    output_columns,
    prepare_out_dir,
    write_tables,
)

__all__ = [
    "score_pair",
    "score_manifest",
    "BatchInterrupted",
    "DEFAULT_METRICS",
    "parse_memory",
]

#: Metrics computed when ``metrics`` is not given (masked ones only where there is a mask).
DEFAULT_METRICS: tuple[str, ...] = ("ssim", "ssim_masked", "psnr", "nrmse", "mae", "mse")
DEVICES = ("auto", "cpu", "cuda")
_MASKED = tuple(m for m in ALL_METRICS if m.endswith("_masked"))
_MEMORY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


class BatchInterrupted(KeyboardInterrupt):
    """A manifest run stopped by SIGINT or SIGTERM after writing the rows it had finished.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``); exit status ``128 + signum``.
    results : pandas.DataFrame or None
        The finished rows (also written to the output folder, if any).
    done, total : int
        Finished rows and rows in the manifest.
    """

    def __init__(self, signum: int, results: pd.DataFrame | None, done: int, total: int):
        super().__init__(f"interrupted by signal {signum} after {done} of {total} rows")
        self.signum = signum
        self.results = results
        self.done = done
        self.total = total


def parse_memory(value: int | str | None) -> int | None:
    """Bytes from an int or a size such as ``"512M"``, ``"2GiB"``, ``"1.5g"`` (powers of 1024).

    Raises
    ------
    SettingsError
        Not a positive size.
    """
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        n = int(value)
    else:
        m = _MEMORY.match(str(value))
        if not m:
            raise SettingsError(
                f"max_memory must be a byte count or a size like 512M or 2G; got {value!r}."
            )
        n = int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))
    if n <= 0:
        raise SettingsError(f"max_memory must be > 0 bytes; got {value!r}.")
    return n


# --------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class _Config:
    """Validated settings of a run (everything that decides the numbers, plus execution)."""

    metrics: tuple[str, ...]
    normalize: str
    data_range: float | None
    percentiles: tuple[float, float]
    intensity_window: tuple[float, float] | None
    ssim: Any  # volqa.ssim.SSIMSettings
    ssim_2d: int | None
    resample: bool
    device: str  # resolved: "cpu" or "cuda"
    max_memory: int | None
    save_maps: bool = False

    def settings(self) -> dict[str, Any]:
        """The settings that decide the output values (hashed for --resume; Parquet metadata)."""
        return {
            "metrics": list(self.metrics),
            "normalize": self.normalize,
            "data_range": self.data_range,
            "percentiles": list(self.percentiles) if self.normalize == "percentile" else None,
            "intensity_window": list(self.intensity_window) if self.intensity_window else None,
            "ssim": self.ssim.as_dict(),
            "ssim_2d_axis": self.ssim_2d,
            "resample": self.resample,
            "save_maps": self.save_maps,
        }

    def settings_hash(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def setting_columns(self) -> dict[str, Any]:
        s = self.ssim
        return {
            "normalize": self.normalize,
            "window": s.window,
            "win_size": s.win_size,
            "sigma": s.sigma,
            "covariance": s.covariance,
            "border": s.border,
            "preset": s.preset,
            "k1": s.k1,
            "k2": s.k2,
        }


def _resolve_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise SettingsError(f"device must be one of {', '.join(DEVICES)}; got {device!r}.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingsError(
            "device='cuda' was asked for but torch sees no CUDA device (torch "
            f"{torch.__version__}); use --device cpu or auto, or install a CUDA build of torch."
        )
    return device


def _make_config(
    *,
    metrics: Sequence[str] | str | None,
    has_mask: bool,
    normalize: str,
    data_range: float | None,
    percentiles: Sequence[float],
    intensity_window: Sequence[float] | None,
    preset: str | None,
    window: str | None,
    win_size: int | None,
    sigma: float | None,
    k1: float | None,
    k2: float | None,
    covariance: str | None,
    border: str | None,
    ssim_2d: int | None,
    device: str,
    max_memory: int | str | None,
    resample: bool,
    save_maps: bool = False,
) -> _Config:
    from .ssim import resolve_settings

    pct = tuple(float(v) for v in percentiles)
    iw = None if intensity_window is None else tuple(float(v) for v in intensity_window)
    check_normalize_settings(
        normalize, data_range=data_range, percentile_range=pct, intensity_window=iw
    )
    for name, value in (("win_size", win_size), ("sigma", sigma)):
        if isinstance(value, list | tuple):
            raise SettingsError(
                f"{name} must be one number here (got {value!r}); per-axis values are "
                "available in volqa.ssim() but not in the batch table's columns."
            )
    s = resolve_settings(
        preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
        covariance=covariance, border=border,
    )  # fmt: skip
    if ssim_2d is not None and (isinstance(ssim_2d, bool) or ssim_2d not in (0, 1, 2)):
        raise SettingsError(f"ssim_2d must be the slice axis 0, 1 or 2; got {ssim_2d!r}.")

    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if metrics is None:
        chosen = [m for m in DEFAULT_METRICS if has_mask or m not in _MASKED]
    else:
        chosen = list(metrics)
        unknown = [m for m in chosen if m not in ALL_METRICS]
        if unknown or not chosen:
            raise SettingsError(
                f"unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose "
                f"from {', '.join(ALL_METRICS)} (comma-separated)."
            )
        masked = [m for m in chosen if m in _MASKED]
        if masked and not has_mask:
            raise SettingsError(
                f"metric(s) {', '.join(masked)} need a mask, but there is none (add a 'mask' "
                "column to the manifest / pass mask=)."
            )
    if ssim_2d is not None and "ssim_2d" not in chosen:
        chosen.append("ssim_2d")
    if "ssim_2d" in chosen and ssim_2d is None:
        raise SettingsError("metric 'ssim_2d' needs the slice axis: --ssim-2d AXIS (ssim_2d=0).")
    ordered = tuple(m for m in ALL_METRICS if m in chosen)
    return _Config(
        metrics=ordered, normalize=normalize, data_range=data_range,
        percentiles=pct, intensity_window=iw, ssim=s, ssim_2d=ssim_2d,  # type: ignore[arg-type]
        resample=bool(resample), device=_resolve_device(device),
        max_memory=parse_memory(max_memory), save_maps=bool(save_maps),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# one pair


@dataclass
class _Prepared:
    """A row after the CPU stages (read, align, normalise, voxel-wise metrics)."""

    subject: str
    files: dict[str, str]
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference: Any = None  # io.Volume (its geometry is needed for --save-maps)
    ref: np.ndarray | None = None
    test: np.ndarray | None = None
    mask: np.ndarray | None = None
    data_range: float | None = None
    error: str | None = None
    exc: BaseException | None = None  # the original exception (score_pair re-raises it)
    seconds: float = 0.0


def _where(subject: str, files: Mapping[str, str], role: str | None, exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, VolqaError) else f"{type(exc).__name__}: {exc}"
    head = f"subject {subject!r}"
    if role is not None and files.get(role) and files[role] not in msg:
        head += f", {role} {files[role]!r}"
    elif role is None and not any(p in msg for p in files.values() if p):
        head += " (" + ", ".join(f"{r} {p!r}" for r, p in files.items() if p) + ")"
    return f"{head}: {msg}"


def _read(source: Any, role: str):
    from .io import Volume, read_volume

    if isinstance(source, Volume):
        return source
    if isinstance(source, str | os.PathLike):
        return read_volume(source)
    raise SettingsError(
        f"{role} must be a path or a volqa.io.Volume; got {type(source).__name__}."
    )


def _prepare(
    subject: str, reference: Any, test: Any, mask: Any, cfg: _Config
) -> _Prepared:
    """Read, align, normalise and compute the voxel-wise metrics of one row.

    Runs in a background thread for manifests. Never raises: a failure is returned in
    ``error`` (the row's message) and ``exc`` (the original exception).
    """
    t0 = time.perf_counter()
    files = {
        role: (v.source if hasattr(v, "source") else
               os.fspath(v) if isinstance(v, str | os.PathLike) else f"<{type(v).__name__}>")
        for role, v in (("reference", reference), ("test", test), ("mask", mask))
        if v is not None
    }
    p = _Prepared(subject, files)
    role: str | None = "reference"
    try:
        from .geometry import align_to_reference

        ref_v = _read(reference, "reference")
        p.reference = ref_v
        p.fields["shape"] = "x".join(str(n) for n in ref_v.shape)
        p.fields["spacing"] = "x".join(f"{s:g}" for s in ref_v.spacing)
        role = "test"
        test_v = _read(test, "test")
        mask_v = None
        if mask is not None:
            role = "mask"
            mask_v = _read(mask, "mask")
        role = None
        test_v, mask_v, alignment = align_to_reference(
            ref_v, test_v, mask_v, resample=cfg.resample
        )
        p.fields["reoriented"] = alignment.reoriented or None
        p.fields["resampled"] = alignment.resampled
        for r, v in (("reference", ref_v), ("test", test_v), ("mask", mask_v)):
            if v is not None:
                p.notes.extend(f"{r}: {n}" for n in v.notes)
        if mask_v is not None:
            role = "mask"
            p.mask, note = binarize_mask(mask_v.array, source=mask_v.source)
            if note:
                p.notes.append(note)
        role = "reference"
        norm = normalize_pair(
            ref_v.array, test_v.array, mode=cfg.normalize, data_range=cfg.data_range,
            percentile_range=cfg.percentiles, intensity_window=cfg.intensity_window,
        )  # fmt: skip
        role = None
        p.ref, p.test, p.data_range = norm.reference, norm.test, norm.data_range
        p.fields["data_range"] = norm.data_range
        _voxelwise(p, cfg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the row's error
        p.error = _where(subject, files, role, exc)
        p.exc = exc
        p.ref = p.test = p.mask = None
    p.seconds = time.perf_counter() - t0
    return p


def _voxelwise(p: _Prepared, cfg: _Config) -> None:
    assert p.ref is not None and p.test is not None and p.data_range is not None
    want = set(cfg.metrics)
    for suffix, mask in (("", None), ("_masked", p.mask)):
        names = [m for m in ("psnr", "nrmse", "mae", "mse") if m + suffix in want]
        if not names or (suffix and mask is None):
            continue
        stats = error_stats(p.ref, p.test, mask=mask)
        values = {"psnr": stats.psnr(p.data_range), "mae": stats.mae, "mse": stats.mse}
        for m in names:
            if m == "nrmse":
                try:
                    p.fields[m + suffix] = stats.nrmse()
                except InputError as exc:
                    p.fields[m + suffix] = None
                    p.notes.append(f"nrmse{suffix} not computed: {exc}")
            else:
                p.fields[m + suffix] = values[m]


@dataclass
class _SSIMResult:
    values: dict[str, float]
    map: Any = None  # numpy float32 map (engine shape) when asked for


def _compute_ssim(
    ref: np.ndarray,
    test: np.ndarray,
    mask: np.ndarray | None,
    data_range: float,
    cfg: _Config,
    device: str,
    max_memory: int | None,
    want_map: bool,
) -> _SSIMResult:
    """SSIM metrics of one prepared pair on ``device`` (the only place that calls the engine)."""
    import torch

    from .metrics import masked_mean
    from .ssim import ssim, ssim_slices

    opts = {k: v for k, v in cfg.ssim.as_dict().items() if k != "slices"}
    opts["preset"] = None  # resolved values are passed explicitly; see below for slices
    kw = dict(data_range=data_range, max_memory=max_memory, **opts)
    x = torch.from_numpy(np.ascontiguousarray(ref)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(test)).to(device)
    m = None if mask is None else torch.from_numpy(mask).to(device)
    want = set(cfg.metrics)
    out: dict[str, float] = {}
    smap = None
    slices = bool(cfg.ssim.slices)
    fn = (lambda a, b, **k: ssim_slices(a, b, axis=0, **k)) if slices else ssim

    need_map = want_map or ("ssim_masked" in want and m is not None and not slices)
    if "ssim" in want or need_map:
        if need_map:
            value, smap_t = fn(x, y, return_map=True, **kw)
            smap = smap_t.detach().float().cpu().numpy()
        else:
            value = fn(x, y, **kw)
        if "ssim" in want:
            out["ssim"] = float(value)
    if "ssim_masked" in want and m is not None:
        if slices:
            out["ssim_masked"] = float(fn(x, y, mask=m, **kw))
        else:
            out["ssim_masked"] = masked_mean(smap, mask)
    if "ssim_2d" in want:
        out["ssim_2d"] = float(ssim_slices(x, y, axis=cfg.ssim_2d, **kw))
    return _SSIMResult(out, smap if want_map else None)


_HALF: Any = object()  # marker: "half of the budget used by the failed attempt"


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _half_budget(device: str, max_memory: int | None) -> int:
    """Half of the slab budget the engine used (its default when none was given)."""
    if max_memory is not None:
        return max(1, max_memory // 2)
    from .ssim import default_max_memory

    return max(1, default_max_memory(device) // 2)


def _ssim_with_fallback(
    p: _Prepared, cfg: _Config, want_map: bool
) -> tuple[_SSIMResult, str]:
    """Run SSIM with the OOM policy: device -> same device, half budget -> CPU.

    Returns the result and the device it ran on; notes about retries are added to ``p``.
    """
    attempts: list[tuple[str, int | None]] = [(cfg.device, cfg.max_memory)]
    if cfg.device != "cpu":
        attempts.append((cfg.device, _HALF))
        attempts.append(("cpu", cfg.max_memory))
    last: BaseException | None = None
    for i, (device, budget) in enumerate(attempts):
        if budget is _HALF:
            budget = _half_budget(device, cfg.max_memory)
        try:
            result = _compute_ssim(
                p.ref, p.test, p.mask, p.data_range,  # type: ignore[arg-type]
                cfg, device, budget, want_map,
            )  # fmt: skip
        except Exception as exc:
            if not (_is_oom(exc) and i + 1 < len(attempts)):
                raise
            last = exc
            _free_cuda()
            nxt = attempts[i + 1]
            used = f"{budget / 2**20:.0f} MiB slabs" if budget else "the default slab budget"
            p.notes.append(
                f"{device} out of memory with {used}; retried on {nxt[0]}"
                + (" with half the slab budget" if nxt[1] is _HALF else "")
            )
            continue
        return result, device
    raise AssertionError("unreachable") from last  # pragma: no cover


def _free_cuda() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _finish(
    p: _Prepared, cfg: _Config, *, map_path: Path | None = None
) -> dict[str, Any]:
    """SSIM stage of a prepared row; returns the computed fields (raises on failure)."""
    t0 = time.perf_counter()
    result, device = _ssim_with_fallback(p, cfg, want_map=map_path is not None)
    fields = dict(p.fields)
    fields.update(result.values)
    fields["device"] = device
    if map_path is not None and result.map is not None:
        _save_map(result.map, p.reference, map_path)
    fields["seconds"] = p.seconds + (time.perf_counter() - t0)
    fields["notes"] = "; ".join(p.notes) or None
    return fields


def _save_map(smap: np.ndarray, reference: Any, path: Path) -> None:
    """Write the map NaN-padded to the reference shape, in the reference's geometry."""
    from .io import write_nifti

    full = np.full(reference.shape, np.nan, dtype=np.float32)
    offs = [(n - s) // 2 for n, s in zip(reference.shape, smap.shape, strict=True)]
    full[tuple(slice(o, o + s) for o, s in zip(offs, smap.shape, strict=True))] = smap
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(full, reference, path)


def _version() -> str:
    from . import __version__

    return __version__


def score_pair(
    reference: Any,
    test: Any,
    mask: Any = None,
    *,
    metrics: Sequence[str] | str | None = None,
    normalize: str = DEFAULT_NORMALIZE,
    data_range: float | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    intensity_window: Sequence[float] | None = None,
    preset: str | None = None,
    window: str | None = None,
    win_size: int | None = None,
    sigma: float | None = None,
    k1: float | None = None,
    k2: float | None = None,
    covariance: str | None = None,
    border: str | None = None,
    ssim_2d: int | None = None,
    device: str = "auto",
    max_memory: int | str | None = None,
    resample: bool = False,
) -> dict[str, Any]:
    """Score one reconstruction against its reference.

    Parameters
    ----------
    reference, test : str, PathLike or volqa.io.Volume
        Ground truth and reconstruction (NIfTI, MHA/MHD/NRRD, DICOM file or folder,
        ``"folder#<SeriesInstanceUID>"``).
    mask : str, PathLike or Volume, optional
        Binary or label mask (inside = non-zero) in the reference's geometry.
    metrics : sequence of str or comma-separated str, optional
        Any of ``ssim, ssim_masked, ssim_2d, psnr, psnr_masked, nrmse, nrmse_masked, mae,
        mae_masked, mse, mse_masked``. Default: ``ssim, psnr, nrmse, mae, mse`` plus
        ``ssim_masked`` when there is a mask (and ``ssim_2d`` when ``ssim_2d`` is given).
    normalize : {"none", "minmax", "percentile", "zscore", "window"}, default "minmax"
        See :mod:`volqa.normalize`. Statistics come from the reference only; "minmax" maps
        the reference to [0, 1] (L = 1) and the test with the same map, without clipping.
    data_range : float, optional
        L for ``normalize="none"``; default the reference's max - min.
    percentiles : (float, float), default (0.5, 99.5)
        For ``normalize="percentile"``.
    intensity_window : (float, float), optional
        LEVEL, WIDTH for ``normalize="window"`` (CLI ``--window``).
    preset, window, win_size, sigma, k1, k2, covariance, border
        SSIM options of :func:`volqa.ssim` (``window`` is the SSIM window, gaussian/uniform;
        ``win_size`` and ``sigma`` one number each).
    ssim_2d : {0, 1, 2}, optional
        Also compute the mean 2-D SSIM over slices along this voxel axis (column ``ssim_2d``).
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where SSIM runs (auto: CUDA when available). Out of CUDA memory: retried with half
        the slab budget, then on the CPU.
    max_memory : int or str, optional
        Slab budget of the SSIM engine in bytes (or "512M", "2G").
    resample : bool, default False
        Resample a test/mask on another grid onto the reference grid instead of failing.

    Returns
    -------
    dict
        The metrics, ``shape``, ``spacing`` (mm), ``data_range``, ``normalize``, the SSIM
        settings (``window, win_size, sigma, covariance, border, preset, k1, k2``),
        ``reoriented``, ``resampled``, ``device``, ``seconds``, ``notes``, ``volqa_version``.

    Raises
    ------
    SettingsError
        Invalid options.
    InputError, GeometryError
        A volume cannot be read or used; the message names the file.
    """
    cfg = _make_config(
        metrics=metrics, has_mask=mask is not None, normalize=normalize, data_range=data_range,
        percentiles=percentiles, intensity_window=intensity_window, preset=preset,
        window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2, covariance=covariance,
        border=border, ssim_2d=ssim_2d, device=device, max_memory=max_memory,
        resample=resample,
    )  # fmt: skip
    p = _prepare("(pair)", reference, test, mask, cfg)
    if p.exc is not None:
        raise p.exc
    fields = cfg.setting_columns()
    fields.update(_finish(p, cfg))
    fields["volqa_version"] = _version()
    return {k: fields.get(k) for k in _pair_keys(cfg) if k in fields}


def _pair_keys(cfg: _Config) -> list[str]:
    cols = output_columns([], cfg.metrics)
    return [n for n, _ in cols if n not in ("status", "error", "ssim_map")]


# --------------------------------------------------------------------------------------------
# manifests


def _fingerprint(path: str | None) -> Any:
    """Identity of an input for --resume: path + size + mtime (a folder: of every entry)."""
    if path is None:
        return None
    fs_path, uid = split_series(path)
    try:
        st = os.stat(fs_path)
    except OSError:
        return {"path": path, "missing": True}
    if os.path.isdir(fs_path):
        entries = []
        for e in sorted(os.scandir(fs_path), key=lambda e: e.name):
            try:
                s = e.stat()
                entries.append((e.name, s.st_size, s.st_mtime_ns))
            except OSError:
                entries.append((e.name, -1, -1))
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
        return {"path": path, "folder": digest}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _row_key(row: ManifestRow, settings_hash: str) -> str:
    ident = {
        "subject_id": row.subject_id,
        "reference": _fingerprint(row.reference),
        "test": _fingerprint(row.test),
        "mask": _fingerprint(row.mask),
        "settings": settings_hash,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def _map_name(row: ManifestRow) -> str:
    stem = Path(split_series(row.test)[0]).name
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    tag = hashlib.sha256(row.test.encode()).hexdigest()[:6]
    sid = _SLUG.sub("_", row.subject_id).strip("_") or "subject"
    return f"{sid}_{_SLUG.sub('_', stem).strip('_')}_{tag}_ssim.nii.gz"


class _Stop:
    """Signal bookkeeping: the first SIGINT/SIGTERM asks to stop after the current row."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.current = ""

    def handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.signum = signum
        name = signal.Signals(signum).name
        sys.stderr.write(
            f"\nvolqa: {name} received; finishing {self.current or 'the current row'} and "
            "writing the results (send it again to stop at once)\n"
        )
        sys.stderr.flush()


@contextmanager
def _signals(stop: _Stop) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, stop.handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def score_manifest(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | str | None = None,
    normalize: str = DEFAULT_NORMALIZE,
    data_range: float | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    intensity_window: Sequence[float] | None = None,
    preset: str | None = None,
    window: str | None = None,
    win_size: int | None = None,
    sigma: float | None = None,
    k1: float | None = None,
    k2: float | None = None,
    covariance: str | None = None,
    border: str | None = None,
    ssim_2d: int | None = None,
    device: str = "auto",
    max_memory: int | str | None = None,
    resample: bool = False,
    save_maps: bool = False,
    workers: int = 2,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    strict: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Score every row of a manifest; one output row per manifest row, in manifest order.

    Parameters
    ----------
    path : str or PathLike
        The manifest CSV (see :mod:`volqa.manifest`).
    out : str or PathLike, optional
        Output folder for ``journal.jsonl``, ``results.csv``, ``results.parquet`` and
        ``maps/``. Without it nothing is written (and ``resume``/``save_maps`` are unavailable).
    metrics, normalize, data_range, percentiles, intensity_window, preset, window, win_size, \
sigma, k1, k2, covariance, border, ssim_2d, device, max_memory, resample
        As in :func:`score_pair`. ``ssim_masked`` is in the default metrics when the manifest
        has a ``mask`` column (rows without a mask get an empty value).
    save_maps : bool, default False
        Write each SSIM map to ``out/maps/`` as NIfTI in the reference's geometry: the map
        NaN-padded back to the reference's shape (a "valid" map lacks ``(win_size - 1) // 2``
        voxels at each border); the ``ssim_map`` column holds its path relative to ``out``.
    workers : int, default 2
        Background threads that read and prepare the next rows (0: everything in this thread).
    resume : bool, default False
        Reuse rows of ``out/journal.jsonl`` that finished ``ok`` with the same subject,
        inputs and settings.
    overwrite : bool, default False
        Start again in a non-empty ``out`` (deletes volqa's journal and tables there only).
    fail_fast : bool, default False
        Stop after the first failed row (the finished rows are still written).
    strict : bool, default False
        A missing input file is a manifest error (nothing scored) instead of a failed row.
    progress : bool, default False
        Show a tqdm progress bar on stderr naming the current subject, and warn there up
        front about every listed file that does not exist.

    Returns
    -------
    pandas.DataFrame
        The finished rows (see :mod:`volqa.results` for columns and types); ``status`` is
        ``"ok"`` or ``"error"``.

    Raises
    ------
    ManifestError
        The manifest is invalid (nothing scored, nothing written).
    SettingsError
        Invalid options, or ``out`` is not empty and neither ``resume`` nor ``overwrite``.
    BatchInterrupted
        SIGINT/SIGTERM; the finished rows were written first.
    """
    manifest = read_manifest(path, strict=strict)
    if out is None and (resume or overwrite or save_maps):
        raise SettingsError("resume, overwrite and save_maps need an output folder (out=...).")
    if not isinstance(workers, int) or workers < 0:
        raise SettingsError(f"workers must be an integer >= 0; got {workers!r}.")
    cfg = _make_config(
        metrics=metrics, has_mask=manifest.has_mask, normalize=normalize,
        data_range=data_range, percentiles=percentiles, intensity_window=intensity_window,
        preset=preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
        covariance=covariance, border=border, ssim_2d=ssim_2d, device=device,
        max_memory=max_memory, resample=resample, save_maps=save_maps,
    )  # fmt: skip
    out_dir = prepare_out_dir(out, resume=resume, overwrite=overwrite) if out else None
    return _Batch(manifest, cfg, out_dir, workers, resume, fail_fast, progress).run()


class _Batch:
    """One manifest run (state shared by the loop, the journal and the final write)."""

    def __init__(
        self,
        manifest: Manifest,
        cfg: _Config,
        out_dir: Path | None,
        workers: int,
        resume: bool,
        fail_fast: bool,
        progress: bool,
    ) -> None:
        self.manifest = manifest
        self.cfg = cfg
        self.out_dir = out_dir
        self.workers = workers
        self.fail_fast = fail_fast
        self.progress = progress
        self.settings_hash = cfg.settings_hash()
        self.columns = output_columns(manifest.columns, cfg.metrics, save_maps=cfg.save_maps)
        self.version = _version()
        self.previous = (
            load_journal(out_dir / JOURNAL_NAME) if (resume and out_dir is not None) else {}
        )
        self.results: dict[int, dict[str, Any]] = {}
        self.stop = _Stop()

    # -- rows ---------------------------------------------------------------------------------

    def _row_fields(self, row: ManifestRow, fields: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = dict(row.values)
        out.update(self.cfg.setting_columns())
        out.update(fields)
        out["volqa_version"] = self.version
        return out

    def _compute(self, row: ManifestRow, prep: _Prepared) -> dict[str, Any]:
        if prep.error is not None:
            fields = dict(prep.fields)
            fields.update(status="error", error=prep.error, seconds=prep.seconds)
            fields["notes"] = "; ".join(prep.notes) or None
            return fields
        map_path = None
        if self.cfg.save_maps and self.out_dir is not None:
            map_path = self.out_dir / MAPS_DIR / _map_name(row)
        try:
            fields = _finish(prep, self.cfg, map_path=map_path)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            # a failed row carries no metric, not even the voxel-wise ones already computed
            fields = {k: v for k, v in prep.fields.items() if k not in ALL_METRICS}
            fields.update(
                status="error", error=_where(row.subject_id, prep.files, None, exc),
                seconds=prep.seconds, notes="; ".join(prep.notes) or None,
            )  # fmt: skip
            return fields
        fields["status"] = "ok"
        fields["error"] = None
        if map_path is not None:
            fields["ssim_map"] = f"{MAPS_DIR}/{map_path.name}"
        return fields

    def _prepare_row(self, row: ManifestRow) -> _Prepared:
        return _prepare(row.subject_id, row.reference, row.test, row.mask, self.cfg)

    # -- loop ---------------------------------------------------------------------------------

    def run(self) -> pd.DataFrame:
        rows = self.manifest.rows
        keys = {row.index: _row_key(row, self.settings_hash) for row in rows}
        todo: list[ManifestRow] = []
        for row in rows:
            rec = self.previous.get(keys[row.index])
            if rec is not None and rec.get("fields", {}).get("status") == "ok":
                self.results[row.index] = self._row_fields(row, rec["fields"])
            else:
                todo.append(row)
        if self.progress:
            for warning in missing_files(self.manifest):
                sys.stderr.write(f"volqa: warning: {warning}\n")

        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(rows), initial=len(rows) - len(todo), file=sys.stderr,
            disable=not self.progress, unit="row", dynamic_ncols=True, leave=True,
        )  # fmt: skip
        journal = Journal(self.out_dir / JOURNAL_NAME) if self.out_dir is not None else None
        pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers else None
        pending: dict[int, Future[_Prepared]] = {}
        interrupted: int | None = None
        failed = 0
        try:
            with _signals(self.stop):
                for j, row in enumerate(todo):
                    if pool is not None:
                        for k in range(j, min(j + self.workers + 1, len(todo))):
                            if k not in pending:
                                pending[k] = pool.submit(self._prepare_row, todo[k])
                    self.stop.current = f"subject {row.subject_id!r}"
                    bar.set_description_str(row.subject_id)
                    prep = pending.pop(j).result() if pool is not None else self._prepare_row(row)
                    fields = self._compute(row, prep)
                    if journal is not None:
                        journal.append({
                            "key": keys[row.index], "index": row.index,
                            "subject_id": row.subject_id, "settings_hash": self.settings_hash,
                            "fields": fields,
                        })  # fmt: skip
                    self.results[row.index] = self._row_fields(row, fields)
                    failed += fields["status"] != "ok"
                    bar.update(1)
                    bar.set_postfix(failed=failed, refresh=False)
                    if self.stop.signum is not None:
                        interrupted = self.stop.signum
                        break
                    if self.fail_fast and fields["status"] != "ok":
                        break
        except KeyboardInterrupt:
            interrupted = self.stop.signum or signal.SIGINT
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            if journal is not None:
                journal.close()
        frame = self._write()
        if interrupted is not None:
            raise BatchInterrupted(interrupted, frame, len(self.results), len(rows))
        return frame

    def _write(self) -> pd.DataFrame:
        done = [self.results[i] for i in sorted(self.results)]
        meta = {
            "volqa_version": self.version,
            "manifest": str(self.manifest.path),
            "settings": self.cfg.settings(),
            "settings_hash": self.settings_hash,
            "device": self.cfg.device,
            "max_memory": self.cfg.max_memory,
            "rows_total": len(self.manifest.rows),
            "rows_done": len(done),
            "rows_ok": sum(r.get("status") == "ok" for r in done),
        }
        table = build_table(done, self.columns, meta)
        if self.out_dir is not None:
            write_tables(table, self.out_dir)
        frame = table.to_pandas()
        frame.attrs["volqa"] = meta
        return frame


