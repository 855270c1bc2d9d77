"""Fuzz the files napari-b2u reads: crafted model files, bioimage.io packages, autosave
checkpoints and images go through the commands a user would run on them (issue 32).

Four families of crafted files, made from real ones napari-b2u writes at the start of the run:

* models (``.b2u``): flipped bytes, truncation, every field of the dict removed or given another
  type and re-saved with ``torch.save``, huge declared networks and tensors, NaN weights, pickles
  that call ``os.system`` / ``open``, zip tricks (compressed, duplicated, renamed, resized
  members), FIFOs, links and folders where the file should be;
* packages (bioimage.io ``.zip``, its folder, its bare ``rdf.yaml``): YAML bombs, sources that are
  URLs, ``file:``, absolute or ``..`` paths, wrong digests, wrong types, swapped, missing and
  huge members, truncation, FIFOs and links inside a folder;
* autosaves (``train --resume``): every field of the training entry removed or damaged;
* images: TIFF / OME-TIFF / ImageJ TIFF, PNG, ``.npy``, zarr arrays and OME-Zarr (0.4 and 0.5)
  folders, FMDD folders: truncation, flipped bytes, crafted TIFF tags and PNG headers, odd
  dtypes, 0-size dimensions, damaged metadata JSON, damaged / missing / special chunks, FIFOs.

Each crafted file runs, in a worker process, through ``napari_b2u.cli.main`` (``check``,
``denoise``, ``train`` with a tiny network, ``train --resume``, ``train --warm-start``,
``export``) and ``napari_b2u.api.load``. Every run is one of

* OK: it worked;
* REFUSED: exit code 2 or 1 with one ``napari-b2u: error:`` line (the API: an InputError or
  OutputError); "raw" counts refusals whose exception is not napari-b2u's own (a bare
  ValueError that the CLI prints);
* TRACEBACK: any other exception, a traceback on stderr, or a crashed worker;
* HANG: no answer within --timeout seconds, or the worker above --max-rss (it is killed and
  restarted).

Every file in the case's folder, in a decoy folder (``x.tif.part``, ``m.b2u.part``, ...), in the
folder of the real files the cases are made from, in the worker's temporary folder and in its
bioimage.io cache is hashed before and after each case: any change other than the case's own
outputs is counted under "changed". The run is seeded (``--seed``) and reproducible.

    PYTHONPATH=src python benchmarks/fuzz_files.py                 # 1500 files, ~15 min, 2 cores
    PYTHONPATH=src python benchmarks/fuzz_files.py --scale 0.2     # a quick run
    PYTHONPATH=src python benchmarks/fuzz_files.py --family images --only tiff
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import pickle
import random
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import traceback
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

FAMILIES = ("models", "packages", "autosaves", "images")
OUTCOMES = ("OK", "REFUSED", "TRACEBACK", "HANG")
#: the tiny network of the tests (tests/conftest.py TINY): training takes a second or two
TINY_PRESET = {"width": 16, "depth": 2}
TRAIN = ["--steps", "2", "--patch-size", "32", "--floor", "none", "--device", "cpu", "-q"]
DENOISE = ["--device", "cpu", "-q", "--tta", "off"]
#: what the worker's napari-b2u may hold in memory (a small machine: bounds PNG bombs)
BUDGET = "2GB"


# =============================================================================================
# worker: one long-lived process that runs jobs (it keeps torch imported); killed on a hang
# =============================================================================================
def worker_main() -> None:
    chan = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # C-level output never reaches the answer channel
    import faulthandler
    import warnings

    faulthandler.enable()  # a crash prints its stack on the worker's stderr (a log file)
    from napari_b2u import api, cli
    from napari_b2u.config import PRESETS
    from napari_b2u.errors import B2UError, InputError, OutputError

    PRESETS["cpu"] = {**PRESETS["cpu"], **TINY_PRESET}
    last: dict = {}
    build = cli.build_parser

    def recording_parser():
        """cli.main's own parser, whose command records the exception it raises (main turns
        it into one line, so the line alone does not say whether it was napari-b2u's own)."""
        p = build()
        parse = p.parse_args

        def parse_args(argv=None):
            a = parse(argv)
            func = a.func

            def run(args):
                try:
                    return func(args)
                except BaseException as exc:
                    last["exc"] = exc
                    raise

            a.func = run
            return a

        p.parse_args = parse_args
        return p

    cli.build_parser = recording_parser
    chan.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        res: dict = {"rc": None, "exc": None, "b2u": None, "tb": ""}
        last.clear()
        os.chdir(job["cwd"])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("always")
            try:
                if "load" in job:
                    try:
                        api.load(job["load"])
                        res["rc"] = 0
                    except (InputError, OutputError) as exc:  # the API's refusals
                        last["exc"] = exc
                        res["rc"], res["message"] = 2, str(exc)[:300]
                else:
                    res["rc"] = cli.main(job["argv"])
            except SystemExit as exc:  # argparse
                res["rc"] = exc.code if isinstance(exc.code, int) else 2
            except BaseException as exc:  # noqa: BLE001 - what the fuzz looks for
                last["exc"] = exc
                res["tb"] = _ends(traceback.format_exc())
        exc = last.get("exc")
        if exc is not None:
            res["exc"] = f"{type(exc).__module__}.{type(exc).__name__}"
            res["b2u"] = isinstance(exc, B2UError)
        res["stdout"], res["stderr"] = _ends(out.getvalue()), _ends(err.getvalue())
        chan.write(json.dumps(res) + "\n")


def _ends(text: str, n: int = 3000) -> str:
    """The head and the tail of a long text (a message may quote a 100 kB value)."""
    return text if len(text) <= 2 * n else f"{text[:n]}\n[... {len(text) - 2 * n} chars ...]" \
        f"\n{text[-n:]}"


class Worker:
    """The worker process: jobs over a pipe, answers within ``timeout`` s, else killed."""

    def __init__(self, env: dict, log: Path, timeout: float, max_rss: int):
        self.env, self.log, self.timeout, self.max_rss = env, log, timeout, max_rss
        self.proc = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "ab"),
            env=self.env, start_new_session=True, cwd=self.env["TMPDIR"])
        line = self._line(120.0)
        if line is None or "ready" not in line:
            raise RuntimeError(f"the worker did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def _rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _line(self, timeout: float):
        """The worker's next answer; None on timeout or memory overrun; '' when it died."""
        end = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return ""
                buf += chunk
                if buf.endswith(b"\n"):
                    return json.loads(buf)
            elif self._rss() > self.max_rss:
                return {"memory": self._rss()}

    def run(self, job: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        t = time.monotonic()
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        ans = self._line(self.timeout)
        dt = time.monotonic() - t
        if ans is None or "memory" in (ans or {}):
            why = (f"no answer in {self.timeout:.0f} s" if ans is None else
                   f"worker above {self.max_rss / 2**30:.1f} GiB of memory")
            self.stop()
            self.restarts += 1
            return {"outcome": "HANG", "why": why, "seconds": dt}
        if ans == "":
            code = self.proc.wait()
            self.proc = None
            self.restarts += 1
            return {"outcome": "TRACEBACK", "why": f"the worker died (exit {code}); see "
                    f"{self.log}", "seconds": dt}
        ans["seconds"] = dt
        ans["outcome"], ans["why"] = classify(job, ans)
        return ans


def classify(job: dict, res: dict) -> tuple[str, str]:
    err = res.get("stderr", "")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("napari-b2u: error:")]
    if res.get("tb") or "Traceback (most recent call last)" in err:
        tb = (res.get("tb") or err).strip().splitlines()
        return "TRACEBACK", f"{res.get('exc')}: {tb[-1][:300] if tb else ''}"
    if res["rc"] == 0:
        return "OK", ""
    if "load" in job:
        if res.get("message"):
            return "REFUSED", res["message"]
        return "TRACEBACK", f"api.load: {res.get('exc')}"
    if res["rc"] in (1, 2) and len(errors) == 1:
        return "REFUSED", errors[0][len("napari-b2u: error: "):][:300]
    if res["rc"] == 2 and any(": error: " in ln for ln in lines):  # argparse's own refusal
        return "REFUSED", lines[-1][:300]
    return "TRACEBACK", f"exit {res['rc']}: {(lines or ['no message'])[-1][:300]}"


# =============================================================================================
# snapshots: nothing but a case's outputs may change
# =============================================================================================
def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size <= 64 << 20:
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                else:
                    digest = f"mtime {st.st_mtime_ns}"
                out[rel] = ("file", st.st_size, digest)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def changed(before: dict, after: dict, allowed=()) -> list[str]:
    def ok(rel):
        return any(rel == a or rel.startswith(a + os.sep) for a in allowed)

    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                  and not ok(k))


# =============================================================================================
# crafting helpers
# =============================================================================================
def case_rng(seed: int, family: str, i: int) -> random.Random:
    """The random generator of one case: the same case whatever else the run holds."""
    key = hashlib.sha256(f"{seed}:{family}:{i}".encode()).digest()
    return random.Random(int.from_bytes(key[:8], "big"))


def flip(data: bytes, rng: random.Random, n: int, lo: int = 0, hi: int | None = None) -> bytes:
    b = bytearray(data)
    hi = len(b) if hi is None else min(hi, len(b))
    if hi <= lo:
        return bytes(b)
    for _ in range(n):
        i = rng.randrange(lo, hi)
        b[i] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
    return bytes(b)


def zip_read(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i, zf.read(i)) for i in zf.infolist()]


def zip_write(members, compression=zipfile.ZIP_STORED) -> bytes:
    """members: (name, bytes) pairs, written in order (duplicates allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf, __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # duplicate names are the point
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data,
                        compress_type=compression)
    return buf.getvalue()


def member_ranges(data: bytes) -> dict[str, tuple[int, int]]:
    """Where each stored member's bytes lie in the file."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for i in zf.infolist():
            h = i.header_offset
            n, m = struct.unpack("<HH", data[h + 26:h + 30])
            start = h + 30 + n + m
            out[i.filename] = (start, start + i.compress_size)
    return out


def patch_sizes(data: bytes, name_part: str, size: int, which: str = "both") -> bytes:
    """Set the declared uncompressed size of the members whose name holds ``name_part``, in the
    central directory and (``both``) the local headers."""
    b = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        pos, infos = zf.start_dir, zf.infolist()
    for info in infos:
        assert b[pos:pos + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack("<HHH", b[pos + 28:pos + 34])
        if name_part in info.filename:
            struct.pack_into("<I", b, pos + 24, size)
            if which == "both":
                struct.pack_into("<I", b, info.header_offset + 22, size)
        pos += 46 + n + m + k
    return bytes(b)


def deep_list_pickle(depth: int) -> bytes:
    """Pickle opcodes of a list nested ``depth`` deep (no recursion needed to write it)."""
    return b"]" * depth + b"a" * (depth - 1)


def replace_pickled_string(data: bytes, placeholder: str, opcodes: bytes) -> bytes:
    """In a torch zip, replace the pickled ``placeholder`` string in data.pkl by ``opcodes``."""
    members = zip_read(data)
    enc = placeholder.encode()
    pickled = b"X" + struct.pack("<I", len(enc)) + enc
    out = []
    for info, body in members:
        if info.filename.endswith("data.pkl"):
            assert pickled in body
            body = body.replace(pickled, opcodes, 1)
        out.append((info.filename, body))
    return zip_write(out)


class Payload:
    """A pickle that runs code when unpickled by anyone who allows it (it must not run)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payload(rng: random.Random, marker: Path):
    import builtins
    import subprocess as sp

    return rng.choice([
        Payload(os.system, (f"touch {marker}",)),
        Payload(builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",)),
        Payload(builtins.eval, (f"open({str(marker)!r}, 'w')",)),
        Payload(builtins.open, (str(marker), "w")),
        Payload(sp.call, (["touch", str(marker)],)),
        Payload(shutil.copyfile, (str(marker.parent / "x.tif"), str(marker))),
    ])


def drop_or_retype(d: dict, keys, kind: str, rng: random.Random) -> str:
    """One of ``keys`` of ``d`` removed (``kind`` "del") or given a value of another kind
    ("type"); returns the key."""
    k = rng.choice(keys)
    if kind == "del":
        d.pop(k, None)
    else:
        d[k] = weird(rng)
    return k


def weird(rng: random.Random, depth: int = 0, plain: bool = False):
    """A value of some other type or range than the one expected (``plain``: one YAML can
    hold)."""
    import torch

    pool = [None, 0, -1, 1, 7, 2**63, -(2**63), 10**30, 0.5, -2.5, float("nan"), float("inf"),
            -float("inf"), 1e308, True, False, "", "x", "é" * 40, "x" * 100_000, "NaN", "1",
            [], [1, 2, 3], [None], ["a"], {}, {"a": 1}, {1: 2}, {"": None}]
    if not plain:
        pool += [(1, 2), torch.zeros(2), torch.tensor(float("nan")), torch.zeros(0),
                 b"\x00\xff", complex(1, 2)]
    if depth < 2:
        pool += [[weird(rng, depth + 1, plain)], {"k": weird(rng, depth + 1, plain)}]
    return copy.deepcopy(rng.choice(pool))


def set_in(d, path, value):
    for k in path[:-1]:
        d = d[k]
    if value is DELETE:
        if isinstance(d, dict):
            d.pop(path[-1], None)
        else:
            del d[path[-1]]
    else:
        d[path[-1]] = value


DELETE = object()


def make_fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)


# =============================================================================================
# cases
# =============================================================================================
@dataclass
class Job:
    label: str
    argv: list | None = None
    load: str | None = None
    if_load_ok: bool = False  # run only when this case's api.load worked (export: 4 s)


@dataclass
class Case:
    family: str
    kind: str
    name: str
    build: object  # build(folder) -> None (writes the crafted files)
    jobs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # names in the folder that may change


class Base:
    """The real files the cases are made from, written by napari-b2u itself."""

    def __init__(self, root: Path, worker: Worker):
        import numpy as np
        import tifffile
        import torch

        from napari_b2u.sample_data import fmdd_like_stack

        self.root = root
        root.mkdir(parents=True)
        noisy, _ = fmdd_like_stack(4, (64, 64), seed=3)
        self.stack = noisy
        tifffile.imwrite(root / "in.tif", noisy, metadata={"axes": "TYX"})
        tifffile.imwrite(root / "one.tif", noisy[:1], metadata={"axes": "TYX"})
        runs = [
            # context 0: the base of the packages (bioimage.io export refuses a stack-context
            # model) and of the models applied to one frame; n2v's model is a context model
            ["train", "in.tif", "--out", "good.b2u", "--context", "0", *TRAIN],
            ["train", "in.tif", "--out", "n2v.b2u", "--method", "n2v", "--context", "1", *TRAIN],
            ["train", "in.tif", "--out", "gauss.b2u", "--method", "gauss", *TRAIN],
            ["train", "in.tif", "--out", "ckm.b2u", "--autosave", "ck.b2u", *TRAIN[:1], "4",
             *TRAIN[2:]],
            ["export", "good.b2u", "--out", "pkg.zip", "--sample", "in.tif"],
        ]
        for argv in runs:
            res = worker.run({"argv": argv, "cwd": str(root)})
            if res["outcome"] != "OK":
                raise RuntimeError(f"making the real files failed: {argv}: {res}")
        self.models = {k: (root / f"{k}.b2u").read_bytes() for k in ("good", "n2v", "gauss")}
        self.dicts = {k: torch.load(io.BytesIO(v), weights_only=True)
                      for k, v in self.models.items()}
        self.ck_bytes = (root / "ck.b2u").read_bytes()
        self.ck = torch.load(io.BytesIO(self.ck_bytes), weights_only=True)
        self.pkg_bytes = (root / "pkg.zip").read_bytes()
        with zipfile.ZipFile(root / "pkg.zip") as zf:
            self.pkg = {n: zf.read(n) for n in zf.namelist()}
        self.np = np


def torch_bytes(obj, legacy: bool = False) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def checksum(d: dict) -> None:
    """Recompute the weights' checksum, as someone crafting a file would."""
    from napari_b2u.modelfile import weights_checksum

    with contextlib.suppress(Exception):
        d["weights_sha256"] = weights_checksum(d["state_dict"])


# ---- (a) model files ---------------------------------------------------------------------------
MODEL_KEYS = ("format", "version", "package_version", "method", "method_params", "model_config",
              "normalization", "info", "state_dict", "weights_sha256")


def model_cases(base: Base, n: int, seed: int, decoy: Path):
    import torch

    def tensor_edit(rng, sd):
        key = rng.choice(sorted(sd))
        t = sd[key]
        how = rng.choice(["nan", "inf", "shape", "f16", "f64", "int", "bool", "complex", "0d",
                          "empty", "extra", "missing", "intkey", "notensor", "huge", "sparse",
                          "grad", "bigger", "shared", "transposed"])
        if how == "nan":
            t = t.clone()
            t.view(-1)[rng.randrange(t.numel())] = float("nan")
        elif how == "inf":
            t = t.clone().fill_(float("inf"))
        elif how == "shape":
            t = t.reshape(-1)
        elif how in ("f16", "f64", "int", "bool", "complex"):
            t = t.to({"f16": torch.float16, "f64": torch.float64, "int": torch.int32,
                      "bool": torch.bool, "complex": torch.complex64}[how])
        elif how == "0d":
            t = torch.tensor(1.0)
        elif how == "empty":
            t = torch.zeros((0,) + tuple(t.shape[1:]))
        elif how == "extra":
            sd["zz.extra"] = torch.zeros(3)
        elif how == "missing":
            del sd[key]
            return f"{how} {key}"
        elif how == "intkey":
            sd[7] = sd.pop(key)
            return f"{how} {key}"
        elif how == "notensor":
            t = weird(rng)
        elif how == "huge":  # a view of one float declaring 10^10 elements
            t = torch.zeros(1).as_strided((100_000, 100_000), (0, 0))
        elif how == "sparse":
            t = t.reshape(t.shape[0], -1).to_sparse()
        elif how == "grad":
            t = t.clone().requires_grad_(True)
        elif how == "bigger":
            t = torch.zeros(tuple(s * 2 for s in t.shape))
        elif how == "shared":
            other = rng.choice(sorted(sd))
            t = sd[other]
        elif how == "transposed":
            t = t.transpose(0, -1) if t.dim() > 1 else t.flip(0)
        sd[key] = t
        return f"{how} {key}"

    def dict_case(rng, d, marker):
        kind = rng.choice(["del", "type", "version", "method", "method_params", "model_config",
                           "huge_net", "normalization", "weights", "sha", "info", "deep_info",
                           "blend", "training", "top", "format", "unknown", "payload",
                           "payload_deep", "info_path", "legacy"])
        sd = d["state_dict"]
        desc = kind
        if kind in ("del", "type"):
            desc += " " + drop_or_retype(d, MODEL_KEYS, kind, rng)
        elif kind == "version":
            d["version"] = rng.choice([0, -1, 1, 3, 4, 99, "2", 2.0, True, None, 2**70])
            desc += f" {d['version']!r}"
        elif kind == "method":
            d["method"] = rng.choice(["n2v", "b2s", "dbsn", "nbr2nbr", "gauss", "bm3d", "B2U",
                                      "", "b2u\x00", "../b2u", None])
            desc += f" {d['method']!r}"
        elif kind == "method_params":
            mp = d["method_params"]
            k = rng.choice(sorted(mp) + ["bogus"])
            mp[k] = weird(rng) if rng.random() < 0.7 else DELETE
            if mp[k] is DELETE:
                del mp[k]
            desc += f" {k}"
        elif kind == "model_config":
            mc = d["model_config"]
            k = rng.choice(sorted(mc) + ["bogus"])
            v = rng.choice([weird(rng), 0, -1, 3, 1000, 10**6, 10**9, 16.5, "16", DELETE])
            if v is DELETE:
                mc.pop(k, None)
            else:
                mc[k] = v
            desc += f" {k}={v!r}"[:60]
        elif kind == "huge_net":
            mc = d["model_config"]
            w, dep = rng.choice([(4096, 8), (10**6, 2), (16, 30), (16, 200), (16, 10**5),
                                 (2**31, 2), (10**12, 1), (64, 12)])
            if "width" in mc:
                mc["width"] = w
            if "depth" in mc:
                mc["depth"] = dep
            if rng.random() < 0.5:
                mc["in_channels"] = mc["out_channels"] = rng.choice([10**5, 10**9, 3])
            desc += f" width {w} depth {dep}"
        elif kind == "normalization":
            nz = d["normalization"]
            k = rng.choice(["offset", "scale", "mode", "source_dtype", "bogus"])
            nz[k] = rng.choice([weird(rng), [float("nan")], [0.0], [-1.0], [1e308],
                                [1.0] * 5000, [1.0, 2.0], "uint8", "complex128", "O", "V8"])
            desc += f" {k}"
        elif kind == "weights":
            desc += " " + tensor_edit(rng, sd)
            if rng.random() < 0.6:
                checksum(d)
                desc += " (checksum recomputed)"
        elif kind == "sha":
            d["weights_sha256"] = rng.choice(["0" * 64, "", "xyz", None, 5, d["weights_sha256"]
                                              .upper(), d["weights_sha256"][:-1]])
        elif kind == "info":
            k = rng.choice(["steps", "history", "train_config", "training_data", "noise",
                            "messages", "readout", "chosen", "warm_start", "axes", "bogus"])
            d.setdefault("info", {})[k] = weird(rng)
        elif kind == "deep_info":
            d["info"] = {"deep": "DEEP-PLACEHOLDER"}
        elif kind == "info_path":
            d.setdefault("info", {})["training_data"] = {
                "path": rng.choice([str(decoy / "x.tif"), "/dev/zero", "/proc/self/mem",
                                    str(decoy / "fifo.tif"), "/", "", "nonexistent.tif",
                                    str(decoy / "x.tif.part")]),
                "axes": rng.choice(["TYX", "QQQ", "", None]),
                "pixel_size": rng.choice([{"X": 0.1}, {"X": float("nan")}, None, [], "x"])}
        elif kind == "blend":
            d["blend"] = rng.choice([{"weight": 0.5, "gauss_sigma": [1.0]},
                                     {"weight": 0.5, "gauss_sigma": [float("nan")]},
                                     {"weight": 2.0, "gauss_sigma": [1.0]},
                                     {"weight": 0.5, "gauss_sigma": [1.0] * 10**4},
                                     {"weight": 0.5, "gauss_sigma": []}, weird(rng)])
            d["version"] = rng.choice([2, 3])
        elif kind == "training":
            d["training"] = rng.choice([{}, {"step": 1}, weird(rng), base.ck["training"]])
        elif kind == "top":
            return torch_bytes(rng.choice([[d], None, "napari-b2u-model", torch.zeros(3),
                                           (d,), 42])), "top-level not a dict"
        elif kind == "format":
            d["format"] = rng.choice(["napari-b2u-model ", "NAPARI-B2U-MODEL", None, 1, "n2v"])
        elif kind == "unknown":
            d[rng.choice(["__class__", "code", "zz", "", "1"])] = weird(rng)
        elif kind in ("payload", "payload_deep"):
            p = payload(rng, marker)
            if kind == "payload":
                return pickle.dumps({**d, "info": p}, protocol=rng.choice([2, 4])), \
                    f"plain pickle with {p.func.__name__}"
            where = rng.choice(["info", "method_params", "top"])
            if where == "top":
                return torch_bytes(p), f"torch file of {p.func.__name__}"
            d[where] = {"x": p}
            desc += f" {p.func.__name__} in {where}"
        elif kind == "legacy":
            return torch_bytes(d, legacy=True), "legacy torch format"
        data = torch_bytes(d)
        if kind == "deep_info":
            depth = rng.choice([1000, 20_000, 200_000])
            data = replace_pickled_string(data, "DEEP-PLACEHOLDER", deep_list_pickle(depth))
            desc += f" {depth}"
        return data, desc

    def byte_case(rng, raw, marker):
        kind = rng.choice(["flip", "flip_member", "truncate", "append", "zero", "deflate",
                           "duplicate", "declared", "remove", "swap", "prefix", "rename",
                           "payload_member", "not_model"])
        desc = kind
        if kind == "flip":
            k = rng.choice([1, 2, 8, 64, 512])
            return flip(raw, rng, k), f"flip {k}"
        ranges = member_ranges(raw)
        if kind == "flip_member":
            name = rng.choice(sorted(ranges))
            return flip(raw, rng, rng.choice([1, 4, 32]), *ranges[name]), \
                f"flip in {name.split('/', 1)[1]}"
        if kind == "truncate":
            k = rng.randrange(len(raw))
            return raw[:k], f"truncate {k}/{len(raw)}"
        if kind == "append":
            return raw + rng.choice([b"\x00" * 1000, os.urandom(100), raw]), kind
        if kind == "zero":
            i = rng.randrange(len(raw))
            return raw[:i] + b"\x00" * 4096 + raw[i + 4096:], kind
        members = [(i.filename, b) for i, b in zip_read(raw)]
        if kind == "deflate":
            return zip_write(members, zipfile.ZIP_DEFLATED), kind
        if kind == "duplicate":
            j = rng.randrange(len(members))
            members.insert(rng.randrange(len(members)), (members[j][0], os.urandom(
                len(members[j][1]))))
            return zip_write(members), f"duplicate {members[j][0].split('/', 1)[1]}"
        if kind == "declared":
            name = rng.choice([m[0] for m in members]).split("/", 1)[1]
            size = rng.choice([0, 1, 2**31, 2**32 - 1])
            return patch_sizes(raw, name, size, rng.choice(["both", "central"])), \
                f"declared size of {name} {size}"
        if kind == "remove":
            j = rng.randrange(len(members))
            desc = f"remove {members[j][0].split('/', 1)[1]}"
            del members[j]
            return zip_write(members), desc
        if kind == "swap":
            data = [m for m in members if "/data/" in m[0]]
            if len(data) < 2:  # a classical model's file holds no tensor pair
                return raw[:len(raw) // 2], "truncate (no tensors to swap)"
            a, b = rng.sample(range(len(data)), 2)
            names = {data[a][0]: data[b][1], data[b][0]: data[a][1]}
            return zip_write([(n, names.get(n, v)) for n, v in members]), "swap tensors"
        if kind == "prefix":
            return rng.choice([b"#!/bin/sh\n", os.urandom(512)]) + raw, kind
        if kind == "rename":
            new = rng.choice(["../evil", "/abs", "archive", "a/b/c", "", "x" * 300])
            return zip_write([(new + "/" + n.split("/", 1)[1], v) for n, v in members]), \
                f"prefix {new[:20]!r}"
        if kind == "payload_member":
            p = payload(rng, marker)
            body = pickle.dumps(p, protocol=2)
            return zip_write([(n, body if n.endswith("data.pkl") else v)
                              for n, v in members]), f"data.pkl runs {p.func.__name__}"
        # not a model at all
        what = rng.choice(["empty", "random", "text", "png", "tiff", "npy", "json", "pickle",
                           "zip", "package", "magic"])
        data = {"empty": b"", "random": os.urandom(rng.choice([10, 5000])),
                "text": b"hello\n", "png": b"\x89PNG\r\n\x1a\n" + os.urandom(100),
                "tiff": (base.root / "in.tif").read_bytes(), "npy": _npy(base.np),
                "json": json.dumps({"format": "napari-b2u-model"}).encode(),
                "pickle": pickle.dumps({"format": "napari-b2u-model", "version": 2}),
                "zip": zip_write([("a.txt", b"x")]), "package": base.pkg_bytes,
                "magic": b"PK\x03\x04"}[what]
        return data, f"not a model: {what}"

    special = ["dir", "fifo", "link_decoy", "link_loop", "link_dangling", "link_dev",
               "link_fifo", "unreadable"]

    for i in range(n):
        rng = case_rng(seed, "models", i)
        marker = decoy / f"pwned-model-{i}"
        src = rng.choice(["good"] * 3 + ["n2v", "gauss"])
        group = rng.choices(["dict", "bytes", "special"], weights=[6, 4, 0.4])[0]
        try:
            if group == "dict":
                data, desc = dict_case(rng, copy.deepcopy(base.dicts[src]), marker)
            elif group == "bytes":
                data, desc = byte_case(rng, base.models[src], marker)
            else:
                data, desc = None, rng.choice(special)
        except Exception as exc:  # noqa: BLE001 - a crafting bug of this script: skipped
            yield Case("models", "crafting", f"{group}: {exc!r}", None)
            continue
        kind = desc.split()[0]

        def build(folder, data=data, desc=desc):
            path = folder / "model.b2u"
            if data is not None:
                path.write_bytes(data)
            elif desc == "dir":
                path.mkdir()
                (path / "data.pkl").write_bytes(b"x")
            elif desc == "fifo":
                make_fifo(path)
            elif desc == "link_decoy":
                path.symlink_to(decoy / "m.b2u.part")
            elif desc == "link_loop":
                path.symlink_to(path)
            elif desc == "link_dangling":
                path.symlink_to(folder / "nowhere.b2u")
            elif desc == "link_dev":
                path.symlink_to("/dev/zero")
            elif desc == "link_fifo":
                path.symlink_to(decoy / "fifo.tif")
            elif desc == "unreadable":
                path.write_bytes(base.models["good"])
                path.chmod(0)
            shutil.copy(base.root / "one.tif", folder / "in.tif")

        jobs = [Job("load", load="model.b2u"),
                Job("denoise", ["denoise", "in.tif", "--model", "model.b2u", "--out", "out.tif",
                                *DENOISE]),
                Job("train --warm-start", ["train", "in.tif", "--out", "out.b2u",
                                           "--warm-start", "model.b2u", *TRAIN],
                    if_load_ok=rng.random() < 0.7),
                Job("export", ["export", "model.b2u", "--out", "out.zip"]
                    + (["--sample", "in.tif"] if rng.random() < 0.5 else []), if_load_ok=True)]
        if rng.random() < 0.5:
            jobs = jobs[:2] + jobs[3:]
        yield Case("models", kind, f"{src}: {desc}", build, jobs,
                   ["out.tif", "out.b2u", "out.zip"])


def _npy(np) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 64, 64), np.uint8))
    return buf.getvalue()


# ---- (b) bioimage.io packages -----------------------------------------------------------------
REF_FIELDS = [("weights", "pytorch_state_dict", "source"),
              ("weights", "pytorch_state_dict", "architecture", "source"),
              ("weights", "torchscript", "source"), ("inputs", 0, "test_tensor", "source"),
              ("outputs", 0, "test_tensor", "source"), ("covers", 0, "source"),
              ("documentation", "source")]
NB = ("config", "napari_b2u")


def package_cases(base: Base, n: int, seed: int, decoy: Path):
    from bioimageio.spec.utils import read_yaml, write_yaml

    rdf0 = read_yaml(base.pkg["rdf.yaml"].decode())

    def dump(content) -> bytes:
        s = io.StringIO()
        write_yaml(content, s)
        return s.getvalue().encode()

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    def refs(rng):
        return rng.choice([
            "http://127.0.0.1:9/weights.pt", "https://example.invalid/w.pt",
            "file:///etc/passwd", f"file://{decoy}/x.tif", "/etc/passwd", str(decoy / "x.tif"),
            "../decoy/x.tif", "../../../../../etc/passwd", "weights.pt/../../x",
            "./weights.pt", "weights.pt?x=1", "C:\\weights.pt", "\\\\host\\share\\w.pt",
            "", " ", "%2e%2e/x", "zip://weights.pt", "nonexistent.pt", "rdf.yaml",
            "weights_torchscript.pt", "cover.png", "test_input.npy", ".", "/", "~/.bashrc",
            "$HOME/x", "a/" * 50 + "w.pt", "weights.pt#frag", "data:,hello",
            "s3://bucket/w.pt", "doi:10.1/x", "WEIGHTS.PT"])

    def content_case(rng, c, members):
        kind = rng.choice(["source", "sha", "type", "config", "nb_field", "nb_model",
                           "format_version", "kind", "attachments", "deep_ok"])
        desc = kind
        if kind == "source":
            f = rng.choice(REF_FIELDS)
            v = refs(rng)
            set_in(c, f, v)
            desc += f" {f[0]}/{f[-2]}={v!r}"[:90]
        elif kind == "sha":
            f = rng.choice(REF_FIELDS)
            v = rng.choice(["0" * 64, "xyz", 5, None, DELETE, sha(b"")])
            set_in(c, f[:-1] + ("sha256",), v)
            desc += f" {f[0]}/{f[-2]}"
        elif kind == "type":
            f = rng.choice([("weights",), ("weights", "pytorch_state_dict"), ("inputs",),
                            ("outputs",), ("inputs", 0, "axes"), ("inputs", 0), ("name",),
                            ("covers",), ("authors",), ("config",), ("weights", "torchscript"),
                            ("inputs", 0, "axes", 2, "size"), ("documentation",), ("tags",)])
            v = rng.choice([weird(rng, plain=True), DELETE, [], {}, None, "x" * 10**5])
            set_in(c, f, v)
            desc += f" {'/'.join(map(str, f))}"
        elif kind == "config":
            c["config"] = rng.choice([None, [], "napari_b2u", {"napari_b2u": None},
                                      {"bioimageio": {}}])
        elif kind == "nb_field":
            k = rng.choice(["format", "method", "method_params", "model_config",
                            "normalization", "state_prefix", "weights_sha256", "info",
                            "output", "package_version", "bogus"])
            v = rng.choice([weird(rng, plain=True), DELETE, 0, 2, 99, "1", 1.5, "", "model.", "x",
                            "napari_b2u_network.py"])
            set_in(c, NB + (k,), v)
            desc += f" {k}"
        elif kind == "nb_model":
            nb = c["config"]["napari_b2u"]
            f, v = rng.choice([(("model_config", "width"), 10**6),
                               (("model_config", "depth"), 10**5),
                               (("model_config", "arch"), "resnet"),
                               (("normalization", "scale"), [float("nan")]),
                               (("normalization", "offset"), [float("inf")]),
                               (("normalization", "scale"), [0.0]),
                               (("method_params", "cells"), 1000),
                               (("method_params", "mask"), "none"),
                               (("model_config", "in_channels"), 2)])
            set_in(nb, f, v)
            desc += f" {'/'.join(f)}={v!r}"
        elif kind == "format_version":
            c["format_version"] = rng.choice(["0.4.10", "9.9.9", 1, None, "0.5.99", "latest"])
        elif kind == "kind":
            c["type"] = rng.choice(["dataset", "application", None, "model ", "notebook"])
        elif kind == "attachments":
            c["attachments"] = rng.choice([[{"source": refs(rng)}], [refs(rng)],
                                           {"files": [refs(rng)]}])
        elif kind == "deep_ok":  # well-formed additions bioimageio.spec must ignore or refuse
            c.setdefault("config", {})["other"] = {"list": list(range(1000)),
                                                   "nest": [[[[1]]]] * 10}
        if rng.random() < 0.3:  # the crafter updates the digests too
            for f in REF_FIELDS:
                with contextlib.suppress(Exception):
                    node = c
                    for k in f[:-1]:
                        node = node[k]
                    if node.get("source") in members:
                        node["sha256"] = sha(members[node["source"]])
            desc += " (digests updated)"
        return dump(c), desc

    def text_case(rng):
        kind = rng.choice(["bomb", "bomb_small", "nest_flow", "nest_block", "big", "binary",
                           "tag", "invalid", "scalar", "empty", "bom", "dupkey", "directive",
                           "anchors_ok", "longline"])
        text = base.pkg["rdf.yaml"]
        if kind == "bomb":
            lv = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
            lv += [f"a{k}: &a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 9)]
            return (text.decode() + "\nbomb:\n" + "\n".join("  " + x for x in lv)).encode(), kind
        if kind == "bomb_small":  # under the alias limit
            lv = ["a0: &a0 [" + ",".join(["'" + "x" * 1000 + "'"] * 50) + "]",
                  "a1: &a1 [" + ",".join(["*a0"] * 15) + "]"]
            return (text.decode() + "\nbomb:\n" + "\n".join("  " + x for x in lv)).encode(), kind
        if kind == "nest_flow":
            d = rng.choice([60, 70, 10_000, 100_000])
            return text + b"\nnest: " + b"[" * d + b"]" * d + b"\n", f"{kind} {d}"
        if kind == "nest_block":
            d = rng.choice([60, 70, 5000])
            lines = "\n".join(" " * k + f"k{k}:" for k in range(d))
            return text + b"\nnest:\n " + lines.encode() + b" 1\n", f"{kind} {d}"
        if kind == "big":
            size = rng.choice([(1 << 20) - 10_000, (1 << 20) + 1, 5 << 20])
            return text + b"\n#" + b"x" * max(0, size - len(text)) + b"\n", f"{kind} {size}"
        if kind == "binary":
            return flip(text, rng, 20), kind
        if kind == "tag":
            tag = rng.choice([f"!!python/object/apply:os.system [\"touch {decoy}/pwned-tag\"]",
                              "!!binary aGVsbG8=", "!!set {a, b}", "!custom x",
                              "!!python/name:os.system", "!!timestamp 2001-12-14"])
            return text.replace(b"name: napari-b2u", f"name: {tag}\nx: napari-b2u".encode(),
                                1), f"tag {tag[:30]}"
        if kind == "invalid":
            return text.replace(b"type: model", b"type: [model", 1), kind
        if kind == "scalar":
            return rng.choice([b"[]", b"null", b"42", b"'x'", b"- a\n- b\n"]), kind
        if kind == "empty":
            return b"", kind
        if kind == "bom":
            return b"\xef\xbb\xbf" + text, kind
        if kind == "dupkey":
            return text + b"\ntype: dataset\n", kind
        if kind == "directive":
            return b"%YAML 9.9\n" + text.split(b"\n", 1)[1], kind
        if kind == "anchors_ok":
            return text.replace(b"license: CC-BY-4.0", b"license: &lic CC-BY-4.0\nx: *lic",
                                1), kind
        return text + b"\nlong: " + b"y" * 500_000 + b"\n", kind

    def zip_case(rng, members):
        kind = rng.choice(["truncate", "flip", "flip_rdf", "swap", "remove", "duplicate",
                           "both_rdf", "subdir", "declared", "bomb", "evil_names", "stored",
                           "payload_weights", "foreign_weights", "huge_weights", "not_zip",
                           "encrypted"])
        raw = base.pkg_bytes
        names = list(members)
        if kind == "truncate":
            k = rng.randrange(len(raw))
            return raw[:k], f"{kind} {k}/{len(raw)}"
        if kind == "flip":
            return flip(raw, rng, rng.choice([1, 8, 64])), kind
        if kind == "flip_rdf":
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                info = zf.getinfo("rdf.yaml")
            lo = info.header_offset + 30 + len(info.filename)
            return flip(raw, rng, 4, lo, lo + info.compress_size), kind
        m = dict(members)
        if kind == "swap":
            a, b = rng.choice([("weights.pt", "weights_torchscript.pt"), ("rdf.yaml", "README.md"),
                               ("weights.pt", "test_input.npy"), ("weights.pt", "cover.png")])
            m[a], m[b] = m[b], m[a]
            desc = f"swap {a} {b}"
            if rng.random() < 0.5:
                c = read_yaml(m["rdf.yaml"].decode()) if a != "rdf.yaml" else None
                if c is not None:
                    for f in REF_FIELDS:
                        with contextlib.suppress(Exception):
                            node = c
                            for k in f[:-1]:
                                node = node[k]
                            node["sha256"] = sha(m[node["source"]])
                    m["rdf.yaml"] = dump(c)
                    desc += " (digests updated)"
            return zip_write(list(m.items()), zipfile.ZIP_DEFLATED), desc
        if kind == "remove":
            k = rng.choice(names)
            del m[k]
            return zip_write(list(m.items()), zipfile.ZIP_DEFLATED), f"remove {k}"
        if kind == "duplicate":
            k = rng.choice(names)
            items = list(m.items()) + [(k, rng.choice([b"", os.urandom(100),
                                                       m["README.md"]]))]
            return zip_write(items, zipfile.ZIP_DEFLATED), f"duplicate {k}"
        if kind == "both_rdf":
            c = read_yaml(m["rdf.yaml"].decode())
            c["type"] = "dataset"
            return zip_write(list(m.items()) + [("bioimageio.yaml", dump(c))],
                             zipfile.ZIP_DEFLATED), kind
        if kind == "subdir":
            return zip_write([("pkg/" + k, v) for k, v in m.items()], zipfile.ZIP_DEFLATED), \
                kind
        if kind == "declared":
            k = rng.choice(names)
            size = rng.choice([0, 10, 2**31, 2**32 - 1])
            return patch_sizes(raw, k, size, rng.choice(["both", "central"])), \
                f"declared size of {k} {size}"
        if kind == "bomb":
            return zip_write(list(m.items()) + [("attachment.bin", b"\x00" * (rng.choice(
                [300, 1100]) << 20))], zipfile.ZIP_DEFLATED), kind
        if kind == "evil_names":
            k = rng.choice(["../escape.txt", "/abs.txt", "..\\win.txt", "a/../../b.txt",
                            "x" * 1000, "dir/"])
            return zip_write(list(m.items()) + [(k, b"x")], zipfile.ZIP_DEFLATED), \
                f"member {k[:30]!r}"
        if kind == "stored":
            return zip_write(list(m.items()), zipfile.ZIP_STORED), kind
        if kind == "payload_weights":
            p = payload(rng, decoy / "pwned-pkg")
            m["weights.pt"] = rng.choice([pickle.dumps(p, 2), torch_bytes({"model.x": p})])
        elif kind == "foreign_weights":
            import torch

            m["weights.pt"] = rng.choice([torch_bytes({"model.w": torch.zeros(1).as_strided(
                (100_000, 100_000), (0, 0))}), torch_bytes([1, 2]), torch_bytes({}),
                torch_bytes({"x.w": torch.zeros(3)}), base.models["good"],
                torch_bytes({"model.enc.0.weight": torch.full((3,), float("nan"))})])
        elif kind == "huge_weights":
            import torch

            m["weights.pt"] = torch_bytes({"model.big": torch.zeros(rng.choice([10**6,
                                                                                 3 * 10**7]))})
        elif kind == "not_zip":
            return rng.choice([b"", b"PK\x05\x06" + b"\x00" * 18, os.urandom(3000),
                               base.models["good"]]), kind
        elif kind == "encrypted":
            b = bytearray(raw)
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                pos = zf.start_dir
            b[pos + 8] |= 1  # general purpose flag: encrypted
            return bytes(b), kind
        c = read_yaml(m["rdf.yaml"].decode())
        c["weights"]["pytorch_state_dict"]["sha256"] = sha(m["weights.pt"])
        m["rdf.yaml"] = dump(c)
        return zip_write(list(m.items()), zipfile.ZIP_DEFLATED), kind + " (digest updated)"

    folder_special = ["rdf_fifo", "weights_fifo", "weights_link_decoy", "weights_link_dev",
                      "rdf_link_dev", "rdf_dir", "weights_dir", "folder_link_out",
                      "cover_fifo"]

    for i in range(n):
        rng = case_rng(seed, "packages", i)
        members = dict(base.pkg)
        group = rng.choices(["content", "text", "zip", "special"], weights=[5, 3, 4, 1])[0]
        form = rng.choice(["zip", "zip", "folder", "rdf"])
        data, desc = None, ""
        try:
            if group == "content":
                members["rdf.yaml"], desc = content_case(rng, copy.deepcopy(rdf0), members)
            elif group == "text":
                members["rdf.yaml"], desc = text_case(rng)
            elif group == "zip":
                data, desc = zip_case(rng, members)
                form = "zip"
            else:
                desc = rng.choice(folder_special)
                form = rng.choice(["folder", "rdf"])
        except Exception as exc:  # noqa: BLE001 - a crafting bug of this script: skipped
            yield Case("packages", "crafting", f"{group}: {exc!r}", None)
            continue
        kind = desc.split()[0]
        target = {"zip": "pkg.zip", "folder": "pkg", "rdf": "pkg/rdf.yaml"}[form]

        def build(folder, data=data, members=members, form=form, desc=desc):
            if form == "zip":
                (folder / "pkg.zip").write_bytes(data if data is not None else
                                                 zip_write(list(members.items()),
                                                           zipfile.ZIP_DEFLATED))
            else:
                d = folder / "pkg"
                d.mkdir()
                for k, v in members.items():
                    (d / k).write_bytes(v)
                special_member(d, desc, decoy)
            shutil.copy(base.root / "one.tif", folder / "in.tif")

        jobs = [Job("load", load=target),
                Job("denoise", ["denoise", "in.tif", "--model", target, "--out", "out.tif",
                                *DENOISE])]
        if rng.random() < 0.3:  # the imported model exported again (4 s when it loads)
            jobs.append(Job("export", ["export", target, "--out", "out.zip", "--sample",
                                       "in.tif"], if_load_ok=True))
        yield Case("packages", kind, f"{form}: {desc}", build, jobs, ["out.tif", "out.zip"])


def special_member(d: Path, desc: str, decoy: Path) -> None:
    if desc == "rdf_fifo":
        make_fifo(d / "rdf.yaml")
    elif desc == "weights_fifo":
        make_fifo(d / "weights.pt")
    elif desc == "cover_fifo":
        make_fifo(d / "cover.png")
    elif desc == "weights_link_decoy":
        (d / "weights.pt").unlink()
        (d / "weights.pt").symlink_to(decoy / "weights.pt")
    elif desc == "weights_link_dev":
        (d / "weights.pt").unlink()
        (d / "weights.pt").symlink_to("/dev/zero")
    elif desc == "rdf_link_dev":
        (d / "rdf.yaml").unlink()
        (d / "rdf.yaml").symlink_to("/dev/zero")
    elif desc == "rdf_dir":
        (d / "rdf.yaml").unlink()
        (d / "rdf.yaml").mkdir()
    elif desc == "weights_dir":
        (d / "weights.pt").unlink()
        (d / "weights.pt").mkdir()
    elif desc == "folder_link_out":
        (d / "weights.pt").unlink()
        (d / "weights.pt").symlink_to("../../decoy/weights.pt")


# ---- (c) autosave checkpoints -----------------------------------------------------------------
TRAINING_FIELDS = ("step", "elapsed", "config", "base_lr", "batch_size", "model", "optimizer",
                   "best_state", "best_val", "history", "nan_retries", "ema", "sampler_rng",
                   "method_rng", "rng_device", "data")


def autosave_cases(base: Base, n: int, seed: int, decoy: Path):
    import torch

    def field_case(rng, ck):
        tr = ck["training"]
        kind = rng.choice(["del", "type", "step", "elapsed", "base_lr", "batch_size", "model",
                           "optimizer", "best", "history", "rng", "rng_device", "data", "config",
                           "config_net", "nan_retries", "top", "training_type"])
        desc = kind
        if kind in ("del", "type"):
            desc += " " + drop_or_retype(tr, TRAINING_FIELDS, kind, rng)
        elif kind == "step":
            tr["step"] = rng.choice([-1, 0, 5, 10**18, 2.5, True, None, "4", 2**70])
            desc += f" {tr['step']!r}"
        elif kind == "elapsed":
            tr["elapsed"] = rng.choice([float("nan"), -1.0, 1e300, "1", 0, float("inf")])
        elif kind == "base_lr":
            tr["base_lr"] = rng.choice([0.0, float("nan"), 10.0, -1.0, 1e-300, "0.001"])
        elif kind == "batch_size":
            tr["batch_size"] = rng.choice([0, 10**9, 3.5, -4, True, 1])
            desc += f" {tr['batch_size']!r}"
        elif kind in ("model", "best"):
            k = "model" if kind == "model" else rng.choice(["best_state", "ema"])
            if tr.get(k) is None:
                tr[k] = {key: v.clone() for key, v in tr["model"].items()}
            sd = tr[k]
            key = rng.choice(sorted(sd))
            how = rng.choice(["nan", "shape", "missing", "extra", "int", "huge"])
            if how == "nan":
                sd[key] = sd[key].clone().fill_(float("nan"))
            elif how == "shape":
                sd[key] = sd[key].reshape(-1)
            elif how == "missing":
                del sd[key]
            elif how == "extra":
                sd["zz"] = torch.zeros(2)
            elif how == "int":
                sd[key] = sd[key].to(torch.int64)
            else:
                sd[key] = torch.zeros(1).as_strided((100_000, 100_000), (0, 0))
            if kind == "best" and rng.random() < 0.3:
                tr["best_val"] = rng.choice([float("nan"), None, "x", -1e308])
            desc += f" {k} {how}"
        elif kind == "optimizer":
            opt = tr["optimizer"]
            how = rng.choice(["moment_nan", "moment_shape", "step_neg", "step_nan", "lr_nan",
                              "betas", "eps", "groups", "params", "state_key", "empty",
                              "param_ids", "lr_scale", "moment_huge", "flag"])
            st = opt["state"]
            k0 = rng.choice(sorted(st)) if st else None
            if how == "moment_nan" and k0 is not None:
                st[k0]["exp_avg"] = st[k0]["exp_avg"].clone().fill_(float("nan"))
            elif how == "moment_shape" and k0 is not None:
                st[k0]["exp_avg_sq"] = torch.zeros(7)
            elif how == "step_neg" and k0 is not None:
                st[k0]["step"] = torch.tensor(-5.0)
            elif how == "step_nan" and k0 is not None:
                st[k0]["step"] = torch.tensor(float("nan"))
            elif how == "lr_nan":
                opt["param_groups"][0]["lr"] = float("nan")
            elif how == "betas":
                opt["param_groups"][0]["betas"] = rng.choice([(1.5, 0.9), (0.9,), "x", None,
                                                              (float("nan"), 0.9)])
            elif how == "eps":
                opt["param_groups"][0]["eps"] = rng.choice([float("nan"), -1.0, "1e-8"])
            elif how == "groups":
                opt["param_groups"] = rng.choice([[], opt["param_groups"] * 2, None])
            elif how == "params":
                opt["param_groups"][0]["params"] = rng.choice([[], [0] * 1000, "x", [99999]])
            elif how == "state_key" and k0 is not None:
                st[10**6] = st.pop(k0)
            elif how == "empty":
                tr["optimizer"] = {}
            elif how == "param_ids" and k0 is not None:
                st["x"] = st.pop(k0)
            elif how == "moment_huge" and k0 is not None:
                st[k0]["exp_avg"] = torch.zeros(1).as_strided((100_000, 100_000), (0, 0))
            elif how == "flag":
                opt["param_groups"][0][rng.choice(["amsgrad", "foreach", "maximize"])] = \
                    rng.choice(["yes", 1.5, [], None, True])
            elif how == "lr_scale":
                opt["param_groups"][0]["lr_scale"] = rng.choice([float("nan"), -1.0, "x"])
            desc += f" {how}"
        elif kind == "history":
            tr["history"] = rng.choice([None, [{"step": 1}], [{"step": 1, "val_error": "x"}],
                                        [{"step": 10**9, "val_error": 0.1}],
                                        [{"step": 1, "val_error": float("nan")}],
                                        [{"step": 1, "val_error": 0.1}] * 10**5, "x", [1]])
        elif kind == "rng":
            k = rng.choice(["sampler_rng", "method_rng"])
            good = tr.get(k)
            tr[k] = rng.choice([torch.zeros(5, dtype=torch.uint8), torch.zeros(5000),
                                None, torch.randint(0, 255, (good.numel() if good is not None
                                                             else 5056,), dtype=torch.uint8),
                                torch.zeros(2, 2, dtype=torch.uint8),
                                torch.zeros(1 << 21, dtype=torch.uint8)])
            desc += f" {k}"
        elif kind == "rng_device":
            tr["rng_device"] = rng.choice(["cuda", "mps", "x" * 17, "", None, "meta", "cuda:99"])
            desc += f" {tr['rng_device']!r}"
        elif kind == "data":
            data = tr["data"]
            k = rng.choice(["axes", "shape", "dtype", "fingerprint", "all"])
            v = rng.choice([weird(rng), "TXY", "YXT", "QQQ", [4, 64, 64, 1], [0, 64, 64],
                            [4, 64], "0" * 32, "uint16", DELETE])
            if k == "all":
                tr["data"] = weird(rng)
            elif v is DELETE:
                data.pop(k, None)
            else:
                data[k] = v
            desc += f" {k}"
        elif kind == "config":
            cfg = tr["config"]
            k = rng.choice(sorted(cfg) + ["bogus"])
            cfg[k] = weird(rng) if rng.random() < 0.6 else rng.choice(
                [0, -1, 10**12, float("nan"), None, "b2s", 3])
            desc += f" {k}"
        elif kind == "config_net":
            cfg = tr["config"]
            k, v = rng.choice([("width", 32), ("depth", 3), ("method", "n2v"), ("epochs", 5),
                               ("steps", 2), ("steps", None), ("patch_size", 64),
                               ("method_params", {}), ("version", 99), ("max_time", 1e-9)])
            cfg[k] = v
            desc += f" {k}={v!r}"
        elif kind == "nan_retries":
            tr["nan_retries"] = rng.choice([-1, 99, 2.5, None])
        elif kind == "top":
            k = rng.choice(MODEL_KEYS)
            ck[k] = weird(rng)
            desc += f" {k}"
        elif kind == "training_type":
            ck["training"] = weird(rng)
        if rng.random() < 0.3:
            checksum(ck)
        return torch_bytes(ck), desc

    for i in range(n):
        rng = case_rng(seed, "autosaves", i)
        group = rng.choices(["field", "bytes"], weights=[5, 1])[0]
        if group == "field":
            try:
                data, desc = field_case(rng, copy.deepcopy(base.ck))
            except Exception as exc:  # noqa: BLE001 - a crafting bug of this script: skipped
                yield Case("autosaves", "crafting", f"{group}: {exc!r}", None)
                continue
        else:
            how = rng.choice(["flip", "truncate", "flip_member"])
            if how == "flip":
                data = flip(base.ck_bytes, rng, rng.choice([1, 4, 32]))
            elif how == "truncate":
                data = base.ck_bytes[:rng.randrange(len(base.ck_bytes))]
            else:
                name, (lo, hi) = rng.choice(sorted(member_ranges(base.ck_bytes).items()))
                data = flip(base.ck_bytes, rng, 4, lo, hi)
            desc = how
        kind = desc.split()[0]
        same = rng.random() < 0.2  # --autosave to the checkpoint it resumes from

        def build(folder, data=data):
            (folder / "ck.b2u").write_bytes(data)
            shutil.copy(base.root / "in.tif", folder / "in.tif")

        argv = ["train", "in.tif", "--out", "out.b2u", "--resume", "ck.b2u", "--steps", "6",
                "--device", "cpu", "-q"] + (["--autosave", "ck.b2u"] if same else [])
        jobs = [Job("train --resume", argv)]
        if rng.random() < 0.4:
            jobs.append(Job("load", load="ck.b2u"))
        yield Case("autosaves", kind, desc + (" (autosave to itself)" if same else ""), build,
                   jobs, ["out.b2u"] + (["ck.b2u"] if same else []))


# ---- (d) images -------------------------------------------------------------------------------
def image_cases(base: Base, n: int, seed: int, decoy: Path, only: str | None = None):
    np = base.np
    import tifffile

    stack = base.stack  # (4, 64, 64) uint8

    def arr(rng):
        """A base array: dtype and shape vary."""
        shape, axes = rng.choice([((4, 64, 64), "TYX"), ((64, 64), "YX"), ((2, 3, 64, 64),
                                  "TZYX"), ((2, 2, 64, 64), "TCYX"), ((0, 64, 64), "TYX"),
                                  ((4, 0, 64), "TYX"), ((1, 1), "YX"), ((64, 1), "YX"),
                                  ((3, 40, 44), "TYX"), ((64, 64, 4), "YXT")])
        dtype = rng.choice(["uint8", "uint16", "int8", "int16", "int32", "uint32", "float32",
                            "float64", "float16", "bool", "complex64", "int64"])
        n_ = int(np.prod(shape))
        a = np.resize(stack.astype(np.float64), n_).reshape(shape) if n_ else np.zeros(shape)
        if rng.random() < 0.1 and n_:
            a.flat[rng.randrange(n_)] = rng.choice([np.nan, np.inf])
        if rng.random() < 0.1:
            a = np.full(shape, 7.0)  # constant
        return a.astype(dtype), axes, dtype

    def tiff_bytes(rng, a, axes, path):
        style = rng.choice(["plain", "ome", "imagej", "tiled", "zlib", "bigtiff", "rgb",
                            "multiseries", "shaped", "pyramid"])
        try:
            if style == "ome":
                tifffile.imwrite(path, a, ome=True, metadata={
                    "axes": axes, "PhysicalSizeX": rng.choice([0.1, 0.0, -1.0, 1e30]),
                    "PhysicalSizeXUnit": rng.choice(["µm", "nm", "parsec", "s", ""])})
            elif style == "imagej" and a.dtype.name in ("uint8", "uint16", "float32"):
                tifffile.imwrite(path, a, imagej=True, resolution=(1 / 0.1, 1 / 0.1), metadata={
                    "axes": axes, "spacing": rng.choice([0.5, float("nan")]),
                    "unit": rng.choice(["um", "pixel", "furlong"])})
            elif style == "tiled" and a.ndim >= 2 and min(a.shape[-2:]) >= 16:
                tifffile.imwrite(path, a, tile=(16, 16), metadata={"axes": axes})
            elif style == "zlib":
                tifffile.imwrite(path, a, compression="zlib", metadata={"axes": axes})
            elif style == "bigtiff":
                tifffile.imwrite(path, a, bigtiff=True, metadata={"axes": axes})
            elif style == "rgb":
                rgb = np.stack([stack[0]] * 3, -1) if rng.random() < 0.5 else \
                    np.stack([stack[0], stack[1], stack[2]], -1)
                tifffile.imwrite(path, rgb, photometric="rgb")
            elif style == "multiseries":
                with tifffile.TiffWriter(path) as tw:
                    tw.write(a, metadata={"axes": axes})
                    tw.write(stack[:2], metadata={"axes": "TYX"})
            elif style == "pyramid" and a.ndim == 2 and min(a.shape) >= 32:
                with tifffile.TiffWriter(path) as tw:
                    tw.write(a, subifds=1, metadata={"axes": axes})
                    tw.write(a[::2, ::2], subfiletype=1)
            elif style == "shaped":
                tifffile.imwrite(path, a, metadata={"axes": axes})
            else:  # a style this array cannot take
                style = "plain"
                tifffile.imwrite(path, a)
        except Exception as exc:  # noqa: BLE001 - tifffile refuses some combinations
            tifffile.imwrite(path, stack, metadata={"axes": "TYX"})
            style = f"plain (tifffile: {type(exc).__name__})"
        return style

    def tiff_mutate(rng, path: Path) -> str:
        how = rng.choice(["none", "truncate", "flip", "flip_head", "tag", "tag", "tag",
                          "ifd_loop", "description", "nan_desc"])
        raw = path.read_bytes()
        if how == "none":
            return how
        if how == "truncate":
            k = rng.randrange(len(raw))
            path.write_bytes(raw[:k])
            return f"truncate {k}/{len(raw)}"
        if how == "flip":
            path.write_bytes(flip(raw, rng, rng.choice([1, 8, 64])))
            return how
        if how == "flip_head":
            path.write_bytes(flip(raw, rng, rng.choice([1, 4]), 0, 256))
            return how
        if how == "ifd_loop":
            b = bytearray(raw)
            with tifffile.TiffFile(path) as tif:
                p = tif.pages.first
                big = tif.is_bigtiff
                n_tags = len(p.tags)
                off = p.offset
            if big:
                struct.pack_into("<Q", b, off + 8 + n_tags * 20, off)
            else:
                struct.pack_into("<I", b, off + 2 + n_tags * 12, off)
            path.write_bytes(bytes(b))
            return how
        if how in ("description", "nan_desc"):
            with tifffile.TiffFile(path) as tif:
                desc = tif.pages.first.description or ""
            new = rng.choice([
                desc.replace("SizeX=", "SizeX=\"0\" Old=") if "SizeX" in desc else "<OME",
                desc.replace('PhysicalSizeX="', 'PhysicalSizeX="nan" X="'),
                desc.replace("DimensionOrder=\"", "DimensionOrder=\"QQ"),
                desc[: len(desc) // 2], "<?xml version='1.0'?><OME><Image/></OME>",
                "ImageJ=1.11a\nimages=1000000000\nframes=1000000000\n",
                "ImageJ=1.11a\nspacing=nan\nunit=\\u00B5m\naxes=QQ\n",
                '{"shape": [1000000, 64, 64]}', '{"shape": "x", "axes": 5}',
                "<OME xmlns='http://www.openmicroscopy.org/Schemas/OME/2016-06'><Image ID='I:0'>"
                "<Pixels DimensionOrder='XYZCT' ID='P:0' SizeC='1' SizeT='0' SizeX='64' "
                "SizeY='64' SizeZ='1' Type='uint8' PhysicalSizeX='-inf'/></Image></OME>",
                "x" * 200_000])
            try:
                tifffile.tiffcomment(path, new.encode("latin-1", "replace"))
            except Exception:  # noqa: BLE001 - no description tag to replace
                return "description (unchanged)"
            return how
        # a crafted tag value
        with tifffile.TiffFile(path) as tif:
            page = rng.choice(list(tif.pages)[:3])
            tags = [t for t in page.tags if t.code in (256, 257, 258, 259, 262, 273, 277, 278,
                                                       279, 284, 322, 323, 324, 325, 339, 317)]
            if not tags:
                return "tag (none)"
            t = rng.choice(tags)
            code, dtype, count, voff = t.code, t.dtype, t.count, t.valueoffset
            big = tif.is_bigtiff
            inline = t.count * struct.calcsize(tifffile.TIFF.DATA_FORMATS[dtype][-1]) <= (
                8 if big else 4)
        fmt = "<" + tifffile.TIFF.DATA_FORMATS[dtype][-1]
        value = rng.choice([0, 1, 3, 7, 16, 64, 65535, 2**31 - 1, 2**32 - 1, 12345,
                            len(raw) + 100])
        value = min(value, {"B": 255, "H": 65535, "I": 2**32 - 1, "Q": 2**63,
                            "h": 32767, "i": 2**31 - 1}.get(fmt[-1], 255))
        b = bytearray(raw)
        at = voff if inline or count == 1 else voff + struct.calcsize(fmt) * rng.randrange(count)
        with contextlib.suppress(struct.error):
            struct.pack_into(fmt, b, at, value)
        path.write_bytes(bytes(b))
        return f"tag {tifffile.TIFF.TAGS.get(code, code)}={value}"

    def png_case(rng, path: Path) -> str:
        from PIL import Image

        mode = rng.choice(["L", "I;16", "RGB", "RGBA", "P", "1", "LA"])
        im = Image.fromarray(stack[0])
        if mode == "I;16":
            im = Image.fromarray(stack[0].astype(np.uint16) * 200)
        elif mode != "L":
            im = im.convert(mode)
        im.save(path, format="PNG", optimize=rng.random() < 0.3)
        how = rng.choice(["none", "truncate", "flip", "ihdr", "ihdr", "depth", "crc", "chunks",
                          "ztxt", "no_idat"])
        raw = path.read_bytes()
        if how == "truncate":
            raw = raw[:rng.randrange(8, len(raw))]
        elif how == "flip":
            raw = flip(raw, rng, rng.choice([1, 8]), 8)
        elif how in ("ihdr", "depth"):
            b = bytearray(raw)
            if how == "ihdr":
                w, h = rng.choice([(0, 64), (64, 0), (2**31 - 1, 1), (30000, 30000),
                                   (100000, 100000), (13000, 14000), (65, 64), (2**31, 2**31)])
                struct.pack_into(">II", b, 16, w, h)
            else:
                b[24], b[25] = rng.choice([(3, 0), (16, 3), (7, 2), (8, 9), (0, 0), (32, 0)])
            struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
            raw = bytes(b)
            how += f" {bytes(b[16:26]).hex()}"
        elif how == "crc":
            b = bytearray(raw)
            b[29] ^= 0xFF
            raw = bytes(b)
        elif how in ("chunks", "ztxt"):
            if how == "ztxt":
                body = b"Comment\x00\x00" + zlib.compress(b"\x00" * (50 << 20), 9)
                ctype = b"zTXt"
            else:
                body, ctype = os.urandom(rng.choice([0, 100])), rng.choice([b"tEXt", b"iCCP",
                                                                           b"acTL", b"sBIT"])
            chunk = struct.pack(">I", len(body)) + ctype + body + struct.pack(
                ">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)
            raw = raw[:33] + chunk + raw[33:]
        elif how == "no_idat":
            raw = raw[:33] + raw[-12:]
        path.write_bytes(raw)
        return f"{mode} {how}"

    def npy_case(rng, path: Path) -> str:
        how = rng.choice(["ok", "object", "structured", "fortran", "bigendian", "strings",
                          "0d", "header_shape", "truncate", "flip_head", "complex", "bool"])
        a = stack.copy()
        if how == "object":
            with open(path, "wb") as f:
                np.save(f, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
            return how
        if how == "structured":
            a = np.zeros((4, 64, 64), dtype=[("a", "u1"), ("b", "f4")])
        elif how == "fortran":
            a = np.asfortranarray(a)
        elif how == "bigendian":
            a = a.astype(">f4")
        elif how == "strings":
            a = np.full((4, 64, 64), "ab")
        elif how == "0d":
            a = np.array(5.0)
        elif how == "complex":
            a = a.astype(np.complex64)
        elif how == "bool":
            a = a > 100
        np.save(path, a)
        raw = path.read_bytes()
        if how == "header_shape":
            raw = raw.replace(b"(4, 64, 64)", rng.choice([b"(400000, 64, 64)", b"(-4, 64, 64)",
                                                          b"(4, 64, 6)", b"(4,64,64,999999)",
                                                          b"(2**40, 2)"]), 1)
        elif how == "truncate":
            raw = raw[:rng.randrange(len(raw))]
        elif how == "flip_head":
            raw = flip(raw, rng, 3, 0, 128)
        path.write_bytes(raw)
        return how

    def zarr_case(rng, folder: Path) -> tuple[str, str]:
        import zarr

        fmt = rng.choice([2, 3])
        ome = rng.random() < 0.6
        name = "img.ome.zarr" if ome else "img.zarr"
        root = folder / name
        a = stack.astype(rng.choice(["uint8", "uint16", "float32"]))
        chunks = (1, 32, 32)
        compressor = rng.choice(["default", "none", "zstd"])
        kw = {}
        if compressor == "none":
            kw["compressors"] = None
        elif compressor == "zstd":
            from zarr.codecs import ZstdCodec

            if fmt == 3:
                kw["compressors"] = ZstdCodec()
            else:
                import numcodecs

                kw["compressors"] = numcodecs.Zstd()
        if ome:
            g = zarr.open_group(root, mode="w", zarr_format=fmt)
            g.create_array("0", shape=a.shape, chunks=chunks, dtype=a.dtype, **kw)[:] = a
            ms = [{"version": "0.4", "axes": [{"name": "t", "type": "time"},
                                              {"name": "y", "type": "space", "unit": "micrometer"},
                                              {"name": "x", "type": "space", "unit": "micrometer"}],
                   "datasets": [{"path": "0", "coordinateTransformations": [
                       {"type": "scale", "scale": [1.0, 0.2, 0.2]}]}]}]
            if fmt == 2:
                g.attrs["multiscales"] = ms
            else:
                del ms[0]["version"]
                g.attrs["ome"] = {"version": "0.5", "multiscales": ms}
            arr_dir = root / "0"
        else:
            zarr.create_array(root, shape=a.shape, chunks=chunks, dtype=a.dtype,
                              zarr_format=fmt, **kw)[:] = a
            arr_dir = root
        how = rng.choice(["none", "json", "json", "json_field", "json_field", "multiscales",
                          "multiscales", "chunk_truncate", "chunk_flip", "chunk_missing",
                          "chunk_garbage", "chunk_fifo", "chunk_dir", "chunk_link", "meta_fifo",
                          "meta_link_dev", "chunk_huge"])
        meta_arr = arr_dir / ("zarr.json" if fmt == 3 else ".zarray")
        meta_grp = root / ("zarr.json" if fmt == 3 else ".zattrs")
        chunk_files = sorted(p for p in arr_dir.rglob("*") if p.is_file()
                             and not p.name.startswith((".z", "zarr.json")))
        desc = f"v{fmt}{' ome' if ome else ''} {compressor} {how}"
        if how == "json":
            p = rng.choice([meta_arr, meta_grp])
            raw = p.read_bytes()
            p.write_bytes(rng.choice([raw[:len(raw) // 2], flip(raw, rng, 3), b"", b"null",
                                      b"[]", b"{" * 100_000, raw + b"garbage",
                                      b'{"zarr_format": 99}']))
            desc += f" {p.name}"
        elif how == "json_field":
            doc = json.loads(meta_arr.read_text())
            k = rng.choice(["shape", "chunks", "dtype", "data_type", "fill_value", "order",
                            "compressor", "codecs", "chunk_grid", "zarr_format", "node_type",
                            "dimension_separator", "chunk_key_encoding", "filters"])
            v = rng.choice([None, 0, -1, [], [0, 64, 64], [4, 64], [10**12, 64, 64],
                            [1, 0, 32], "complex128", "<c8", "|O", "|S5", "<U3", "float128",
                            "bogus", "NaN", {"name": "bogus"}, [{"name": "bogus"}], "F",
                            [4, 64, 64, 1], [2**63, 1, 1], {"name": "regular",
                                                           "configuration": {"chunk_shape":
                                                                             [0, 32, 32]}}])
            if k in doc or rng.random() < 0.3:
                doc[k] = v
            meta_arr.write_text(json.dumps(doc))
            desc += f" {k}={json.dumps(v)[:40]}"
        elif how == "multiscales" and ome:
            doc = json.loads(meta_grp.read_text())
            attrs = doc if fmt == 2 else doc["attributes"]
            ms = attrs["multiscales"] if fmt == 2 else attrs["ome"]["multiscales"]
            what = rng.choice(["datasets", "path", "scale", "axes", "transforms", "version",
                               "ms", "path_out", "unit", "type"])
            if what == "datasets":
                ms[0]["datasets"] = weird(rng)
            elif what == "path":
                ms[0]["datasets"][0]["path"] = rng.choice(["1", "", None, 0, "../../decoy",
                                                           "/etc", "0/../0", "."])
            elif what == "scale":
                ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = rng.choice(
                    [[1.0, 0.2], [None, 1, 1], "x", [float("nan")] * 3, [0, 0, 0], [-1, 1, 1],
                     [1e308, 1e308, 1e308]])
            elif what == "axes":
                ms[0]["axes"] = rng.choice([[], "tyx", [{"name": "t"}] * 3, [{"name": "q"},
                                            {"name": "y"}, {"name": "x"}], [{}, {}, {}], None])
            elif what == "transforms":
                ms[0]["datasets"][0]["coordinateTransformations"] = weird(rng)
            elif what == "version":
                (ms[0] if fmt == 2 else attrs["ome"])["version"] = rng.choice(["9.9", None, 4])
            elif what == "ms":
                ms.clear() if rng.random() < 0.5 else ms.append(weird(rng))
            elif what == "path_out":
                ms[0]["datasets"][0]["path"] = str(decoy)
            elif what == "unit":
                ms[0]["axes"][1]["unit"] = rng.choice(["parsec", "", None, 5])
            else:
                ms[0]["axes"][0]["type"] = rng.choice(["space", "channel", None, 3])
            meta_grp.write_text(json.dumps(doc, allow_nan=True))
            desc += f" {what}"
        elif how.startswith("chunk_") and chunk_files:
            p = rng.choice(chunk_files)
            raw = p.read_bytes()
            if how == "chunk_truncate":
                p.write_bytes(raw[:rng.randrange(len(raw))])
            elif how == "chunk_flip":
                p.write_bytes(flip(raw, rng, 4))
            elif how == "chunk_missing":
                p.unlink()
            elif how == "chunk_garbage":
                p.write_bytes(os.urandom(rng.choice([1, 100, 5000])))
            elif how == "chunk_fifo":
                make_fifo(p)
            elif how == "chunk_dir":
                p.unlink()
                p.mkdir()
            elif how == "chunk_link":
                p.unlink()
                p.symlink_to(rng.choice(["/dev/zero", str(decoy / "x.tif"), "/dev/urandom"]))
            elif how == "chunk_huge":
                p.write_bytes(raw + os.urandom(1 << 20))
        elif how == "meta_fifo":
            make_fifo(meta_grp if rng.random() < 0.5 else meta_arr)
        elif how == "meta_link_dev":
            meta_arr.unlink()
            meta_arr.symlink_to("/dev/zero")
        return name, desc

    def fmdd_case(rng, folder: Path) -> str:
        from PIL import Image

        raw = folder / "set" / "raw" / "1"
        raw.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(stack[k]).save(raw / f"{k}.png")
        how = rng.choice(["ok", "truncate", "fifo", "sizes", "empty", "text", "rgb", "second"])
        if how == "truncate":
            p = raw / "1.png"
            p.write_bytes(p.read_bytes()[:100])
        elif how == "fifo":
            make_fifo(raw / "1.png")
        elif how == "sizes":
            Image.fromarray(stack[0][:40, :50]).save(raw / "1.png")
        elif how == "empty":
            for p in raw.iterdir():
                p.unlink()
        elif how == "text":
            (raw / "1.png").write_text("not a png")
        elif how == "rgb":
            Image.fromarray(np.stack([stack[0], stack[1], stack[2]], -1)).save(raw / "1.png")
        elif how == "second":
            (folder / "set" / "raw" / "2").mkdir()
            Image.fromarray(stack[2]).save(folder / "set" / "raw" / "2" / "0.png")
        return how

    kinds = ["tiff", "tiff", "tiff", "png", "npy", "zarr", "zarr", "fifo", "fmdd", "misc"]
    if only:
        kinds = [only]
    for i in range(n):
        rng = case_rng(seed, "images", i)
        kind = rng.choice(kinds)
        spec = {"kind": kind}

        def build(folder, rng_state=rng.getstate(), kind=kind, spec=spec):
            r = random.Random()
            r.setstate(rng_state)
            if kind == "tiff":
                a, axes, dtype = arr(r)
                path = folder / r.choice(["in.tif", "in.ome.tif", "in.tiff", "in.btf"])
                style = tiff_bytes(r, a, axes, path)
                spec["desc"] = f"{style} {dtype} {a.shape} {tiff_mutate(r, path)}"
                spec["input"] = path.name
            elif kind == "png":
                spec["input"] = "in.png"
                spec["desc"] = png_case(r, folder / "in.png")
            elif kind == "npy":
                spec["input"] = "in.npy"
                spec["desc"] = npy_case(r, folder / "in.npy")
            elif kind == "zarr":
                spec["input"], spec["desc"] = zarr_case(r, folder)
            elif kind == "fmdd":
                spec["input"], spec["desc"] = "set", fmdd_case(r, folder)
            elif kind == "fifo":
                name = r.choice(["in.tif", "in.png", "in.npy", "in.zarr", "in.jpg"])
                make_fifo(folder / name)
                spec["input"], spec["desc"] = name, f"FIFO named {name}"
            else:
                what = r.choice(["dev_null", "link_dev", "link_loop", "empty", "text_tif",
                                 "tif_dir", "random", "jpeg", "bmp", "link_decoy"])
                p = folder / {"jpeg": "in.jpg", "bmp": "in.bmp"}.get(what, "in.tif")
                if what == "dev_null":
                    p.symlink_to("/dev/null")
                elif what == "link_dev":
                    p.symlink_to("/dev/zero")
                elif what == "link_loop":
                    p.symlink_to(p)
                elif what == "empty":
                    p.write_bytes(b"")
                elif what == "text_tif":
                    p.write_text("hello")
                elif what == "tif_dir":
                    p.mkdir()
                elif what == "random":
                    p.write_bytes(os.urandom(5000))
                elif what == "link_decoy":
                    p.symlink_to(decoy / "x.tif")
                else:
                    from PIL import Image

                    im = Image.fromarray(stack[0])
                    im.save(p, format="JPEG" if what == "jpeg" else "BMP")
                    raw = p.read_bytes()
                    p.write_bytes(flip(raw, r, 8, 20) if r.random() < 0.5 else raw)
                spec["input"], spec["desc"] = p.name, what

        zarr_in = kind == "zarr"
        out = "out.ome.zarr" if rng.random() < (0.7 if zarr_in else 0.15) else "out.tif"
        axes = [] if rng.random() < 0.85 else ["--axes", rng.choice(
            ["TYX", "YX", "ZYX", "CYX", "YXT", "TCYX", "QYX", "XY", "TTYX", "tyx", "", "YXC"])]
        jobs = [Job("check", ["check", "@input", *axes]),
                Job("denoise", ["denoise", "@input", "--model", str(base.root / "good.b2u"),
                                "--out", out, *axes, *DENOISE]),
                Job("train", ["train", "@input", "--out", "out.b2u", *axes, *TRAIN])]
        case = Case("images", kind, "", build, jobs, [out, "out.b2u"])
        spec["args"] = " ".join(axes)
        case.spec = spec
        yield case


# =============================================================================================
# the run
# =============================================================================================
def run(args) -> int:
    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    for sub in ("cases", "decoy", "tmp", "bioimageio-cache"):
        (work / sub).mkdir(parents=True)
    decoy = work / "decoy"
    for name, data in (("x.tif", (Path(__file__).parent / "fuzz_files.py").read_bytes()[:2000]),
                       ("x.tif.part", b"a partial file the user keeps"),
                       ("m.b2u.part", b"model part"), ("weights.pt", b"not weights"),
                       ("out.tif.part", b"x")):
        (decoy / name).write_bytes(data)
    make_fifo(decoy / "fifo.tif")
    env = dict(os.environ, TMPDIR=str(work / "tmp"), NAPARI_B2U_MEMORY_BUDGET=BUDGET,
               BIOIMAGEIO_CACHE_PATH=str(work / "bioimageio-cache"), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    worker = Worker(env, work / "worker.log", args.timeout, int(args.max_rss * 2**30))
    t0 = time.monotonic()
    print(f"napari-b2u fuzz: seed {args.seed}, work folder {work}", flush=True)
    base = Base(work / "base", worker)
    print(f"real files written in {time.monotonic() - t0:.0f} s", flush=True)

    sizes = {"models": 400, "packages": 350, "autosaves": 250, "images": 500}
    gens = {
        "models": lambda k: model_cases(base, k, args.seed, decoy),
        "packages": lambda k: package_cases(base, k, args.seed, decoy),
        "autosaves": lambda k: autosave_cases(base, k, args.seed, decoy),
        "images": lambda k: image_cases(base, k, args.seed, decoy, args.only),
    }
    families = args.family or list(FAMILIES)
    watch = {"decoy": decoy, "base": base.root, "tmp": work / "tmp",
             "bioimageio-cache": work / "bioimageio-cache"}
    table = {f: {"files": 0, "runs": 0, **{o: 0 for o in OUTCOMES}, "raw": 0, "changed": 0}
             for f in families}
    findings = []
    log = open(work / "results.jsonl", "w")
    for fam in families:
        tf = time.monotonic()
        for idx, case in enumerate(gens[fam](max(1, round(sizes[fam] * args.scale)))):
            if args.case and f"{fam}:{idx}" not in args.case:
                continue
            if case.build is None:
                print(f"  [{fam} {idx}] could not craft {case.name}", flush=True)
                continue
            folder = work / "cases" / f"{fam}-{idx:04d}"
            folder.mkdir()
            for dec in ("out.tif.part", "out.b2u.part", "in.tif.part", ".out.tif.part",
                        "out.zip.part"):
                (folder / dec).write_bytes(b"decoy " + dec.encode())
            try:
                case.build(folder)
            except Exception as exc:  # noqa: BLE001 - a crafting bug of this script
                print(f"  [{fam} {idx}] could not craft {case.name}: {exc!r}", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if hasattr(case, "spec"):
                case.name = f"{case.spec.get('desc', '')} {case.spec['args']}".strip()
                inp = case.spec["input"]
            before = {k: snapshot(v) for k, v in watch.items()}
            here = snapshot(folder)
            table[fam]["files"] += 1
            load_ok = None
            results, tbs = [], []
            for job in case.jobs:
                if job.if_load_ok and load_ok is not True:
                    continue
                spec = {"cwd": str(folder)}
                if job.load is not None:
                    spec["load"] = job.load
                else:
                    spec["argv"] = [inp if a == "@input" else a for a in job.argv]
                res = worker.run(spec)
                if job.load is not None:
                    load_ok = res["outcome"] == "OK"
                out = res["outcome"]
                table[fam]["runs"] += 1
                table[fam][out] += 1
                raw = out == "REFUSED" and res.get("exc") and not res.get("b2u")
                table[fam]["raw"] += bool(raw)
                results.append({"job": job.label, "outcome": out, "why": res.get("why", ""),
                                "exc": res.get("exc"), "seconds": round(res["seconds"], 2)})
                if out in ("TRACEBACK", "HANG") or raw:
                    findings.append((fam, idx, case.name, job.label, out if not raw else
                                     f"raw {res.get('exc')}", res.get("why", "")))
                    print(f"  [{fam} {idx}] {case.name[:70]} | {job.label}: "
                          f"{out if not raw else 'REFUSED raw ' + str(res.get('exc'))}: "
                          f"{res.get('why', '')[:160]}", flush=True)
                    if res.get("tb"):
                        tbs.append(f"---- {fam} {idx} {case.name} | {job.label}\n{res['tb']}")
            diff = changed(here, snapshot(folder), case.outputs)
            for k, v in watch.items():  # (torch keeps a cache folder in the temporary one)
                diff += [f"{k}/{p}" for p in changed(before[k], snapshot(v))
                         if not (k == "tmp" and p.startswith("torchinductor_"))]
            if diff:
                table[fam]["changed"] += 1
                findings.append((fam, idx, case.name, "files", "CHANGED", ", ".join(diff)[:300]))
                print(f"  [{fam} {idx}] {case.name[:70]}: CHANGED {diff[:5]}", flush=True)
                for k, v in watch.items():  # start the next case from a clean state
                    if k in ("tmp", "bioimageio-cache"):
                        shutil.rmtree(v)
                        v.mkdir()
            if tbs:
                with open(work / "tracebacks.txt", "a") as f:
                    f.write("\n".join(tbs) + "\n")
            log.write(json.dumps({"family": fam, "case": idx, "kind": case.kind,
                                  "name": case.name, "results": results,
                                  "changed": diff}) + "\n")
            log.flush()
            bad = any(r["outcome"] in ("TRACEBACK", "HANG") for r in results) or diff or any(
                f[0] == fam and f[1] == idx for f in findings)
            if not bad and not args.keep:
                _rmtree(folder)
        print(f"{fam}: {table[fam]['files']} files in {time.monotonic() - tf:.0f} s",
              flush=True)
    worker.stop()
    _print_table(table, time.monotonic() - t0, worker.restarts)
    if findings:
        print("\nfindings:")
        for f in findings:
            print(f"  {f[0]} {f[1]} [{f[2][:60]}] {f[3]}: {f[4]}: {f[5][:200]}")
    summary = {"seed": args.seed, "scale": args.scale, "table": table,
               "seconds": time.monotonic() - t0, "findings": findings}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    bad = sum(table[f]["TRACEBACK"] + table[f]["HANG"] + table[f]["changed"] for f in table)
    return 1 if bad else 0


def _rmtree(folder: Path) -> None:
    for p in folder.rglob("*"):  # a file made unreadable by a case
        with contextlib.suppress(OSError):
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(folder, ignore_errors=True)


def _print_table(table: dict, seconds: float, restarts: int) -> None:
    cols = ["files", "runs", *OUTCOMES, "raw", "changed"]
    print(f"\n{'family':10s}" + "".join(f"{c:>10s}" for c in cols))
    tot = {c: 0 for c in cols}
    for fam, row in table.items():
        print(f"{fam:10s}" + "".join(f"{row[c]:>10d}" for c in cols))
        for c in cols:
            tot[c] += row[c]
    print(f"{'total':10s}" + "".join(f"{tot[c]:>10d}" for c in cols))
    print(f"({seconds / 60:.1f} min; worker restarts: {restarts}; raw: refusals by an "
          "exception that is not napari-b2u's own; changed: cases where a file other than "
          "their outputs changed)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the default number of cases per family (1500 in all)")
    p.add_argument("--family", action="append", choices=FAMILIES)
    p.add_argument("--only", help="images: one kind (tiff, png, npy, zarr, fifo, fmdd, misc)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a run is a HANG")
    p.add_argument("--max-rss", type=float, default=6.0, help="GiB before a run is a HANG")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/napari-b2u-fuzz")
    p.add_argument("--keep", action="store_true", help="keep every case's folder (else only "
                   "those with findings)")
    p.add_argument("--case", action="append", metavar="FAMILY:N",
                   help="run only this case (e.g. images:32; repeat for several)")
    args = p.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
