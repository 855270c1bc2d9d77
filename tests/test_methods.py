"""Each method's defining property, its loss against a hand computation, and that it trains,
saves and denoises through the same engine."""

import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.methods import get_method, method_names
from napari_b2u.methods.b2s import b2s_loss
from napari_b2u.methods.dbsn import dbsn_loss
from napari_b2u.methods.n2v import n2v_mask
from napari_b2u.methods.nbr2nbr import draw_pairs, subsample
from napari_b2u.models import UNet
from napari_b2u.models.dbsn import DBSN
from napari_b2u.sample_data import fmdd_like_stack

from .conftest import TINY, mean_psnr

ALL = ["b2u", "b2s", "dbsn", "n2v", "nbr2nbr"]


def test_registry_lists_all_methods():
    assert set(ALL) <= set(method_names())
    with pytest.raises(ValueError, match="unknown method"):
        get_method("n3v")
    with pytest.raises(ValueError, match="unknown parameter"):
        get_method("b2u", celss=2)


# ---- blind-spot properties: the output at a pixel does not depend on that pixel's input ----

def _perturb_pixel_effect(fn, shape=(1, 1, 32, 32), at=(13, 18)):
    torch.manual_seed(0)
    x = torch.rand(shape)
    x2 = x.clone()
    x2[..., at[0], at[1]] += 10.0
    with torch.no_grad():
        a, b = fn(x), fn(x2)
    centre = (a[..., at[0], at[1]] - b[..., at[0], at[1]]).abs().max().item()
    elsewhere = (a - b).abs().max().item()
    return centre, elsewhere


@pytest.mark.parametrize("at", [(13, 18), (0, 0), (31, 5)])  # interior and borders
def test_dbsn_is_blind(at):
    net = DBSN(1, 1, width=16, blocks=2).eval()
    centre, elsewhere = _perturb_pixel_effect(lambda x: net(x)[0], at=at)
    assert centre == 0.0 and elsewhere > 0
    # the variance heads are blind too (they see only blind features / μ)
    assert _perturb_pixel_effect(lambda x: net(x)[1], at=at)[0] == 0.0
    assert _perturb_pixel_effect(lambda x: net(x)[2], at=at)[0] == 0.0


@pytest.mark.parametrize("cells", [2, 4])
def test_b2u_blind_branch_is_blind_with_the_real_unet(cells):
    net = UNet(1, 1, width=8, depth=2).eval()
    method = get_method("b2u", cells=cells)
    centre, elsewhere = _perturb_pixel_effect(lambda x: method.blind(net, x))
    assert centre == 0.0 and elsewhere > 0
    # the visible branch does see it (that is what the re-visible loss is for)
    assert _perturb_pixel_effect(lambda x: method.run(net, x))[0] > 0


def test_b2s_blind_branch_is_blind():
    m = get_method("b2s")
    model = m.build(m.model_config(1, 8, 2)).eval()
    centre, _ = _perturb_pixel_effect(lambda x: m._branches(model, x, grad_blind=False)[0][0])
    assert centre == 0.0


def test_n2v_mask_replaces_with_a_neighbour_never_itself():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2 * 1 * 16 * 24, dtype=torch.float32).reshape(2, 1, 16, 24)
    masked, mask = n2v_mask(y, 8, g)
    assert mask.sum().item() == 2 * 2 * 3  # one pixel per 8x8 cell
    changed = masked != y
    assert torch.equal(changed, mask)  # all values distinct: replaced <=> masked
    for b, _, yy, xx in mask.nonzero().tolist():
        v = int(masked[b, 0, yy, xx].item()) - b * 16 * 24
        ny, nx = divmod(v, 24)
        assert (ny, nx) != (yy, xx) and abs(ny - yy) <= 2 and abs(nx - xx) <= 2


def test_nbr2nbr_subsamples_adjacent_distinct_pixels_of_one_cell():
    y = torch.arange(1 * 1 * 8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8)
    g1, g2 = subsample(y, draw_pairs(y, torch.Generator().manual_seed(0)))
    assert g1.shape == (1, 1, 4, 4)
    for i in range(4):
        for j in range(4):
            a, b = divmod(int(g1[0, 0, i, j]), 8), divmod(int(g2[0, 0, i, j]), 8)
            assert a != b and abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1
            assert a[0] // 2 == b[0] // 2 == i and a[1] // 2 == b[1] // 2 == j


# ---- losses against hand computations, and what carries no gradient ----

def test_b2s_loss_equals_hand_computation():
    rng = np.random.default_rng(0)
    mu_m, a_m, mu_v, a_v, y = (rng.random((1, 1, 3, 3)) for _ in range(5))
    # the estimator's raw map, signs mixed: |·| + 1e-5 per pixel, then the image mean
    est = np.array([[0.01, -0.03], [0.02, 0.0], [-0.02, -0.02], [0.02, 0.01],
                    [0.3, 0.1], [-0.2, 0.4]]).reshape(1, 3, 2, 2)
    lam = 4.0
    t = [torch.tensor(v) for v in (mu_m, a_m, mu_v, a_v, y, est)]
    loss, sig_n = b2s_loss(*t, lam)
    s1, s2, al = (np.abs(est) + 1e-5).mean(axis=(2, 3)).ravel()
    assert s1 != pytest.approx(abs(est[0, 0].mean()) + 1e-5)  # not |mean|
    mu_y = (mu_m + lam * mu_v) / (1 + lam)
    sig_model = (a_m**2 + lam**2 * a_v**2) / (1 + lam) ** 2
    sn = (s1 + lam**2 * s2) / (1 + lam) ** 2 + al * np.maximum(mu_y, 1e-3)
    hand = np.mean((y - mu_y) ** 2 / (sig_model + sn) + np.log(sig_model + sn))
    assert loss.item() == pytest.approx(hand, rel=1e-9)
    np.testing.assert_allclose(sig_n.numpy(), sn, rtol=1e-9)


def test_b2s_no_gradient_through_visible_branch_or_alpha_mu():
    mu_m = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    a_m = torch.full((1, 1, 4, 4), 0.1, requires_grad=True)
    mu_v = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    a_v = torch.full((1, 1, 4, 4), 0.1, requires_grad=True)
    est = torch.tensor([0.01, 0.01, 5.0]).view(1, 3, 1, 1).requires_grad_()
    y = torch.full((1, 1, 4, 4), 0.5)  # residual exactly zero
    loss, _ = b2s_loss(mu_m, a_m, mu_v, a_v, y, est, 2.0)
    loss.backward()
    assert mu_v.grad is None and a_v.grad is None
    # with zero residual, μ_m only enters through α·μ_y, whose gradient is disabled
    assert mu_m.grad.abs().max().item() == 0.0
    assert a_m.grad.abs().sum() > 0 and est.grad.abs().sum() > 0  # estimator trained jointly


@pytest.mark.parametrize("kind", ["likelihood", "eq8"])
def test_dbsn_loss_equals_hand_computation(kind):
    rng = np.random.default_rng(1)
    mu, y = rng.random((2, 1, 1, 3, 3))
    s_mu, s_n = rng.random((2, 1, 1, 3, 3)) + 0.1
    loss = dbsn_loss(*(torch.tensor(v) for v in (mu, s_mu, s_n, y)), kind).item()
    if kind == "likelihood":
        hand = np.mean((y - mu) ** 2 / (s_mu + s_n) + np.log(s_mu + s_n))
    else:
        hand = np.mean((y - mu) ** 2 / (s_mu + s_n) + np.log(s_n) + s_mu / s_n)
    assert loss == pytest.approx(hand, rel=1e-9)


def test_dbsn_outputs_bayes_and_default_mu():
    m = get_method("dbsn")
    net = m.build(m.model_config(1, 8, 2)).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        mu, s_mu, s_n = net(x)
        out = m.predict(net, x, "bayes")
    torch.testing.assert_close(out, (x * s_mu + mu * s_n) / (s_mu + s_n))
    # the default output is the blind estimate μ (the better one in docs/benchmarks.md)
    with torch.no_grad():
        torch.testing.assert_close(m.predict(net, x), mu)


def test_dbsn_pretrain_stage_uses_l2():
    m = get_method("dbsn")
    net = m.build(m.model_config(1, 8, 2))
    x = torch.rand(2, 1, 16, 16)
    l_pre, terms = m.training_loss(net, x, torch.tensor(m.schedule(0.0)))
    l_nll, _ = m.training_loss(net, x, torch.tensor(m.schedule(0.5)))
    assert l_pre.item() == pytest.approx(terms["mse"].item())
    assert l_nll.item() != pytest.approx(l_pre.item())


# ---- every method through the engine, the API, save/load ----

@pytest.mark.parametrize("name", ALL)
def test_method_trains_denoises_and_roundtrips(name, small_stack, tmp_path):
    noisy, clean = small_stack
    events = []
    # D-BSN's blind net learns slowest at this tiny size (and pre-trains μ for 20 % of the
    # run): after 120 steps its μ is still below the input (measured 22.0 dB vs 28.3 dB),
    # after 300 it is at 36.0 dB
    steps = 300 if name == "dbsn" else 120
    model = api.train_stack(noisy, method=name, steps=steps, lr=3e-3, preview_every=50,
                            callback=events.append, **TINY)
    meth = get_method(name)
    prev = [e.previews for e in events if e.previews][0]
    assert set(meth.preview_names) <= set(prev.images)
    assert set(prev.spreads) == set(meth.spread_previews)
    assert set(events[-1].terms) == set(meth.loss_terms)
    out = model.denoise(noisy, dtype="float32")
    assert out.shape == noisy.shape and np.isfinite(out).all()
    assert mean_psnr(out, clean) > mean_psnr(noisy, clean)  # every method denoises somewhat
    loaded = api.load(model.save(tmp_path / f"{name}.b2u"))
    assert loaded.method_name == name
    for o in loaded.outputs:
        np.testing.assert_array_equal(loaded.denoise(noisy, output=o, dtype="float32"),
                                      model.denoise(noisy, output=o, dtype="float32"))


def test_b2s_reports_noise_parameters(small_stack):
    """The sample has gain 255/40 = 6.4 and read sigma 0.02*255 = 5.1 (raw 8-bit units);
    observed after 250 tiny steps: gain 5.4, sigma 4.4 (after 120: gain 1.8, sigma 7.4 — the
    estimator needs the steps). Assert within a factor of 2."""
    noisy, _ = small_stack
    model = api.train_stack(noisy, method="b2s", steps=250, lr=3e-3, **TINY)
    r = model.readout()
    assert 6.4 / 2 < r["noise_gain"] < 6.4 * 2
    assert 5.1 / 2 < r["noise_sigma"] < 5.1 * 2
    line = model.describe_readout()
    assert f"{r['noise_gain']:.3g}" in line and f"{r['noise_sigma']:.3g}²" in line


# ---- blind spots that follow correlated noise (issue 18) -------------------------------------
def test_n2v_struct_mask_hides_the_extent_of_each_blind_pixel():
    from napari_b2u.masking import BlindSpot
    from napari_b2u.methods.n2v import n2v_mask

    y = torch.rand(1, 1, 32, 32)
    spot = BlindSpot.parse("x-line:5")
    masked, mask = n2v_mask(y, 8, torch.Generator().manual_seed(3), spot)
    for py, px in mask[0, 0].nonzero().tolist():
        bumped = y.clone()
        for dx in (-2, -1, 0, 1, 2):
            if 0 <= px + dx < 32:
                bumped[0, 0, py, px + dx] += 10.0
        again, _ = n2v_mask(bumped, 8, torch.Generator().manual_seed(3), spot)
        # what the network sees around the blind pixel carries none of the bumped values
        lo, hi = max(0, px - 2), min(32, px + 3)
        assert torch.equal(again[0, 0, py, lo:hi], masked[0, 0, py, lo:hi])


@pytest.mark.parametrize("ly,lx", [(0, 0), (0, 1), (1, 0), (0, 2)])
def test_dbsn_masked_kernels_skip_the_correlated_lags(ly, lx):
    from napari_b2u.models.dbsn import DBSN

    torch.manual_seed(0)
    net = DBSN(1, 1, 16, 2, 8, ly, lx).eval()
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        base = net(x)[0][0, 0, 20, 20]
        for dy in range(-ly, ly + 1):
            for dx in range(-lx, lx + 1):
                moved = x.clone()
                moved[0, 0, 20 + dy, 20 + dx] += 10.0
                assert abs(float(net(moved)[0][0, 0, 20, 20] - base)) < 1e-5


def test_dbsn_refuses_a_box_and_auto_gives_it_a_line():
    from napari_b2u import api
    from napari_b2u.errors import InputError

    with pytest.raises(InputError, match="cannot hide a box"):
        get_method("dbsn", mask="box:3,3").model_config(1)
    noisy, _ = fmdd_like_stack(6, (64, 64), corr_x=0.35, corr_y=0.25, seed=1,
                               dtype=np.float32)
    model = api.train_stack(noisy, method="dbsn", steps=2, **TINY)
    assert model.method_params["mask"] == "x-line:3"  # X is the more correlated axis
    assert any("cannot hide a box" in n for n in model.info["noise"]["notes"])


@pytest.mark.parametrize("corr,expected", [((0.0, 0.0), "pixel"), ((0.3, 0.0), "x-line:3"),
                                           ((0.0, 0.3), "y-line:3"), ((0.3, 0.3), "box:3,3")])
def test_auto_mask_follows_the_measured_correlation(corr, expected):
    from napari_b2u import api

    noisy, _ = fmdd_like_stack(6, (96, 96), corr_x=corr[0], corr_y=corr[1], seed=2,
                               dtype=np.float32)
    model = api.train_stack(noisy, steps=2, **TINY)
    assert model.method_params["mask"] == expected
    assert model.info["noise"]["mask"] == expected
    if expected != "pixel":
        assert any("→ using" in m for m in model.info["messages"])
    explicit = api.train_stack(noisy, steps=1, mask="pixel", **TINY)
    assert explicit.method_params["mask"] == "pixel" and explicit.info["noise"] is None


@pytest.mark.parametrize("name", ["b2u", "b2s"])
def test_wide_masks_train_on_a_subset_of_copies_per_step(name):
    """A 3x3 box needs 4x4 cells: a step runs `copies` of the 16 masked copies (plus the visible
    pass), and its gradient reaches only through the pixels blind in those copies."""
    m = get_method(name, mask="box:3,3", copies=4)
    m.seed(0, "cpu")
    model = m.build(m.model_config(1, 8, 2))
    net = model if name == "b2u" else model.net
    batches = []
    hook = net.register_forward_hook(lambda mod, inp, out: batches.append(inp[0].shape[0]))
    y = torch.rand(2, 1, 16, 16, requires_grad=False)
    loss, _ = m.training_loss(model, y, 2.0)
    hook.remove()
    assert m.cells == 4 and sorted(batches) == [2, 2 * 4]
    assert torch.isfinite(loss)
    full = get_method(name, mask="box:3,3", copies=0)
    full.seed(0, "cpu")
    batches.clear()
    hook = net.register_forward_hook(lambda mod, inp, out: batches.append(inp[0].shape[0]))
    full.training_loss(model, y, 2.0)
    hook.remove()
    assert sorted(batches) == [2, 2 * 16]
