"""Generator forward time per image on this machine (CPU by default).

Batch 1 and 8, for a 64^2 small config and for FFHQ config F at 1024^2 (random weights),
with the ops implementation in use printed.

    python benchmarks/bench_generator.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import timeit  # noqa: E402

import stylegan2_ops as ops  # noqa: E402
from stylerelight.gan import Generator  # noqa: E402

CONFIGS = {
    "64^2 small": dict(img_resolution=64, z_dim=128, w_dim=128, channel_base=4096, channel_max=128),
    "1024^2 FFHQ config F": dict(img_resolution=1024),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="64^2 only")
    args = ap.parse_args()
    st = ops.status()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"ops impl: {st['impl']}{'' if st['impl'] == 'compiled' else ' (' + st['reason'] + ')'}")
    print(f"{'config':>22} {'params':>9} {'batch':>6} {'ms/batch':>10} {'ms/image':>10} {'img/s':>8}")
    for name, kw in CONFIGS.items():
        if args.quick and "1024" in name:
            continue
        torch.manual_seed(0)
        G = Generator(**kw).eval().to(args.device)
        n_params = sum(p.numel() for p in G.parameters())
        for batch in (1, 8):
            z = torch.randn(batch, G.z_dim, device=args.device)
            with torch.no_grad():
                def run():
                    G(z)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                t = timeit(run, repeat=3, min_time=0.0)
            print(f"{name:>22} {n_params / 1e6:8.1f}M {batch:6d} {t * 1e3:10.1f} {t / batch * 1e3:10.1f} "
                  f"{batch / t:8.2f}")


if __name__ == "__main__":
    main()
