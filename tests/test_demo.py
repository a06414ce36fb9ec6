"""The noise-to-image SSIM fit demo: the fit, its frames, the GIF record, the CLI and script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import typer
from PIL import Image, ImageSequence
from typer.testing import CliRunner

import volqa
from volqa import InputError, SettingsError
from volqa.cli.demo import demo_app
from volqa.demo import (
    DEFAULT_TARGET,
    FINAL_HOLD_MS,
    LABEL_HEIGHT,
    fit,
    frame_label,
    load_target,
    orthogonal_slices,
    read_gif_record,
    render_label,
    save_gif,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "ssim_fit_demo.py"
SMALL = {2: (32, 32), 3: (16, 24, 24)}
STEP_BUDGET = 300


def blob(shape: tuple[int, ...]) -> np.ndarray:
    """Two smooth Gaussian blobs (a smooth, asymmetric target)."""
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    a = np.exp(-sum((x - 0.2 * i) ** 2 for i, x in enumerate(g)) / 0.2)
    a += 0.5 * np.exp(-sum((x + 0.3) ** 2 for x in g) / 0.05)
    return a.astype(np.float32)


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def fitted(request: pytest.FixtureRequest):
    dims = request.param
    target = blob(SMALL[dims])
    return dims, target, fit(target, dims=dims, max_steps=STEP_BUDGET, every=7, seed=0)


@pytest.fixture()
def png(tmp_path: Path) -> Path:
    """A 32x32 RGB PNG of the 2-D blob (the loader converts it to grayscale)."""
    u8 = (blob(SMALL[2]) / blob(SMALL[2]).max() * 255).astype(np.uint8)
    path = tmp_path / "target.png"
    Image.fromarray(np.stack([u8] * 3, axis=-1), "RGB").save(path)
    return path


def _decoded(path: Path) -> list[Image.Image]:
    with Image.open(path) as im:
        return [f.convert("L") for f in ImageSequence.Iterator(im)]


# --------------------------------------------------------------------------- the fit


def test_fit_reaches_threshold_within_budget(fitted) -> None:
    dims, target, res = fitted
    assert res.reached
    assert res.steps <= STEP_BUDGET
    assert res.final_ssim >= 0.95
    assert [s for s, _ in res.history] == list(range(res.steps + 1))
    assert all(v < 0.95 for _, v in res.history[:-1])  # stopped at the first crossing
    assert res.history[-1] == (res.steps, res.final_ssim)
    assert res.history[0][1] < 0.1  # it started from noise


def test_final_ssim_is_the_ssim_of_the_estimate(fitted) -> None:
    dims, target, res = fitted
    scaled = (target - target.min()) / (target.max() - target.min())
    assert res.estimate.shape == target.shape
    assert res.estimate.min() >= 0.0 and res.estimate.max() <= 1.0
    assert float(volqa.ssim(res.estimate, scaled, data_range=1.0)) == pytest.approx(
        res.final_ssim, abs=1e-5)


def test_frames_every_k_steps_plus_first_and_last(fitted) -> None:
    dims, _, res = fitted
    expected = list(range(0, res.steps + 1, 7))
    if expected[-1] != res.steps:
        expected.append(res.steps)
    assert [s for s, _ in res.frame_history] == expected
    assert len(res.frames) == len(expected)
    history = dict(res.history)
    assert all(history[s] == v for s, v in res.frame_history)
    assert all(f.mode == "L" and f.size == res.frames[0].size for f in res.frames)


def test_fit_is_reproducible_and_seeded() -> None:
    target = blob(SMALL[2])
    a = fit(target, dims=2, max_steps=5, seed=3)
    b = fit(target, dims=2, max_steps=5, seed=3)
    c = fit(target, dims=2, max_steps=5, seed=4)
    assert a.history == b.history
    assert np.array_equal(a.estimate, b.estimate)
    assert a.history[0] != c.history[0]


def test_threshold_not_reached_is_a_result() -> None:
    res = fit(blob(SMALL[2]), dims=2, max_steps=3, every=1)
    assert not res.reached and res.steps == 3
    assert [s for s, _ in res.frame_history] == [0, 1, 2, 3]


def test_zero_steps_gives_one_frame() -> None:
    res = fit(blob(SMALL[3]), dims=3, max_steps=0)
    assert res.steps == 0 and len(res.frames) == 1 and len(res.history) == 1


def _panel_rows(frame: Image.Image) -> list[np.ndarray]:
    """The pixel blocks of each row of panels: the runs of pixel rows that cross a separator
    (separators are 4 columns of gray 96; the caption strips between rows are not)."""
    a = np.asarray(frame)[LABEL_HEIGHT:]
    crossing = np.flatnonzero((a == 96).sum(axis=1) >= 4)
    runs = np.split(crossing, np.flatnonzero(np.diff(crossing) > 1) + 1)
    return [a[r[0]:r[-1] + 1] for r in runs if r.size]


def test_3d_frame_shows_the_fit_above_the_target_in_three_planes() -> None:
    vol = np.zeros((20, 30, 40), np.float32)
    panels = orthogonal_slices(vol)
    assert [p.shape for p in panels] == [(30, 20), (40, 20), (40, 30)]
    target = blob((12, 12, 12))
    res = fit(target, dims=3, max_steps=0)
    rows = _panel_rows(res.frames[0])
    assert len(rows) == 2  # the fit, then the target
    for block in rows:  # three panels per row: two 4-pixel separators
        assert len(np.flatnonzero((block == 96).all(axis=0))) == 8
    assert not np.array_equal(rows[0], rows[1])  # noise above, the target below
    again = fit(target, dims=3, max_steps=0, seed=1)
    assert np.array_equal(_panel_rows(again.frames[0])[1], rows[1])  # the target row is fixed


def test_2d_frame_shows_fit_beside_target() -> None:
    res = fit(blob(SMALL[2]), dims=2, max_steps=0)
    (block,) = _panel_rows(res.frames[0])
    assert len(np.flatnonzero((block == 96).all(axis=0))) == 4  # one separator: two panels


def test_orthogonal_slices_orientation() -> None:
    """Rows flipped so the superior (largest k) / anterior (largest j) side is at the top."""
    vol = np.zeros((11, 12, 13), np.float32)
    vol[:, :, -1] = 1.0  # superior face
    vol[:, -1, :] = 2.0  # anterior face
    axial, coronal, sagittal = orthogonal_slices(vol)
    assert (axial[0] == 2.0).all()
    assert (coronal[0] == 1.0).all()
    assert (sagittal[0, :-1] == 1.0).all() and sagittal[0, -1] == 2.0


@pytest.mark.parametrize(("target", "kwargs", "error", "match"), [
    (blob((32, 32)), dict(dims=3), InputError, "dims=3 needs a 3-D target"),
    (blob((8, 32)), dict(dims=2), InputError, "at least 11 voxels"),
    (np.ones((16, 16), np.float32), dict(dims=2), InputError, "constant"),
    (np.full((16, 16), np.nan, np.float32), dict(dims=2), InputError, "NaN"),
    (blob((16, 16)), dict(dims=4), SettingsError, "dims must be 2 or 3"),
    (blob((16, 16)), dict(dims=2, threshold=1.5), SettingsError, "threshold"),
    (blob((16, 16)), dict(dims=2, lr=0.0), SettingsError, "lr must be > 0"),
    (blob((16, 16)), dict(dims=2, every=0), SettingsError, "every"),
    (blob((16, 16)), dict(dims=2, max_steps=-1), SettingsError, "max_steps"),
    (blob((16, 16)), dict(dims=2, device="gpu7"), SettingsError, "unknown device"),
    (blob((16, 16)), dict(dims=2, spacing=(1.0,)), SettingsError, "spacing"),
])
def test_fit_rejects_bad_input(target, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        fit(target, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_fit_cuda_without_cuda_says_so() -> None:
    with pytest.raises(SettingsError, match="no CUDA device.*--device cpu"):
        fit(blob((16, 16)), dims=2, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_matches_cpu_start() -> None:
    target = blob(SMALL[3])
    gpu = fit(target, dims=3, max_steps=STEP_BUDGET, device="cuda")
    cpu = fit(target, dims=3, max_steps=0, device="cpu")
    assert gpu.reached and gpu.device.startswith("cuda")
    assert gpu.history[0][1] == pytest.approx(cpu.history[0][1], abs=1e-5)  # same noise


# --------------------------------------------------------------------------- the GIF


def test_gif_frames_are_in_step_order(fitted, tmp_path: Path) -> None:
    """Decode the GIF: frame count, the comment record, and each frame's drawn label and
    pixels checked against the fit, in order (no file names involved)."""
    _, _, res = fitted
    path = save_gif(res.frames, tmp_path / "fit.gif", 40, records=res.frame_history)
    decoded = _decoded(path)
    assert len(decoded) == len(res.frames)
    record = read_gif_record(path)
    assert [s for s, _ in record] == [s for s, _ in res.frame_history]
    assert [s for s, _ in record] == sorted({s for s, _ in record})  # strictly increasing
    assert [v for _, v in record] == pytest.approx([v for _, v in res.frame_history], abs=1e-6)
    width = decoded[0].width
    for n, (frame, (step, value)) in enumerate(zip(decoded, record)):
        band = frame.crop((0, 0, width, LABEL_HEIGHT))
        assert band.tobytes() == render_label(step, value, width).tobytes(), f"frame {n}"
        assert frame.tobytes() == res.frames[n].tobytes()  # grayscale GIF frames are lossless
    # the label check has teeth: neighbouring frames' labels differ
    other = render_label(*record[1], width)
    assert decoded[0].crop((0, 0, width, LABEL_HEIGHT)).tobytes() != other.tobytes()


def test_gif_durations_hold_the_last_frame(tmp_path: Path) -> None:
    res = fit(blob(SMALL[2]), dims=2, max_steps=4, every=1)
    path = save_gif(res.frames, tmp_path / "d.gif", 60)
    with Image.open(path) as im:
        durations = []
        for f in ImageSequence.Iterator(im):
            durations.append(f.info["duration"])
    assert durations == [60] * 4 + [FINAL_HOLD_MS]


def test_frame_label_text() -> None:
    assert frame_label(40, 0.81234) == "step 40  SSIM 0.8123"


@pytest.mark.parametrize(("frames", "kwargs", "match"), [
    ([], {}, "at least one frame"),
    ([Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 0)], {}, "identical"),
    ([Image.new("L", (8, 8), 0)], dict(records=[(0, 0.1), (1, 0.2)]), "records has 2"),
    ([Image.new("L", (8, 8), 0)], dict(duration_ms=5), "duration_ms"),
])
def test_save_gif_rejects(frames, kwargs, match, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=match):
        save_gif(frames, tmp_path / "x.gif", **kwargs)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_read_gif_record_without_record(tmp_path: Path) -> None:
    path = tmp_path / "plain.gif"
    Image.new("L", (4, 4)).save(path)
    with pytest.raises(InputError, match="no volqa fit record"):
        read_gif_record(path)


# --------------------------------------------------------------------------- targets


def test_default_target() -> None:
    two, three = load_target(None, dims=2), load_target(None, dims=3)
    assert three.array.shape == (64, 64, 48) and three.spacing == (1.0, 1.0, 1.5)
    assert two.array.shape == (64, 64) and two.spacing == (1.0, 1.0)
    assert np.array_equal(two.array, orthogonal_slices(three.array)[0])
    assert str(DEFAULT_TARGET) in two.description


def test_default_2d_demo_reaches_threshold() -> None:
    t = load_target(None, dims=2)
    res = fit(t.array, dims=2, spacing=t.spacing, every=20)
    assert res.reached and res.steps < 1000


def test_nifti_is_reoriented_to_ras(tmp_path: Path) -> None:
    ras = blob((16, 18, 20))
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # i runs right-to-left: stored flipped (LAS)
    nib.save(nib.Nifti1Image(ras[::-1].copy(), affine), tmp_path / "las.nii.gz")
    three = load_target(tmp_path / "las.nii.gz", dims=3)
    assert np.array_equal(three.array, ras) and three.spacing == (1.0, 1.0, 2.0)
    two = load_target(tmp_path / "las.nii.gz", dims=2)
    assert np.array_equal(two.array, np.flipud(ras[:, :, 10].T))


def test_png_target(png: Path) -> None:
    t = load_target(png, dims=2)
    assert t.array.shape == (32, 32) and t.array.dtype == np.float32
    with pytest.raises(InputError, match="2-D image cannot be a 3-D target"):
        load_target(png, dims=3)


def test_unreadable_targets(tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(InputError, match="fake.png"):
        load_target(fake, dims=2)
    with pytest.raises(InputError):
        load_target(tmp_path / "missing.nii.gz", dims=3)


# --------------------------------------------------------------------------- CLI and script


def test_cli_not_reaching_threshold_exits_0(png: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.gif"
    result = CliRunner().invoke(demo_app, ["fit", "--target", str(png), "--out", str(out),
                                           "--max-steps", "3", "--every", "1"])
    assert result.exit_code == 0, result.output
    assert "threshold 0.95 not reached" in result.stdout
    assert "after 3 steps" in result.stdout
    assert "4 frames" in result.stdout
    assert [s for s, _ in read_gif_record(out)] == [0, 1, 2, 3]


def test_cli_3d_reaches_threshold(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(blob(SMALL[3]), np.eye(4)), tmp_path / "vol.nii.gz")
    out = tmp_path / "vol.gif"
    result = CliRunner().invoke(demo_app, [
        "fit", "--dims", "3", "--target", str(tmp_path / "vol.nii.gz"), "--out", str(out),
        "--threshold", "0.9", "--lr", "0.02", "--every", "10", "--duration", "50",
        "--seed", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "reached SSIM 0.9" in result.stdout and ">= 0.9 after" in result.stdout
    record = read_gif_record(out)
    assert len(_decoded(out)) == len(record) and record[-1][1] >= 0.9


@pytest.mark.parametrize(("args", "match"), [
    (["--lr", "0"], "lr must be > 0"),
    (["--device", "gpu7"], "unknown device"),
    (["--dims", "3"], "2-D image cannot be a 3-D target"),
])
def test_cli_user_errors_exit_2_without_traceback(png: Path, tmp_path: Path, args, match) -> None:
    result = CliRunner().invoke(demo_app, ["fit", "--target", str(png),
                                           "--out", str(tmp_path / "e.gif"), *args])
    assert result.exit_code == 2
    assert match in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "e.gif").exists()


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(demo_app, ["fit", "--target", str(tmp_path / "none.png")])
    assert missing.exit_code == 2
    assert runner.invoke(demo_app, ["fit", "--dims", "4"]).exit_code == 2
    assert runner.invoke(demo_app, ["fit", "--every", "0"]).exit_code == 2


@pytest.mark.parametrize(("name", "match"), [
    ("no/such/dir.gif", "is not a folder"),
    ("frames.png", "ending in .gif"),
])
def test_cli_bad_output_is_refused_before_the_fit(png: Path, tmp_path: Path, name, match) -> None:
    out = tmp_path / name
    result = CliRunner().invoke(demo_app, ["fit", "--target", str(png), "--out", str(out),
                                           "--max-steps", "500", "--threshold", "1.0"])
    assert result.exit_code == 2 and match in result.stderr
    assert "Traceback" not in result.output and "fit" not in result.stdout
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_demo_app_mounts_as_volqa_demo_fit(png: Path, tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Stand-in for volqa's CLI."""

    app.add_typer(demo_app, name="demo")
    result = CliRunner().invoke(app, ["demo", "fit", "--target", str(png), "--out",
                                      str(tmp_path / "m.gif"), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.gif").is_file()


def test_script_runs(png: Path, tmp_path: Path) -> None:
    out = tmp_path / "script.gif"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--target", str(png), "--out", str(out),
         "--max-steps", "2"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not reached" in proc.stdout and "after 2 steps" in proc.stdout
    assert out.is_file()
