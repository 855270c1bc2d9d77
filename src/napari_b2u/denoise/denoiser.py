"""Denoising with a trained model: batched over frames, tiled with overlap, ensembled,
cancellable (:mod:`.predict` is the loop), and every output it writes: the model file, an
OME-Zarr folder for stacks of any size (:mod:`.to_zarr`) and a bioimage.io package
(:mod:`napari_b2u.zoo.export`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import cast_output, check_output_dtype, output_float
from ..device import release_memory, resolve_device
from ..io.files import atomic_write
from ..io.frames import open_frames
from ..modelfile import read_checkpoint
from .domain import normalization_for
from .memplan import pass_plan
from .model import TrainedModel
from .predict import TILE_OVERLAP, denoise_frames


class Denoiser(TrainedModel):
    """A trained model. ``denoise(stack)`` returns an array shaped like the input."""

    def denoise(self, stack, axes: str | None = None, output: str | None = None, dtype=None,
                device="auto", batch_size: int | None = None, tile_size: int | None = None,
                tile_overlap: int = TILE_OVERLAP, progress: bool = False,
                tta: bool | str = "auto", normalize: str = "model") -> np.ndarray:
        """Denoise a stack laid out as ``axes`` (default: the file's, else 'YX'/'TYX' by ndim).
        ``stack``: an array, or a lazy input read a batch at a time — a zarr / OME-Zarr or TIFF
        path, a zarr array, group or store, a dask array (for results larger than memory:
        :meth:`denoise_to_zarr`).

        output: 'visible' (fast, f(y)) or, for B2U, 'weighted' (best quality, s²+1 passes) or
        'blind'. dtype: None keeps the input dtype (integers rounded and clipped), or e.g.
        'float32'. tta: test-time ensembling — the mean over the 8 flips/rotations of the
        input, each denoised and mapped back (8× the time, measured +0.05 … +0.3 dB on real
        data); a number (1, 2, 4, 8) of views; 'auto' takes as many as stay cheap
        (:func:`~.predict.ensemble_views`). normalize: 'model' (default) scales the stack
        as the training data was, and refuses a stack far outside that range
        (:class:`~napari_b2u.errors.RangeMismatch`: the network would return a near-constant
        image); 'image' scales it on its own values (:mod:`.domain`). The input is never
        modified.
        """
        it = self.denoise_iter(stack, axes, output, dtype, device, batch_size, tile_size,
                               tile_overlap, tta, normalize)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="denoise", unit="frame")
        try:
            while True:
                done, total = next(it)
                if bar is not None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()
        except StopIteration as stop:
            return stop.value
        finally:
            if bar is not None:
                bar.close()

    def plan(self, shape, output: str, dev, batch_size=None, tile_size=None, tta="auto"):
        """``(tile, batch_size, views)`` for (N, C, Y, X) frames of ``shape``
        (:func:`~.memplan.pass_plan`: the in-memory and out-of-core paths share it)."""
        return pass_plan(self, shape, output, dev, batch_size, tile_size, tta)

    def denoise_iter(self, stack, axes=None, output=None, dtype=None, device="auto",
                     batch_size=None, tile_size=None, tile_overlap=TILE_OVERLAP, tta="auto",
                     normalize="model"):
        """Generator form of :meth:`denoise`: yields ``(frames_done, n_frames)`` after each batch
        and between the tiles (and ensemble passes) of a batch (``frames_done`` unchanged), and
        returns the result (``StopIteration.value``). Closing it early cancels cleanly, within
        one tile pass."""
        layout, in_dtype, raw = open_frames(stack, axes)  # a lazy input is read batch by batch
        self.check_stack(layout.shape, layout.axes)
        model = self.with_normalization(normalization_for(self, raw, normalize))
        output = self.method.check_output(output)
        out_dtype = check_output_dtype(dtype) if dtype is not None else in_dtype
        dev = resolve_device(device)
        n, c, h, w = raw.shape
        tile, batch_size, views = self.plan(raw.shape, output, dev, batch_size, tile_size, tta)
        result = np.empty((n, c, h, w), output_float(out_dtype))
        rows = self.context_rows(layout)  # stack context: each frame and its neighbours
        yield 0, n
        try:
            for done in denoise_frames(model, raw, result, output, dev, tile, tile_overlap,
                                       batch_size, views, (h, w), rows=rows):
                yield done, n
        finally:
            if dev.type != "cpu":
                release_memory(dev)
        return layout.from_frames(cast_output(result, out_dtype))

    def denoise_to_zarr(self, stack, out, axes: str | None = None, progress: bool = False,
                        scheduler=None, workers: int | None = None, overwrite: bool = False,
                        **options):
        """Denoise a stack of any size into an OME-Zarr folder ``out``, block by block with
        bounded memory (needs ``napari-b2u[distributed]``). ``stack``: a zarr / OME-Zarr path,
        group, array or store, a TIFF path (read through tifffile's zarr store), a dask or
        numpy array. Same tiles, batches and blending as :meth:`denoise` (identical results);
        axes, dtype and pixel sizes of the input; a pyramid for viewers. A rerun resumes:
        finished chunks are skipped. ``scheduler``: a dask.distributed address or Client;
        ``workers``: start a local cluster (one worker per GPU). ``options``: as
        :meth:`denoise` (output, dtype, device, batch_size, tile_size, tile_overlap, tta,
        normalize).
        Returns a :class:`~.to_zarr.ZarrResult` (``.open()``: the lazy pyramid)."""
        from .to_zarr import denoise_to_zarr

        return denoise_to_zarr(self, stack, out, axes=axes, progress=progress,
                               scheduler=scheduler, workers=workers, overwrite=overwrite,
                               **options)

    # ---- files ------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the model file (weights, config, normalization). Writes atomically: an
        existing file is replaced only once the new one is complete; a failure leaves nothing
        behind and raises :class:`~napari_b2u.errors.OutputError`."""
        path = Path(path)
        if path.suffix == "":
            path = path.with_suffix(".b2u")
        with atomic_write(path, "the model") as tmp:
            torch.save(self.to_checkpoint(), tmp)
        return path

    def export_bioimageio(self, path, sample, axes: str | None = None, **options) -> Path:
        """Write a bioimage.io model package (.zip) of the single-pass output; ``sample`` (an
        image like the training data) gives its test tensors and cover. Needs the optional
        extra ``napari-b2u[bioimageio]``; see :func:`napari_b2u.zoo.export.export_bioimageio`."""
        from ..zoo.export import export_bioimageio

        return export_bioimageio(self, path, sample, axes, **options)

    @classmethod
    def load(cls, path) -> Denoiser:
        return cls.from_checkpoint(read_checkpoint(path), source=str(path))
