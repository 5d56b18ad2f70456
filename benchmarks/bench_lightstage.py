"""Virtual light stage speed: one subject's OLAT capture (150 lights x 8 cameras at 64^2) and the
dataset builder's throughput (images/s), measured here.

    python benchmarks/bench_lightstage.py [--images 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stylerelight.lighting import LightStage  # noqa: E402
from stylerelight.synth import default_rig, render_olat, sample_subject  # noqa: E402
from stylerelight.synth.dataset import build_dataset  # noqa: E402
from stylerelight.synth.mitsuba_setup import set_variant  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()
    print(f"Mitsuba variant: {set_variant()}, cores: {os.cpu_count()}")
    stage, rig = LightStage.default(), default_rig()
    subj = sample_subject(0)
    render_olat(subj, stage, rig[:1], 16, spp=1)  # JIT warm-up
    for spp in (1, 4):
        t = time.perf_counter()
        cap = render_olat(subj, stage, rig, args.resolution, spp=spp)
        dt = time.perf_counter() - t
        print(f"OLAT capture {len(rig)} cameras x {stage.num_lights} lights at {args.resolution}^2, spp {spp}: "
              f"{dt:.1f} s ({cap.olat.shape[0] * cap.olat.shape[1] / dt:.0f} OLAT images/s)")
    for workers in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            build_dataset(d, args.images, args.resolution, seed=0, spp=32, workers=workers, progress=False)
            dt = time.perf_counter() - t
        print(f"build-dataset {args.images} portraits at {args.resolution}^2 (spp 32), {workers} worker(s): "
              f"{args.images / dt:.2f} images/s")


if __name__ == "__main__":
    main()
