"""Stack context (issue 27): each frame denoised with its neighbours along the stack's T or Z
axis — which frames are neighbours, when ``context="auto"`` uses them, that the blind spot
still hides the centre pixel, and that a context model works everywhere a model is used."""

import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.cli import main
from napari_b2u.context import context_axis, context_index, measure_context
from napari_b2u.data import Layout
from napari_b2u.errors import InputError
from napari_b2u.methods import get_method

from .conftest import TINY

FAST = {**TINY, "floor": "none"}


def _static_stack(n=10, size=64, seed=0):
    """One clean structured image seen ``n`` times with independent Poisson-Gaussian noise (a
    static field captured again and again, as FMDD's raw captures)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clean = 0.2 + 0.6 * ((np.sin(xx / 3.0) * np.cos(yy / 4.0)) > 0.2)
    noisy = rng.poisson(clean * 20, (n, size, size)) / 20 + rng.normal(0, 0.03, (n, size, size))
    return (np.clip(noisy, 0, 1.5) * 150).astype(np.uint8), clean * 150


def _unrelated_stack(n=10, size=64, seed=0):
    """``n`` different structures (the W2S stack: unrelated fields of view), noisy."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        f = rng.random(2) * 0.3 + 0.1
        yy, xx = np.mgrid[:size, :size]
        ph = rng.random(2) * 6.3
        clean = 0.2 + 0.6 * ((np.sin(xx * f[0] + ph[0]) * np.cos(yy * f[1] + ph[1])) > 0.1)
        frames.append(rng.poisson(clean * 20) / 20 + rng.normal(0, 0.03, clean.shape))
    return (np.clip(np.stack(frames), 0, 1.5) * 150).astype(np.uint8)


# ---- which frames, which axis -----------------------------------------------------------------
def test_neighbours_are_reflected_at_the_stack_ends():
    idx = context_index(Layout("TYX", (5, 8, 8)), "T", 2)
    # each row: the frame, then -1, +1, -2, +2
    assert idx[0].tolist() == [0, 1, 1, 2, 2]
    assert idx[2].tolist() == [2, 1, 3, 0, 4]
    assert idx[4].tolist() == [4, 3, 3, 2, 2]
    with pytest.raises(InputError, match="at least 3 frames along T"):
        context_index(Layout("TYX", (2, 8, 8)), "T", 2)


def test_neighbours_along_an_inner_or_outer_axis():
    lay = Layout("TZYX", (3, 4, 8, 8))  # frames are (t, z) with z innermost
    along_z, along_t = context_index(lay, "Z", 1), context_index(lay, "T", 1)
    assert along_z[5].tolist() == [5, 4, 6]  # (t=1, z=1): z 0 and 2 of the same t
    assert along_t[5].tolist() == [5, 1, 9]  # t 0 and 2 of the same z


def test_the_axis_is_z_then_t_unless_given():
    assert context_axis(Layout("ZYX", (4, 8, 8))) == "Z"
    assert context_axis(Layout("TYX", (4, 8, 8))) == "T"
    assert context_axis(Layout("TZYX", (2, 4, 8, 8))) == "Z"
    assert context_axis(Layout("TZYX", (2, 4, 8, 8)), "T") == "T"
    assert context_axis(Layout("YX", (8, 8))) is None
    with pytest.raises(InputError, match="neighbours can be taken along T"):
        context_axis(Layout("TYX", (4, 8, 8)), "Z")


# ---- auto ---------------------------------------------------------------------------------
def test_auto_uses_neighbours_of_a_static_stack_and_none_of_unrelated_frames():
    static, _ = _static_stack(12, 96)
    lay = Layout("TYX", static.shape)
    rep = measure_context(lay.to_frames(static), lay, "T")
    assert rep.chosen > 0 and rep.gains[0] > 0.01
    unrelated = _unrelated_stack(12, 96)
    rep = measure_context(lay.to_frames(unrelated), lay, "T")
    assert rep.chosen == 0 and "no better" in rep.reason
    assert api.context_report(unrelated, "TYX").chosen == 0


def test_check_prints_the_context_decision(tmp_path, capsys):
    import tifffile

    static, _ = _static_stack(12, 96)
    tifffile.imwrite(tmp_path / "s.tif", static, metadata={"axes": "TYX"})
    assert main(["check", str(tmp_path / "s.tif")]) == 0
    out = capsys.readouterr().out
    assert "stack context along T:" in out and "frame(s) on each side" in out


# ---- the blind spot ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["b2u", "b2s", "n2v"])
def test_the_centre_pixel_stays_hidden_and_the_neighbours_are_seen(name):
    """The blind prediction of a pixel does not move when that pixel of the centre frame
    changes, and does when the same pixel of a neighbouring frame changes."""
    method = get_method(name)
    method.set_context(1)
    torch.manual_seed(0)
    net = method.build(method.model_config(1, 16, 2)).eval()
    y = torch.rand(1, 3, 32, 32)
    p = (13, 17)

    def blind(x):
        if name == "n2v":  # N2V's blind spot is its masked pixels: mask every pixel once
            from napari_b2u.methods.b2u import Blind2Unblind

            b = Blind2Unblind()
            b.set_context(1)
            return b.blind(net, x)  # the same masker as B2U's, the same network input
        return method.blind_prediction(net, x)

    with torch.no_grad():
        base = blind(y)[0, 0][p]
        centre, nbr = y.clone(), y.clone()
        centre[0, 0][p] += 5.0
        nbr[0, 1][p] += 5.0
        assert torch.isclose(blind(centre)[0, 0][p], base, atol=1e-5)
        assert not torch.isclose(blind(nbr)[0, 0][p], base, atol=1e-3)


def test_methods_without_a_mask_say_why_they_cannot_take_context(small_stack):
    noisy, _ = small_stack
    for name, why in (("dbsn", "first convolutions"), ("nbr2nbr", "sub-sampled alike"),
                      ("gauss", "no network")):
        with pytest.raises(InputError, match=why):
            api.train_stack(noisy, method=name, steps=2, context=2, **FAST)
    # auto: each frame alone, said in the model's record
    model = api.train_stack(noisy, method="nbr2nbr", steps=2, **FAST)
    assert model.context is None and "cannot take context" in model.info["context"]["reason"]


# ---- everywhere a model is used ---------------------------------------------------------------
@pytest.fixture(scope="module")
def context_model():
    noisy, _ = _static_stack(10, 64)
    return api.train_stack(noisy, axes="TYX", steps=20, context=2, seed=0, **TINY), noisy


def test_a_context_model_records_and_reloads_its_context(context_model, tmp_path):
    model, noisy = context_model
    assert model.context == {"frames": 2, "axis": "T"}
    assert model.model_config["in_channels"] == 5 and model.model_config["out_channels"] == 1
    ck = model.to_checkpoint()
    assert ck["version"] == 4 and ck["context"] == {"frames": 2, "axis": "T"}
    loaded = api.load(model.save(tmp_path / "c.b2u"))
    np.testing.assert_array_equal(loaded.denoise(noisy, tta=False), model.denoise(noisy, tta=False))
    ck["version"] = 3  # a file that claims an older format but holds a context: still checked
    ck["context"] = {"frames": 99, "axis": "T"}
    torch.save(ck, tmp_path / "bad.b2u")
    with pytest.raises(InputError, match="stack context"):
        api.load(tmp_path / "bad.b2u")


def test_a_context_model_on_a_single_image_says_what_it_needs(context_model):
    model, noisy = context_model
    with pytest.raises(InputError, match="neighbouring frame.*no T axis"):
        model.denoise(noisy[0])
    with pytest.raises(InputError, match="at least 3 frames along T"):
        model.denoise(noisy[:2])


def test_each_frame_is_denoised_with_its_own_neighbours(context_model):
    """Frame 3 of the stack is the network's output on frames 3, 2, 4, 1, 5."""
    model, noisy = context_model
    out = model.denoise(noisy, dtype="float32", tta=False)
    x = model.normalization.apply(noisy[[3, 2, 4, 1, 5]][:, None].astype(np.float32))
    with torch.no_grad():
        pred = model.method.predict(model.model("cpu"), torch.from_numpy(x.reshape(1, 5, 64, 64)))
    ref = model.normalization.invert(pred.numpy())[0, 0]
    np.testing.assert_allclose(out[3], ref, atol=1e-3)


def test_the_ome_zarr_output_equals_the_in_memory_one(context_model, tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("ome_zarr")
    model, noisy = context_model
    tiled = model.denoise(noisy, tta=False, batch_size=2, tile_size=32, tile_overlap=8)
    res = model.denoise_to_zarr(noisy, tmp_path / "o.ome.zarr", axes="TYX", tta=False,
                                batch_size=2, tile_size=32, tile_overlap=8, chunk=32,
                                block_pixels=2 * 32 * 32)
    out = np.asarray(res.open()[0])
    np.testing.assert_array_equal(out, tiled)  # blocks read their neighbours: the same pixels


def test_context_beats_each_frame_alone_on_a_static_stack():
    """Not a benchmark (docs/benchmarks.md has those): on a static stack, with the same short
    training, the neighbours must help."""
    from napari_b2u.metrics import psnr

    noisy, clean = _static_stack(10, 64, seed=1)
    scores = {}
    for k in (0, 2):
        m = api.train_stack(noisy, axes="TYX", steps=60, context=k, seed=0, lr=3e-3,
                            warm_start="none", **FAST)
        out = m.denoise(noisy, dtype="float32", tta=False)
        scores[k] = np.mean([psnr(clean, o, data_range=150) for o in out])
    assert scores[2] > scores[0] + 0.5


def test_warm_start_widens_a_single_frame_network(small_stack, tmp_path):
    """A context network started from a single-frame model computes exactly that model's
    output at first: the neighbours' weights start at zero."""
    from napari_b2u.train.warm_start import widen

    noisy, _ = small_stack
    single = api.train_stack(noisy, steps=3, context=0, **FAST)
    method = get_method("b2u")
    method.set_context(2)
    wide_net = method.build(method.model_config(1, 16, 2))
    wide_net.load_state_dict(widen(single.state_dict, wide_net.state_dict()))
    x = torch.rand(2, 1, 32, 32)
    ctx = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        a = single.model("cpu")(x)
        b = wide_net(torch.cat([x, ctx], 1))
    torch.testing.assert_close(a, b)
    path = single.save(tmp_path / "single.b2u")
    tr = api.make_trainer(noisy, steps=1, context=2, warm_start=str(path),
                          **{k: v for k, v in FAST.items() if k != "progress"})
    assert tr.warm_start.startswith("from single.b2u")


def test_cli_trains_with_context_and_resume_keeps_it(tmp_path):
    import tifffile

    from napari_b2u.train.trainer import Trainer

    noisy, _ = _static_stack(8, 64)
    tifffile.imwrite(tmp_path / "s.tif", noisy, metadata={"axes": "TYX"})
    args = ["--device", "cpu", "--patch-size", "32", "--width", "16", "--depth", "2",
            "--floor", "none", "-q"]
    assert main(["train", str(tmp_path / "s.tif"), "--out", str(tmp_path / "m.b2u"),
                 "--steps", "3", "--context", "1", "--autosave", str(tmp_path / "a.b2u"),
                 *args]) == 0
    assert api.load(tmp_path / "m.b2u").context == {"frames": 1, "axis": "T"}
    tr = Trainer.resume(str(tmp_path / "a.b2u"), noisy, axes="TYX", device="cpu", steps=5)
    assert tr.method.context == 1 and tr.config.context == "1"
    assert tr.result().context == {"frames": 1, "axis": "T"}


def test_settings_written_before_context_resume_without_it():
    from napari_b2u.config import TrainConfig

    cfg = TrainConfig.from_dict({"version": 3, "method": "b2u"})
    assert cfg.context == "0"
