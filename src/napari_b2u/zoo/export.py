"""bioimage.io export and import: a trained model as a BioImage Model Zoo package (spec 0.5).

:func:`export_bioimageio` writes a ``.zip`` that bioimageio.core, Fiji/deepImageJ, ilastik and
the other consumers of the format run: the method's single-pass output as one network, with
``pytorch_state_dict`` weights (a self-contained architecture file, torch only) and TorchScript
weights, the model's normalization as ``scale_linear`` pre- and postprocessing (so inputs and
outputs are raw intensities), test tensors cut from the user's data (the test output is
napari-b2u's own denoising of the test input), a cover, a README with a Validation section,
pixel sizes, citations and a license. The description is built and validated with
``bioimageio.spec``; the export checks itself (the network and the TorchScript file reproduce
the test output, the latter also at another size). :func:`napari_b2u.zoo.read_package`
opens such a package again as the full model (every output, not only the exported one).

It needs the optional extra (``pip install "napari-b2u[bioimageio]"``); this module imports
neither it nor torch at import time, and never Qt.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.files import atomic_write, check_output
from . import text
from .common import CONFIG_FORMAT, CONFIG_KEY, STATE_PREFIX, quiet, reason, require_bioimageio

#: pixels a consumer should crop from each side of a tile (the U-Net's border effects)
HALO = 16
#: the largest side of the test tensors (a crop of the sample, centred)
TEST_SIDE = 256
#: test outputs must be reproduced within this fraction of the normalization's scale (plus the
#: same fraction of the value)
TOLERANCE = 1e-3
NET_FILE = "napari_b2u_network.py"
LICENSE = "CC-BY-4.0"


def exportable_output(model, output: str | None = None) -> str:
    """The output a package of ``model`` holds: ``output`` if it takes one network pass, by
    default the method's default output, or its first single-pass one (InputError if none)."""
    from ..models.export_net import HEADS

    method = model.method
    if not method.trainable:
        trained = model.info.get("trained_method")
        why = (f" (training returned it because it validated better than the {trained!r} "
               "network; train longer, or with floor='none', to export a network)"
               if trained else "")
        raise InputError(f"the model is the classical {method.title}{why}: a filter, not a "
                         "network, so there is nothing to put in a bioimage.io package")
    context = getattr(model, "context", None)
    if context:
        raise InputError(
            f"this model denoises each frame with its {context['frames']} neighbouring "
            f"frame(s) on each side along {context['axis']} (stack context); a bioimage.io "
            "package runs the network on one image at a time and cannot hand it the "
            "neighbours. To share a model through bioimage.io, train it with context=0")
    heads = HEADS.get(model.model_config.get("arch"), ())
    single = [o for o in model.outputs if o in heads and method.copies_per_image(o) == 1]
    if not single:
        raise InputError(f"method {model.method_name!r} has no output a bioimage.io package "
                         "can hold (one network pass)")
    if output is None:
        return model.outputs[0] if model.outputs[0] in single else single[0]
    output = method.check_output(output)
    if output not in single:
        raise InputError(
            f"the {output!r} output takes {method.copies_per_image(output)} network passes; a "
            f"bioimage.io package runs one: export {' or '.join(map(repr, single))}")
    return output


def package_path(path) -> Path:
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".zip")
    if path.suffix.lower() != ".zip":
        raise InputError(f"{path}: a bioimage.io package is a .zip file; give a name ending "
                         "in .zip")
    return path


def sizes(multiple: int) -> tuple[int, int]:
    """(min, step) of the package's y and x: multiples of the network's ``multiple`` with room
    for the halo on both sides."""
    return multiple * math.ceil((2 * HALO + 1) / multiple), multiple


def test_crop(model, sample, axes, multiple: int) -> np.ndarray:
    """(1, C, h, w) raw crop of the middle frame of ``sample``, centred, at most TEST_SIDE and
    of a size the package accepts."""
    from ..data import SAMPLE_AXES, Layout, validate_stack

    arr, ax = validate_stack(sample, axes)
    layout = model.check_stack(arr.shape, ax)
    idx = next(itertools.islice(layout.frame_slices(), layout.n_frames // 2, None))
    frame = np.asarray(arr[idx])
    rest = "".join(a for a in ax if a not in SAMPLE_AXES)
    frame = Layout(rest, frame.shape).to_frames(frame)
    lo, step = sizes(multiple)
    h, w = frame.shape[-2:]
    if min(h, w) < lo:
        raise InputError(f"the sample image is {h}×{w} pixels; a package of this model needs at "
                         f"least {lo}×{lo} (a consumer crops {HALO} pixels from each side of a "
                         "tile): export with a larger image of the same kind")
    ch, cw = (lo + step * ((min(s, TEST_SIDE) - lo) // step) for s in (h, w))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(frame[:, :, y0:y0 + ch, x0:x0 + cw])


def affine(norm, n: int) -> tuple[list[float], list[float]]:
    """(gain, offset) per channel of the preprocessing: norm = raw × gain + offset."""
    off, sc = norm.as_arrays(n, np.float64)
    return [float(1 / s) for s in sc.ravel()], [0.0 - float(o / s) for o, s in
                                                zip(off.ravel(), sc.ravel())]


def _normalized(raw: np.ndarray, norm) -> np.ndarray:
    """(N, C, H, W) raw -> what a bioimage.io consumer feeds the network: float32
    scale_linear with the package's gain and offset."""
    n = raw.shape[1]
    gain, off = (np.asarray(v, np.float32).reshape(1, n, 1, 1) for v in affine(norm, n))
    return raw.astype(np.float32) * gain + off


def _as_package_computes(net, raw: np.ndarray, norm) -> np.ndarray:
    """The package's output for ``raw``: preprocessing, the network, postprocessing."""
    import torch

    off, sc = norm.as_arrays(raw.shape[1], np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(_normalized(raw, norm))).float().numpy()
    return y * sc + off


def _check_float32(norm) -> None:
    """Consumers normalize in float32: data far from zero (relative to its range) loses the
    steps the network needs, and the package could not reproduce napari-b2u's output (which
    removes the offset in float64)."""
    for c, (o, s) in enumerate(zip(norm.offset, norm.scale)):
        if (abs(o) + s) / s * 2.0**-24 > TOLERANCE / 10:
            raise InputError(
                f"channel {c} holds values around {o:.6g} with a range of only {s:.3g}: too far "
                "from zero for float32, the number type bioimage.io consumers compute in, so "
                "the package could not reproduce napari-b2u's output. Subtract a constant (e.g. "
                "the minimum) from the data, train on that, and export that model")


def architecture_source() -> str:
    """One Python file with the exported network (models/unet.py, b2s_net.py, dbsn.py,
    export_net.py without their relative imports): the package's architecture, runnable with
    torch only."""
    from importlib.resources import files

    parts = ['"""The network of a napari-b2u bioimage.io package (generated from napari_b2u.'
             'models: unet.py, b2s_net.py, dbsn.py, export_net.py; needs torch only)."""',
             "", "from __future__ import annotations", ""]
    for name in ("unet.py", "b2s_net.py", "dbsn.py", "export_net.py"):
        src = (files("napari_b2u.models") / name).read_text(encoding="utf-8")
        keep = [line for line in src.splitlines()
                if not line.startswith(("from __future__", "from .", "from ..", "import ."))]
        parts += [f"# ---- {name} " + "-" * (88 - len(name)), *keep, ""]
    source = "\n".join(parts)
    compile(source, NET_FILE, "exec")  # a syntax error here is a bug, not the user's
    return source


def _check(got, expected, tol: float, what: str) -> None:
    if not np.allclose(got, expected, rtol=TOLERANCE, atol=tol):
        diff = float(np.max(np.abs(np.asarray(got, np.float64) - expected)))
        raise RuntimeError(f"the exported {what} does not reproduce napari-b2u's output (max "
                           f"difference {diff:.3g}, tolerance {tol:.3g}); please report this")


def export_bioimageio(model, path, sample, axes: str | None = None, *, output: str | None = None,
                      name: str | None = None, description: str | None = None, authors=None,
                      license: str = LICENSE, pixel_size: dict | None = None, tags=(),
                      overwrite: bool = False, inputs=()) -> Path:
    """Write ``model`` as a bioimage.io package (a .zip) to ``path``; returns the path.

    sample: an image of the kind the model was trained on (the training stack itself is best),
        laid out as ``axes``; a centred crop of its middle frame becomes the test input, and
        napari-b2u's denoising of it the test output and the cover.
    output: the single-pass output to export (default: the method's own, see
        :func:`exportable_output`). name, description: shown by bioimage.io (defaults say what
        was trained). authors: names or dicts (name, affiliation, email, orcid); default
        "napari-b2u user". license: an SPDX id (default CC-BY-4.0). pixel_size: µm per axis,
        e.g. ``{"Y": 0.1, "X": 0.1}``. An existing ``path`` is replaced only with
        ``overwrite``; ``inputs`` (e.g. the sample's file) never.
    """
    require_bioimageio()
    import torch

    from .. import __version__
    from ..models.export_net import ExportNet

    path = check_output(package_path(path), inputs, overwrite, "bioimage.io package")
    output = exportable_output(model, output)
    if getattr(model, "blend", None):
        warnings.warn(f"this model blends its network with a Gaussian filter (weight "
                      f"{model.blend['weight']:.2f}); a bioimage.io package holds the network "
                      "alone, so its output is the network's, not model.denoise's",
                      UserWarning, stacklevel=2)
    meta = _metadata(model, output, name, description, authors, license, tags)
    net = ExportNet(output=output, **model.model_config)
    net.model.load_state_dict(model.state_dict)
    net.eval()
    crop = test_crop(model, sample, axes, net.multiple)
    n = crop.shape[1]
    single = crop[0] if n > 1 else crop[0, 0]
    # a copy denoises (its own network on the CPU): the caller's model may be in use elsewhere
    mine = type(model)(model.method_name, model.method_params, model.model_config,
                       model.state_dict, model.normalization, model.info)
    expected = mine.denoise(single, axes="CYX" if n > 1 else "YX", output=output,
                            dtype="float32", device="cpu", tta=False).reshape(crop.shape)
    norm = model.normalization
    _check_float32(norm)
    tol = TOLERANCE * max(float(s) for s in norm.scale)
    _check(_as_package_computes(net, crop, norm), expected, tol, "network")
    with tempfile.TemporaryDirectory(prefix="napari-b2u-export-") as tmp:
        tmp = Path(tmp)
        x = torch.from_numpy(_normalized(crop, norm))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit is deprecated, and still what consumers
            traced = torch.jit.trace(net, x, check_trace=False)  # of the format run
            traced.save(str(tmp / "weights_torchscript.pt"))
            loaded = torch.jit.load(str(tmp / "weights_torchscript.pt"), map_location="cpu")
        _check(_as_package_computes(loaded, crop, norm), expected, tol, "TorchScript network")
        lo, step = sizes(net.multiple)
        other = torch.rand(1, n, lo + step, lo + 2 * step)
        with torch.no_grad():
            _check(loaded(other).numpy(), net(other).numpy(), TOLERANCE, "TorchScript network "
                   "at another size")
        torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                   tmp / "weights.pt")
        (tmp / NET_FILE).write_text(architecture_source(), encoding="utf-8")
        np.save(tmp / "test_input.npy", crop.astype(np.float32))
        np.save(tmp / "test_output.npy", expected.astype(np.float32))
        _cover(tmp / "cover.png", crop[0], expected[0])
        px = {k: float(v) for k, v in (pixel_size or {}).items()
              if k in ("Y", "X") and v and float(v) > 0}
        (tmp / "README.md").write_text(text.readme(
            name=meta["name"], title=model.method.title, method=model.method_name,
            output=output, output_text=model.method.describe(output), note=meta["note"],
            outputs={o: model.method.describe(o) for o in model.outputs},
            norm=norm.to_dict(), info=model.info, halo=HALO, min_size=lo, step=step,
            channels=n, pixel_size=px, package_version=__version__, tolerance=tol),
            encoding="utf-8")
        descr = _describe(tmp, model, net, output, meta, n, px, tol, __version__)
        return _save(descr, tmp, path)


def _metadata(model, output, name, description, authors, license, tags) -> dict:
    """The user-given fields, checked before any work (InputError naming the field)."""
    from bioimageio.spec.model import v0_5 as s
    from pydantic import ValidationError

    title = model.method.title
    name = name or f"napari-b2u {title} denoiser"
    name = "".join(c if c.isascii() and (c.isalnum() or c in "_+- ()") else " " for c in name)
    name = " ".join(name.split())[:64]
    if len(name) < 5:
        raise InputError(f"the package name {name!r} is too short: give at least 5 letters, "
                         "digits, spaces, '_', '-', '+' or parentheses")
    default = model.outputs[0]
    note = text.output_note(output, default, exportable_output(model) == default)
    if description is None:
        description = text.description(title, output, model.method.describe(output), note)
    people = []
    for a in authors or ["napari-b2u user"]:
        a = {"name": a} if isinstance(a, str) else dict(a)
        try:
            people.append(s.Author(**a))
        except (ValidationError, TypeError) as exc:
            raise InputError(f"author {a!r} is not valid for bioimage.io (a name without '/', "
                             f"optionally affiliation, email, orcid): {reason(exc)}") from None
    try:
        lic = s.LicenseId(license)
    except (ValidationError, ValueError) as exc:
        raise InputError(f"license {license!r} is not an SPDX identifier bioimage.io knows "
                         f"(e.g. CC-BY-4.0, MIT, BSD-3-Clause): {reason(exc)}") from None
    arch = model.model_config.get("arch")
    tag_list = ["denoising", "fluorescence-light-microscopy", "2d", "pytorch", "self-supervised",
                "napari-b2u", model.method_name] + (["unet"] if arch in ("unet", "b2s") else [])
    tag_list += [t for t in tags if t not in tag_list]
    return {"name": name, "description": description[:1024], "authors": people,
            "license": lic, "tags": tag_list, "note": note}


def _axes(s, px: dict, multiple: int, n: int, out: bool):
    lo, step = sizes(multiple)
    axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[f"channel{c}" for c in range(n)])]
    for a in ("y", "x"):
        size = px.get(a.upper())
        kw = dict(zip(("scale", "unit"), scale_unit(size))) if size else {}
        if out:
            axes.append(s.SpaceOutputAxisWithHalo(
                id=s.AxisId(a), halo=HALO, size=s.SizeReference(
                    tensor_id=s.TensorId("raw"), axis_id=s.AxisId(a)), **kw))
        else:
            axes.append(s.SpaceInputAxis(id=s.AxisId(a), size=s.ParameterizedSize(
                min=lo, step=step), **kw))
    return axes


def scale_unit(um: float) -> tuple[float, str]:
    """A pixel size (µm) as (scale, unit) with a whole-number scale: the spec computes an
    output's size as ``size × scale / scale`` in floating point, which is exact only then
    (96 × 0.1 / 0.1 is not 96). Sub-picometre digits are dropped."""
    for unit, factor in (("micrometer", 1.0), ("nanometer", 1e3), ("picometer", 1e6)):
        v = um * factor
        if round(v) >= 1 and abs(v - round(v)) <= 1e-6 * v:
            return float(round(v)), unit
    return float(max(1, round(um * 1e6))), "picometer"


def _scale_linear(s, gain: list[float], off: list[float]) -> list:
    if all(g == 1.0 for g in gain) and all(o == 0.0 for o in off):
        return []  # the spec refuses an identity
    if len(gain) == 1:
        return [s.ScaleLinearDescr(kwargs=s.ScaleLinearKwargs(gain=gain[0], offset=off[0]))]
    return [s.ScaleLinearDescr(kwargs=s.ScaleLinearAlongAxisKwargs(
        axis=s.AxisId("channel"), gain=gain, offset=off))]


def _describe(tmp: Path, model, net, output, meta, n, px, tol, version):
    import torch
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5 as s

    from ..modelfile import jsonable, weights_checksum

    gain, off = affine(model.normalization, n)
    f32 = s.EnsureDtypeDescr(kwargs=s.EnsureDtypeKwargs(dtype="float32"))
    back = ([float(v) for v in model.normalization.scale],
            [float(v) for v in model.normalization.offset])
    torch_version = s.Version(torch.__version__.split("+")[0])
    state = {k: v.detach().cpu() for k, v in model.state_dict.items()}
    config = {
        "format": CONFIG_FORMAT, "package_version": version, "method": model.method_name,
        "method_params": jsonable(model.method_params), "model_config": dict(model.model_config),
        "normalization": model.normalization.to_dict(), "output": output,
        "state_prefix": STATE_PREFIX, "weights_sha256": weights_checksum(state),
        # not where the training data lies on the user's disk: a package is for sharing
        "info": jsonable({k: v for k, v in model.info.items()
                          if k not in ("bioimageio", "training_data")}),
    }
    with ValidationContext(root=tmp, perform_io_checks=True,
                           known_files={u: None for u in text.urls()}):
        return s.ModelDescr(
            name=meta["name"], description=meta["description"], authors=meta["authors"],
            cite=[s.CiteEntry(text=t, url=s.HttpUrl(u)) for t, u in text.citations(
                model.method_name)],
            license=meta["license"], tags=meta["tags"], git_repo=s.HttpUrl(text.PROJECT_URL),
            covers=[s.FileDescr(source=tmp / "cover.png")],
            documentation=s.FileDescr(source=tmp / "README.md"),
            inputs=[s.InputTensorDescr(
                id=s.TensorId("raw"), description="raw intensities (any number type)",
                axes=_axes(s, px, net.multiple, n, out=False),
                test_tensor=s.FileDescr(source=tmp / "test_input.npy"),
                data=s.IntervalOrRatioDataDescr(type="float32"),
                # consumers pad tiles at the image border like napari-b2u pads to the U-Net's
                # multiple: by reflection, which never copies a pixel into its own neighbourhood
                pad=s.ReflectPadding(mode="reflect"),  # explicit: an empty {} reads as constant
                preprocessing=[f32, *_scale_linear(s, gain, off), f32])],
            outputs=[s.OutputTensorDescr(
                id=s.TensorId("denoised"), description=f"the '{output}' output, raw units",
                axes=_axes(s, px, net.multiple, n, out=True),
                test_tensor=s.FileDescr(source=tmp / "test_output.npy"),
                data=s.IntervalOrRatioDataDescr(type="float32"),
                postprocessing=[*_scale_linear(s, *back), f32])],
            weights=s.WeightsDescr(
                pytorch_state_dict=s.PytorchStateDictWeightsDescr(
                    source=tmp / "weights.pt", pytorch_version=torch_version,
                    architecture=s.ArchitectureFromFileDescr(
                        source=tmp / NET_FILE, callable=s.Identifier("ExportNet"),
                        kwargs={"output": output, **model.model_config})),
                torchscript=s.TorchscriptWeightsDescr(
                    source=tmp / "weights_torchscript.pt", pytorch_version=torch_version,
                    parent="pytorch_state_dict")),
            config=s.Config(bioimageio=s.BioimageioConfig(
                reproducibility_tolerance=[s.ReproducibilityTolerance(
                    relative_tolerance=TOLERANCE, absolute_tolerance=tol)],
                task="denoising", modality="fluorescence microscopy",
                architecture_type=model.model_config.get("arch", "")[:32],
                model_parameter_count=sum(int(t.numel()) for t in net.parameters())),
                **{CONFIG_KEY: config}),
        )


def _save(descr, tmp: Path, path: Path) -> Path:
    """Zip and validate the package in ``tmp``, then move it to ``path`` atomically."""
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    zipped = tmp / "package.zip"
    with quiet(), ValidationContext(root=tmp, perform_io_checks=True,
                                     known_files={u: None for u in text.urls()}):
        save_bioimageio_package(descr, output_path=zipped)
    with atomic_write(path, "the bioimage.io package") as part:
        part.write_bytes(zipped.read_bytes())
    return path


def _cover(path: Path, raw: np.ndarray, den: np.ndarray) -> None:
    """A 2:1 PNG: the test input | its denoising, on the input's display range (channels 0-2 as
    R, G, B; two channels as magenta and green)."""
    from PIL import Image

    c, h, w = raw.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    picks = [0, 0, 0] if c == 1 else ([0, 1, 0] if c == 2 else [0, 1, 2])
    tiles = []
    for img in (raw, den):
        rgb = []
        for ch in picks:
            lo, hi = np.percentile(raw[ch], (0.5, 99.5))
            a = (img[ch, y0:y0 + side, x0:x0 + side].astype(np.float64) - lo) / max(hi - lo,
                                                                                    1e-12)
            rgb.append((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
        tiles.append(Image.fromarray(np.stack(rgb, -1)).resize((256, 256), Image.BILINEAR))
    canvas = Image.new("RGB", (512, 256))
    canvas.paste(tiles[0], (0, 0))
    canvas.paste(tiles[1], (256, 0))
    canvas.save(path)
