#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the CUDA kernels against their reference twins
# (tests/test_ops.py, whose CUDA test skips without a GPU), the ops' and the generator's speed on the
# GPU, and a W+ inversion of a 1024^2 config-F generator there. Logs go to $OUT (default ./gpu_check).
#
#     TORCH_CUDA_ARCH_LIST=9.0 benchmarks/gpu_check.sh      # the arch of your GPU: builds only that
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi -L | tee "$OUT/device.log"
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' \
    | tee -a "$OUT/device.log"
$PY -c 'import stylegan2_ops as o; print(o.status())' 2>&1 | tee "$OUT/build.log"
$PY -m pytest -q -p no:cacheprovider tests/test_ops.py 2>&1 | tee "$OUT/test_ops.log"
$PY benchmarks/bench_ops.py --device cuda 2>&1 | tee "$OUT/bench_ops.log"
$PY benchmarks/bench_generator.py --device cuda 2>&1 | tee "$OUT/bench_generator.log"
$PY - <<'EOF' 2>&1 | tee "$OUT/invert.log"
import time

import torch

import stylerelight as sr
from stylerelight.gan import Generator

torch.manual_seed(0)
G = Generator(img_resolution=1024).eval().cuda()
with torch.no_grad():
    x = G(torch.randn(1, G.z_dim, device="cuda"), truncation_psi=0.7, noise_mode="const").clamp(-1, 1)
for steps in (10, 100):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    ws = sr.invert(G, x, steps=steps, progress=False)
    torch.cuda.synchronize()
    with torch.no_grad():
        y = G.synthesis(ws, noise_mode="const")
    print(f"1024^2 config F (random weights), optimisation {steps} steps on CUDA: "
          f"{time.perf_counter() - t0:.2f} s, PSNR of its own sample {float(sr.invert.psnr(y, x)[0]):.2f} dB")
EOF
