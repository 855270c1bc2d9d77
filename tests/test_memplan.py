"""The memory budget sizes the pass (tile, batch) and the blocks in flight (issue 33): the plan
shrinks with the budget, a wider network gets smaller tiles, and what the plan holds fits the
budget it was given. (Peak RSS is measured by benchmarks/scale.py budget.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_b2u import api

from .conftest import TINY

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def nets(small_stack):
    """Two one-step networks of the CPU preset's depth: 8 and 24 wide (the preset)."""
    noisy, _ = small_stack
    return {w: api.train_stack(noisy[:2], steps=1, context=0,
                               **{**TINY, "width": w, "depth": 4, "patch_size": 32})
            for w in (8, 24)}


def test_a_pass_is_measured_per_network(nets):
    from napari_b2u.denoise.memplan import pass_bytes

    narrow, wide = (pass_bytes(nets[w], "visible", CPU) for w in (8, 24))
    assert 0 < narrow < wide
    assert 1.8 < wide / narrow < 4.5  # activations grow with the width
    # weighted output: the masked copies are passes too
    assert pass_bytes(nets[24], "weighted", CPU) > wide


@pytest.mark.parametrize("shape", [(32, 1, 4096, 4096), (3, 1, 1588, 1216)])
def test_the_plan_shrinks_with_the_budget_and_fits_it(nets, monkeypatch, shape):
    from napari_b2u.denoise.memplan import block_bytes, pass_bytes, plan_blocks_budget
    from napari_b2u.denoise.to_zarr import BLOCK_PIXELS

    model, (_, c, h, w) = nets[24], shape
    per_px = pass_bytes(model, "visible", CPU)
    plans = []
    for budget in ("8GB", "2GB", "1GB", "512MB", "128MB", "32MB"):
        monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", budget)
        if budget == "32MB":  # one pass over the smallest tile is more: said, not hidden
            with pytest.warns(UserWarning, match="memory budget .32 MB. is small"):
                tile, batch, _ = model.plan(shape, "visible", CPU)
        else:
            tile, batch, _ = model.plan(shape, "visible", CPU)
        th, tw = min(tile, h), min(tile, w)
        blocks = plan_blocks_budget(BLOCK_PIXELS, th * tw, batch, batch * c * th * tw, per_px,
                                    1, np.uint16, np.uint16)
        held = (batch * th * tw * per_px
                + blocks.in_flight * blocks.pixels * block_bytes(1, np.uint16, np.uint16))
        plans.append((tile, batch, blocks.pixels, blocks.in_flight, held, blocks.bytes))
    for big, small in zip(plans, plans[1:]):
        assert all(s <= b for s, b in zip(small[:4], big[:4])), (big, small)
    assert plans[-2][0] < plans[0][0] and plans[-1][0] == 256  # smaller tiles, to the floor
    assert plans[-1][3] == 1 and plans[0][3] == 2  # one block at a time when memory is short
    assert plans[-2][2] < plans[0][2]  # smaller blocks
    for tile, batch, pixels, in_flight, held, budget in plans[:-1]:  # 32 MB: below the floor
        assert held <= budget


def test_a_run_out_of_core_says_its_plan_and_keeps_to_it(nets, monkeypatch, tmp_path):
    """ZarrRun sizes its blocks and threads from the budget and says what it chose."""
    from napari_b2u.denoise.to_zarr import ZarrRun

    # uint16 values in the range of the models' 8-bit training data
    stack = np.random.default_rng(0).integers(0, 250, (6, 300, 300)).astype(np.uint16)
    said = []
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "16MB")
    small = ZarrRun(nets[8], [(stack, tmp_path / "a.ome.zarr", "TYX")], device="cpu", tta=False)
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "4GB")
    big = ZarrRun(nets[8], [(stack, tmp_path / "b.ome.zarr", "TYX")], device="cpu", tta=False)
    assert small.jobs[0].plan.n_blocks > big.jobs[0].plan.n_blocks
    assert small.in_flight == 1 and big.in_flight == 2
    small.run(say=said.append)
    assert any(s.startswith("memory budget 16 MB: tiles of") for s in said), said
    out = small.jobs[0].out
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "16MB")  # the same plan in memory
    ref = nets[8].denoise(stack, axes="TYX", tta=False, tile_size=small.jobs[0].plan.tile)
    import zarr

    np.testing.assert_array_equal(np.asarray(zarr.open_group(out, mode="r")["0"]), ref)


def test_training_on_a_zarr_path_that_fits_in_memory(small_stack, tmp_path):
    """A zarr path (or array) smaller than the memory budget is read whole and trained on like
    the array it holds (it was refused as "dtype <U…, not numeric")."""
    zarr = pytest.importorskip("zarr")
    noisy, _ = small_stack
    path = tmp_path / "s.zarr"
    zarr.open_array(str(path), mode="w", shape=noisy.shape, dtype=noisy.dtype,
                    chunks=(1,) + noisy.shape[1:])[:] = noisy
    kw = dict(steps=2, seed=0, context=0, **TINY)
    from_path = api.train_stack(str(path), val_stack=str(path), **kw)
    from_array = api.train_stack(noisy, val_stack=noisy, **kw)
    np.testing.assert_array_equal(from_path.denoise(noisy[:2]), from_array.denoise(noisy[:2]))


def test_freed_memory_goes_back_to_the_system_on_glibc():
    """Out-of-core runs fix glibc's mmap threshold (freed activations are unmapped, not kept
    in per-thread heaps); elsewhere the call does nothing and says so."""
    import platform

    from napari_b2u.io.memory import bound_heap

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert bound_heap() is glibc
