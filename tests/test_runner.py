"""score_pair / score_manifest (volqa.pipeline): values, options, OOM policy, maps."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pipeline_data import AFFINE, SHAPE, degrade, make_batch, phantom, write_nii

import volqa
from volqa.errors import InputError, SettingsError
from volqa.execution import parse_memory
from volqa.io import read_volume
from volqa.pipeline import RowScorer
from volqa.pipeline.normalize import normalize_pair


@pytest.fixture
def pair_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    ref = phantom(1)
    m = np.zeros(SHAPE, np.uint8)
    m[3:17, 4:14, 2:14] = 1
    return (
        write_nii(tmp_path / "ref.nii.gz", ref),
        write_nii(tmp_path / "test.nii.gz", degrade(ref, 1)),
        write_nii(tmp_path / "mask.nii.gz", m),
    )


def test_score_pair_equals_engine_on_loaded_arrays(pair_files) -> None:
    ref_p, test_p, mask_p = pair_files
    row = volqa.score_pair(ref_p, test_p, mask_p)
    r, t, m = read_volume(ref_p), read_volume(test_p), read_volume(mask_p)
    n = normalize_pair(r.array, t.array, mode="minmax")
    assert row["normalize"] == "minmax" and row["data_range"] == 1.0
    assert row["ssim"] == float(volqa.ssim(n.reference, n.test, data_range=1.0))
    masked = float(volqa.ssim(n.reference, n.test, data_range=1.0, mask=m.array > 0))
    assert row["ssim_masked"] == pytest.approx(masked, abs=1e-12)
    d = n.test.astype(np.float64) - n.reference.astype(np.float64)
    assert row["mse"] == pytest.approx(np.mean(d * d), rel=1e-12)
    assert row["mae"] == pytest.approx(np.mean(np.abs(d)), rel=1e-12)
    assert row["psnr"] == pytest.approx(10 * math.log10(1.0 / np.mean(d * d)), rel=1e-12)
    assert row["shape"] == "20x18x16" and row["spacing"] == "1x1x1.5"
    assert row["device"] == "cpu" and row["seconds"] > 0
    assert (row["ssim_window"], row["ssim_win_size"], row["ssim_sigma"]) == ("gaussian", 11, 1.5)
    assert (row["ssim_covariance"], row["ssim_border"], row["ssim_preset"]) == (
        "population", "valid", None)
    # the normalisation map is in the row: min-max of the reference, no clipping
    lo, hi = float(r.array.min()), float(r.array.max())
    assert (row["norm_offset"], row["norm_clip_low"], row["norm_clip_high"]) == (lo, None, None)
    assert row["norm_scale"] == pytest.approx(1 / (hi - lo), rel=1e-12)
    assert row["volqa_version"] == volqa.__version__


def test_score_pair_raw_intensities(pair_files) -> None:
    ref_p, test_p, _ = pair_files
    r, t = read_volume(ref_p), read_volume(test_p)
    row = volqa.score_pair(ref_p, test_p, normalize="none")
    L = float(r.array.max()) - float(r.array.min())
    assert row["data_range"] == pytest.approx(L)
    assert row["ssim"] == float(volqa.ssim(r.array, t.array, data_range=row["data_range"]))
    row = volqa.score_pair(r, t, normalize="none", data_range=200.0, metrics="ssim,mae")
    assert set(row) & {"ssim", "mae", "psnr"} == {"ssim", "mae"}
    assert row["ssim"] == float(volqa.ssim(r.array, t.array, data_range=200.0))


def test_volume_objects_and_ssim_2d_and_presets(pair_files) -> None:
    ref_p, test_p, _ = pair_files
    r, t = read_volume(ref_p), read_volume(test_p)
    n = normalize_pair(r.array, t.array, mode="minmax")
    row = volqa.score_pair(r, t, ssim_2d=2, preset="skimage")
    assert row["ssim_2d"] == float(
        volqa.ssim_slices(n.reference, n.test, axis=2, data_range=1.0, preset="skimage")
    )
    assert (row["ssim_window"], row["ssim_win_size"], row["ssim_covariance"]) == (
        "uniform", 7, "sample")
    fast = volqa.score_pair(r, t, preset="fastmri")
    assert fast["ssim"] == float(volqa.ssim_slices(n.reference, n.test, axis=0, data_range=1.0,
                                                   preset="fastmri"))


@pytest.mark.parametrize(
    ("name", "transform"),
    [
        ("flip i", lambda a: a[::-1]),
        ("flip j and k", lambda a: a[:, ::-1, ::-1]),
        ("permute i/k", lambda a: a.transpose(2, 1, 0)),
        ("permute and flip", lambda a: a.transpose(1, 2, 0)[::-1]),
    ],
)
def test_flipped_or_permuted_copy_is_reoriented_and_scores_one(tmp_path, name, transform):
    """The same voxels stored in another axis order/direction: reoriented, SSIM exactly 1."""
    ref = phantom(3)
    copy = np.ascontiguousarray(transform(ref))
    # the copy's affine puts each of its voxels where that voxel was in the source:
    # solve affine @ [v, 1] = AFFINE @ [source index of v, 1] over all voxels v
    source_index = np.stack([transform(i) for i in np.indices(ref.shape)], -1).reshape(-1, 3)
    world = np.c_[source_index, np.ones(len(source_index))] @ AFFINE.T
    vox = np.indices(copy.shape).reshape(3, -1).T
    affine, *_ = np.linalg.lstsq(np.c_[vox, np.ones(len(vox))], world, rcond=None)
    nib.save(nib.Nifti1Image(ref, AFFINE), tmp_path / "src.nii.gz")
    nib.save(nib.Nifti1Image(copy, affine.T), tmp_path / "copy.nii.gz")
    row = volqa.score_pair(tmp_path / "src.nii.gz", tmp_path / "copy.nii.gz")
    assert row["ssim"] == pytest.approx(1.0, abs=1e-12), name
    assert row["reoriented"] and row["reoriented"].startswith("test "), row["reoriented"]
    assert row["resampled"] is False


def test_same_file_scores_one(pair_files) -> None:
    ref_p, _, _ = pair_files
    row = volqa.score_pair(ref_p, ref_p)
    assert row["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert row["psnr"] == math.inf and row["mse"] == 0.0 and row["nrmse"] == 0.0


def test_constant_reference(tmp_path: Path) -> None:
    ref = write_nii(tmp_path / "c.nii.gz", np.full(SHAPE, 5.0, np.float32))
    test = write_nii(tmp_path / "t.nii.gz", phantom(2))
    with pytest.raises(InputError, match="the reference is constant"):
        volqa.score_pair(ref, test)
    row = volqa.score_pair(ref, test, normalize="none", data_range=100.0)
    assert 0 < row["ssim"] < 1 and math.isfinite(row["psnr"])
    assert row["nrmse"] is None and "nrmse not computed" in row["notes"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": "ssim,foo"}, "unknown metric"),
        ({"metrics": ["ssim_masked"]}, "need a mask"),
        ({"metrics": "ssim_2d"}, "needs the slice axis"),
        ({"ssim_2d": 3}, "slice axis 0, 1 or 2"),
        ({"win_size": (7, 7, 3)}, "one number here"),
        ({"win_size": 8}, "odd"),
        ({"preset": "nope"}, "unknown preset"),
        ({"max_memory": "lots"}, "512M or 2G"),
        ({"device": "tpu"}, "device must be one of"),
        ({"normalize": "window"}, "LEVEL,WIDTH"),
    ],
)
def test_settings_errors(pair_files, kwargs, match) -> None:
    ref_p, test_p, _ = pair_files
    with pytest.raises(SettingsError, match=match):
        volqa.score_pair(ref_p, test_p, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_requested_without_cuda(pair_files) -> None:
    with pytest.raises(SettingsError, match="no CUDA device"):
        volqa.score_pair(*pair_files[:2], device="cuda")


@pytest.mark.parametrize(("text", "n"), [("512M", 512 * 2**20), ("2GiB", 2 * 2**30),
                                         ("1.5k", 1536), (4096, 4096), ("100", 100)])
def test_parse_memory(text, n) -> None:
    assert parse_memory(text) == n


def test_tiny_memory_budget_gives_the_same_values(pair_files) -> None:
    whole = volqa.score_pair(*pair_files)
    chunked = volqa.score_pair(*pair_files, max_memory="1k")  # one output slice per slab
    for m in ("ssim", "ssim_masked"):
        assert chunked[m] == pytest.approx(whole[m], abs=1e-6)


# ------------------------------------------------------------------------- OOM policy


class _FakeOOM(RowScorer):
    """A scorer whose CUDA attempts raise OOM ``fail`` times; every attempt runs on the CPU."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls: list[tuple[str, int | None]] = []

    def engine_metrics(self, p, settings, device, max_memory, keep_map):
        self.calls.append((device, max_memory))
        if device == "cuda" and len(self.calls) <= self.fail:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().engine_metrics(p, settings, "cpu", max_memory, keep_map)


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA that is 'available' with 1 GiB free (the OOMs themselves are injected)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**31))


@pytest.mark.parametrize(
    ("fail", "device", "calls"),
    [
        (0, "cuda", [("cuda", 8 << 20)]),
        (1, "cuda", [("cuda", 8 << 20), ("cuda", 4 << 20)]),
        (2, "cpu", [("cuda", 8 << 20), ("cuda", 4 << 20), ("cpu", 8 << 20)]),
    ],
)
def test_cuda_oom_retries_with_half_budget_then_cpu(
    pair_files, monkeypatch, fake_cuda, fail, device, calls
) -> None:
    fake = _FakeOOM(fail)
    row = volqa.score_pair(*pair_files, device="cuda", max_memory="8M", scorer=fake)
    assert fake.calls == calls
    assert row["device"] == device
    if fail:
        assert "cuda out of memory" in row["notes"]
    reference = volqa.score_pair(*pair_files, device="cpu")
    assert row["ssim"] == reference["ssim"]


def test_oom_on_cpu_is_retried_once_with_half_the_budget(pair_files, monkeypatch) -> None:
    class Boom(RowScorer):
        budgets: list = []

        def engine_metrics(self, p, settings, device, max_memory, keep_map):
            self.budgets.append(max_memory)
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        volqa.score_pair(*pair_files, device="cpu", max_memory="8M", scorer=Boom())
    assert Boom.budgets == [8 << 20, 4 << 20]


def test_oom_in_a_batch_records_the_device(tmp_path, monkeypatch, fake_cuda) -> None:
    manifest = make_batch(tmp_path, n=2)
    fake = _FakeOOM(fail=2)
    df = volqa.score_manifest(manifest, device="cuda", scorer=fake)
    assert list(df["device"]) == ["cpu", "cuda"]  # only the first row hit the OOMs
    # no --max-memory: the retry halves the engine's default (half of 1 GiB free = 512 MiB)
    assert fake.calls[:3] == [("cuda", None), ("cuda", 256 << 20), ("cpu", None)]
    assert "retried on cuda with half the slab budget" in df.loc[0, "notes"]
    assert list(df["status"]) == ["ok", "ok"]


# ------------------------------------------------------------------------- batches


def test_score_manifest_without_output_folder(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=3, mask=True)
    df = volqa.score_manifest(manifest)
    assert list(df["subject_id"]) == ["sub-00", "sub-01", "sub-02"]
    assert list(df["acceleration"]) == ["01", "02", "03"]  # text, unchanged
    assert list(df["status"]) == ["ok"] * 3
    assert df["ssim_masked"].isna().tolist() == [False, True, False]  # row 2 has no mask
    assert not (tmp_path / "volqa_results").exists()


def test_prefetch_keeps_manifest_order_and_values(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=5)
    a = volqa.score_manifest(manifest, workers=0)
    b = volqa.score_manifest(manifest, workers=3)
    cols = ["subject_id", "ssim", "psnr", "nrmse", "mae", "mse"]
    assert a[cols].equals(b[cols])


def test_save_maps_in_reference_geometry(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "out"
    df = volqa.score_manifest(manifest, out=out, save_maps=True, win_size=7)
    path = out / df.loc[0, "ssim_map"]
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert data.shape == SHAPE and np.allclose(img.affine, AFFINE)
    r = 3  # (7 - 1) // 2
    interior = data[r:-r, r:-r, r:-r]
    assert np.isfinite(interior).all()
    assert np.isnan(data[:r]).all() and np.isnan(data[:, :, -r:]).all()
    assert float(np.mean(interior, dtype=np.float64)) == pytest.approx(df.loc[0, "ssim"], abs=1e-6)
    ref = read_volume(tmp_path / "data/s0_ref.nii.gz")
    test = read_volume(tmp_path / "data/s0_test.nii.gz")
    n = normalize_pair(ref.array, test.array)
    _, smap = volqa.ssim(n.reference, n.test, data_range=1.0, win_size=7, return_map=True)
    np.testing.assert_array_equal(interior, smap.numpy())


def test_array_instead_of_path_is_a_settings_error(pair_files) -> None:
    with pytest.raises(SettingsError, match="reference must be a path or a volqa.io.Volume"):
        volqa.score_pair(np.zeros((20, 18, 16)), pair_files[1])
