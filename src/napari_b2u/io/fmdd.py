"""FMDD-format folders (Zhang et al. 2019, the Fluorescence Microscopy Denoising Dataset).

Layout: ``<root>/<set>/raw/<view>/*.png`` (50 noisy 8-bit frames per field of view) and
``<root>/<set>/gt/<view>/avg50.png`` (their mean, the ground truth). The benchmark protocol of
METHOD.md trains on every view but 19 and tests on view 19.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .image import Image, read_png

TEST_VIEW = "19"


def _view_key(p: Path):
    return (0, int(p.name)) if p.name.isdigit() else (1, p.name)


def is_set_folder(path) -> bool:
    return (Path(path) / "raw").is_dir()


def is_fmdd_folder(path) -> bool:
    path = Path(path)
    return is_set_folder(path) or any(is_set_folder(p) for p in path.iterdir() if p.is_dir())


def list_sets(root) -> list[Path]:
    root = Path(root)
    if is_set_folder(root):
        return [root]
    sets = sorted(p for p in root.iterdir() if p.is_dir() and is_set_folder(p))
    if not sets:
        raise InputError(f"{root} holds no FMDD set (no <set>/raw/<view>/*.png)")
    return sets


def list_views(set_dir) -> list[str]:
    raw = Path(set_dir) / "raw"
    return [p.name for p in sorted((p for p in raw.iterdir() if p.is_dir()), key=_view_key)]


@dataclass
class View:
    name: str
    noisy: np.ndarray  # (frames, Y, X)
    gt: np.ndarray | None  # (Y, X)


def load_view(set_dir, view: str, max_frames: int | None = None) -> View:
    set_dir = Path(set_dir)
    files = sorted((set_dir / "raw" / view).glob("*.png"))
    if not files:
        raise InputError(f"{set_dir / 'raw' / view} holds no PNG frames")
    if max_frames:
        files = files[:max_frames]
    frames = [read_png(f, grey=True) for f in files]
    for f, a in zip(files, frames):
        if a.shape != frames[0].shape:  # np.stack's "all input arrays must have the same shape"
            raise InputError(f"{f} is {a.shape[-1]}x{a.shape[0]} pixels, the first frame of "
                             f"{f.parent} {frames[0].shape[-1]}x{frames[0].shape[0]}: the frames "
                             "of a view must have one size; crop or remove it")
    noisy = np.stack(frames)
    gt_path = set_dir / "gt" / view / "avg50.png"
    gt = read_png(gt_path, grey=True) if gt_path.exists() else None
    return View(view, noisy, gt)


def load_set(set_dir, views=None, max_frames: int | None = None) -> list[View]:
    names = list_views(set_dir) if views is None else [str(v) for v in views]
    return [load_view(set_dir, v, max_frames) for v in names]


def split_views(set_dir, test_view: str = TEST_VIEW):
    """(train view names, test view name) following the protocol: test on view 19."""
    names = list_views(set_dir)
    if test_view not in names:
        test_view = names[-1]
    return [v for v in names if v != test_view], test_view


def read_fmdd_folder(path):
    """All raw frames of one FMDD set as an Image with axes 'STYX' (view, frame, Y, X)."""
    sets = list_sets(path)
    if len(sets) > 1:  # one model per set: the sets are different samples and microscopes
        names = ", ".join(p.name for p in sets[:6]) + (", …" if len(sets) > 6 else "")
        raise InputError(f"{path} holds {len(sets)} FMDD sets ({names}); give one set's "
                         f"folder, e.g. {sets[0]}")
    set_dir = sets[0]
    views = load_set(set_dir)
    shapes = {v.noisy.shape for v in views}
    if len(shapes) != 1:
        raise InputError(f"{set_dir}: views differ in shape ({sorted(shapes)}); open one view")
    data = np.stack([v.noisy for v in views])
    return Image(data, "STYX", {}, {"fmdd_set": set_dir.name,
                                    "views": [v.name for v in views]}, str(set_dir))
