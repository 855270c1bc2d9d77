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
