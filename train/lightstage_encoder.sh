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
# 3c. (session 20, the bundled file) teacher codes: every one of 6,000 renders refined from the
#     session-12 encoder's start (encoder + 20 steps), then that encoder continued with a latent loss
#     on them and on crossed-over, scaled copies of them as known-code samples (docs/encoders.md).
#     The session-12 encoder stays the mapper's (checkpoints/lightstage_mapper_encoder.pt).
#     About 3.5 h on two cores: renders 12 min, codes 34 min, training 160 kimg.
$SR lightstage build-dataset --out data/lightstage64 --images 8000 --subjects 3000 --resolution 64 --seed 0 \
    --spp 8 --workers 2
mkdir -p data/enc_teacher/images
for i in $(seq -f %07g 0 5999); do
    [ -e data/enc_teacher/images/$i.png ] || ln -s ../../lightstage64/images/$i.png data/enc_teacher/images/$i.png
done
$TORCHRUN --nproc_per_node 2 -m stylerelight train teacher-codes --data data/enc_teacher --threads 1 \
    --encoder runs/enc64_relit/encoder.pt
$SR train encoder --config train/configs/lightstage_encoder_teacher.yaml --run runs/enc64_teacher --threads 1
$SR train encoder --config train/configs/lightstage_encoder_teacher2.yaml --run runs/enc64_teacher2 --threads 1
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_teacher3.yaml \
    --run-dir runs/enc64_teacher3 --threads 1
$SR train encoder --config train/configs/lightstage_encoder_codes_scaled.yaml --run runs/enc64_codes_scaled --threads 1
for C in codes2 codes3; do
    $TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_$C.yaml \
        --run-dir runs/enc64_$C --threads 1
done
# 3d. (session 21) codes3 continued with relit OLAT captures beside the teacher-coded renders, half of
#     the relighting the stage's own lights (olat_stage_lights). Needs data/olat64 (here its first 150
#     subjects: two `lightstage render --aligned` processes, seeds 0-74 and 75-149, 10 min). Session 21's
#     run, on a fresh machine, had step 3c's codes3 encoder (the bundled file, copied) and the teacher
#     codes of only the first 4,000 renders in data/enc_teacher (39 min with two processes).
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_stage_lights.yaml \
    --run-dir runs/enc64_stage_lights --threads 1
#     (its control, not shipped: lightstage_encoder_stage_lights_control.yaml, the same without the stage lights)
# 3e. (session 22) step 3d continued with a fresh learning rate and more stage lights; stopped at 36 kimg
#     (the snapshot's encoder.pt) to give step 3f its start.
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_stage_lights2.yaml \
    --run-dir runs/enc64_stage_lights2 --threads 1 --kimg 36
# 3f. (session 22) teacher codes for relit captures too: 2,000 captures relit once (three in four under
#     the stage's own lights; 30 s), refined from step 3d's encoder (19 min with two processes), then
#     trained beside the teacher-coded renders.
$PY -m stylerelight lightstage export-relit --olat data/olat64 --out data/enc_stage --count 2000 \
    --stage-lights 0.75 --seed 7
$TORCHRUN --nproc_per_node 2 -m stylerelight train teacher-codes --data data/enc_stage --threads 1 \
    --encoder runs/enc64_stage_lights/encoder.pt   # step 3d, session 21's bundled file
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_stage_teacher.yaml \
    --run-dir runs/enc64_stage_teacher --threads 1
# 3g. (session 23) 3,000 more stage-lit captures (another draw: seed 8), refined from step 3f's start
#     (29 min with two processes), then step 3f continued on all three folders, stopped at 33 kimg (34 min)
#     to give step 3h its start.
$PY -m stylerelight lightstage export-relit --olat data/olat64 --out data/enc_stage2 --count 3000 \
    --stage-lights 0.75 --seed 8
$TORCHRUN --nproc_per_node 2 -m stylerelight train teacher-codes --data data/enc_stage2 --threads 1 \
    --encoder runs/enc64_stage_teacher/encoder.pt   # step 3f, session 22's bundled file
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_stage_teacher2.yaml \
    --run-dir runs/enc64_stage_teacher2 --threads 1 --kimg 33
# 3h. (session 23, bundled in session 23) step 3g continued with batches leaning to the stage's lights
#     (fewer generator samples, more relit captures, more of them under stage lights): 28 kimg, 29 min.
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_stage_hard.yaml \
    --run-dir runs/enc64_stage_hard --threads 1
# 3j. (session 24, the bundled file) step 3h continued with the pixel loss weighted as a PSNR target:
#     l2_weight 20 (19 kimg), 100 (31 kimg), 300 (40 kimg); each config stops where its run stopped.
#     90 min in all with two processes.
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_pixel.yaml \
    --run-dir runs/enc64_pixel --threads 1
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_pixel2.yaml \
    --run-dir runs/enc64_pixel2 --threads 1
$TORCHRUN --nproc_per_node 2 -m stylerelight train encoder --config train/configs/lightstage_encoder_pixel3.yaml \
    --run-dir runs/enc64_pixel3 --threads 1
# 4. evaluation and shipping
cp runs/enc64_relit/encoder.pt checkpoints/lightstage_mapper_encoder.pt
cp runs/enc64_pixel3/encoder.pt checkpoints/lightstage_encoder.pt
$PY benchmarks/eval_inversion.py --heldout data/heldout --heldout data/heldout_hard --images 25 \
    --json checkpoints/lightstage_encoder_eval.json --examples checkpoints/lightstage_encoder_examples.png
