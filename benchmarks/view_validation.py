"""The default edit's view changes on validation subjects (not the eval's): how the Editor's view
path was chosen (docs/editing.md). Per subject the eval's recipe (`eval_edit.subject_case`): the
source under its own light, turned by yaw +-15, +-30 and pitch +-10 with the light kept (the
source's estimate), against Mitsuba's render of the turned head; mean PSNR per group.

    python benchmarks/view_validation.py --subjects 8 --offset 4000000
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_edit import metrics, subject_case  # noqa: E402

from stylerelight.edit import REFINE_STEPS, EditError, Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402

TURNS = [(15, 0), (-15, 0), (30, 0), (-30, 0), (0, 10), (0, -10)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--offset", type=int, default=4_000_000, help="first validation subject seed")
    ap.add_argument("--mapper", default=None, help="default: the bundled mapper")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=REFINE_STEPS, help="refinement steps of the inversion")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ed = Editor.from_pretrained(mapper=args.mapper)
    res: dict[str, list[float]] = {}
    for i in range(args.subjects):
        seed = args.offset + i
        subj, cam, env_s, _ = subject_case(seed, ed.stage)
        lat = ed.invert(render_portrait(subj, env_s, cam, ed.resolution, spp=64, seed=seed), aligned=True,
                        steps=args.steps)
        for dy, dp in TURNS:
            try:
                img = gan_to_uint8(ed.relight(lat, None, yaw=dy, pitch=dp))[0]
            except EditError:  # the estimated pose put the target outside the trained range
                continue
            tgt = render_portrait(subj, env_s, Camera(yaw=cam.yaw + dy, pitch=cam.pitch + dp), ed.resolution,
                                  spp=64, seed=seed + 1)
            group = f"yaw +-{abs(dy)}" if dy else "pitch +-10"
            res.setdefault(group, []).append(metrics(img, tgt)[0])
        print(f"subject {i + 1}/{args.subjects} done", flush=True)
    for g, v in res.items():
        print(f"{g:12s} {np.mean(v):.2f} dB ({len(v)})")


if __name__ == "__main__":
    main()
