"""Model files: every hostile or damaged file is one clear InputError at load time, fast, before a
network is built (issue 17, items 9 and 11); older files still load."""

import io
import math
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_b2u import api
from napari_b2u.config import CONFIG_VERSION
from napari_b2u.denoise.denoiser import Denoiser
from napari_b2u.errors import InputError
from napari_b2u.modelfile import MODEL_VERSION, weights_checksum


def _write(ck, path):
    torch.save(ck, path)
    return path


def _load_error(ck, tmp_path, name="m.b2u"):
    with pytest.raises(InputError) as exc:
        api.load(_write(ck, tmp_path / name))
    return str(exc.value)


def test_a_saved_model_carries_its_checksum_and_version(tiny_model, tmp_path):
    ck = torch.load(tiny_model.save(tmp_path / "m.b2u"), weights_only=True)
    # 3 only for a blend, 4 only for stack context: older readers load what they can
    assert ck["version"] == 2 and MODEL_VERSION == 4
    assert ck["weights_sha256"] == weights_checksum(ck["state_dict"])
    assert ck["info"]["train_config"]["version"] == CONFIG_VERSION


@pytest.mark.parametrize("blend", [{"weight": 1.5, "gauss_sigma": [1.0]},
                                   {"weight": 0.5, "gauss_sigma": []},
                                   {"weight": 0.5, "gauss_sigma": [-1.0]},
                                   {"weight": 0.5}, "half"])
def test_a_damaged_blend_is_refused(tiny_model, tmp_path, blend):
    ck = tiny_model.to_checkpoint()
    ck["version"], ck["blend"] = 3, blend
    assert "its blend" in _load_error(ck, tmp_path)


def test_a_huge_declared_network_is_refused_before_it_is_built(tiny_model, tmp_path):
    ck = tiny_model.to_checkpoint()
    ck["model_config"] = {**ck["model_config"], "width": 2048}  # 750 M parameters
    assert "parameters, more than any" in _load_error(ck, tmp_path)
    ck["model_config"] = {**ck["model_config"], "width": 32}  # plausible, but not these weights
    assert "do not match its network" in _load_error(ck, tmp_path)


def test_a_compressed_archive_is_refused_unread(tiny_model, tmp_path):
    good = tiny_model.save(tmp_path / "good.b2u")
    bomb = tmp_path / "bomb.b2u"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        dst.writestr("archive/data/huge", b"\0" * (8 << 20))  # 8 MB that deflate to ~8 KB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InputError, match="compressed entries"):
        api.load(bomb)


def test_flipped_bytes_in_the_weights_are_detected(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "m.b2u")
    ck = torch.load(path, weights_only=True)
    key = next(iter(ck["state_dict"]))
    ck["state_dict"][key] = ck["state_dict"][key].clone()
    ck["state_dict"][key].view(-1).view(torch.uint8)[3] ^= 0x40  # one byte, one bit
    assert "do not match their checksum" in _load_error(ck, tmp_path)
    # the same on the bytes of the file itself
    raw = bytearray(path.read_bytes())
    start = raw.find(b"data/0") + 200  # inside the first weight tensor's storage
    raw[start] ^= 0x01
    bad = tmp_path / "flipped.b2u"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError):
        api.load(bad)


@pytest.mark.parametrize("edit,match", [
    (lambda ck: ck.update(state_dict=list(ck["state_dict"].values())), "not a mapping"),
    (lambda ck: ck["model_config"].update(colour="blue"), "cannot be built"),
    (lambda ck: ck.update(extra_key=1), "unknown entries"),
    (lambda ck: ck["normalization"].update(scale=[0.0]), "normalization"),
    (lambda ck: ck["normalization"].update(scale=[math.nan]), "normalization"),
    (lambda ck: ck["normalization"].update(offset=[math.inf]), "normalization"),
    (lambda ck: ck["method_params"].update(cells=0), "cells=0 is not allowed"),
    (lambda ck: ck["method_params"].update(cells=-3), "cells=-3 is not allowed"),
    (lambda ck: ck["method_params"].update(cells=1000), "cells=1000 is not allowed"),
    (lambda ck: ck["method_params"].update(ghost=1), "unknown parameter"),
    (lambda ck: ck.update(version="1"), "not a positive whole number"),
    (lambda ck: ck.update(version=True), "not a positive whole number"),
    (lambda ck: ck.update(version=0), "not a positive whole number"),
    (lambda ck: ck.update(version=99), "newer napari-b2u"),
    (lambda ck: ck.update(info=[1, 2]), "info is not a mapping"),
])
def test_damaged_fields_are_one_clear_error(tiny_model, tmp_path, edit, match):
    ck = tiny_model.to_checkpoint()
    edit(ck)
    assert match in _load_error(ck, tmp_path)


def test_nan_weights_are_refused(tiny_model, tmp_path):
    ck = tiny_model.to_checkpoint()
    key = next(iter(ck["state_dict"]))
    ck["state_dict"][key] = torch.full_like(ck["state_dict"][key], math.nan)
    ck["weights_sha256"] = weights_checksum(ck["state_dict"])  # a consistent, but NaN, file
    assert "NaN or infinite" in _load_error(ck, tmp_path)


class Unsafe:  # a class in a pickle: weights_only refuses it
    pass


def test_the_corrupt_file_message_never_suggests_running_its_code(tmp_path):
    p = tmp_path / "unsafe.b2u"
    torch.save({"format": "napari-b2u-model", "x": Unsafe()}, p)
    with pytest.raises(InputError) as exc:
        api.load(p)
    assert "weights_only" not in str(exc.value) and "arbitrary code" not in str(exc.value)


def test_a_version_1_file_still_loads(tiny_model, tmp_path, small_stack):
    """Files of napari-b2u 0.1: no checksum, unversioned training settings."""
    ck = tiny_model.to_checkpoint()
    ck["version"] = 1
    del ck["weights_sha256"]
    cfg = dict(ck["info"]["train_config"])
    cfg.pop("version")
    cfg.pop("preview_seconds")
    ck["info"]["train_config"] = cfg
    old = api.load(_write(ck, tmp_path / "v1.b2u"))
    noisy, _ = small_stack
    np.testing.assert_array_equal(old.denoise(noisy[:2]), tiny_model.denoise(noisy[:2]))


# ---- fuzz: random edits of a real file never crash with anything but InputError --------------
def _mutations():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                     st.lists(st.integers(-3, 3), max_size=3))
    keys = st.sampled_from(["version", "method", "method_params", "model_config",
                            "normalization", "state_dict", "info", "format"])
    sub = st.sampled_from(["width", "depth", "in_channels", "out_channels", "arch", "cells",
                           "offset", "scale", "lambda_end", "head_width"])
    return st.lists(st.tuples(keys, st.one_of(st.none(), sub), leaf), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=_mutations())
def test_fuzzed_model_files_load_or_fail_clearly(tiny_model, edits):
    ck = tiny_model.to_checkpoint()
    for key, subkey, value in edits:
        if subkey is not None and isinstance(ck.get(key), dict):
            ck[key] = {**ck[key], subkey: value}
        else:
            ck[key] = value
    buf = io.BytesIO()
    torch.save(ck, buf)
    buf.seek(0)
    try:
        loaded = torch.load(buf, weights_only=True)
        den = Denoiser.from_checkpoint(loaded, "fuzzed")
    except InputError:
        return
    # what loads must work
    out = den.denoise(np.random.default_rng(0).integers(0, 255, (16, 16)).astype(np.uint8))
    assert out.shape == (16, 16)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(["steps", "max_time", "epochs", "patch_size", "batch_size", "lr",
                             "width", "depth", "val_fraction", "seed", "cells", "compile",
                             "autosave_every", "lambda_end", "preview_every"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-10**15, 10**15),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=4)))
def test_fuzzed_parameters_are_accepted_or_refused_by_name(name, value):
    from napari_b2u.config import build_config

    try:
        cfg = build_config("b2u", **{name: value})
    except InputError as exc:
        assert name in str(exc)
        return
    got = cfg.method_params[name] if name in cfg.method_params else getattr(cfg, name)
    if value is not None and not isinstance(got, bool):
        assert math.isfinite(float(got))
