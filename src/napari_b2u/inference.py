"""Denoising with a trained model: batched over frames, tiled with overlap, cancellable.

A :class:`Denoiser` is what training returns and what a model file holds: the method, the
network config and weights, and the normalization fitted on the training stack.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from .blocks import keep as _keep
from .blocks import tile_starts
from .config import PRESETS
from .data import (
    Layout,
    Normalization,
    cast_output,
    check_output_dtype,
    output_float,
)
from .device import is_oom, release_memory, resolve_device
from .errors import InputError
from .io.files import atomic_write
from .methods import get_method
from .modelfile import (
    MODEL_FORMAT,
    MODEL_VERSION,
    check_checkpoint,
    jsonable,
    read_checkpoint,
    weights_checksum,
)

#: pixels per network input batch (frames x copies x H x W), by device type. On CPU, batching
#: gains little and a batch is what a cancel waits for: 1 MP is ~3 s on 2 cores (CPU preset net)
PIXEL_BUDGET = {"cuda": 16 * 2**20, "mps": 4 * 2**20, "cpu": 2**20}
#: frames larger than this (per side) are tiled
TILE_SIZE = {"cuda": 2048, "mps": 1024, "cpu": 1024}
TILE_OVERLAP = 64


#: network pixels (frames × channels × H × W × copies, summed over the views) that
#: ``tta="auto"`` may spend, by device type: on 2 CPU cores 32 Mpx take ~30 s with the CPU
#: preset network (8 views of 4 Mpx, or 4 of a 20-frame 512² stack); a GPU ensembles anything
#: of ordinary size
TTA_AUTO_PASS_PIXELS = {"cuda": 2**34, "mps": 2**31, "cpu": 2**25}
#: the view counts an ensemble takes: the 8 flips/rotations, the 4 rotations, two, one
VIEW_COUNTS = (8, 4, 2, 1)


#: the ensembling choices a front end offers: (value of ``tta``, description)
TTA_CHOICES = (
    ("auto", "auto: as many views as stay fast on the device"),
    (False, "off: one pass"),
    (2, "2 views (2× the time)"),
    (4, "4 rotations (4× the time)"),
    (True, "all 8 flips and rotations (8× the time)"),
)


def ensemble_views(method, shape, output: str, dev, tta="auto") -> int:
    """How many dihedral views inference averages for (N, C, Y, X) frames of ``shape``.
    ``tta``: True (8), False (1), a count of 1, 2, 4 or 8, or 'auto': the most views whose
    passes fit :data:`TTA_AUTO_PASS_PIXELS` — on real stacks of 20 × 512² four views gained
    +0.16 dB over one and eight only 0.02 more (docs/benchmarks.md)."""
    if isinstance(tta, bool):
        return 8 if tta else 1
    if tta == "auto":
        n, c, h, w = shape
        pixels = n * c * h * w * method.copies_per_image(output)
        budget = TTA_AUTO_PASS_PIXELS.get(dev.type, TTA_AUTO_PASS_PIXELS["cpu"])
        return next(v for v in VIEW_COUNTS if v * pixels <= budget or v == 1)
    if isinstance(tta, (int, np.integer)) and int(tta) in VIEW_COUNTS:
        return int(tta)
    raise InputError(f"tta={tta!r}: use True (8 views), False (1), 'auto', or a number of "
                     f"views: {', '.join(map(str, sorted(VIEW_COUNTS)))}")


def dihedral(t: torch.Tensor, view: int, inverse: bool = False) -> torch.Tensor:
    """View ``view`` (0..7) of the 8 flips/rotations of (…, H, W), or its inverse."""
    k, flip = view % 4, view >= 4
    if not inverse:
        t = torch.rot90(t, k, (-2, -1)) if k else t
        return t.flip(-1) if flip else t
    t = t.flip(-1) if flip else t
    return torch.rot90(t, -k, (-2, -1)) if k else t


def predict_view(method, model, t: torch.Tensor, output: str, view: int) -> torch.Tensor:
    """``method``'s prediction of ``t`` seen in dihedral view ``view``, mapped back (float32):
    one term of the test-time ensemble."""
    return dihedral(method.predict(model, dihedral(t, view), output).float(), view, inverse=True)


class Denoiser:
    """A trained model. ``denoise(stack)`` returns an array shaped like the input."""

    def __init__(self, method: str, method_params: dict, model_config: dict, state_dict: dict,
                 normalization: Normalization, info: dict | None = None,
                 blend: dict | None = None):
        self.method_name = method
        self.method_params = dict(method_params)
        self.model_config = dict(model_config)
        self.state_dict = state_dict
        self.normalization = normalization
        self.info = dict(info or {})
        #: {"weight": w, "gauss_sigma": [σ per channel]}: the output is w × the network's +
        #: (1 − w) × a Gaussian filter's (the classical floor's blend, results.apply_floor)
        self.blend = dict(blend) if blend else None
        self._method = get_method(method, **self.method_params)
        self._model = None
        self._device = None

    # ---- properties ------------------------------------------------------------------------
    @property
    def method(self):
        return self._method

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._method.outputs

    @property
    def n_channels(self) -> int:
        return len(self.normalization.offset)

    def readout(self) -> dict:
        """Quantities the method fitted besides the network, in raw units (Blind2Sound and
        D-BSN: the Poisson–Gaussian noise ``noise_gain``, ``noise_sigma``, ``offset``)."""
        return dict(self.info.get("readout", {}))

    def describe_readout(self) -> str:
        """The readout as one line for people ("" when the method fits nothing extra)."""
        r = self.readout()
        if "noise_gain" in r:
            return (f"fitted noise (raw units): variance = {r['noise_gain']:.3g} × (mean − "
                    f"{r.get('offset', 0.0):.3g}) + {r['noise_sigma']:.3g}²")
        return ", ".join(f"{k} {v}" for k, v in r.items())

    def __repr__(self) -> str:
        steps = self.info.get("steps")
        return (f"Denoiser(method={self.method_name!r}, channels={self.n_channels}, "
                f"steps={steps}, chosen={self.info.get('chosen')!r})")

    def model(self, device="auto") -> torch.nn.Module:
        dev = resolve_device(device)
        if self._model is None or self._device != dev:
            m = self._method.build(self.model_config)
            m.load_state_dict(self.state_dict)
            m.eval().to(dev)
            # the layout the device's preset trains in; on 2 CPU cores it halved inference
            # time with identical outputs (docs/benchmarks.md)
            self._method.set_channels_last(
                m, PRESETS.get(dev.type, PRESETS["cpu"])["channels_last"])
            self._model, self._device = m, dev
        return self._model

    # ---- denoising --------------------------------------------------------------------------
    def check_stack(self, shape, axes: str | None) -> Layout:
        """The layout of a stack of ``shape``/``axes`` if this model can denoise it (the
        channel count matches), else the InputError — without touching data or the network,
        so a GUI can check every layer before denoising any."""
        from .data import parse_axes

        ax = parse_axes(axes, len(shape))
        layout = Layout(ax, tuple(int(v) for v in shape))
        if layout.n_channels != self.n_channels:
            raise InputError(
                f"this model was trained on {self.n_channels} channel(s) but the stack has "
                f"{layout.n_channels} (axes {ax!r}); check the axes string (C is the channel "
                "axis) or use a model trained on matching data"
            )
        return layout


    def denoise(self, stack, axes: str | None = None, output: str | None = None, dtype=None,
                device="auto", batch_size: int | None = None, tile_size: int | None = None,
                tile_overlap: int = TILE_OVERLAP, progress: bool = False,
                tta: bool | str = "auto") -> np.ndarray:
        """Denoise a stack laid out as ``axes`` (default: the file's, else 'YX'/'TYX' by ndim).
        ``stack``: an array, or a lazy input read a batch at a time — a zarr / OME-Zarr or TIFF
        path, a zarr array, group or store, a dask array (for results larger than memory:
        :meth:`denoise_to_zarr`).

        output: 'visible' (fast, f(y)) or, for B2U, 'weighted' (best quality, s²+1 passes) or
        'blind'. dtype: None keeps the input dtype (integers rounded and clipped), or e.g.
        'float32'. tta: test-time ensembling — the mean over the 8 flips/rotations of the
        input, each denoised and mapped back (8× the time, measured +0.05 … +0.3 dB on real
        data); a number (1, 2, 4, 8) of views; 'auto' takes as many as stay cheap
        (:func:`ensemble_views`). The input is never modified.
        """
        it = self.denoise_iter(stack, axes, output, dtype, device, batch_size, tile_size,
                               tile_overlap, tta)
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
        """``(tile, batch_size, views)`` for (N, C, Y, X) frames of ``shape``: what
        :meth:`denoise_iter` uses, and the out-of-core path too (same tiles, same batches)."""
        n, c, h, w = shape
        copies = self._method.copies_per_image(output)
        views = ensemble_views(self._method, shape, output, dev, tta)
        tile = int(tile_size or TILE_SIZE.get(dev.type, 1024))
        if tile_size is None and dev.type == "cpu" and copies > 1 and max(h, w) > tile:
            # frames tiled anyway: one tile is what a cancel waits for, so keep a tile's network
            # input within the batch budget (weighted, 5 copies: 448-px tiles, ~1.5 s each on
            # 2 cores instead of ~11 s for 1024 px; ~20 % more overlap to compute)
            fit = int(math.sqrt(PIXEL_BUDGET["cpu"] / copies)) // 64 * 64
            tile = max(256, min(tile, fit))
        th, tw = min(h, tile), min(w, tile)
        if batch_size is None:
            budget = PIXEL_BUDGET.get(dev.type, PIXEL_BUDGET["cpu"])
            batch_size = max(1, budget // (th * tw * copies))
        return tile, int(batch_size), views

    def denoise_iter(self, stack, axes=None, output=None, dtype=None, device="auto",
                     batch_size=None, tile_size=None, tile_overlap=TILE_OVERLAP, tta="auto"):
        """Generator form of :meth:`denoise`: yields ``(frames_done, n_frames)`` after each batch
        and between the tiles (and ensemble passes) of a batch (``frames_done`` unchanged), and
        returns the result (``StopIteration.value``). Closing it early cancels cleanly, within
        one tile pass."""
        from .io.sources import open_frames

        layout, in_dtype, raw = open_frames(stack, axes)  # a lazy input is read batch by batch
        self.check_stack(layout.shape, layout.axes)
        output = self._method.check_output(output)
        out_dtype = check_output_dtype(dtype) if dtype is not None else in_dtype
        dev = resolve_device(device)
        model = self.model(dev)
        n, c, h, w = raw.shape
        tile, batch_size, views = self.plan(raw.shape, output, dev, batch_size, tile_size, tta)
        result = np.empty((n, c, h, w), output_float(out_dtype))
        yield 0, n
        i = 0
        try:
            while i < n:
                b = min(batch_size, n - i)
                x = self.normalization.apply(raw[i:i + b])
                oom = False
                tiles = self._predict_tiles(model, x, output, dev, tile, tile_overlap, views)
                try:
                    while True:
                        try:
                            next(tiles)
                        except StopIteration as stop:
                            y = stop.value
                            break
                        yield i, n  # between tiles too: a consumer can cancel mid-batch
                except Exception as exc:
                    if not is_oom(exc):
                        raise
                    oom = True
                finally:
                    tiles.close()
                if oom:  # outside the except block, so the traceback frees its tensors
                    release_memory(dev)
                    if batch_size > 1:
                        batch_size = max(1, batch_size // 2)
                    elif tile > 128:
                        tile = max(128, tile // 2)
                    else:
                        raise MemoryError("out of memory even with one frame and 128-pixel "
                                          "tiles; use device='cpu'")
                    warnings.warn(f"out of memory: retrying with batch {batch_size}, tile {tile}",
                                  stacklevel=2)
                    continue
                result[i:i + b] = self.normalization.invert(y, result.dtype)
                i += b
                yield i, n
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
        :meth:`denoise` (output, dtype, device, batch_size, tile_size, tile_overlap, tta).
        Returns a :class:`~napari_b2u.bigdata.ZarrResult` (``.open()``: the lazy pyramid)."""
        from .bigdata import denoise_to_zarr

        return denoise_to_zarr(self, stack, out, axes=axes, progress=progress,
                               scheduler=scheduler, workers=workers, overwrite=overwrite,
                               **options)

    def _predict_tiles(self, model, x: np.ndarray, output: str, dev, tile: int, overlap: int,
                       views: int = 1):
        """Generator: predicts ``x`` tile by tile (each tile as the mean over ``views``
        dihedral views: 1, 2, 4 or 8), yielding after every pass but the last; returns the assembled
        prediction."""
        b, c, h, w = x.shape
        out = np.empty_like(x)
        ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        starts = [(y0, x0) for y0 in ys for x0 in xs]
        for k, (y0, x0) in enumerate(starts):
            th, tw = min(tile, h), min(tile, w)
            pred = yield from self._predict_tile(model, x[:, :, y0:y0 + th, x0:x0 + tw], output,
                                                 dev, views)
            ylo, yhi = _keep(y0, th, h, overlap)
            xlo, xhi = _keep(x0, tw, w, overlap)
            out[:, :, ylo:yhi, xlo:xhi] = pred[:, :, ylo - y0:yhi - y0, xlo - x0:xhi - x0]
            if k < len(starts) - 1:
                yield
        return out

    def _predict_tile(self, model, x: np.ndarray, output: str, dev, views: int = 1):
        """Generator: the prediction of one tile ``x`` (B, C, h, w) as the mean over ``views``
        dihedral views, yielding between views; returns it as numpy."""
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
        acc = None
        for v in range(views):
            with torch.no_grad():
                pred = predict_view(self._method, model, t, output, v)
            acc = pred if acc is None else acc + pred
            if v < views - 1:
                yield
        acc = acc / views
        if self.blend:
            from .methods.classical import gaussian_filter

            w = float(self.blend["weight"])
            filt = torch.cat([gaussian_filter(t[:, i:i + 1].float(), float(s))
                              for i, s in enumerate(self.blend["gauss_sigma"])], 1)
            acc = w * acc + (1.0 - w) * filt
        return acc.cpu().numpy()

    # ---- files ------------------------------------------------------------------------------
    def to_checkpoint(self) -> dict:
        from . import __version__

        state = {k: v.detach().cpu() for k, v in self.state_dict.items()}
        ckpt = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION if self.blend else 2,  # older readers load blend-free files
            "package_version": __version__,
            "method": self.method_name,
            "method_params": dict(self.method_params),  # copies: the file is not the model
            "model_config": dict(self.model_config),
            "normalization": self.normalization.to_dict(),
            "info": jsonable(self.info),
            "state_dict": state,
            "weights_sha256": weights_checksum(state),
        }
        if self.blend:
            ckpt["blend"] = dict(self.blend)
        return ckpt

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
        from .zoo.export import export_bioimageio

        return export_bioimageio(self, path, sample, axes, **options)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str = "the model") -> Denoiser:
        """A Denoiser from a loaded model file, every field checked first (InputError)."""
        if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
            raise InputError(f"{source} is not a napari-b2u model file")
        check_checkpoint(ckpt, source)
        return cls(
            method=ckpt["method"],
            method_params=ckpt["method_params"],
            model_config=ckpt["model_config"],
            state_dict=ckpt["state_dict"],
            normalization=Normalization.from_dict(ckpt["normalization"]),
            info=ckpt.get("info", {}),
            blend=ckpt.get("blend"),
        )

    @classmethod
    def load(cls, path) -> Denoiser:
        return cls.from_checkpoint(read_checkpoint(path), source=str(path))
