"""Out-of-core and distributed denoising (issue 15): lazy inputs, block plans, OME-Zarr outputs
that equal the in-memory result, resume after an interruption, a LocalCluster run, and the
error without the optional extra."""

import json
import os
import warnings

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")
pytest.importorskip("ome_zarr")

from napari_b2u.denoise.tiling import keep, plan_blocks, tile_starts  # noqa: E402
from napari_b2u.errors import InputError, MissingExtra  # noqa: E402

#: small tiles so that a 64-170 px frame has several, with a real overlap
OPTS = dict(tile_size=48, tile_overlap=8, device="cpu", tta=False)


def _stack(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, shape[-2:]).astype(np.float64)
    x = base + rng.normal(0, 20, shape)
    return np.clip(x, 0, 255).astype(dtype)


def write_ome_zarr(path, data, axes, scale=None):
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w")
    units = {a: "micrometer" for a in axes if a in "zyx"}
    write_image(data, group, axes=list(axes), scale_factors=(), axes_units=units,
                scale=dict(zip(axes, scale)) if scale else None)
    return path


# ---- block plans -----------------------------------------------------------------------------
def _writer_of(size, tile, ov):
    """For each pixel of a side, the tile that writes it last in memory (tile order)."""
    who = np.full(size, -1)
    for k, s in enumerate(tile_starts(size, tile, ov)):
        lo, hi = keep(s, min(tile, size), size, ov)
        who[lo:hi] = s
    return who


@pytest.mark.parametrize("n,h,w,tile,ov,batch,chunk,maxpx", [
    (5, 150, 170, 64, 8, 2, 32, 40 * 40 * 2),   # frames split into squares of chunks
    (7, 100, 300, 48, 8, 3, 64, 3 * 64 * 300),  # bands of whole rows
    (4, 33, 17, 64, 8, 4, 1024, 2**24),         # frames smaller than a tile
    (1, 129, 65, 64, 16, 1, 16, 16 * 16),       # one chunk per block
    (9, 64, 64, 32, 4, 4, 32, 2**24),           # whole frames, several batches per block
])
def test_block_plan_partitions_and_keeps_the_in_memory_tiles(n, h, w, tile, ov, batch, chunk,
                                                             maxpx):
    plan = plan_blocks(n, 1, h, w, tile, ov, batch, (chunk, chunk), maxpx)
    seen = np.zeros((n, h, w), int)
    who_y, who_x = _writer_of(h, tile, ov), _writer_of(w, tile, ov)
    th, tw = min(tile, h), min(tile, w)
    for k, b in enumerate(plan.blocks()):
        assert b == plan.block(k)
        assert b.f0 % batch == 0 and (b.f1 - b.f0) % batch in (0, n % batch)  # memory's batches
        assert b.y0 % plan.chunk_y == 0 and b.x0 % plan.chunk_x == 0  # whole chunks
        seen[b.f0:b.f1, b.y0:b.y1, b.x0:b.x1] += 1
        ys, xs = plan.tiles(b)
        ry0, ry1, rx0, rx1 = plan.read_region(b)
        assert 0 <= ry0 <= b.y0 and b.y1 <= ry1 <= h and 0 <= rx0 <= b.x0 and b.x1 <= rx1 <= w
        # the block's own last writer of every pixel is memory's
        last_y = np.full(b.y1 - b.y0, -1)
        for s in ys:
            lo, hi = keep(s, th, h, ov)
            lo, hi = max(lo, b.y0), min(hi, b.y1)
            last_y[lo - b.y0:hi - b.y0] = s
        last_x = np.full(b.x1 - b.x0, -1)
        for s in xs:
            lo, hi = keep(s, tw, w, ov)
            lo, hi = max(lo, b.x0), min(hi, b.x1)
            last_x[lo - b.x0:hi - b.x0] = s
        np.testing.assert_array_equal(last_y, who_y[b.y0:b.y1])
        np.testing.assert_array_equal(last_x, who_x[b.x0:b.x1])
    assert (seen == 1).all()  # every output pixel in exactly one block
    assert plan.computed_pixels() >= n * h * w


# ---- equality with the in-memory path --------------------------------------------------------
@pytest.mark.parametrize("block_pixels", [2**24, 40 * 40 * 2])
def test_zarr_output_equals_in_memory(tiny_model, tmp_path, block_pixels):
    x = _stack((5, 150, 170))
    ref = tiny_model.denoise(x, batch_size=2, **OPTS)
    res = tiny_model.denoise_to_zarr(x, tmp_path / "o.ome.zarr", batch_size=2, chunk=32,
                                     block_pixels=block_pixels, **OPTS)
    got = res.open()[0].compute()
    assert got.dtype == ref.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)  # identical, not close
    f32 = tiny_model.denoise_to_zarr(x, tmp_path / "f.ome.zarr", dtype="float32", batch_size=2,
                                     **OPTS).open()[0].compute()
    np.testing.assert_array_equal(f32, tiny_model.denoise(x, dtype="float32", batch_size=2,
                                                          **OPTS))


def test_ome_zarr_in_ome_zarr_out_keeps_axes_scale_and_builds_a_pyramid(tiny_model, tmp_path):
    x = _stack((2, 3, 600, 70), dtype=np.uint16)
    src = write_ome_zarr(tmp_path / "in.ome.zarr", x, "tzyx", scale=[1.0, 0.5, 0.1, 0.1])
    res = tiny_model.denoise_to_zarr(str(src), tmp_path / "out.ome.zarr", **OPTS)
    assert res.axes == "TZYX" and res.shape == x.shape and res.dtype == "uint16"
    group = zarr.open_group(str(res.path), mode="r")
    ms = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == list("tzyx")
    assert ms["axes"][-1]["unit"] == "micrometer"
    scales = [ds["coordinateTransformations"][0]["scale"] for ds in ms["datasets"]]
    assert scales[0] == [1.0, 0.5, 0.1, 0.1] and scales[1] == [1.0, 0.5, 0.2, 0.2]
    full, half = group["0"][:], group["1"][:]
    assert half.shape == (2, 3, 300, 35)
    mean = full.astype(float).reshape(2, 3, 300, 2, 35, 2).mean(axis=(3, 5))
    np.testing.assert_array_equal(half, np.clip(np.rint(mean), 0, 65535).astype(np.uint16))
    ref = tiny_model.denoise(x, axes="TZYX", **OPTS)
    np.testing.assert_array_equal(full, ref)
    assert group.attrs["napari_b2u"]["complete"] is True


def test_axes_are_reordered_for_ome_zarr(tiny_model, tmp_path):
    x = _stack((40, 36, 3))  # YXT: OME-Zarr wants time first
    res = tiny_model.denoise_to_zarr(x, tmp_path / "o.ome.zarr", axes="YXT", **OPTS)
    assert res.axes == "TYX"
    got = res.open()[0].compute()
    np.testing.assert_array_equal(got, np.moveaxis(tiny_model.denoise(x, axes="YXT", **OPTS),
                                                   -1, 0))


# ---- lazy inputs -----------------------------------------------------------------------------
class Counting:
    """An array that records the size of every read (what is materialised at once)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, []

    def __getitem__(self, idx):
        out = self.a[idx]
        self.reads.append(out.size)
        return out


def test_lazy_inputs_are_read_a_batch_at_a_time(tiny_model, tmp_path, monkeypatch):
    import tifffile

    from napari_b2u import api
    from napari_b2u.io.sources import ArraySource

    x = _stack((6, 64, 80))
    ref = tiny_model.denoise(x, batch_size=2, **OPTS)
    write_ome_zarr(tmp_path / "a.ome.zarr", x, "tyx")
    tifffile.imwrite(tmp_path / "a.ome.tif", x, ome=True, metadata={"axes": "TYX"})
    arr = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=x.shape,
                          chunks=(1, 32, 32), dtype=x.dtype)
    arr[:] = x
    inputs = [str(tmp_path / "a.ome.zarr"), zarr.open_group(str(tmp_path / "a.ome.zarr")), arr,
              da.from_array(x, chunks=(1, 32, 32)), str(tmp_path / "a.ome.tif"),
              tifffile.imread(tmp_path / "a.ome.tif", aszarr=True)]
    for obj in inputs:
        np.testing.assert_array_equal(tiny_model.denoise(obj, batch_size=2, **OPTS), ref)
    np.testing.assert_array_equal(api.denoise_stack(inputs[0], tiny_model, batch_size=2, **OPTS),
                                  ref)
    res = api.denoise_stack(inputs[0], tiny_model, out=tmp_path / "api.ome.zarr", batch_size=2,
                            **OPTS)
    np.testing.assert_array_equal(res.open()[0].compute(), ref)
    spy = Counting(x)
    np.testing.assert_array_equal(tiny_model.denoise(ArraySource(spy), batch_size=2, **OPTS),
                                  ref)
    assert max(spy.reads) == 2 * 64 * 80  # one batch of frames, never the stack
    big = Counting(_stack((4, 192, 192)))
    from napari_b2u.denoise import domain, to_zarr

    checked, sample_reads = to_zarr.normalization_for, []

    def set_aside(model, raw, normalize):  # the range check's sample, read before the blocks
        norm = checked(model, raw, normalize)
        sample_reads.extend(big.reads)
        big.reads.clear()
        return norm

    monkeypatch.setattr(to_zarr, "normalization_for", set_aside)
    res = tiny_model.denoise_to_zarr(ArraySource(big), tmp_path / "o.ome.zarr", batch_size=2,
                                     chunk=32, block_pixels=2 * 32 * 32, **OPTS)
    # a block: 2 frames of 32 x 32 output and the tiles that meet it (≤ 3 x 3 tile steps)
    assert max(big.reads) <= 2 * 112 * 112 < 2 * 192 * 192
    # the sample: the central crop of one frame per read (at most SAMPLE_SIDE² pixels)
    assert len(sample_reads) == 4 and max(sample_reads) <= domain.SAMPLE_SIDE ** 2
    np.testing.assert_array_equal(res.open()[0].compute(),
                                  tiny_model.denoise(big.a, batch_size=2, **OPTS))


def test_nan_in_a_lazy_input_is_a_clear_error(tiny_model):
    x = _stack((3, 40, 40)).astype(np.float32)
    x[2, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        tiny_model.denoise(da.from_array(x, chunks=(1, 40, 40)), **OPTS)


# ---- resume, cancel, safety ------------------------------------------------------------------
def test_resume_after_an_interruption_skips_finished_chunks(tiny_model, tmp_path, monkeypatch):
    from napari_b2u.denoise import zarr_tasks

    x = _stack((6, 64, 64))
    ref = tiny_model.denoise(x, batch_size=1, **OPTS)
    out = tmp_path / "o.ome.zarr"
    real, calls = zarr_tasks.denoise_block, []

    def dies_at_the_fourth(model, job, block):
        calls.append(block.index)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return real(model, job, block)

    monkeypatch.setattr(zarr_tasks, "denoise_block", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        tiny_model.denoise_to_zarr(x, out, batch_size=1, chunk=32, **OPTS)
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["napari_b2u"]["complete"] is False and "ome" not in group.attrs
    chunks = [p for p in (out / "0").rglob("*") if p.is_file()]
    assert chunks and not [p for p in chunks if p.name.endswith(".partial")]
    partial = group["0"][:]
    written = [f for f in range(6) if (partial[f] != 0).any()]
    assert written and len(written) < 6
    for f in written:  # whatever is on disk is finished and right
        np.testing.assert_array_equal(partial[f], ref[f])
    monkeypatch.setattr(zarr_tasks, "denoise_block", real)
    res = tiny_model.denoise_to_zarr(x, out, batch_size=1, chunk=32, **OPTS)
    assert res.skipped == len(written) and res.blocks == 6 - len(written)
    np.testing.assert_array_equal(res.open()[0].compute(), ref)
    again = tiny_model.denoise_to_zarr(x, out, batch_size=1, chunk=32, **OPTS)
    assert again.blocks == 0 and again.skipped == 6


def test_cancel_from_the_iterator_keeps_finished_blocks(tiny_model, tmp_path):
    from napari_b2u.denoise.to_zarr import denoise_to_zarr_iter

    x = _stack((8, 48, 48))
    out = tmp_path / "o.ome.zarr"
    it = denoise_to_zarr_iter(tiny_model, x, out, batch_size=1, **OPTS)
    assert next(it) == (0, 8)
    done, total = next(it)
    it.close()  # cancel: the run stops at its next tile
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["napari_b2u"]["complete"] is False
    res = tiny_model.denoise_to_zarr(x, out, batch_size=1, **OPTS)
    assert res.skipped >= done and res.skipped + res.blocks == 8
    np.testing.assert_array_equal(res.open()[0].compute(),
                                  tiny_model.denoise(x, batch_size=1, **OPTS))


def test_outputs_never_replace_inputs_or_foreign_folders(tiny_model, tmp_path):
    x = _stack((2, 40, 40))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", x, "tyx")
    with pytest.raises(InputError, match="overlap"):
        tiny_model.denoise_to_zarr(str(src), src / "out.ome.zarr", **OPTS)
    foreign = tmp_path / "mine.ome.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not written by napari-b2u"):
        tiny_model.denoise_to_zarr(x, foreign, overwrite=True, **OPTS)
    assert (foreign / "notes.txt").read_text() == "precious"
    out = tmp_path / "o.ome.zarr"
    tiny_model.denoise_to_zarr(x, out, **OPTS)
    with pytest.raises(InputError, match="other settings"):
        tiny_model.denoise_to_zarr(x, out, output="weighted", **OPTS)
    res = tiny_model.denoise_to_zarr(x, out, output="weighted", overwrite=True, chunk=16,
                                     **OPTS)  # other chunks in a folder of the same name
    np.testing.assert_array_equal(res.open()[0].compute(),
                                  tiny_model.denoise(x, output="weighted", **OPTS))


# ---- distributed -----------------------------------------------------------------------------
def test_local_cluster_with_in_process_workers_and_many_inputs(tiny_model, tmp_path):
    pytest.importorskip("distributed")
    from napari_b2u.denoise.to_zarr import ZarrRun

    xs = [_stack((4, 64, 64), seed=s) for s in range(2)]
    run = ZarrRun(tiny_model, [(x, tmp_path / f"o{k}.ome.zarr", None) for k, x in enumerate(xs)],
                  batch_size=1, **OPTS)
    assert run.total == 8
    seen = []
    results = run.run(workers=2, processes=False, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (8, 8)
    for x, res in zip(xs, results):
        np.testing.assert_array_equal(res.open()[0].compute(),
                                      tiny_model.denoise(x, batch_size=1, **OPTS))


def test_in_process_workers_stay_in_process_on_a_gpu_machine(monkeypatch):
    """``processes=False`` keeps the workers in this process where GPUs are visible too (on an
    H200 the in-process tests above started worker processes, one per GPU, and warned)."""
    distributed = pytest.importorskip("distributed")
    from napari_b2u.denoise import cluster

    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "2 workers asked for, 1 GPU(s) found"
        with cluster.local_cluster(workers=2, processes=False) as lc:
            assert isinstance(lc, distributed.LocalCluster) and len(lc.workers) == 2
            assert all(isinstance(w, distributed.Worker) for w in lc.workers.values())


def test_cancel_on_a_cluster_is_clean_and_resumes(tiny_model, tmp_path):
    pytest.importorskip("distributed")
    from napari_b2u.denoise.to_zarr import ZarrRun
    from napari_b2u.errors import Cancelled

    x = _stack((8, 48, 48))
    out = tmp_path / "o.ome.zarr"
    run = ZarrRun(tiny_model, [(x, out, None)], batch_size=1, **OPTS)
    with pytest.raises(Cancelled):
        run.run(workers=1, processes=False, progress=lambda d, t: run.cancel())
    assert not zarr.open_group(str(out), mode="r").attrs["napari_b2u"]["complete"]
    res = tiny_model.denoise_to_zarr(x, out, batch_size=1, workers=1, processes=False, **OPTS)
    assert res.skipped >= 1 and res.skipped + res.blocks == 8
    np.testing.assert_array_equal(res.open()[0].compute(),
                                  tiny_model.denoise(x, batch_size=1, **OPTS))


def test_an_existing_client_runs_the_graph(tiny_model, tmp_path):
    distributed = pytest.importorskip("distributed")
    x = _stack((3, 48, 48))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None, protocol="tcp") as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            res = tiny_model.denoise_to_zarr(x, tmp_path / "o.ome.zarr", scheduler=client,
                                             **OPTS)
        # by address, as --scheduler tcp://host:port: the graph goes over TCP (pickled)
        assert cluster.scheduler_address.startswith("tcp://")
        by_address = tiny_model.denoise_to_zarr(x, tmp_path / "p.ome.zarr",
                                                scheduler=cluster.scheduler_address, **OPTS)
    ref = tiny_model.denoise(x, **OPTS)
    np.testing.assert_array_equal(res.open()[0].compute(), ref)
    np.testing.assert_array_equal(by_address.open()[0].compute(), ref)
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(InputError, match="could not reach the dask scheduler"):
        tiny_model.denoise_to_zarr(x, tmp_path / "q.ome.zarr", scheduler="tcp://127.0.0.1:9",
                                   **OPTS)
    assert not (tmp_path / "q.ome.zarr").exists()  # nothing written before the cluster answers


# ---- the optional extra ----------------------------------------------------------------------
def test_missing_extra_is_one_clear_error(tiny_model, tmp_path, monkeypatch, capsys):
    import sys

    from napari_b2u.cli import main

    monkeypatch.setitem(sys.modules, "zarr", None)  # as if napari-b2u[distributed] were absent
    with pytest.raises(MissingExtra, match=r'pip install "napari-b2u\[distributed\]"'):
        tiny_model.denoise_to_zarr(_stack((2, 40, 40)), tmp_path / "o.ome.zarr", **OPTS)
    model = tiny_model.save(tmp_path / "m.b2u")
    np.save(tmp_path / "x.npy", _stack((2, 40, 40)))
    assert main(["denoise", str(tmp_path / "x.npy"), "--model", str(model), "--out",
                 str(tmp_path / "o.ome.zarr"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "napari-b2u[distributed]" in err and "Traceback" not in err


# ---- command line ----------------------------------------------------------------------------
def test_cli_denoises_many_inputs_into_ome_zarr_and_resumes(tiny_model, tmp_path, capsys):
    from napari_b2u.cli import main

    model = tiny_model.save(tmp_path / "m.b2u")
    xs = [_stack((2, 2, 40, 44), seed=s, dtype=np.uint16) for s in range(2)]
    paths = [write_ome_zarr(tmp_path / f"cells{k}.ome.zarr", x, "tzyx",
                            scale=[1.0, 0.4, 0.2, 0.2]) for k, x in enumerate(xs)]
    outdir = tmp_path / "den"
    args = ["denoise", *map(str, paths), "--model", str(model), "--outdir", str(outdir),
            "--device", "cpu", "-q"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for k, x in enumerate(xs):
        out = outdir / f"cells{k}_denoised.ome.zarr"
        assert str(out) in text
        group = zarr.open_group(str(out), mode="r")
        ref = tiny_model.denoise(x, axes="TZYX", device="cpu")
        np.testing.assert_array_equal(group["0"][:], ref)
        ms = group.attrs["ome"]["multiscales"][0]
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.4, 0.2, 0.2]
        rec = json.loads((out / "zarr.json").read_text())["attributes"]["napari_b2u"]
        assert rec["complete"] and rec["model"] == str(model)
    assert main(args) == 0  # a rerun: everything already done
    assert "already done: resuming" in capsys.readouterr().out
    assert main(["denoise", *map(str, paths), "--model", str(model), "-q",
                 "--out", str(tmp_path / "x.ome.zarr")]) == 2  # several inputs need --outdir
    assert "--outdir" in capsys.readouterr().err
    assert main(["denoise", str(paths[0]), "--model", str(model), "--tile-size", "32", "-q",
                 "--out", str(tmp_path / "y.ome.zarr")]) == 2  # refused before any output
    assert "overlap" in capsys.readouterr().err and not (tmp_path / "y.ome.zarr").exists()


def test_cli_tiff_output_of_a_zarr_input_and_the_memory_budget(tiny_model, tmp_path, capsys,
                                                               monkeypatch):
    import tifffile

    from napari_b2u.cli import main

    model = tiny_model.save(tmp_path / "m.b2u")
    x = _stack((3, 40, 44))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", x, "tyx")
    out = tmp_path / "o.tif"
    assert main(["denoise", str(src), "--model", str(model), "--out", str(out), "--device",
                 "cpu", "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), tiny_model.denoise(x, device="cpu"))
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "1kB")
    assert main(["denoise", str(src), "--model", str(model), "--out", str(tmp_path / "p.tif"),
                 "-q"]) == 2
    assert "--out NAME.ome.zarr" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p.tif")


# ---- lazy training data ----------------------------------------------------------------------
def test_lazy_crops_are_uniform_and_never_touch_held_out_frames(monkeypatch):
    from napari_b2u.data import Layout, Normalization
    from napari_b2u.io.frames import FrameReader
    from napari_b2u.io.sources import ArraySource
    from napari_b2u.train.lazydata import BufferedCropSampler, LazyFrames

    n, h, w, p = 6, 23, 19, 4
    pos = np.arange(h * w, dtype=np.float32).reshape(h, w)
    stack = np.stack([pos + 1000 * f for f in range(n)])  # value: frame and position
    spy = Counting(stack)
    reader = FrameReader(ArraySource(spy), Layout("TYX", stack.shape))
    norm = Normalization([0.0], [1.0])
    train = LazyFrames(reader, norm, [0, 1, 3, 4, 5])  # frame 2 held out
    s = BufferedCropSampler(train, "cpu", seed=0, augment=False, buffer_bytes=3 * 4 * 13 * 13,
                            refresh_every=2, core=10)
    counts = np.zeros((n, h - p + 1, w - p + 1))
    for _ in range(3000):
        crops = s.sample(16, p).numpy()[:, 0]
        np.testing.assert_array_equal(crops - crops[:, :1, :1], np.broadcast_to(
            pos[:p, :p], crops.shape))  # real crops of one frame
        f, o = np.divmod(crops[:, 0, 0].astype(int), 1000)
        np.add.at(counts, (f, o // w, o % w), 1)
    assert s.slots == 3 and s.data.numel() * 4 <= 3 * 4 * 13 * 13  # the bounded buffer
    assert max(spy.reads) <= 13 * 13  # one block at a time, never a frame (23 x 19)
    assert counts[2].sum() == 0  # the validation frame is never sampled
    seen = counts[[0, 1, 3, 4, 5]]
    assert (seen > 0).all()  # every origin, edges included
    expected = seen.sum() / seen.size
    assert abs(seen.mean(axis=(1, 2)) / expected - 1).max() < 0.1  # frames alike
    by_row, by_col = seen.mean(axis=(0, 2)), seen.mean(axis=(0, 1))
    assert abs(by_row / expected - 1).max() < 0.1 and abs(by_col / expected - 1).max() < 0.1


def test_training_on_a_stack_larger_than_the_budget_is_lazy(monkeypatch, small_stack, tmp_path):
    from napari_b2u import api
    from napari_b2u.io.sources import stack_fingerprint
    from napari_b2u.train.lazydata import LazyFrames

    from .conftest import TINY_T

    noisy, _ = small_stack
    big = da.from_array(noisy, chunks=(1, 32, 32))
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "10kB")
    tr = api.make_trainer(big, axes="TYX", steps=6, seed=0, val_every=3,
                          autosave=str(tmp_path / "a.b2u"), autosave_every=0.0, **TINY_T)
    assert isinstance(tr.data.train, LazyFrames) and isinstance(tr.data.val, LazyFrames)
    assert tr.data.train.shape[0] + tr.data.val.shape[0] == 8 and "buffer" in tr.data.split
    assert tr.data.fingerprint == stack_fingerprint(big, "TYX")  # what a resume compares
    events = list(tr)
    assert events[-1].done and tr.history
    model = tr.result()
    assert model.denoise(big, device="cpu").shape == noisy.shape
    again = api.make_trainer(big, axes="TYX", resume=str(tmp_path / "a.b2u"), steps=8,
                             **{k: v for k, v in TINY_T.items() if k in ("device",)})
    assert again.step == 6
    # the floor's risk estimate reads its crops and each one's noise law from the lazy frames
    floored = api.make_trainer(big, axes="TYX", steps=4, seed=0, **{**TINY_T, "floor": "gauss"})
    assert isinstance(floored.data.train, LazyFrames)
    list(floored)
    assert "SURE" in floored.result().info["floor"]["measure"]
    monkeypatch.delenv("NAPARI_B2U_MEMORY_BUDGET")
    small = api.make_trainer(big, axes="TYX", steps=1, **TINY_T)  # fits: in memory as before
    assert isinstance(small.data.train, np.ndarray)


def test_the_risk_on_lazy_frames_never_reads_the_whole_stack(monkeypatch, small_stack):
    """The end phase's risk takes its clip bounds from what the noise check measured (a
    sample of lazy frames), not from the whole stack turned into one array."""
    from napari_b2u import api
    from napari_b2u.train.lazydata import LazyFrames
    from napari_b2u.train.sure import sure_risk

    from .conftest import TINY_T

    noisy, _ = small_stack
    clipped = np.clip(noisy.astype(np.int16) - int(np.median(noisy)), 0, 255).astype(np.uint8)
    big = da.from_array(clipped, chunks=(1, 32, 32))
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "10kB")
    tr = api.make_trainer(big, axes="TYX", steps=2, seed=0, **TINY_T)
    assert isinstance(tr.data.train, LazyFrames) and tr.noise.clipped_low >= 0.25

    def whole(self, *a, **k):
        raise AssertionError("the whole lazy stack was read into one array")
    monkeypatch.setattr(LazyFrames, "__array__", whole, raising=False)
    risk = sure_risk(tr, 4)
    assert risk is not None and risk.measured < 1.0  # clipped pixels left out


# ---- the benchmark script ----------------------------------------------------------------------
def test_scale_benchmark_runs_small(tmp_path, capsys):
    import sys
    from pathlib import Path

    pytest.importorskip("psutil")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import scale

    scale.main(["equality", "--frames", "2", "--size", "96", "--net", "gauss"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| gauss")]
    assert len(rows) == 4 and all("| True | 0 |" in ln for ln in rows)
    scale.main(["make", "--out", str(tmp_path), "--gb", "0.001", "--size", "64"])
    scale.main(["memory", "--input", str(tmp_path / "in.ome.zarr"), "--scratch", str(tmp_path)])
    row = capsys.readouterr().out.splitlines()[-1]
    assert "0 → 1 / 1 |" in row  # 131 frames of 64 x 64: one block, done
