"""The Editor on a CUDA GPU against the CPU, in one run: the same aligned face inverted and edited
(relight, turn, both) by the bundled models on each, the edited images compared, and the time per
edit on each.

    python benchmarks/gpu_edit_check.py --face FACE.png [--probe-tables FILE]

FACE: an aligned 64^2 crop (a render). --probe-tables: as in gpu_train_check.py, for a GPU machine
without Mitsuba.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu_train_check import use_probe_tables  # noqa: E402

from stylerelight.edit import Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.lighting import disk_light  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--face", required=True)
    ap.add_argument("--probe-tables", default=None)
    ap.add_argument("--gpu", default="cuda", help="cpu: a dry run without a GPU")
    args = ap.parse_args()
    if args.probe_tables:
        use_probe_tables(args.probe_tables)
    face = np.asarray(Image.open(args.face).convert("RGB"))
    side = disk_light([1.0, 0.3, 0.6], angle_deg=15.0, fill=0.05)
    edits = {"relight": (side, 0.0), "turn 15": (None, 15.0), "relight + turn -10": (side, -10.0)}
    out = {}
    for dev in ("cpu", args.gpu):
        ed = Editor.from_pretrained(dev)
        t0 = time.perf_counter()
        lat = ed.invert(face, aligned=True)
        t_inv = time.perf_counter() - t0
        imgs = {k: gan_to_uint8(ed.relight(lat, light, yaw=yaw))[0] for k, (light, yaw) in edits.items()}
        t0 = time.perf_counter()
        for _ in range(10):
            ed.relight(lat, side, yaw=5.0)
        if dev != "cpu":
            torch.cuda.synchronize()
        print(f"{dev}: invert {t_inv:.2f} s, an edit {(time.perf_counter() - t0) / 10 * 1e3:.1f} ms")
        out[dev] = (lat, imgs)
    (la, ia), (lb, ib) = out["cpu"], out[args.gpu]
    print(f"inverted code, GPU vs CPU: max |diff| {float((la.ws - lb.ws.cpu()).abs().max()):.2e}")
    for k in edits:
        d = np.abs(ia[k].astype(int) - ib[k].astype(int))
        print(f"{k}: GPU vs CPU image max |diff| {d.max()} (of 255), mean {d.mean():.3f}")


if __name__ == "__main__":
    main()
