import numpy as np
import pytest

from napari_b2u.sample_data import fmdd_like_stack

#: a network small enough for CPU tests: 16 wide, 2 levels (inputs multiple of 4); the
#: classical floor off, so that these few steps test the network itself (tests/test_floor.py
#: tests the floor)
TINY = dict(width=16, depth=2, patch_size=32, batch_size=4, device="cpu", progress=False,
            compile=False, floor="none")
#: the same for api.make_trainer (which shows no progress bar)
TINY_T = {k: v for k, v in TINY.items() if k != "progress"}


@pytest.fixture(scope="session")
def small_stack():
    """(8, 64, 64) uint8 noisy frames and their clean image (0..255)."""
    return fmdd_like_stack(8, (64, 64), seed=3)


@pytest.fixture(scope="session")
def tiny_model(small_stack):
    from napari_b2u import api

    noisy, _ = small_stack
    # each frame alone: the inference tests denoise single frames and crops of the stack
    return api.train_stack(noisy, steps=10, seed=0, context=0, **TINY)


def mean_psnr(stack, clean):
    from napari_b2u.metrics import evaluate

    return float(np.mean([evaluate(f, clean)[0] for f in stack]))
