"""Hostile packages and damaged autosaves (issue 32, items 5-7 and 10): a bioimage.io package is
opened within bounds (no YAML bomb, no inflating description, no oversized member), reads only
its own files (never the network, never a path outside it), and every refusal is one
InputError; a damaged autosave is refused field by field before any training, through the API
and the CLI."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_b2u import api
from napari_b2u.cli import main
from napari_b2u.errors import InputError

from .conftest import TINY, load_each_in_a_subprocess

pytest.importorskip("bioimageio.spec")

from bioimageio.spec.utils import read_yaml, write_yaml  # noqa: E402

#: a resumed run takes its settings from the checkpoint
RESUME = dict(device="cpu", progress=False)


# ---- bioimage.io packages ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def package(tmp_path_factory, small_stack, tiny_model):
    """A real package napari-b2u exported: its path and its members."""
    path = tiny_model.export_bioimageio(tmp_path_factory.mktemp("pkg") / "good.zip",
                                        small_stack[0])
    with zipfile.ZipFile(path) as zf:
        return path, {n: zf.read(n) for n in zf.namelist()}


def _yaml(content: dict) -> bytes:
    stream = io.StringIO()
    write_yaml(content, stream)
    return stream.getvalue().encode()


def _zip(path, members: dict, **kw):
    with zipfile.ZipFile(path, "w", **kw) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _three_forms(tmp_path, name, members: dict):
    """The same package as a zip, as an unpacked folder and as the bare rdf.yaml in it."""
    folder = tmp_path / name
    folder.mkdir()
    for n, data in members.items():
        (folder / n).write_bytes(data)
    return [_zip(tmp_path / f"{name}.zip", members, compression=zipfile.ZIP_DEFLATED), folder,
            folder / "rdf.yaml"]


def test_a_yaml_bomb_is_refused_before_any_reader_expands_it(tmp_path, package):
    """9 levels of 10 aliases (10^9 strings once expanded) in the free-form config: before, the
    reader grew ~40 MB/s without end; now the token scan refuses it (run in a subprocess so that
    a regression fails on its timeout instead of hanging the suite)."""
    _, files = package
    defs = "  lol0: &a0 [" + ", ".join(["lol"] * 10) + "]\n" + "".join(
        f"  lol{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    text = files["rdf.yaml"].decode().replace("\nconfig:\n", "\nconfig:\n" + defs, 1)
    assert text.count("*a") == 80
    paths = _three_forms(tmp_path, "bomb", {**files, "rdf.yaml": text.encode()})
    lines, said = load_each_in_a_subprocess(paths)
    assert len(lines) == 3 and all(line.startswith("REFUSED") and "YAML bomb" in line
                                   for line in lines), said


def test_an_inflating_description_or_member_is_refused_unread(tmp_path, package):
    _, files = package
    # 2 MB of comments deflate to a few KB (the 466 KB package inflated to 300 MB)
    padded = files["rdf.yaml"] + b"#" * 999 + (b"\n#" + b"x" * 998) * 2048
    for path in _three_forms(tmp_path, "big", {**files, "rdf.yaml": padded}):
        with pytest.raises(InputError, match=r"description rdf\.yaml is 2\.\d MB.*refusing"):
            api.load(path)
    assert zipfile.ZipFile(tmp_path / "big.zip").getinfo("rdf.yaml").compress_size < 50_000
    # a member that declares 3 GiB (the declared size is what zipfile inflates to)
    path = _zip(tmp_path / "huge.zip", {**files, "junk.bin": b"x" * 100})
    raw = bytearray(path.read_bytes())
    central = raw.rindex(b"junk.bin") - 46  # its central-directory entry (the name's last use)
    assert raw[central:central + 4] == b"PK\x01\x02"
    raw[central + 24:central + 28] = (3 << 30).to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(path).getinfo("junk.bin").file_size == 3 << 30
    with pytest.raises(InputError, match=r"junk\.bin: 3\.0 GiB.*refusing"):
        api.load(path)


class _Server:
    """A real HTTP server on 127.0.0.1 that serves the package's weights and counts requests."""

    def __init__(self, body: bytes):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _with(content: dict, keys: tuple, value, sha=None) -> dict:
    d = content
    for k in keys[:-1]:
        d = d[k]
    if isinstance(d[keys[-1]], dict):
        d[keys[-1]]["source"] = value
        if sha is not None:
            d[keys[-1]]["sha256"] = sha
    else:
        d[keys[-1]] = value
    return content


def test_a_package_reads_only_its_own_files(tmp_path, package):
    """Remote sources (which bioimageio.spec downloaded, a wrong digest after the whole body),
    file: URLs, '..' and absolute paths (which it read, or failed on with a TypeError) are
    refused with one message saying how to fetch them deliberately; the server is never asked."""
    import hashlib

    _, files = package
    outside = tmp_path / "outside" / "weights.pt"
    outside.parent.mkdir()
    outside.write_bytes(files["weights.pt"])
    server = _Server(files["weights.pt"])
    url = f"{server.url}/weights.pt"
    sha = hashlib.sha256(files["weights.pt"]).hexdigest()
    weights = ("weights", "pytorch_state_dict")
    cases = {
        "remote weights": (weights, url, None),
        "remote weights, wrong digest": (weights, f"{server.url}/other.pt", "0" * 64),
        "remote architecture": (weights + ("architecture",), f"{server.url}/net.py", None),
        "remote test tensor": (("inputs", 0, "test_tensor"), f"{server.url}/t.npy", None),
        "remote documentation": (("documentation",), f"{server.url}/README.md", None),
        "remote cover": (("covers", 0), f"{server.url}/cover.png", None),
        "file URL": (weights, "file:///etc/passwd", None),
        "parent folder": (weights, "../weights.pt", None),
        "absolute path": (weights, str(outside), sha),
    }
    try:
        for what, (keys, value, digest) in cases.items():
            content = _with(read_yaml(files["rdf.yaml"].decode()), keys, value, digest)
            members = {**files, "rdf.yaml": _yaml(content)}
            del members["weights.pt"]  # so that nothing but the reference could supply them
            for path in _three_forms(tmp_path, what.replace(" ", "_").replace(",", ""),
                                     members):
                with pytest.raises(InputError) as exc:
                    api.load(path)
                msg = str(exc.value)
                assert "outside the package" in msg and "bioimageio.core" in msg, (what, msg)
                assert value[:40] in msg
        # a folder whose weights are a link to a file outside it
        folder = tmp_path / "linked"
        folder.mkdir()
        for n, data in files.items():
            if n != "weights.pt":
                (folder / n).write_bytes(data)
        (folder / "weights.pt").symlink_to(outside)
        with pytest.raises(InputError, match="outside the package"):
            api.load(folder)
        assert api.load(package[0]).method_name == "b2u"  # the real package still opens
        assert server.hits == []
    finally:
        server.close()


# ---- damaged autosaves --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def autosave(tmp_path_factory, small_stack):
    """A real autosave with every optional field filled (validation history, best weights,
    the moving average), and the stack it was trained on."""
    noisy, _ = small_stack
    path = tmp_path_factory.mktemp("ck") / "ck.b2u"
    api.train_stack(noisy, steps=3, val_every=1, ema=0.9, autosave=str(path),
                    autosave_every=1e9, seed=0, **TINY)
    tr = torch.load(path, weights_only=True)["training"]
    assert tr["history"] and tr["best_state"] and tr["ema"] and tr["step"] == 3
    return path, noisy


def _first(d: dict):
    return next(iter(d))


def _nan(d: dict) -> dict:
    d = dict(d)
    k = _first(d)
    d[k] = d[k].clone()
    d[k][(0,) * d[k].dim()] = float("nan")  # (channels-last weights are no flat view)
    return d


def _opt(tr, change):
    sd = tr["optimizer"]
    change(sd)
    return tr


def _shrink(sd):
    s = sd["state"][_first(sd["state"])]
    s["exp_avg"] = s["exp_avg"][:1]


def _nan_moment(sd):
    s = sd["state"][_first(sd["state"])]
    s["exp_avg_sq"] = torch.full_like(s["exp_avg_sq"], float("nan"))


#: (field named in the message, damage done to the training entry)
DAMAGE = {
    "model NaN": ("model", lambda tr: tr.update(model=_nan(tr["model"]))),
    "model missing weight": ("model", lambda tr: tr["model"].pop(_first(tr["model"]))),
    "model not tensors": ("model", lambda tr: tr.update(model={k: 1.0 for k in tr["model"]})),
    "best NaN": ("best_state", lambda tr: tr.update(best_state=_nan(tr["best_state"]))),
    "ema shape": ("ema", lambda tr: tr["ema"].update(
        {_first(tr["ema"]): torch.zeros(2, 2)})),
    "best_val text": ("best_val", lambda tr: tr.update(best_val="low")),
    "step 10^18": ("step", lambda tr: tr.update(step=10**18)),
    "step negative": ("step", lambda tr: tr.update(step=-1)),
    "elapsed NaN": ("elapsed", lambda tr: tr.update(elapsed=float("nan"))),
    "elapsed negative": ("elapsed", lambda tr: tr.update(elapsed=-5.0)),
    "lr NaN": ("base_lr", lambda tr: tr.update(base_lr=float("nan"))),
    "batch 0": ("batch_size", lambda tr: tr.update(batch_size=0)),
    "batch huge": ("batch_size", lambda tr: tr.update(batch_size=10**9)),
    "history text": ("history", lambda tr: tr.update(history="x")),
    "history records": ("history", lambda tr: tr.update(history=[{"step": "a"}])),
    "nan_retries": ("nan_retries", lambda tr: tr.update(nan_retries=-1)),
    "sampler rng dtype": ("sampler_rng", lambda tr: tr.update(
        sampler_rng=tr["sampler_rng"].float())),
    "method rng cut": ("method_rng", lambda tr: tr.update(method_rng=tr["method_rng"][:100])),
    "no fingerprint": ("data fingerprint", lambda tr: tr["data"].pop("fingerprint")),
    "fingerprint form": ("data fingerprint", lambda tr: tr["data"].update(fingerprint=7)),
    "optimizer moment shape": ("optimizer", lambda tr: _opt(tr, _shrink)),
    "optimizer NaN moment": ("optimizer", lambda tr: _opt(tr, _nan_moment)),
    "optimizer NaN lr scale": ("optimizer", lambda tr: _opt(
        tr, lambda sd: sd["param_groups"][0].update(lr_scale=float("nan")))),
    "optimizer missing state": ("optimizer", lambda tr: _opt(
        tr, lambda sd: sd.pop("param_groups"))),
    "config width": ("config", lambda tr: tr["config"].update(width=32)),
}


def _damaged(autosave_path, tmp_path, name, damage):
    ck = torch.load(autosave_path, weights_only=True)
    damage(ck["training"])
    path = tmp_path / f"{name.replace(' ', '_')}.b2u"
    torch.save(ck, path)
    return path


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_autosave_is_refused_before_any_training(tmp_path, autosave, name):
    path, noisy = autosave
    field, damage = DAMAGE[name]
    bad = _damaged(path, tmp_path, name, damage)
    with pytest.raises(InputError, match=rf"the autosave is damaged \({field}.*resume from "
                                         "another checkpoint, or train afresh"):
        api.train_stack(noisy, resume=str(bad), steps=5, **RESUME)


def test_a_missing_fingerprint_no_longer_accepts_other_data(tmp_path, autosave):
    path, noisy = autosave
    bad = _damaged(path, tmp_path, "nofp", lambda tr: tr["data"].pop("fingerprint"))
    with pytest.raises(InputError, match="damaged"):
        api.train_stack(noisy[::-1].copy(), resume=str(bad), steps=5, **RESUME)


def test_a_changed_top_level_model_is_refused_on_resume(tmp_path, autosave):
    path, noisy = autosave
    ck = torch.load(path, weights_only=True)
    k = _first(ck["state_dict"])
    ck["state_dict"][k] = ck["state_dict"][k] + 0.01
    torch.save(ck, tmp_path / "t.b2u")
    with pytest.raises(InputError, match="checksum"):
        api.train_stack(noisy, resume=str(tmp_path / "t.b2u"), steps=5, **RESUME)


@pytest.mark.parametrize("name", ["model NaN", "step 10^18", "no fingerprint",
                                  "optimizer moment shape", "sampler rng dtype"])
def test_cli_resume_from_a_damaged_autosave_exits_2_and_saves_nothing(tmp_path, autosave,
                                                                       capsys, name):
    path, noisy = autosave
    field, damage = DAMAGE[name]
    bad = _damaged(path, tmp_path, name, damage)
    inp = tmp_path / "in.tif"
    tifffile.imwrite(inp, noisy, metadata={"axes": "TYX"})
    out = tmp_path / "out.b2u"
    assert main(["train", str(inp), "--out", str(out), "--steps", "5", "--resume", str(bad),
                 "--device", "cpu", "-q"]) == 2
    captured = capsys.readouterr()
    assert f"the autosave is damaged ({field}" in captured.err
    assert "Traceback" not in captured.err and "saved" not in captured.out
    assert not out.exists()


def test_the_undamaged_autosave_resumes_and_an_epochs_run_too(tmp_path, autosave, small_stack):
    path, noisy = autosave
    assert api.train_stack(noisy, resume=str(path), steps=4, **RESUME).info["steps"] == 4
    # an epochs run saves the steps computed from them: both set, which a fresh config refuses
    ck = tmp_path / "ep.b2u"
    api.train_stack(noisy, epochs=0.01, autosave=str(ck), autosave_every=1e9, **TINY)
    tr = torch.load(ck, weights_only=True)["training"]
    assert tr["config"]["epochs"] is not None and tr["config"]["steps"] == tr["step"]
    resumed = api.train_stack(noisy, resume=str(ck), steps=tr["step"] + 1, **RESUME)
    assert resumed.info["steps"] == tr["step"] + 1
    assert np.isfinite(resumed.denoise(noisy, tta=False)).all()
