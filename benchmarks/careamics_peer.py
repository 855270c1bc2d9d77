"""Run CAREamics Noise2Void as a benchmark peer, inside its own venv (see
../shared/tools/install-careamics-peer.sh): train on a stack for a wall-clock budget, denoise it.

Called by benchmarks/real.py as ``<peer python> careamics_peer.py IN.npy OUT.npy AXES SECONDS``;
writes OUT.npy (float32, the input's shape) and OUT.json (training seconds, steps, inference
seconds). Settings: CAREamics' own N2V defaults from ``create_n2v_config`` (patch 64, batch 16,
the three flip/rotation augmentations), stopped by the budget like napari-b2u.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    src, dst, axes, budget = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    os.chdir(tempfile.mkdtemp(prefix="careamics-"))  # its work dir; and away from site-packages
    from careamics import CAREamist
    from careamics.config import create_n2v_config
    from lightning.pytorch.callbacks import Callback

    class Budget(Callback):
        def __init__(self):
            self.t0 = None
            self.steps = 0

        def on_train_start(self, trainer, module):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.steps += 1
            if time.perf_counter() - self.t0 >= budget:
                trainer.should_stop = True

    arr = np.load(src).astype(np.float32)
    cfg = create_n2v_config(experiment_name="peer", data_type="array", axes=axes,
                            patch_size=[64, 64], batch_size=16, num_epochs=100_000)
    stop = Budget()
    peer = CAREamist(cfg, work_dir=".", callbacks=[stop], enable_progress_bar=False)
    t = time.perf_counter()
    peer.train(train_data=arr)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    h, w = arr.shape[-2:]
    tile = None if (h % 4 == 0 and w % 4 == 0 and max(h, w) <= 1024) else (256, 256)
    pred, _ = peer.predict(arr, axes=axes, tile_size=tile)
    out = np.concatenate([np.asarray(p) for p in pred], 0) if len(pred) > 1 else np.asarray(
        pred[0])
    out = out.reshape(arr.shape).astype(np.float32)
    t_inf = time.perf_counter() - t
    np.save(dst, out)
    with open(dst[:-4] + ".json", "w") as fh:
        json.dump({"train_s": t_train, "steps": stop.steps, "infer_s": t_inf}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
