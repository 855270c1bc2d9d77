"""The benchmark code on tiny data: FMDD loader and split, metric conventions, baselines,
the reference loop and FLOP counting. No timing assertions: speed is measured by the scripts."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import baselines  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import speed  # noqa: E402

from napari_b2u.io.fmdd import list_sets, list_views, load_view, read_fmdd_folder, split_views
from napari_b2u.masking import global_mask  # noqa: E402
from napari_b2u.methods import get_method  # noqa: E402
from napari_b2u.metrics import evaluate  # noqa: E402
from napari_b2u.sample_data import fmdd_like_stack  # noqa: E402

from .conftest import TINY  # noqa: E402


@pytest.fixture(scope="module")
def fmdd_root(tmp_path_factory):
    """A tiny FMDD-format folder: one set, views 1, 2, 19; 3 frames of 64x64; avg50 gt."""
    root = tmp_path_factory.mktemp("fmdd")
    for v, view in enumerate(["1", "2", "19"]):
        noisy, clean = fmdd_like_stack(3, (64, 64), seed=10 + v)
        (root / "Confocal_TEST" / "raw" / view).mkdir(parents=True)
        (root / "Confocal_TEST" / "gt" / view).mkdir(parents=True)
        for i, f in enumerate(noisy):
            Image.fromarray(f).save(root / "Confocal_TEST" / "raw" / view / f"HV_{i:02d}.png")
        Image.fromarray(np.rint(clean).astype(np.uint8)).save(
            root / "Confocal_TEST" / "gt" / view / "avg50.png")
    return root


def test_fmdd_loader_and_split(fmdd_root):
    sets = list_sets(fmdd_root)
    assert [s.name for s in sets] == ["Confocal_TEST"]
    assert list_views(sets[0]) == ["1", "2", "19"]  # numeric order, not string order
    train, test = split_views(sets[0])
    assert train == ["1", "2"] and test == "19"
    v = load_view(sets[0], "19")
    assert v.noisy.shape == (3, 64, 64) and v.noisy.dtype == np.uint8 and v.gt.shape == (64, 64)
    img = read_fmdd_folder(sets[0])
    assert img.axes == "STYX" and img.data.shape == (3, 3, 64, 64)
    ds = quality.fmdd_sets(fmdd_root)[0]
    assert ds.train.shape == (6, 64, 64) and ds.test.shape == (3, 64, 64)


def test_metric_conventions():
    ref = np.full((32, 32), 100.0)
    img = ref.copy()
    img[0, 0] = 100.49  # rounds to 100: no error after 8-bit rounding
    img[1, 1] = 300.0  # clamps to 255: error 155
    p, s = evaluate(img, ref)
    assert p == pytest.approx(10 * np.log10(255**2 / (155**2 / 32**2)))
    assert 0 < s <= 1


def test_quality_benchmark_runs_on_fmdd_folder(fmdd_root):
    sets = quality.fmdd_sets(fmdd_root)
    kw = {k: v for k, v in TINY.items() if k not in ("device", "progress")}
    rows = quality.run_quality(sets, ("stack", "single"), ["noisy", "gaussian", "b2u"],
                               test_frames=2, train_kw={**kw, "steps": 6}, device="cpu",
                               log=lambda *_: None)
    by = {(r.regime, r.method): r for r in rows}
    # the noisy row is exactly the FMDD convention applied to the raw test frames
    ds = sets[0]
    expected = np.mean([evaluate(f, ds.gt)[0] for f in ds.test[:2]])
    assert by[("stack", "noisy input")].psnr == pytest.approx(expected)
    assert by[("single", "noisy input")].psnr == pytest.approx(evaluate(ds.test[0], ds.gt)[0])
    # the oracle Gaussian can only help (its grid is searched against the ground truth)
    assert by[("stack", "Gaussian (oracle σ)")].psnr > by[("stack", "noisy input")].psnr
    for regime in ("stack", "single"):
        for out in ("visible", "weighted"):
            r = by[(regime, f"b2u {out}")]
            assert np.isfinite(r.psnr) and r.train_s > 0 and "steps" in r.notes
    table = quality.format_table(rows, paper=True)
    assert "Confocal_MICE | stack | B2U, paper Table 4 | 38.44" in table


def test_ablations_cover_b2u_and_other_methods(monkeypatch):
    # two of the ablations, a few tiny steps: B2U rows report the visible output, a D-BSN
    # ablation reports both of its outputs, and each trains with its own settings
    monkeypatch.setattr(quality, "ABLATIONS", {k: quality.ABLATIONS[k] for k in
                                               ("b2u s=4", "dbsn likelihood loss")})
    sets = quality.synthetic_sets(views=2, frames=2, size=32, names=["synth-confocal-fish"])
    kw = {k: v for k, v in TINY.items() if k not in ("device", "progress")}
    rows = quality.run_quality(sets, ("stack",), ["noisy"], test_frames=1,
                               train_kw={**kw, "steps": 4}, ablations=True, device="cpu",
                               log=lambda *_: None)
    labels = [r.method for r in rows]
    dbsn_outs = get_method("dbsn").outputs
    assert labels == ["noisy input", "b2u s=4",
                      *(f"dbsn likelihood loss, {o}" for o in dbsn_outs)]
    assert set(dbsn_outs) == {"mu", "bayes"}
    assert all(np.isfinite(r.psnr) and r.train_s > 0 for r in rows[1:])
    assert rows[1].notes == "4 steps, visible"


def test_report_tables(tmp_path):
    import json
    from dataclasses import asdict

    def row(s, regime, m, p, train=None, ro=None):
        return asdict(quality.Row(s, regime, m, p, 0.9, train_s=train,
                                  extra={"readout": ro} if ro else {}))

    full = [row("A", "stack", "noisy input", 20.0), row("A", "stack", "VST+BM3D", 40.0),
            row("A", "stack", "b2u visible", 30.0, 10), row("A", "stack", "b2s visible", 29.0, 12,
                                                            {"noise_gain": 6.4,
                                                             "noise_sigma": 5.1}),
            row("B", "stack", "b2u visible", 31.0, 11)]
    rerun = [row("A", "stack", "b2s visible", 32.0, 13, {"noise_gain": 6.0, "noise_sigma": 5.0})]
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    rows = report.load_rows([tmp_path / "full.json", tmp_path / "rerun.json"])
    assert len(rows) == 5  # the re-run replaced its row
    table = report.pivot(rows, "stack").splitlines()
    assert table[0] == "| method | A PSNR / SSIM | train (s) | B PSNR / SSIM | train (s) |"
    # the best learned model of each set in bold (BM3D is a baseline, not in the contest)
    assert "| VST+BM3D | 40.00 / 0.900 |  |  |  |" in table
    assert "| b2s visible | **32.00 / 0.900** | 13 |  |  |" in table
    assert "| b2u visible | 30.00 / 0.900 | 10 | **31.00 / 0.900** | 11 |" in table
    ro = report.readouts(rows)
    assert "| A | stack | b2s | 6.00 | 5.00 |" in ro and "6.40" not in ro  # the re-run's fit


def test_synthetic_sets_shapes():
    sets = quality.synthetic_sets(views=2, frames=2, size=32)
    assert [s.name for s in sets] == list(quality.SYNTHETIC)
    assert set(quality.DEFAULT_SETS) <= set(quality.SYNTHETIC)
    assert sets[0].train.shape == (2, 32, 32) and sets[0].gt.shape == (32, 32)
    # the real-data-like sets do what their names say
    from napari_b2u.noise import noise_correlation

    corr, clip = quality.synthetic_sets(views=2, frames=2, size=128,
                                        names=["synth-confocal-corrx", "synth-confocal-clipped"])
    along_x, along_y = noise_correlation(corr.train)
    assert along_x[0] > 0.15 and abs(along_y[0]) < 0.08
    assert (clip.train == 0).mean() > 0.01  # background clipped at zero


def test_noise_estimate_and_vst():
    noisy, clean = fmdd_like_stack(1, (256, 256), seed=0)  # true a = 6.4, b = 26
    a, b = baselines.estimate_poisson_gaussian(noisy[0])
    assert 3 < a < 13
    # the transform stabilizes: unit variance on pure Poisson-Gaussian data of known params
    rng = np.random.default_rng(0)
    y = 6.0 * rng.poisson(20.0, 200_000) + rng.normal(0, 4.0, 200_000)
    assert np.var(baselines.gat(y, 6.0, 16.0)) == pytest.approx(1.0, abs=0.05)
    # and the inverse is unbiased at the mean
    d = baselines.gat(y, 6.0, 16.0).mean()
    assert baselines.inverse_gat(np.array([d]), 6.0, 16.0)[0] == pytest.approx(120.0, rel=0.02)


def test_vst_bm3d_denoises():
    pytest.importorskip("bm3d")
    noisy, clean = fmdd_like_stack(1, (64, 64), seed=1)
    out, _ = baselines.vst_bm3d(noisy[0])
    assert evaluate(out, clean)[0] > evaluate(noisy[0], clean)[0] + 3


def test_reference_masker_matches_global_masker_inside():
    x = torch.rand(2, 1, 16, 16)
    for s in (2, 4):
        ref, masks = speed.ref_masker_train(x, s)
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
        torch.testing.assert_close(ref[inner], global_mask(x, s)[inner])
        assert masks.view(2, s * s, 16, 16).sum(1).eq(1).all()


def test_reference_trainer_and_fast_path_run():
    frames, clean = fmdd_like_stack(4, (64, 64), seed=2)
    ref = speed.ReferenceTrainer(frames, torch.device("cpu"), width=8, depth=2, patch=32,
                                 batch=2, cells=2, steps=3)
    losses = [float(ref.train_step()) for _ in range(3)]
    assert all(np.isfinite(losses))
    assert ref.denoise(frames[0]).shape == (64, 64)
    sec, _, mem, flops = speed.time_fast(frames, torch.device("cpu"), 2, 8, 2, 32, 2, 1, 2,
                                         False)
    assert sec > 0 and flops > 0 and "GiB" in mem


@pytest.mark.parametrize("method", ["b2u", "b2s", "dbsn", "n2v", "nbr2nbr"])
def test_speed_rows_for_every_method(method):
    # as the per-method table calls it: cells None (each method's default)
    frames, _ = fmdd_like_stack(4, (64, 64), seed=3)
    sec, _, mem, flops = speed.time_fast(frames, torch.device("cpu"), None, 8, 2, 32, 2, 1, 2,
                                         False, method=method)
    assert sec > 0 and "GiB" in mem
    assert (flops is not None and flops > 0) if method == "b2u" else flops is None


def test_time_to_quality_and_inference_rows():
    frames, clean = fmdd_like_stack(6, (64, 64), seed=4)
    dev = torch.device("cpu")
    res = speed.time_to_quality(frames[:4], clean, frames[4:], dev, 2, 8, 2, 32, 2, steps=4,
                                every=2, compile_=False)
    # the published loop at its own lr (1e-4) and at the fast path's (the CPU preset's 1e-3)
    assert set(res) == {"fast", "reference", "reference, lr 0.001"}
    for final, reach, total in res.values():
        # final PSNR of the last evaluation; the time to reach it cannot exceed the total
        assert np.isfinite(final) and 0 < reach <= total
    # wider than the tile: denoised in overlapping tiles
    mps, sec, mem = speed.time_inference(dev, 8, 2, (1, 96, 300), "weighted", tile_size=192)
    assert mps == pytest.approx(96 * 300 / 1e6 / sec) and "GiB" in mem


def test_flop_count_matches_hand_formula():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1))
    assert speed.conv_flops(conv, (1, 1, 8, 8)) == 2 * 9 * 1 * 4 * 64
    unet = speed.UNet(1, 1, 48, 5)
    # the reference U-Net: 9.24 GFLOP per 128x128 forward
    assert speed.conv_flops(unet, (1, 1, 128, 128)) == pytest.approx(9.24e9, rel=0.01)
    assert speed.b2u_step_flops(unet, 4, 128, 2) == speed.conv_flops(
        unet, (1, 1, 128, 128)) * (3 * 16 + 4)


# ---- the real-data benchmark, on a stand-in folder of the same layout -----------------------
@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    """pairs/<name>_{noisy,gt}.tif and w2s/{noisy,gt}/w2s_NNN_chC.tif, synthetic, 48x48."""
    import tifffile

    root = tmp_path_factory.mktemp("real")
    (root / "pairs").mkdir()
    for d in ("noisy", "gt"):
        (root / "w2s" / d).mkdir(parents=True)
    for i in range(1, 21):
        noisy, clean = fmdd_like_stack(1, (48, 48), seed=i)
        for ch in ("ch0", "ch1", "ch2"):
            tifffile.imwrite(root / "w2s" / "noisy" / f"w2s_{i:03d}_{ch}.tif", noisy[0])
            tifffile.imwrite(root / "w2s" / "gt" / f"w2s_{i:03d}_{ch}.tif",
                             np.rint(clean).astype(np.uint8))
    noisy, clean = fmdd_like_stack(1, (48, 48), seed=99, photons=10)
    tifffile.imwrite(root / "pairs" / "demo_noisy.tif", noisy[0])
    tifffile.imwrite(root / "pairs" / "demo_gt.tif", (clean * 0.5 + 7).astype(np.float32))
    return root


def test_affine_psnr_ignores_scale_and_offset():
    import real

    gt = np.random.default_rng(0).uniform(0, 255, (32, 32))
    assert real.affine_psnr(3.0 * gt - 11.0, gt) > 200  # exact up to rounding
    noisy = gt + np.random.default_rng(1).normal(0, 5, gt.shape)
    assert real.affine_psnr(noisy * 0.01, gt) == pytest.approx(real.affine_psnr(noisy, gt))
    assert real.score(np.stack([noisy, noisy]), np.stack([gt, gt])) == pytest.approx(
        real.affine_psnr(noisy, gt))


def test_clip_case_puts_half_the_pixels_at_zero(real_root):
    import real

    noisy, gt, axes = real.load_case(real_root, "pair:demo")
    clipped, gt2, axes2 = real.load_case(real_root, "clip:pair:demo")
    assert clipped.dtype == noisy.dtype and axes2 == axes
    assert (clipped == 0).mean() >= real.CLIP_FRACTION > (noisy == 0).mean()
    np.testing.assert_array_equal(gt2, gt)  # the truth is left alone
    # one offset for the whole image: what is left above 0 is the input shifted
    kept = clipped > 0
    shift = noisy.astype(np.float64)[kept] - clipped[kept]
    assert np.ptp(shift) < 1e-6


def test_clip_case_takes_a_fraction(real_root):
    import real

    clipped, _, _ = real.load_case(real_root, "clip0.7:pair:demo")
    assert (clipped == 0).mean() >= 0.7


def test_noise_check_benchmark_reads_the_truth_and_prints_a_row_per_case(real_root, capsys):
    import noise_check

    from napari_b2u.sample_data import correlate

    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 150, (64, 64))
    noise = correlate(rng.normal(0, 1, gt.shape), 0.3, 0.0)
    tx, ty = noise_check.truth_correlation(np.clip(gt + 10 * noise, 0, 255).astype(np.uint8), gt)
    assert tx == pytest.approx(0.3, abs=0.08) and abs(ty) < 0.08
    assert noise_check.main(["--data", str(real_root), "--fractions", "0.5,0.6"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| case", "| demo", "| clip0.5:demo",
                                                  "| clip0.6:demo"]


def test_rows_keep_the_commas_of_their_options():
    import real

    assert real.split_rows("gaussian, default[mask=box:3,3;cells=4],b2u") == [
        "gaussian", "default[mask=box:3,3;cells=4]", "b2u"]
    assert quality.split_rows is real.split_rows  # quality.py's --methods splits the same way


def test_colored_bm3d_reads_the_noise_correlation_and_beats_white_bm3d_on_it():
    """The tuned anchor for scan-correlated noise: told the noise's spectrum (fitted against the
    truth) it must read the correlation and do better than the same BM3D assuming white noise."""
    pytest.importorskip("bm3d")
    import real

    from napari_b2u.sample_data import correlate

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    gt = 100 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    noisy = gt + 12 * correlate(rng.normal(0, 1, gt.shape), 0.35, 0.0)
    out, info = real.colored_bm3d(noisy, gt)
    assert info["corr_x1"] == pytest.approx(0.35, abs=0.08) and abs(info["corr_y1"]) < 0.08
    assert info["psd_scale"] in real.PSD_SCALES and out.shape == noisy.shape
    white = real.run_classical("bm3d-oracle", noisy, gt)["psnr"]
    colored = real.run_classical("bm3d-colored", noisy, gt)["psnr"]
    assert colored == pytest.approx(real.affine_psnr(out, gt), abs=0.01)
    assert colored > white + 0.3 > real.affine_psnr(noisy, gt) + 0.3


def test_real_benchmark_runs_every_kind_of_row(real_root, tmp_path, capsys, monkeypatch):
    import json

    import real

    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2,
                                         "patch_size": 32})
    out = tmp_path / "r.json"
    rows = "noisy,gaussian,default,b2u[warm_start=none;tta=false],gauss,n2v-peer"
    cases = "w2s-stack,pair:demo,w2s:003_ch1"
    assert real.main(["--data", str(real_root), "--cases", cases, "--methods", rows,
                      "--budget", "4", "--careamics-python", str(tmp_path / "none"),
                      "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res) == set(cases.split(","))
    stack = res["w2s-stack"]
    assert stack["gaussian"]["psnr"] > stack["noisy"]["psnr"]
    assert stack["default"]["steps"] >= 1 and stack["default"]["train_s"] > 0
    assert "psnr_one_pass" not in stack["b2u[warm_start=none;tta=false]"]
    assert "no CAREamics peer" in stack["n2v-peer"]["error"]
    text = capsys.readouterr().out
    assert "| row | w2s-stack | pair:demo | w2s:003_ch1 | mean |" in text
    assert real.parse_row("b2u[ema=0.99;warm_start=none]") == ("b2u", {"ema": 0.99,
                                                                       "warm_start": "none"})
    assert real.main(["--data", str(tmp_path)]) == 2  # no data: a message, not a traceback


def test_real_benchmark_curve_scores_the_first_frame_as_training_goes(real_root, tmp_path):
    """``--curve``: the network's one-pass output on the first frame every N steps, scored
    against the truth; ``reach_s`` is the first time within 0.1 dB of the last point."""
    import json

    import real

    out = tmp_path / "c.json"
    row = "b2u[warm_start=none;width=16;depth=2;patch_size=32;steps=6]"
    assert real.main(["--data", str(real_root), "--cases", "pair:demo", "--methods", row,
                      "--budget", "60", "--curve", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]["pair:demo"][row]
    curve = res["curve"]
    assert [s for _, s, _ in curve][:3] == [2, 4, 6]  # every 2 steps (then the last preview)
    times = [t for t, _, _ in curve]
    assert times == sorted(times) and all(np.isfinite(q) for _, _, q in curve)
    final = curve[-1][2]
    first_within = next(t for t, _, q in curve if q >= final - 0.1)
    assert res["reach_s"] == first_within
    assert "peak_gib" not in res  # a CPU run has no GPU peak


def test_pretrain_writes_a_model_that_warm_starts(tmp_path, small_stack):
    """benchmarks/pretrain.py (how the packaged model is made) on a tiny network for a few
    steps, each also supervising the blind branch: the file records its run, loads, and
    fine-tuning starts from it."""
    import pretrain

    from napari_b2u import api
    from napari_b2u.denoise.denoiser import Denoiser

    out = tmp_path / "pre.b2u"
    assert pretrain.main(["--width", "8", "--depth", "2", "--steps", "4", "--pool", "4",
                          "--patch", "32", "--batch", "4", "--blind-every", "1",
                          "--out", str(out)]) == 0
    model = Denoiser.load(out)
    assert model.info["steps"] == 4 and "synthetic only" in model.info["data"]
    assert model.info["command"].startswith("python benchmarks/pretrain.py --width 8")
    noisy, _ = small_stack
    tuned = api.train_stack(noisy, steps=2, warm_start=str(out), width=8, depth=2,
                            patch_size=32, batch_size=4, device="cpu", progress=False,
                            floor="none")
    assert tuned.info["warm_start"] == "from pre.b2u (4 steps)"
    # the weights it started from are the pretrained ones, not a fresh initialization
    # (a single-frame network: with stack context it is widened, tests/test_context.py)
    fresh = api.make_trainer(noisy, steps=1, warm_start=str(out), width=8, depth=2,
                             patch_size=32, batch_size=4, device="cpu", floor="none",
                             context=0)
    for k, v in model.state_dict.items():
        assert torch.equal(fresh.model.state_dict()[k].float().cpu(), v.float()), k
