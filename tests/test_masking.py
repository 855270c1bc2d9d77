import numpy as np
import pytest
import torch

from napari_b2u.masking import (
    INTERP_KERNEL,
    cell_masks,
    global_mask,
    interpolate_neighbours,
    mask_mapper,
)


def hand_interp(img: np.ndarray) -> np.ndarray:
    """3x3 weighted neighbour mean with reflect padding, by explicit loops."""
    k = INTERP_KERNEL.numpy().astype(np.float64)
    p = np.pad(img.astype(np.float64), 1, mode="reflect")
    out = np.zeros(img.shape)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            out[y, x] = (p[y:y + 3, x:x + 3] * k).sum()
    return out


def test_kernel_excludes_centre_and_sums_to_one():
    assert INTERP_KERNEL[1, 1] == 0
    assert torch.isclose(INTERP_KERNEL.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("cells", [2, 3, 4])
@pytest.mark.parametrize("shape", [(12, 16), (13, 10)])
def test_each_copy_replaces_exactly_its_position(cells, shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape)
    x = torch.from_numpy(img).float()[None, None]
    masked = global_mask(x, cells).numpy()[:, 0].astype(np.float64)  # (s², H, W)
    interp = hand_interp(img)
    assert masked.shape == (cells * cells,) + shape
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for k in range(cells * cells):
        blind = (yy % cells) * cells + (xx % cells) == k
        np.testing.assert_allclose(masked[k][blind], interp[blind], atol=1e-6)
        np.testing.assert_allclose(masked[k][~blind], img[~blind], atol=1e-7)
        # the replaced pixels really changed (random data: interpolation != value)
        assert np.all(np.abs(masked[k][blind] - img[blind]) > 0)


@pytest.mark.parametrize("cells", [2, 4])
def test_every_pixel_blind_in_exactly_one_copy(cells):
    m = cell_masks(17, 23, cells).numpy()
    assert m.shape == (cells * cells, 1, 17, 23)
    np.testing.assert_array_equal(m.sum(axis=0), 1)


@pytest.mark.parametrize("cells", [2, 4])
def test_mapper_of_identity_reassembles_input(cells):
    x = torch.rand(3, 2, 20, 24)
    # identity "network": the mapper picks each pixel from the copy where it was blind, i.e.
    # the interpolated value; with an identity on the *original* images per copy we get x back
    copies = x.repeat_interleave(cells * cells, dim=0)
    torch.testing.assert_close(mask_mapper(copies, cells), x, rtol=0, atol=0)
    # and on the masked volume itself, h gives exactly the interpolated image
    h = mask_mapper(global_mask(x, cells), cells)
    torch.testing.assert_close(h, interpolate_neighbours(x))


def test_mapper_takes_each_pixel_from_its_own_copy():
    cells = 2
    b, c, h, w = 2, 1, 6, 8
    # copy k filled with the constant k: h must show the cell-position index map
    y = torch.arange(cells * cells).float().repeat(b).view(-1, 1, 1, 1).expand(-1, c, h, w)
    out = mask_mapper(y.contiguous(), cells)
    yy, xx = np.mgrid[0:h, 0:w]
    expected = (yy % 2) * 2 + (xx % 2)
    for i in range(b):
        np.testing.assert_array_equal(out[i, 0].numpy(), expected)


def test_blind_output_does_not_see_its_own_pixel():
    """h(f(Ωy)) at pixel p must not depend on y_p when f is local (3x3 conv stack)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 1, 3, padding=1))
    x = torch.rand(1, 1, 16, 16)
    base = mask_mapper(net(global_mask(x, 2)), 2)
    x2 = x.clone()
    x2[0, 0, 7, 9] += 5.0
    moved = mask_mapper(net(global_mask(x2, 2)), 2)
    assert torch.equal(base[0, 0, 7, 9], moved[0, 0, 7, 9])
    assert not torch.equal(base, moved)  # neighbours do see it


# ---- wider blind spots for correlated noise (issue 18) --------------------------------------
from napari_b2u.errors import InputError  # noqa: E402
from napari_b2u.masking import BlindSpot, hidden_masks  # noqa: E402


@pytest.mark.parametrize("spec,ly,lx,cells", [("pixel", 0, 0, 2), ("x-line:3", 0, 1, 2),
                                              ("y-line:5", 2, 0, 2), ("box:3,5", 2, 1, 4)])
def test_blind_spot_shapes(spec, ly, lx, cells):
    spot = BlindSpot.parse(spec)
    assert (spot.ly, spot.lx) == (ly, lx) and spot.spec() == spec
    assert spot.cells(2) == cells


@pytest.mark.parametrize("bad", ["line", "x-line:2", "x-line:0", "box:3", "z-line:3",
                                 "x-line:17"])
def test_bad_blind_spots_are_refused(bad):
    with pytest.raises(InputError, match="mask"):
        BlindSpot.parse(bad)


@pytest.mark.parametrize("spec", ["x-line:3", "y-line:3", "x-line:5", "box:3,3"])
def test_wide_masks_hide_exactly_the_extent_and_nothing_leaks(spec):
    spot = BlindSpot.parse(spec)
    s = spot.cells(2)
    h, w = 23, 26
    x = torch.rand(1, 1, h, w, dtype=torch.float64)
    copies = global_mask(x, s, spot)
    hidden = hidden_masks(h, w, s, spot)[:, 0]
    blind = cell_masks(h, w, s)[:, 0].bool()
    for k in range(s * s):
        # hidden = the blind pixels of copy k and their extent, exactly
        expect = torch.zeros(h, w, dtype=torch.bool)
        for yy, xx in blind[k].nonzero().tolist():
            expect[max(0, yy - spot.ly):yy + spot.ly + 1, max(0, xx - spot.lx):xx + spot.lx + 1] = 1
        assert torch.equal(hidden[k], expect)
        # the rest of the copy is the input itself
        assert torch.equal(copies[k, 0][~hidden[k]], x[0, 0][~hidden[k]])
        # and nothing in the copy depends on any hidden pixel's value
        bumped = x.clone()
        bumped[0, 0][hidden[k]] += 100.0
        assert torch.allclose(global_mask(bumped, s, spot)[k], copies[k])


def test_blind_output_ignores_the_correlated_neighbours():
    spot = BlindSpot.parse("x-line:3")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv2d(8, 1, 3, padding=1))
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        base = mask_mapper(net(global_mask(x, 2, spot)), 2)
        for dx in (-1, 0, 1):
            moved = x.clone()
            moved[0, 0, 8, 8 + dx] += 5.0
            out = mask_mapper(net(global_mask(moved, 2, spot)), 2)
            assert abs(float(out[0, 0, 8, 8] - base[0, 0, 8, 8])) < 1e-6
        far = x.clone()
        far[0, 0, 9, 8] += 5.0  # the row below is not correlated: it is seen
        out = mask_mapper(net(global_mask(far, 2, spot)), 2)
        assert abs(float(out[0, 0, 8, 8] - base[0, 0, 8, 8])) > 1e-4


def test_the_validation_error_is_honest_only_with_the_matching_mask():
    """A filter that averages the left and right neighbours exploits noise correlated along X.
    Its blind-spot error (h - y)² equals its true error plus the noise variance under the
    x-line mask; under the one-pixel mask it looks far better than it is (it 'learns' the
    noise)."""
    from napari_b2u.sample_data import correlate

    rng = np.random.default_rng(0)
    noise = correlate(rng.normal(0, 0.1, (1, 1, 256, 256)), corr_x=0.4)
    y = torch.from_numpy(0.5 + noise)
    lr = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    with torch.no_grad():
        lr.weight.zero_()
        lr.weight[0, 0, 1, 0] = lr.weight[0, 0, 1, 2] = 0.5
        var = float(np.var(noise))
        for spec, honest in (("x-line:3", True), ("pixel", False)):
            spot = BlindSpot.parse(spec)
            h = mask_mapper(lr(global_mask(y, 2, spot)), 2)[..., 4:-4, 4:-4]
            true = float(torch.mean((h - 0.5) ** 2))
            estimate = float(torch.mean((h - y[..., 4:-4, 4:-4]) ** 2)) - var
            if honest:
                assert estimate == pytest.approx(true, rel=0.1)
            else:
                assert estimate < true - var / 2


@pytest.mark.parametrize("spec", ["pixel", "box:3,3"])
def test_a_subset_of_copies_is_exactly_those_copies_of_the_full_mask(spec):
    from napari_b2u.masking import covered, pick_copies

    spot = BlindSpot.parse(spec)
    s = spot.cells(4)
    x = torch.rand(2, 1, 16, 16)
    full = global_mask(x, s, spot).view(2, s * s, 1, 16, 16)
    g = torch.Generator().manual_seed(3)
    copies = pick_copies(s, 4, g)
    assert copies.numel() == 4 and len(set(copies.tolist())) == 4
    part = global_mask(x, s, spot, copies)
    assert torch.equal(part.view(2, 4, 1, 16, 16), full[:, copies])
    # mapped outputs agree with the full mapper on exactly the covered pixels
    out = torch.randn(2 * s * s, 1, 16, 16)
    sub = out.view(2, s * s, 1, 16, 16)[:, copies].reshape(-1, 1, 16, 16)
    w = covered(16, 16, s, copies).bool().expand(2, 1, 16, 16)
    assert torch.equal(mask_mapper(sub, s, copies)[w], mask_mapper(out, s)[w])
    assert float(w.float().mean()) == pytest.approx(4 / (s * s))
    # a limit that covers the s² copies runs them all, drawing nothing
    state = g.get_state()
    assert pick_copies(s, s * s, g) is None and pick_copies(s, 0, g) is None
    assert torch.equal(g.get_state(), state)


def test_sampled_copies_draw_every_copy_over_steps():
    from napari_b2u.masking import pick_copies

    g = torch.Generator().manual_seed(0)
    seen = torch.zeros(16)
    for _ in range(200):
        seen[pick_copies(4, 4, g)] += 1
    assert seen.min() > 0.6 * 50 and seen.max() < 1.4 * 50
