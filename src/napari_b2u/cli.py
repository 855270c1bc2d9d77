"""Command line: ``napari-b2u train | denoise | check | export | demo | info``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import B2UError, InputError
from .io.tiff import OME_DTYPES

#: TrainConfig fields the CLI offers as --options (the others are set by dedicated arguments
#: or are not for the command line)
_SKIP_FIELDS = ("method", "autosave", "preview_every")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """Training options, generated from the settings' own descriptions (config.FIELDS and each
    method's parameters): names, types and help are written once, in the core."""
    from .config import FIELDS
    from .methods import get_method, method_names

    def text(help_: str) -> str:  # argparse %-formats help: a literal % must be doubled
        return help_.replace("%", "%%")

    p.add_argument("--method", default="b2u", choices=method_names())
    for name, spec in FIELDS.items():
        if not spec.user or name in _SKIP_FIELDS:
            continue
        flag = "--" + name.replace("_", "-")
        if spec.kind is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                           default=None, help=text(spec.help))
        else:
            p.add_argument(flag, dest=name, type=spec.kind, default=None,
                           help=text(f"{spec.help} ({spec.allowed()})"))
    shared: dict = {}
    for m in method_names():
        for spec in get_method(m).user_params():
            shared.setdefault(spec.name, (spec, []))[1].append(m)
    for name, (spec, owners) in shared.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=spec.kind, default=None,
                       help=text(f"{', '.join(owners)}: {spec.help} ({spec.allowed()})"))
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any other parameter of the method (see `napari-b2u info`)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def _train_kwargs(a) -> dict:
    """The options given on the command line, for api.train_stack -> build_config (the one
    mapping): flags left out stay out, so the presets and defaults decide."""
    from .config import FIELDS
    from .methods import get_method, method_names

    names = {n for n, spec in FIELDS.items() if spec.user and n not in _SKIP_FIELDS}
    names |= {spec.name for m in method_names() for spec in get_method(m).user_params()}
    kw = {n: getattr(a, n) for n in sorted(names) if getattr(a, n, None) is not None}
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {item!r}: write NAME=VALUE, e.g. --param lambda_end=10")
        kw[key.strip().replace("-", "_")] = value.strip()
    return {"method": a.method, "device": a.device, **kw}


def cmd_train(a) -> int:
    from . import api
    from .config import _path_or_word
    from .io.files import check_distinct, check_output, check_writable
    from .io.frames import open_image

    out = Path(a.out)
    if out.suffix == "":
        out = out.with_suffix(".b2u")
    # Every written path is checked against every read path before any work: --overwrite
    # replaces earlier outputs, never an input. An autosave may continue the checkpoint it
    # resumes from; the final model may not replace that checkpoint.
    warm = _path_or_word(a.warm_start) if a.warm_start else None
    warm = warm if warm not in (None, "pretrained") else None  # a file the run starts from
    inputs = [a.input, a.val, a.resume, warm]
    check_output(out, inputs, a.overwrite, "--out model")
    if a.autosave:
        check_output(a.autosave, [a.input, a.val, warm], a.overwrite, "--autosave checkpoint",
                     allow=[a.resume] if a.resume else ())
    check_distinct({"--out": out, "--autosave": a.autosave})
    for path, what in ((out, "--out model"), (a.autosave, "--autosave checkpoint")):
        if path:
            check_writable(path, what)  # a read-only folder: say so now, not after training
    img = open_image(a.input, a.axes)  # zarr, and TIFFs larger than memory, stay lazy
    val = open_image(a.val, a.axes).data if a.val else None
    print(f"training on {a.input}: shape {img.data.shape}, axes {img.axes}, {img.data.dtype}")
    kw = _train_kwargs(a)
    if a.autosave:
        kw.update(autosave=a.autosave, autosave_every=a.autosave_every)
    if a.resume:  # the settings come from the checkpoint: only the length and autosave
        kw = {k: v for k, v in kw.items() if k in ("steps", "max_time", "autosave", "device")}
        kw["resume"] = a.resume
    model = api.train_stack(img.data, axes=img.axes, val_stack=val, progress=not a.quiet, **kw)
    # where the training data is, so that `napari-b2u export` finds its test image by itself
    model.info["training_data"] = {"path": str(Path(a.input).resolve()), "axes": img.axes,
                                   "pixel_size": dict(img.pixel_size)}
    path = _save_model(model, out)
    info = model.info
    print(f"saved {path} ({info['steps']} steps in {info['seconds']:.0f} s, kept the "
          f"{info['chosen']} model; {info['split']})")
    if model.readout():
        print(f"  {model.describe_readout()}")
    return 0


def _save_model(model, out: Path) -> Path:
    """Save to ``out``; if that fails (disk full, no permission), save to the temporary folder
    or the home folder instead and say where, so that a long training is never lost."""
    import tempfile

    from .errors import OutputError

    try:
        return model.save(out)
    except OutputError as exc:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for folder in (Path(tempfile.gettempdir()), Path.home()):
            spare, k = folder / f"{out.stem}-{stamp}.b2u", 1
            while spare.exists():  # never over another file, not even an earlier spare
                spare, k = folder / f"{out.stem}-{stamp}-{k}.b2u", k + 1
            try:
                model.save(spare)
            except OutputError:
                continue
            raise OutputError(f"{exc}. The trained model was saved to {spare} instead; move "
                              "it where you want it") from exc
        raise OutputError(f"{exc}. Saving it to {tempfile.gettempdir()} and {Path.home()} "
                          "failed too: the trained model is lost; free some disk space") from exc


def _tta(value: str):
    """--tta: 'auto', 'on' / 'off', or a number of views."""
    low = value.strip().lower()
    if low in ("auto", "on", "off"):
        return {"auto": "auto", "on": True, "off": False}[low]
    if low in ("1", "2", "4", "8"):  # predict.VIEW_COUNTS (not imported: torch-free parsing)
        return int(low)
    raise argparse.ArgumentTypeError(f"{value!r}: use auto, on, off or 1, 2, 4, 8")


def cmd_denoise(a) -> int:
    from . import api
    from .data import check_output_dtype
    from .io.files import check_output, check_writable
    from .io.frames import open_image
    from .io.sources import is_zarr_path
    from .io.tiff import check_tiff_dtype, tiff_dtype_for, write_tiff

    if a.outdir or len(a.input) > 1 or (a.out and is_zarr_path(a.out)):
        from .cli_zarr import denoise_to_zarr

        return denoise_to_zarr(a)  # OME-Zarr, block by block, resumable, maybe distributed
    if not a.out:
        raise InputError("give --out (an OME-TIFF file, or a folder NAME.ome.zarr for stacks "
                         "of any size) or --outdir")
    if a.scheduler or a.workers:
        raise InputError("--scheduler and --workers write OME-Zarr: give --out NAME.ome.zarr "
                         "or --outdir")
    a.input = a.input[0]
    out = check_output(a.out, [a.input, a.model], a.overwrite, "--out image")
    check_writable(out, "--out image")
    if a.dtype is not None:
        check_tiff_dtype(check_output_dtype(a.dtype))  # before any work
    model = api.load(a.model)
    img = open_image(a.input, a.axes)  # zarr, and TIFFs larger than memory, are read lazily
    _check_fits(img.data, a.dtype)
    dtype = a.dtype or tiff_dtype_for(img.data.dtype)
    if np.dtype(dtype) != img.data.dtype and a.dtype is None:
        print(f"note: OME-TIFF cannot store {img.data.dtype}; writing {np.dtype(dtype).name}")
    t = time.perf_counter()
    res = model.denoise(img.data, axes=img.axes, output=a.output, dtype=dtype,
                        device=a.device, tile_size=a.tile_size, progress=not a.quiet,
                        tta=a.tta, normalize=a.normalize)
    note = {"denoised_by": "napari-b2u", "model": str(a.model), "method": model.method_name,
            "output": a.output or model.outputs[0], "source": str(a.input)}
    write_tiff(out, res, img.axes, img.pixel_size, note, overwrite=a.overwrite)
    print(f"wrote {out} ({res.shape}, {res.dtype}) in {time.perf_counter() - t:.1f} s")
    return 0


def sample_axes(img, channels: int, trained: str | None, path) -> str:
    """The axes of an export's sample: the file's, unless they contradict the model — a
    channel count it was not trained on (tifffile reads a plain stack of 3 or 4 frames as the
    planes of an RGB(A) image) — and the axes it was trained with fit the array: then those,
    with a note."""
    c = img.data.shape[img.axes.index("C")] if "C" in img.axes else 1
    if c == channels or not trained or len(trained) != img.data.ndim:
        return img.axes
    print(f"note: {path} reads as {img.axes} ({c} channels), but the model was trained on "
          f"{channels}: using the axes it was trained with, {trained} (--axes to set them)")
    return trained


def cmd_export(a) -> int:
    from . import api
    from .io.files import check_output
    from .io.readers import read_image
    from .zoo import check_package, require_bioimageio
    from .zoo.export import exportable_output, package_path

    require_bioimageio(core=a.test)  # before any work
    out = check_output(package_path(a.out), [a.model, a.sample], a.overwrite, "--out package")
    model = api.load(a.model)
    output = exportable_output(model, a.output)  # before reading any image
    recorded = model.info.get("training_data") or {}
    sample = a.sample or recorded.get("path")
    if not sample or not Path(sample).exists():
        where = f" (the training stack {sample} is not there any more)" if sample else ""
        raise InputError(f"give --sample: an image like the training data{where}; a crop of "
                         "it becomes the package's test image and cover")
    img = read_image(sample, a.axes or (None if a.sample else recorded.get("axes")))
    if a.sample and not a.axes:
        img.axes = sample_axes(img, model.n_channels, recorded.get("axes"), sample)
    pixel_size = img.pixel_size or (recorded.get("pixel_size") if not a.sample else None)
    path = model.export_bioimageio(
        out, img.data, axes=img.axes, output=output, name=a.name, authors=a.author or None,
        license=a.license, pixel_size=pixel_size, overwrite=a.overwrite, inputs=[sample])
    print(f"wrote {path}: the '{output}' output of the {model.method.title} model as a "
          f"bioimage.io package (test image: a crop of {sample})")
    if a.test:
        summary = check_package(path)
        print(f"bioimageio.core test: {summary.status}")
        if summary.status != "passed":
            print(summary.format(), file=sys.stderr)
            return 1
    return 0


def cmd_check(a) -> int:
    """What the noise of a stack looks like before training: correlation between neighbours,
    clipping, a Poisson-Gaussian fit and the blind spot ``mask="auto"`` would choose."""
    import json

    from .context import context_report
    from .io.readers import read_image
    from .noise import describe_mask, noise_report

    reports = {}
    for path in a.input:
        img = read_image(path, a.axes)
        rep = noise_report(img.data, img.axes)
        ctx = context_report(img.data, img.axes)
        reports[str(path)] = {**rep.to_dict(), "context": ctx.to_dict()}
        if a.json:
            continue
        print(f"{path}: shape {img.data.shape}, axes {img.axes}, {img.data.dtype}")
        print("  noise correlation   lag 1   lag 2   lag 3")
        for axis, corr in (("X", rep.corr_x), ("Y", rep.corr_y)):
            print(f"    along {axis}         " + " ".join(f"{c:+7.2f}" for c in corr))
        print(f"  clipped pixels: {100 * rep.clipped_low:.1f} % at the lower bound, "
              f"{100 * rep.clipped_high:.1f} % at the upper bound; the noise measured on "
              f"{100 * rep.usable:.0f} % of the pixels (the rest clipped or next to clipped)")
        if rep.gain is not None:
            print(f"  Poisson-Gaussian fit: variance = {rep.gain:.3g} x mean "
                  f"{rep.read_var:+.3g} (raw units)")
        print(f"  blind spot: {describe_mask(rep.mask, rep)}")
        print(f"  {ctx.describe()}")
        for note in rep.notes:
            print(f"  note: {note}")
    if a.json:
        print(json.dumps(reports, indent=1))
    return 0


def _check_fits(data, dtype) -> None:
    """Refuse before any work an OME-TIFF result larger than the memory budget."""
    from .io.memory import memory_budget

    n = int(np.prod(data.shape, dtype=np.int64))
    need = n * (4 + np.dtype(dtype or data.dtype).itemsize)
    if need > memory_budget():
        raise InputError(f"the result ({need / 2**30:.1f} GiB while it is made) does not fit "
                         f"the memory budget ({memory_budget() / 2**30:.1f} GiB); write "
                         "OME-Zarr instead, block by block: --out NAME.ome.zarr")


def comparison_png(path, panels: list[tuple[str, np.ndarray]], vmax: float = 255.0) -> Path:
    """Side-by-side 8-bit PNG of 2D images with a title on each."""
    from PIL import Image, ImageDraw

    from .io.files import atomic_write

    tiles = []
    for title, img in panels:
        a = np.clip(np.asarray(img, np.float64) / vmax, 0, 1)
        a = (a * 255 + 0.5).astype(np.uint8)
        tile = Image.fromarray(a).convert("RGB")
        d = ImageDraw.Draw(tile)
        d.rectangle([0, 0, min(tile.width, 8 + 7 * len(title)), 14], fill=(0, 0, 0))
        d.text((4, 2), title, fill=(255, 255, 0))
        tiles.append(tile)
    w = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
    canvas = Image.new("RGB", (w, max(t.height for t in tiles)), (255, 255, 255))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + 4
    path = Path(path)
    with atomic_write(path, "the comparison image") as tmp:
        canvas.save(tmp, format="PNG")
    return path


def cmd_demo(a) -> int:
    import torch

    from . import api
    from .device import device_info, resolve_device
    from .io.files import check_writable
    from .io.tiff import write_tiff
    from .metrics import evaluate
    from .sample_data import fmdd_like_stack

    dev = resolve_device(a.device)
    gpu = dev.type != "cpu"
    frames = a.frames or (50 if gpu else 16)
    size = a.size or (512 if gpu else 256)
    outdir = Path(a.out)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"--out {outdir} is a file; the demo writes several files into a "
                         "folder: give a folder name")
    check_writable(outdir / "demo_model.b2u", "demo output")  # before the training
    print(f"napari-b2u demo on {device_info(dev).describe()} (torch {torch.__version__})")
    noisy, clean = fmdd_like_stack(frames, (size, size), seed=a.seed or 0)
    print(f"sample: {frames} noisy frames of {size}x{size}, uint8, Poisson-Gaussian noise")
    model = api.train_stack(noisy, axes="TYX", progress=not a.quiet, **_train_kwargs(a))
    t = time.perf_counter()
    den = model.denoise(noisy, device=dev, dtype="float32")
    t_den = time.perf_counter() - t
    rows = [("noisy input", noisy), ("B2U visible f(y)", den)]
    if "weighted" in model.outputs:
        rows.append(("B2U weighted", model.denoise(noisy, device=dev, output="weighted",
                                                   dtype="float32")))
    print(f"\ntrained {model.info['steps']} steps in {model.info['seconds']:.0f} s "
          f"({model.info['chosen']} model); denoised {frames} frames in {t_den:.1f} s")
    print(f"{'':20s} {'PSNR (dB)':>10s} {'SSIM':>7s}")
    for name, stack in rows:
        ps, ss = zip(*(evaluate(f, clean) for f in stack))
        print(f"{name:20s} {np.mean(ps):10.2f} {np.mean(ss):7.3f}")
    path_model = _save_model(model, outdir / "demo_model.b2u")
    path_tif = write_tiff(outdir / "demo_denoised.tif", np.clip(np.rint(den), 0, 255).astype(
        np.uint8), "TYX", note={"denoised_by": "napari-b2u demo"}, overwrite=True)
    write_tiff(outdir / "demo_noisy.tif", noisy, "TYX", overwrite=True)
    png = comparison_png(outdir / "demo_comparison.png",
                         [("noisy", noisy[0]), ("B2U denoised", den[0]), ("clean", clean)])
    print(f"\nwrote {path_tif}, {png}, {path_model}")
    return 0


def cmd_info(a) -> int:
    import torch

    from . import __version__
    from .config import PRESETS
    from .device import available_devices, device_info
    from .methods import get_method, method_names

    print(f"napari-b2u {__version__}, torch {torch.__version__}")
    for d in available_devices():
        print("  device", device_info(d).describe())
    for k in method_names():
        m = get_method(k)
        print(f"  method {k}: {m.title}; outputs: " + "; ".join(
            f"{o} — {m.describe(o)}" for o in m.outputs))
        for spec in m.parameters:
            print(f"    {spec.name} = {spec.default!r}: {spec.help} ({spec.allowed()})")
    for k, v in PRESETS.items():
        print(f"  preset {k}: steps {v['steps']}, patch {v['patch_size']}, batch "
              f"{v['batch_size']}, width {v['width']}, depth {v['depth']}, lr {v['lr']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-b2u",
        description="Self-supervised denoising of fluorescence microscopy (Blind2Unblind).")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model on a noisy stack")
    t.add_argument("input", help="TIFF/OME-TIFF/PNG/.npy file or FMDD folder")
    t.add_argument("--out", required=True, help="model file to write (.b2u)")
    t.add_argument("--axes", help="axes of the input, e.g. TYX, ZYX, TCZYX (default: from file)")
    t.add_argument("--val", help="separate validation stack (default: hold out part of input)")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--autosave", help="checkpoint rewritten during training (resumable)")
    t.add_argument("--autosave-every", type=float, default=300.0, help="seconds (default 300)")
    t.add_argument("--resume", help="continue training from an autosaved checkpoint")
    t.add_argument("-q", "--quiet", action="store_true")
    _add_train_args(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("denoise", help="denoise a stack with a trained model")
    d.add_argument("input", nargs="+", help="TIFF/OME-TIFF, zarr/OME-Zarr, PNG or .npy file(s)")
    d.add_argument("--model", required=True)
    d.add_argument("--out", help="output OME-TIFF, or NAME.ome.zarr: OME-Zarr written block by "
                                 "block (any size, resumable: rerun to continue)")
    d.add_argument("--outdir", help="folder for the outputs of several inputs (OME-Zarr, "
                                    "<name>_denoised.ome.zarr each), denoised as one graph")
    d.add_argument("--scheduler", help="address of a running dask.distributed scheduler "
                                       "(tcp://host:8786) to run on (OME-Zarr outputs)")
    d.add_argument("--workers", type=int, help="start a local dask cluster of N workers (one per "
                                               "GPU when there are CUDA GPUs)")
    d.add_argument("--axes")
    d.add_argument("--output", help="visible (fast, default) or weighted (best quality, B2U)")
    d.add_argument("--dtype", choices=OME_DTYPES,
                   help="output pixel type (default: the input's)")
    d.add_argument("--device", default="auto")
    d.add_argument("--tile-size", type=int)
    d.add_argument("--tta", type=_tta, default="auto", metavar="{auto,on,off,1,2,4,8}",
                   help="test-time ensembling: the mean over the flips/rotations of the input "
                        "(on: all 8, or a number of views; auto, the default: as many as "
                        "stay cheap on the device)")
    d.add_argument("--normalize", choices=("model", "image"), default="model",
                   help="scale the input as the model's training data was (model, the "
                        "default; an input far outside that range is refused) or on its own "
                        "values (image)")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_denoise)

    c = sub.add_parser("check", help="measure the noise of stacks (correlation, clipping) and "
                       "the blind spot training would use")
    c.add_argument("input", nargs="+", help="image files (TIFF/OME-TIFF/PNG/.npy)")
    c.add_argument("--axes", help="axes of the inputs, e.g. TYX (default: from the file)")
    c.add_argument("--json", action="store_true", help="print the reports as JSON")
    c.set_defaults(func=cmd_check)

    m = sub.add_parser("demo", help="train and denoise the built-in FMDD-like sample")
    m.add_argument("--out", default="b2u-demo", help="output folder (default: b2u-demo)")
    m.add_argument("--frames", type=int, help="frames (default 50 on GPU, 16 on CPU)")
    m.add_argument("--size", type=int, help="frame size (default 512 on GPU, 256 on CPU)")
    m.add_argument("-q", "--quiet", action="store_true")
    _add_train_args(m)
    m.set_defaults(func=cmd_demo)

    e = sub.add_parser("export", help="write a model as a bioimage.io package (.zip) for Fiji/"
                                      "deepImageJ, ilastik, bioimageio.core, ...")
    e.add_argument("model", help="model file (.b2u)")
    e.add_argument("--out", required=True, help="package to write (.zip)")
    e.add_argument("--sample", help="an image like the training data: a crop becomes the "
                                    "package's test image (default: the training stack the "
                                    "model names, if it is still there)")
    e.add_argument("--axes", help="axes of the sample (default: from the file)")
    e.add_argument("--output", help="the single-pass output to export (default: the method's)")
    e.add_argument("--name", help="the package's name on bioimage.io")
    e.add_argument("--author", action="append", help="author name (repeat for several)")
    e.add_argument("--license", default="CC-BY-4.0", help="SPDX license id (default CC-BY-4.0)")
    e.add_argument("--test", action="store_true",
                   help="run bioimageio.core's test of the written package")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="devices, methods and presets")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError) as exc:  # what the user gave cannot be used
        print(f"napari-b2u: error: {exc}", file=sys.stderr)
        return 2
    except (B2UError, MemoryError) as exc:  # a write failed, no model, out of memory
        print(f"napari-b2u: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("napari-b2u: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
