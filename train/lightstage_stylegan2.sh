#!/usr/bin/env bash
# Recipe for checkpoints/lightstage_stylegan2.pt (see train/README.md and the model card).
# Every step resumes where it stopped, so the script can be re-run after an interruption.
# Training is long on a 2-core CPU (about 43 kimg/hour): stop it any time with Ctrl-C and
# re-run; KIMG=<n> sets where this run stops.
set -euo pipefail
cd "$(dirname "$0")/.."
SR=${SR:-.venv/bin/stylerelight}
PY=${PY:-.venv/bin/python}
KIMG=${KIMG:-2000}

# 1. training data: 30,000 portraits of 3,000 subjects (about 1 hour at spp 8)
$SR lightstage build-dataset --out data/lightstage64 --images 30000 --subjects 3000 --resolution 64 --seed 0 --spp 8
# 2. held-out sets for the evaluation: unseen subjects and env maps; the second under the
#    'hard' env kind that training never draws
$SR lightstage build-dataset --out data/heldout --images 50 --seed 777 --spp 8 --subject-offset 1000000
$SR lightstage build-dataset --out data/heldout_hard --images 50 --seed 778 --spp 8 --subject-offset 2000000 \
    --env-kinds hard
# 3. training (resumes from runs/ls64/snapshot.pt). The shipped run was warm-started from the
#    pilot run (28 kimg on data/ls64_pilot, see train/README.md) by copying runs/ls64_pilot to runs/ls64.
$SR train gan --data data/lightstage64 --config train/configs/lightstage64.yaml --run runs/ls64 --kimg "$KIMG"
# 4. evaluation and shipping
$PY benchmarks/eval_generator.py -c runs/ls64/G_ema.pt --train data/lightstage64 \
    --heldout data/heldout --heldout data/heldout_hard --fixed-noise --steps 200 \
    --json runs/ls64/eval.json --examples checkpoints/lightstage_stylegan2_inversions.png
cp runs/ls64/G_ema.pt checkpoints/lightstage_stylegan2.pt
$SR generate -c checkpoints/lightstage_stylegan2.pt --seeds 0-31 --cols 8 -o checkpoints/lightstage_stylegan2_samples.png --force
$PY train/progress_grid.py runs/ls64/tb -o checkpoints/lightstage_stylegan2_progress.png --kimg 20,60,100,140
