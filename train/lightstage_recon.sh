#!/usr/bin/env bash
# Recipe for checkpoints/lightstage_recon.pt, the reconstruction's fast path (see its model card).
set -euo pipefail
cd "$(dirname "$0")/.."
SR=${SR:-.venv/bin/stylerelight}
PY=${PY:-.venv/bin/python}
KIMG=${KIMG:-100}

# 1. renders with known parameters: the first 4,000 images of the generator's training recipe, and
#    the held-out sets (unseen subjects and env maps; the second under the held-out 'hard' kind)
$SR lightstage build-dataset --out data/lightstage64 --images 4000 --subjects 3000 --resolution 64 --seed 0 --spp 8
$SR lightstage build-dataset --out data/heldout --images 50 --seed 777 --spp 8 --subject-offset 1000000
$SR lightstage build-dataset --out data/heldout_hard --images 50 --seed 778 --spp 8 --subject-offset 2000000 \
    --env-kinds hard
# 2. training on one thread (resumes from runs/recon64/snapshot.pt); targets are cached in data/*/recon_targets.npz
$SR train recon --config train/configs/lightstage_recon.yaml --run runs/recon64 --threads 1 --kimg "$KIMG"
# 3. ship and measure
cp runs/recon64/recon.pt checkpoints/lightstage_recon.pt
$PY benchmarks/eval_recon.py --heldout data/heldout --heldout data/heldout_hard --images 25 \
    --json checkpoints/lightstage_recon_eval.json
