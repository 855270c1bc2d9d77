import numpy as np
import pytest
import torch

from napari_b2u.losses import lambda_schedule, lr_factor, revisible_loss


def test_loss_equals_hand_computation():
    blind = torch.tensor([[[[0.2, 0.5], [0.9, 0.1]]]])
    visible = torch.tensor([[[[0.3, 0.4], [0.8, 0.0]]]])
    y = torch.tensor([[[[0.25, 0.6], [1.0, 0.05]]]])
    lam, eta = 2.0, 1.0
    total, rev, reg = revisible_loss(blind, visible, y, lam, eta)
    b, v, t = (a.numpy().ravel().astype(np.float64) for a in (blind, visible, y))
    hand_rev = np.mean((b + lam * v - (lam + 1) * t) ** 2)
    hand_reg = np.mean((b - t) ** 2)
    assert rev.item() == pytest.approx(hand_rev, rel=1e-6)
    assert reg.item() == pytest.approx(hand_reg, rel=1e-6)
    assert total.item() == pytest.approx(hand_rev + eta * hand_reg, rel=1e-6)
    # a concrete number, worked by hand for the first term's first pixel:
    # 0.2 + 2*0.3 - 3*0.25 = 0.05
    assert (b[0] + lam * v[0] - (lam + 1) * t[0]) == pytest.approx(0.05)


def test_lambda_as_tensor_matches_float():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.rand(2, 1, 4, 4, generator=g) for _ in range(3))
    f = revisible_loss(a, b, c, 7.5)[0]
    t = revisible_loss(a, b, c, torch.tensor(7.5))[0]
    assert torch.allclose(f, t)


def test_visible_branch_gets_no_gradient():
    blind = torch.rand(1, 1, 4, 4, requires_grad=True)
    visible = torch.rand(1, 1, 4, 4, requires_grad=True)
    y = torch.rand(1, 1, 4, 4)
    loss, _, _ = revisible_loss(blind, visible, y, 3.0)
    loss.backward()
    assert visible.grad is None
    assert blind.grad is not None and blind.grad.abs().sum() > 0


@pytest.mark.parametrize("p,lam", [(0.0, 2.0), (0.4, 2.0), (0.7, 11.0), (1.0, 20.0)])
def test_lambda_schedule(p, lam):
    assert lambda_schedule(p) == pytest.approx(lam)


def test_lr_halved_at_milestones():
    assert [lr_factor(p) for p in (0, 0.19, 0.2, 0.45, 0.6, 0.85, 1.0)] == [
        1, 1, 0.5, 0.25, 0.125, 0.0625, 0.0625]


def test_weighted_loss_is_the_loss_over_the_weighted_pixels():
    torch.manual_seed(0)
    blind, vis, y = (torch.rand(2, 1, 8, 8) for _ in range(3))
    w = (torch.rand(1, 1, 8, 8) > 0.5).float()
    m = w.bool().expand(2, 1, 8, 8)
    got = revisible_loss(blind, vis, y, 3.0, 1.0, weight=w)
    want = revisible_loss(blind[m], vis[m], y[m], 3.0, 1.0)
    for a, b in zip(got, want):
        assert float(a) == pytest.approx(float(b), rel=1e-6)
