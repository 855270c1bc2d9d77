import numpy as np
import pytest

from napari_b2u.sample_data import fmdd_like_stack

#: a network small enough for CPU tests: 16 wide, 2 levels (inputs multiple of 4); the
#: classical floor off, so that these few steps test the network itself (tests/test_floor.py
#: tests the floor)
TINY = dict(width=16, depth=2, patch_size=32, batch_size=4, device="cpu", progress=False,
            compile=False, floor="none")
#: the same for api.make_trainer (which shows no progress bar)
TINY_T = {k: v for k, v in TINY.items() if k != "progress"}


@pytest.fixture(scope="session")
def small_stack():
    """(8, 64, 64) uint8 noisy frames and their clean image (0..255)."""
    return fmdd_like_stack(8, (64, 64), seed=3)


@pytest.fixture(scope="session")
def tiny_model(small_stack):
    from napari_b2u import api

    noisy, _ = small_stack
    # each frame alone: the inference tests denoise single frames and crops of the stack
    return api.train_stack(noisy, steps=10, seed=0, context=0, **TINY)


def mean_psnr(stack, clean):
    from napari_b2u.metrics import evaluate

    return float(np.mean([evaluate(f, clean)[0] for f in stack]))


# ---- helpers shared by the safety and fuzz-regression tests -------------------------------------
def refused(capsys, argv, *words) -> str:
    """``napari-b2u argv`` exits 2 with one line of message holding ``words``, no traceback."""
    from napari_b2u.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-b2u: error: "), err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def model_file(tiny_model, tmp_path):
    return tiny_model.save(tmp_path / "m.b2u")


#: loads each path given and prints LOADED or REFUSED <message>, a line each
_LOAD_EACH = ("import sys\nfrom napari_b2u import api\nfrom napari_b2u.errors import InputError\n"
              "for p in sys.argv[1:]:\n    try:\n        api.load(p)\n        print('LOADED')\n"
              "    except InputError as e:\n        print('REFUSED', e)\n")


def load_each_in_a_subprocess(paths) -> tuple[list[str], str]:
    """``api.load`` of each path in a fresh interpreter (a regression that hangs or exhausts
    memory fails on the timeout instead of taking the suite with it): its lines, and all it
    printed for a failure's message."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _LOAD_EACH, *map(str, paths)],
                         capture_output=True, text=True, timeout=120)
    return run.stdout.splitlines(), run.stdout + run.stderr
