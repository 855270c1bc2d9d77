"""Outputs on real disks (issue 32, items 1-4, 9, 11): the temporary file of a write is a fresh
name no file has, a model survives a full or read-only disk, ``--overwrite`` of an OME-Zarr
output replaces only what napari-b2u wrote, no command writes over a file it reads, OME-Zarr
inputs with untyped axes give valid outputs, and an OME-Zarr output on a full or read-only disk
is one clear error.

The disks are real: as root, a small tmpfs filled to the last bytes and a read-only tmpfs;
otherwise a per-file size limit (RLIMIT_FSIZE, in a subprocess) and a folder without write
permission."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tifffile

from napari_b2u import api
from napari_b2u.cli import _save_model, main
from napari_b2u.errors import OutputError
from napari_b2u.sample_data import fmdd_like_stack

TINY_ARGS = ["--device", "cpu", "--patch-size", "32", "--floor", "none", "--width", "16",
             "--depth", "2", "-q"]
DEN_ARGS = ["--device", "cpu", "-q"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# ---- real full and read-only folders -----------------------------------------------------------
_LIMITED = """\
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), hard))
from napari_b2u.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _mount(where, options) -> bool:
    """Mount a tmpfs on ``where`` (root only; False where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    if not ROOT or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def _fill(folder, room: int) -> None:
    """Fill the file system of ``folder`` until ``room`` bytes (or none) are free."""
    st = os.statvfs(folder)
    left = st.f_bavail * st.f_frsize - room
    with contextlib.suppress(OSError), open(folder / "filler", "wb") as fh:
        while left > 0:
            fh.write(b"\0" * min(left, 1 << 16))
            fh.flush()
            left -= 1 << 16


class Disks:
    def __init__(self, tmp_path):
        self.tmp, self.mounts, self.locked = tmp_path, [], []

    def full(self, room: int = 0, limit: int = 64 << 10):
        """(folder, limit): a tmpfs with ``room`` free bytes, limit None; without root, a plain
        folder and the per-file size limit the command must run under (:func:`run_cli`)."""
        where = self.tmp / f"full{len(self.mounts)}"
        if _mount(where, "size=1m"):
            self.mounts.append(where)
            _fill(where, room)
            return where, None
        return where, limit

    def read_only(self):
        where = self.tmp / "ro"
        if _mount(where, "ro,size=64k"):
            self.mounts.append(where)
            return where
        where.chmod(0o555)
        self.locked.append(where)
        try:
            (where / "probe").touch()
        except PermissionError:
            return where
        (where / "probe").unlink()
        pytest.skip("root without mount: no folder is read-only for root")

    def close(self):
        for where in reversed(self.mounts):  # lazily where a file is still open (a traceback)
            if subprocess.run(["umount", str(where)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)
        for where in self.locked:
            where.chmod(0o755)


@pytest.fixture
def disks(tmp_path):
    d = Disks(tmp_path)
    try:
        yield d
    finally:
        d.close()


def run_cli(argv, limit=None, env=None) -> tuple[int, str]:
    """(exit code, stdout + stderr + warnings) of ``napari-b2u argv``: in this process, or in a
    subprocess whose files may not grow beyond ``limit`` bytes."""
    if limit is None:
        out = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            warnings.simplefilter("always")
            code = main([str(a) for a in argv])
        return code, out.getvalue() + "\n".join(str(w.message) for w in caught)
    proc = subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *map(str, argv)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def files(tmp_path, small_stack, tiny_model):
    """An input TIFF and a trained model file."""
    noisy, _ = small_stack
    inp = tmp_path / "in.tif"
    tifffile.imwrite(inp, noisy, metadata={"axes": "TYX"})
    return inp, tiny_model.save(tmp_path / "m.b2u")


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---- 1. the temporary file is a fresh name ---------------------------------------------------
def test_a_file_named_like_the_output_plus_part_is_never_touched(tmp_path, files, small_stack):
    inp, model = files
    work = tmp_path / "w"
    work.mkdir()
    stack_part = work / "stack.tif.part"  # the input itself
    shutil.copy(inp, stack_part)
    (work / "m.b2u.part").write_bytes(b"someone's notes")  # unrelated files
    (work / "ck.b2u.part").write_bytes(b"more notes")
    before = {p: p.read_bytes() for p in work.iterdir()}
    code, text = run_cli(["denoise", stack_part, "--model", model, "--out", work / "stack.tif",
                          *DEN_ARGS])
    assert code == 0, text
    np.testing.assert_array_equal(tifffile.imread(work / "stack.tif"),
                                  api.load(model).denoise(small_stack[0], device="cpu"))
    code, text = run_cli(["train", stack_part, "--axes", "TYX", "--out", work / "m.b2u",
                          "--autosave", work / "ck.b2u", "--autosave-every", "0",
                          "--steps", "2", *TINY_ARGS])
    assert code == 0, text
    assert {p: p.read_bytes() for p in before} == before
    assert _listing(work) == ["ck.b2u", "ck.b2u.part", "m.b2u", "m.b2u.part", "stack.tif",
                              "stack.tif.part"]  # and no temporary file left


def test_a_failed_write_removes_its_temporary_file(tmp_path):
    from napari_b2u.io.files import atomic_write

    with pytest.raises(OutputError, match="could not write the test file"):
        with atomic_write(tmp_path / "x.bin", "the test file") as tmp:
            assert tmp.parent == tmp_path and tmp.exists() and tmp.name != "x.bin.part"
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert _listing(tmp_path) == []


# ---- 2. a full or read-only disk loses no model ----------------------------------------------
def test_train_on_a_full_disk_saves_the_model_elsewhere(tmp_path, files, disks, monkeypatch):
    inp, _ = files
    full, limit = disks.full()
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(spare))
    code, text = run_cli(["train", inp, "--out", full / "m.b2u", "--steps", "2", *TINY_ARGS],
                         limit, env={"TMPDIR": str(spare), "HOME": str(spare)})
    assert code == 1 and "could not write the model" in text, text
    assert "Traceback" not in text
    if limit is None:  # a real full tmpfs: the model is in the spare folder
        kept = list(spare.glob("m-*.b2u"))
        assert "saved to" in text and len(kept) == 1 and api.load(kept[0]).info["steps"] == 2
    else:  # every file of the process is limited: the spare folder fails too, and says so
        assert "lost" in text
    assert _listing(full) == (["filler"] if limit is None else [])


def test_a_model_is_saved_elsewhere_when_its_folder_is_read_only(tmp_path, tiny_model, disks,
                                                                 monkeypatch):
    ro = disks.read_only()
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    with pytest.raises(OutputError, match="could not write the model") as err:
        _save_model(tiny_model, ro / "m.b2u")
    kept = list(tmp_path.glob("m-*.b2u"))
    assert "saved to" in str(err.value) and len(kept) == 1
    assert api.load(kept[0]).info == tiny_model.info and _listing(ro) == []


def test_train_into_a_read_only_folder_is_refused_before_training(files, disks):
    inp, _ = files
    ro = disks.read_only()
    for argv in (["--out", ro / "m.b2u"], ["--out", inp.parent / "new.b2u", "--autosave",
                                            ro / "ck.b2u"]):
        code, text = run_cli(["train", inp, *argv, "--steps", "50", *TINY_ARGS])
        assert code == 1 and "cannot write" in text and "training on" not in text, text
    assert _listing(ro) == [] and not (inp.parent / "new.b2u").exists()


def test_autosave_on_a_full_disk_warns_and_training_goes_on(tmp_path, files, disks):
    inp, _ = files
    full, limit = disks.full(limit=400 << 10)  # holds the model (~200 kB), not a checkpoint
    out = tmp_path / "m2.b2u"
    code, text = run_cli(["train", inp, "--out", out, "--autosave", full / "ck.b2u",
                          "--autosave-every", "0", "--steps", "3", *TINY_ARGS], limit)
    assert code == 0, text
    assert "autosave failed" in text and "Traceback" not in text
    assert api.load(out).info["steps"] == 3
    assert _listing(full) == (["filler"] if limit is None else [])


def test_autosave_into_a_read_only_folder_warns_and_training_goes_on(small_stack, disks):
    from .conftest import TINY

    ro = disks.read_only()
    with pytest.warns(UserWarning, match="autosave failed"):
        model = api.train_stack(small_stack[0], steps=3, autosave=str(ro / "ck.b2u"),
                                autosave_every=0, **TINY)
    assert model.info["steps"] == 3 and _listing(ro) == []


DEMO = ["demo", "--frames", "2", "--size", "64", "--steps", "2", *TINY_ARGS]


def test_demo_on_a_full_disk_keeps_the_model(tmp_path, disks, monkeypatch):
    full, limit = disks.full()
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    code, text = run_cli([*DEMO, "--out", full / "demo"], limit,
                         env={"TMPDIR": str(tmp_path), "HOME": str(tmp_path)})
    assert code == 1 and "could not write the model" in text and "Traceback" not in text, text
    if limit is None:
        assert "saved to" in text and len(list(tmp_path.glob("demo_model-*.b2u"))) == 1


def test_demo_into_a_read_only_folder_is_refused_before_training(disks):
    ro = disks.read_only()
    code, text = run_cli([*DEMO, "--out", ro / "demo"])
    assert code == 1 and "cannot write" in text and "trained" not in text, text
    assert _listing(ro) == []


# ---- 4. no command writes over a file it reads -------------------------------------------------
def test_the_warm_start_model_is_never_an_output(tmp_path, files):
    inp, model = files
    before = model.read_bytes()
    for argv in (["--out", model, "--overwrite"],
                 ["--out", tmp_path / "new.b2u", "--autosave", model, "--overwrite"]):
        code, text = run_cli(["train", inp, "--warm-start", model, *argv, "--steps", "1",
                              *TINY_ARGS])
        assert code == 2 and "never overwritten" in text, text
    assert model.read_bytes() == before and not (tmp_path / "new.b2u").exists()


# ---- OME-Zarr outputs ----------------------------------------------------------------------
zarr = pytest.importorskip("zarr")
pytest.importorskip("dask")
pytest.importorskip("ome_zarr")


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _earlier_output(files, out):
    """An OME-Zarr output of the CLI, with OME-Zarr labels and a note the user added."""
    inp, model = files
    assert run_cli(["denoise", inp, "--model", model, "--out", out, *DEN_ARGS])[0] == 0
    labels = zarr.open_group(str(out / "labels"), mode="w", zarr_format=3)
    labels.attrs["labels"] = ["cells"]
    cells = labels.create_array("cells/0", shape=(8, 64, 64), dtype="uint16", chunks=(1, 64, 64))
    cells[:] = np.arange(8 * 64 * 64, dtype=np.uint16).reshape(8, 64, 64)
    (out / "notes.txt").write_text("segmented by hand, 3 days")
    return _snapshot(out / "labels"), (out / "notes.txt").read_bytes()


def test_overwrite_replaces_only_what_napari_b2u_wrote(tmp_path, files, small_stack):
    inp, model = files
    out = tmp_path / "out.ome.zarr"
    labels, notes = _earlier_output(files, out)
    code, text = run_cli(["denoise", inp, "--model", model, "--out", out, "--dtype", "float32",
                          "--overwrite", *DEN_ARGS])
    assert code == 0, text
    assert _snapshot(out / "labels") == labels and (out / "notes.txt").read_bytes() == notes
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["0"][:], api.load(model).denoise(
        small_stack[0], device="cpu", dtype="float32"))
    assert group.attrs["napari_b2u"]["complete"] and group.attrs["ome"]["multiscales"]


def test_out_a_symlink_to_an_earlier_output(tmp_path, files):
    inp, model = files
    real = tmp_path / "real.ome.zarr"
    labels, _ = _earlier_output(files, real)
    link = tmp_path / "link.ome.zarr"
    link.symlink_to(real, target_is_directory=True)
    code, text = run_cli(["denoise", inp, "--model", model, "--out", link, "--dtype", "float32",
                          "--overwrite", *DEN_ARGS])
    assert code == 0, text
    assert link.is_symlink() and _snapshot(real / "labels") == labels
    assert zarr.open_group(str(real), mode="r")["0"].dtype == np.float32


def test_an_input_that_is_another_inputs_output_is_refused(tmp_path, files):
    inp, model = files
    outdir = tmp_path / "den"
    earlier = outdir / "in_denoised.ome.zarr"
    assert run_cli(["denoise", inp, "--model", model, "--outdir", outdir, *DEN_ARGS])[0] == 0
    before = _snapshot(earlier)
    code, text = run_cli(["denoise", inp, earlier, "--model", model, "--outdir", outdir,
                          "--dtype", "float32", "--overwrite", *DEN_ARGS])
    assert code == 2 and "never overwritten" in text, text
    assert _snapshot(earlier) == before


# ---- 9. untyped OME-Zarr axes ------------------------------------------------------------------
def test_an_ome_zarr_input_with_untyped_axes_gives_a_valid_output(tmp_path, files, small_stack):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    _, model = files
    src = tmp_path / "untyped.ome.zarr"
    group = zarr.open_group(str(src), mode="w", zarr_format=2)
    group.create_array("0", data=small_stack[0], chunks=(1, 64, 64))
    group.attrs["multiscales"] = [{  # OME-Zarr 0.4: names without types are allowed
        "version": "0.4", "axes": [{"name": "t"}, {"name": "y"}, {"name": "x", "unit": "µm"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]}]
    out = tmp_path / "out.ome.zarr"
    code, text = run_cli(["denoise", src, "--model", model, "--out", out, *DEN_ARGS])
    assert code == 0, text
    ms = zarr.open_group(str(out), mode="r").attrs["ome"]["multiscales"][0]
    assert [(a["name"], a["type"]) for a in ms["axes"]] == [("t", "time"), ("y", "space"),
                                                              ("x", "space")]
    nodes = list(Reader(parse_url(str(out)))())
    assert any(isinstance(s, Multiscales) for n in nodes for s in n.specs)


# ---- 11. OME-Zarr outputs on a full or read-only disk ------------------------------------------
@pytest.mark.parametrize("room", [0, 24 << 10])  # nothing fits / the metadata, not the chunks
def test_ome_zarr_output_on_a_full_disk_is_one_clear_error(tmp_path, files, disks, room):
    _, model = files
    noisy, _ = fmdd_like_stack(2, (256, 256), seed=1)  # chunks of ~38 kB
    inp = tmp_path / "big.tif"
    tifffile.imwrite(inp, noisy, metadata={"axes": "TYX"})
    full, limit = disks.full(room, limit=8 << 10 if room else 100)
    out = full / "X.ome.zarr"
    argv = ["denoise", inp, "--model", model, "--out", out, *DEN_ARGS]
    code, text = run_cli(argv, limit)
    assert code == 1 and "could not write the OME-Zarr output" in text, text
    assert "Traceback" not in text and "run the same command again" in text
    if room == 0:
        assert not out.exists()  # nothing of it was written: no folder left to refuse later
    if limit is None:
        (full / "filler").unlink()
    code, text = run_cli(argv)  # room again: the same command finishes the output
    assert code == 0, text
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["0"][:],
                                  api.load(model).denoise(noisy, device="cpu"))


def test_ome_zarr_output_into_a_read_only_folder_is_one_clear_error(files, disks):
    inp, model = files
    ro = disks.read_only()
    code, text = run_cli(["denoise", inp, "--model", model, "--out", ro / "X.ome.zarr",
                          *DEN_ARGS])
    assert code == 1 and "could not write the OME-Zarr output" in text, text
    assert "Traceback" not in text and _listing(ro) == []


def test_the_atomic_write_fallback_detects_torch_messages_on_real_disks(tmp_path, disks):
    """torch reports a full disk and a read-only folder as RuntimeErrors; both are write
    errors (no mocked message: the real torch.save on the real folders)."""
    import torch

    from napari_b2u.io.files import atomic_write

    full, limit = disks.full()
    if limit is not None:
        pytest.skip("needs root and mount (a real full tmpfs in this process)")
    ro = disks.read_only()
    big = {"w": torch.zeros(1 << 18)}
    for folder in (full, ro):
        with pytest.raises(OutputError, match="could not write the model"):
            with atomic_write(folder / "m.b2u", "the model") as tmp:
                torch.save(big, tmp)
    assert _listing(full) == ["filler"] and _listing(ro) == []
    # and torch's own messages, when its writer opens the file itself
    with pytest.raises(RuntimeError) as exc:
        torch.save(big, full / "direct.pt")
    (full / "direct.pt").unlink(missing_ok=True)
    from napari_b2u.io.files import _is_write_error

    assert _is_write_error(exc.value, full)
    with pytest.raises(RuntimeError) as exc:
        torch.save(big, ro / "direct.pt")
    assert _is_write_error(exc.value, ro)
