"""Each --protocol against an independent re-computation that follows the published evaluation
code (written here with numpy, scipy, scikit-image and torchmetrics, on small synthetic
volumes), and the protocol's record in rows and settings.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_data import write_manifest, write_nii
from scipy import ndimage
from scipy.signal import fftconvolve
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.protocols import PROTOCOLS

cli = CliRunner()


def mri_pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random(shape), 1.5) * 400 + 20
    pred = 0.97 * gt + ndimage.gaussian_filter(rng.standard_normal(shape), 0.7) * 12
    return gt.astype(np.float32), pred.astype(np.float32)


def ct_case(shape, seed=1):
    """HU volume with air, soft tissue and bone beyond SynthRAD's clipping range, a body mask
    that leaves air outside, and a synthetic CT with errors everywhere."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g * g for g in grids)
    body = r2 < 0.7
    gt = np.where(body, 40 + 300 * ndimage.gaussian_filter(rng.standard_normal(shape), 2), -1000)
    gt = np.where(r2 < 0.08, 3200.0, gt)  # "metal": above 3000 / 3071
    gt = gt + rng.normal(0, 20, shape)
    gt[0, 0, 0] = -1500.0  # below -1024
    pred = gt + ndimage.gaussian_filter(rng.normal(0, 80, shape), 1.0) + 15
    return gt.astype(np.float32), pred.astype(np.float32), body


def files(tmp_path, **arrays):
    return {k: str(write_nii(tmp_path / f"{k}.nii.gz", v)) for k, v in arrays.items()}


def check_record(row, name):
    assert row["eval_protocol"] == name and row["normalize"] == "protocol"
    assert row["eval_protocol_source"] == PROTOCOLS[name].source


# ------------------------------------------------------------------------------- fastMRI


def test_fastmri(tmp_path):
    gt, pred = mri_pair((6, 40, 36))
    f = files(tmp_path, gt=gt, pred=pred)
    row = volqa.score_pair(f["gt"], f["pred"], protocol="fastmri")
    check_record(row, "fastmri")
    g, p = gt.astype(np.float64), pred.astype(np.float64)
    # fastmri/evaluate.py: ssim(), psnr(), nmse(), mse() with maxval = gt.max()
    maxval = g.max()
    ssim = np.mean([structural_similarity(g[i], p[i], data_range=maxval)
                    for i in range(g.shape[0])])
    assert row["ssim"] == pytest.approx(ssim, abs=1e-6)
    assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=maxval),
                                        abs=1e-6)
    assert row["nmse"] == pytest.approx(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2,
                                        rel=1e-6)
    assert row["mse"] == pytest.approx(np.mean((g - p) ** 2), rel=1e-6)
    assert row["data_range"] == pytest.approx(maxval)


# --------------------------------------------------------------------------- SynthRAD2023


def synthrad2023(gt, pred, mask):
    """functions/image_metrics.py of SynthRAD2023/metrics @ 3200007, in float64."""
    gt, pred, mask = gt.astype(np.float64), pred.astype(np.float64), mask.astype(np.float64)
    mae = np.sum(np.abs(gt * mask - pred * mask)) / mask.sum()
    g, p = np.clip(gt, -1024, 3000), np.clip(pred, -1024, 3000)
    psnr = peak_signal_noise_ratio(g[mask == 1], p[mask == 1], data_range=4024)
    g, p = np.where(mask == 0, -1024, g) + 1024, np.where(mask == 0, -1024, p) + 1024
    _, smap = structural_similarity(g, p, data_range=4024, full=True)
    ssim = crop(smap, 3)[crop(mask, 3).astype(bool)].mean(dtype=np.float64)
    return mae, psnr, ssim


def test_synthrad2023(tmp_path):
    gt, pred, body = ct_case((26, 28, 24))
    f = files(tmp_path, gt=gt, pred=pred, mask=body.astype(np.uint8))
    row = volqa.score_pair(f["gt"], f["pred"], f["mask"], protocol="synthrad2023")
    check_record(row, "synthrad2023")
    mae, psnr, ssim = synthrad2023(gt, pred, body)
    assert row["mae_masked"] == pytest.approx(mae, rel=1e-6)  # unclipped HU
    assert row["psnr_masked"] == pytest.approx(psnr, abs=1e-6)
    assert row["ssim_masked"] == pytest.approx(ssim, abs=1e-6)
    assert row["data_range"] == 4024.0
    # the data is sensitive to the -1024 fill: the old recipe (map of the unfilled images)
    # differs, as the issue reports for real CTs
    old = volqa.score_pair(f["gt"], f["pred"], f["mask"], preset="synthrad2023",
                           normalize="none", data_range=4024.0, metrics="ssim_masked")
    assert abs(old["ssim_masked"] - ssim) > 1e-4


# --------------------------------------------------------------------------- SynthRAD2025


def synthrad2025_ms_ssim(gt, pred, mask):
    """ImageMetrics.ms_ssim of SynthRAD2025/evaluation @ 17cac47 (as it runs), in float64."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    gt, pred = np.clip(gt, -1024, 3071), np.clip(pred, -1024, 3071)
    gt, pred = np.where(mask == 0, -1024, gt) + 1024, np.where(mask == 0, -1024, pred) + 1024
    pads = [(max(0, (97 - n) // 2), max(0, 97 - n - (97 - n) // 2)) for n in gt.shape]
    gt, pred, mask = (np.pad(a, pads, mode="edge") for a in (gt, pred, mask))
    c1, c2 = (0.01 * 4095) ** 2, (0.03 * 4095) ** 2
    c3, n = c2 / 2, 7**3
    values = []
    for w in weights:  # structural_similarity_at_scale with all three exponents = w
        mean = lambda a: ndimage.uniform_filter(a, 7)  # noqa: E731
        ux, uy = mean(gt), mean(pred)
        vx = n / (n - 1) * (mean(gt * gt) - ux * ux)
        vy = n / (n - 1) * (mean(pred * pred) - uy * uy)
        vxy = n / (n - 1) * (mean(gt * pred) - ux * uy)
        sx, sy = np.clip(vx, 0, None) ** 0.5, np.clip(vy, 0, None) ** 0.5
        lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
        con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
        st = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
        smap = lum**w * con**w * st**w
        values.append(crop(smap, 3)[crop(mask, 3).astype(bool)].mean(dtype=np.float64))
        box = np.ones((2, 2, 2)) / 8
        gt, pred = (fftconvolve(a, box, mode="same")[::2, ::2, ::2] for a in (gt, pred))
        mask = mask[::2, ::2, ::2]
    return float(np.prod(np.clip(values, 0, 1)))


def test_synthrad2025(tmp_path):
    gt, pred, body = ct_case((40, 30, 100), seed=2)  # padded on two axes, not the third
    f = files(tmp_path, gt=gt, pred=pred, mask=body.astype(np.uint8))
    row = volqa.score_pair(f["gt"], f["pred"], f["mask"], protocol="synthrad2025")
    check_record(row, "synthrad2025")
    g, p = (np.where(body, a, -1024).astype(np.float64) for a in (gt, pred))
    m = body.astype(float)
    assert row["mae_masked"] == pytest.approx(np.sum(np.abs(g * m - p * m)) / m.sum(), rel=1e-6)
    psnr = peak_signal_noise_ratio(np.clip(g, -1024, 3071)[body], np.clip(p, -1024, 3071)[body],
                                   data_range=4095)
    assert row["psnr_masked"] == pytest.approx(psnr, abs=1e-6)
    want = synthrad2025_ms_ssim(gt.astype(np.float64), pred.astype(np.float64), body)
    assert row["ms_ssim_masked"] == pytest.approx(want, abs=2e-6)
    assert "edge-padded from (40, 30, 100) to (97, 97, 100)" in row["notes"]  # recorded


# -------------------------------------------------------------------------------- BraSyn


def brasyn_ssim(gt, pred, seg):
    """hongweilibran/BraSyn ssim.py @ 8908040: percentile clip per image, zero-filled images,
    torchmetrics SSIM with its default data range; the map averaged over the region (the
    script's stated intent, see volqa.protocols)."""
    tm = pytest.importorskip("torchmetrics.functional.image")

    def pclip(a):
        lo, hi = np.percentile(a, [0.5, 99.5])
        lo = max(lo, 0)
        return (np.clip(a, lo, hi) - lo) / (hi - lo)

    g, p = pclip(gt.astype(np.float64)), pclip(pred.astype(np.float64))
    out = []
    for region in (seg > 0, ~(seg > 0)):
        x, y = (torch.from_numpy(a * region)[None, None] for a in (p, g))
        _, smap = tm.structural_similarity_index_measure(x, y, return_full_image=True)
        out.append(float(smap[0, 0][torch.from_numpy(region)].mean()))
    return out


def test_brasyn(tmp_path):
    gt, pred = mri_pair((24, 26, 22), seed=3)
    gt[0, :3, :3] = -5.0  # a negative background voxel: the lower percentile is raised to 0
    seg = np.zeros(gt.shape, np.uint8)
    seg[8:16, 9:18, 7:15] = 2
    seg[10:14, 11:15, 9:13] = 1
    seg[12, 12, 10] = 4
    f = files(tmp_path, gt=gt, pred=pred, seg=seg)
    row = volqa.score_pair(f["gt"], f["pred"], f["seg"], protocol="brasyn")
    check_record(row, "brasyn")
    tumour, healthy = brasyn_ssim(gt, pred, seg)
    assert row["ssim_masked"] == pytest.approx(tumour, abs=1e-6)
    assert row["ssim_outside"] == pytest.approx(healthy, abs=1e-6)
    assert "torchmetrics' default" in row["notes"]  # each region's L is recorded


# ----------------------------------------------------------------------------- CMRxRecon


def test_cmrxrecon(tmp_path):
    gt, pred = mri_pair((30, 28, 5), seed=4)
    f = files(tmp_path, gt=gt, pred=pred)
    row = volqa.score_pair(f["gt"], f["pred"], protocol="cmrxrecon")
    check_record(row, "cmrxrecon")
    psnr, ssim, nmse = [], [], []
    for j in range(gt.shape[-1]):  # Evaluation.py calmetric(): pred_recon[:, :, j]
        g, p = gt[:, :, j].astype(np.float64), pred[:, :, j].astype(np.float64)
        g, p = g / g.max(), p / p.max()
        psnr.append(peak_signal_noise_ratio(g, p, data_range=g.max()))
        ssim.append(structural_similarity(g, p, data_range=g.max()))
        nmse.append(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2)
    assert row["ssim_2d"] == pytest.approx(np.mean(ssim), abs=1e-6)
    assert row["psnr_2d"] == pytest.approx(np.mean(psnr), abs=1e-5)
    assert row["nmse_2d"] == pytest.approx(np.mean(nmse), rel=1e-5)


def test_cmrxrecon_slice_without_signal_is_named(tmp_path):
    gt, pred = mri_pair((20, 20, 4), seed=5)
    gt[:, :, 2] = 0.0
    f = files(tmp_path, gt=gt, pred=pred)
    with pytest.raises(volqa.InputError, match="slice 2 along axis 2 has maximum 0"):
        volqa.score_pair(f["gt"], f["pred"], protocol="cmrxrecon")


# ------------------------------------------------------------------- CLI, record, resume


def test_cli_records_protocol_and_resumes_with_it(tmp_path):
    gt, pred, body = ct_case((20, 22, 18), seed=6)
    f = files(tmp_path, gt=gt, pred=pred, mask=body.astype(np.uint8))
    manifest = write_manifest(tmp_path / "m.csv", [
        {"subject_id": "s1", "reference": f["gt"], "test": f["pred"], "mask": f["mask"],
         "protocol": "CT abdomen"}])  # a covariate of that name stays the user's
    out = tmp_path / "out"
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--no-progress",
                              "--protocol", "synthrad2023"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "results.csv")
    assert list(table["eval_protocol"]) == ["synthrad2023"]
    assert list(table["protocol"]) == ["CT abdomen"]
    assert "3200007" in table["eval_protocol_source"][0]
    stored = json.loads((out / "settings.json").read_text())["settings"]
    assert stored["protocol"] == "synthrad2023" and "3200007" in stored["protocol_source"]
    again = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--resume"])
    assert again.exit_code == 0 and "1 row(s) reused" in again.stderr


@pytest.mark.parametrize("extra", [["--win-size", "7"], ["--normalize", "none"],
                                   ["--data-range", "4024"]])
def test_cli_refuses_options_a_protocol_fixes(tmp_path, extra):
    manifest = write_manifest(tmp_path / "m.csv", [
        {"subject_id": "s1", "reference": "a.nii.gz", "test": "b.nii.gz"}])
    result = cli.invoke(app, ["score", str(manifest), "--out", str(tmp_path / "o"),
                              "--no-progress", "--protocol", "fastmri", *extra])
    assert result.exit_code == 2
    assert "fixes the normalisation" in result.stderr and "Traceback" not in result.output


def test_masked_protocol_without_a_mask_column_is_a_usage_error(tmp_path):
    gt, pred = mri_pair((10, 12, 11))
    f = files(tmp_path, gt=gt, pred=pred)
    with pytest.raises(volqa.SettingsError, match="protocol synthrad2023 scores inside"):
        volqa.score_pair(f["gt"], f["pred"], protocol="synthrad2023")


def test_every_protocol_cites_a_commit():
    for spec in PROTOCOLS.values():
        repo, _, rest = spec.source.partition("@")
        assert "/" in repo and len(rest.split()[0]) >= 7, spec.source
