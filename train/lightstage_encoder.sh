#!/usr/bin/env bash
# Recipe for checkpoints/lightstage_encoder.pt (see train/README.md and the model card).
# Every step resumes where it stopped, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
SR=${SR:-.venv/bin/stylerelight}
PY=${PY:-.venv/bin/python}
KIMG1=${KIMG1:-9}    # phase 1: single-pass encoder
KIMG=${KIMG:-65}     # phase 2: iterative encoder warm-started from phase 1

# 1. real renders for the image losses: the first 4,000 images of the generator's training recipe
#    (image i depends only on (seed, i), so these equal images 0..3999 of data/lightstage64)
$SR lightstage build-dataset --out data/lightstage64 --images 4000 --subjects 3000 --resolution 64 --seed 0 --spp 8
# 2. held-out sets (unseen subjects and env maps; the second under the held-out 'hard' env kind)
$SR lightstage build-dataset --out data/heldout --images 50 --seed 777 --spp 8 --subject-offset 1000000
$SR lightstage build-dataset --out data/heldout_hard --images 50 --seed 778 --spp 8 --subject-offset 2000000 \
    --env-kinds hard
# 3. training on one thread, two phases (each resumes from its run folder's snapshot.pt)
$SR train encoder --config train/configs/lightstage_encoder_single.yaml --run runs/enc64_single --threads 1 \
    --kimg "$KIMG1"
$SR train encoder --config train/configs/lightstage_encoder.yaml --run runs/enc64 --threads 1 --kimg "$KIMG"
# 3b. (session 12, the bundled file) phase 2's encoder continued on relit OLAT captures beside the renders,
#     two processes, starting from phase 2's runs/enc64/encoder.pt (the bundled file before session 12);
#     needs data/olat64 (step 1 of train/lightstage_mapper.sh). 80 kimg in 47 min.
TORCHRUN=${TORCHRUN:-.venv/bin/torchrun}
KIMG3=${KIMG3:-80}
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_relit.yaml \
    --run-dir runs/enc64_relit --threads 1 --kimg "$KIMG3"
# 4. evaluation and shipping
cp runs/enc64_relit/encoder.pt checkpoints/lightstage_encoder.pt
$PY benchmarks/eval_inversion.py --heldout data/heldout --heldout data/heldout_hard \
    --json checkpoints/lightstage_encoder_eval.json --examples checkpoints/lightstage_encoder_examples.png
