#!/usr/bin/env bash
# Recipe for checkpoints/lightstage_mapper.pt (see train/README.md and the model card).
# Every step resumes where it stopped, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
SR=${SR:-.venv/bin/stylerelight}
PY=${PY:-.venv/bin/python}
TORCHRUN=${TORCHRUN:-.venv/bin/torchrun}
KIMG=${KIMG:-200}

# train train/configs/lightstage_mapper_CFG.yaml in runs/RUN (two processes), with the session-12
# encoder or the one given, on the captures in $OLAT (default data/olat64): train_in RUN CFG [ENCODER]
train_in() {
    $TORCHRUN --nproc_per_node 2 -m stylerelight train mapper --olat "${OLAT:-data/olat64}" \
        --config "train/configs/lightstage_mapper_$2.yaml" --run-dir "runs/$1" --threads 1 \
        --encoder "${3:-runs/enc64_relit/encoder.pt}" "${@:4}"
}
# the same on a copy of runs/FROM's latent bank (its refined sources included): on_copy FROM RUN CFG [ENCODER]
on_copy() {
    mkdir -p "runs/$2"
    [ -e "runs/$2/bank" ] || cp -r "runs/$1/bank" "runs/$2/bank"
    train_in "$2" "$3" "${4:-}"
}

# 1. OLAT captures aligned for the bundled 64^2 generator: 300 training subjects (seeds 0..299)
#    and 30 held-out ones (seeds 1,000,000..), 8 cameras each across yaw +-45, pitch +-20
$SR lightstage render --aligned --subjects 300 --seed 0 --resolution 64 --out data/olat64
$SR lightstage render --aligned --subjects 30 --seed 1000000 --resolution 64 --out data/olat64_heldout
# 2. the mapper and its ablation without geometry conditioning, one thread each (both build the
#    same latent bank in their run folder first: every capture relit under 6 lights, encoded once)
$SR train mapper --olat data/olat64 --config train/configs/lightstage_mapper.yaml --run runs/map64 \
    --threads 1 --kimg "$KIMG"
$SR train mapper --olat data/olat64 --config train/configs/lightstage_mapper_nogeo.yaml --run runs/map64_nogeo \
    --threads 1 --kimg "$KIMG"
# 3. the bundled file: step 2's mapper restarted with a fresh learning rate for 400 kimg on a bank of
#    its own (two processes; the bank about 8 min, training about 25 min on this 2-core CPU)
$TORCHRUN --nproc_per_node 2 -m stylerelight train mapper --olat data/olat64 \
    --config train/configs/lightstage_mapper_finetune.yaml --run-dir runs/map64_ft --threads 1
#    and its ablation restarted the same way on the same bank (the bank is copied, not rebuilt);
#    step 2's ablation must have run for as many kimg as the mapper's (KIMG=486 for the bundled file)
mkdir -p runs/map64_nogeo_ft
[ -e runs/map64_nogeo_ft/bank ] || cp -r runs/map64_ft/bank runs/map64_nogeo_ft/bank
$TORCHRUN --nproc_per_node 2 -m stylerelight train mapper --olat data/olat64 \
    --config train/configs/lightstage_mapper_nogeo_finetune.yaml --run-dir runs/map64_nogeo_ft --threads 1
# 3c. (session 12, the bundled file) step 3's mapper restarted on a bank of the session-12 encoder's codes
#     (train/lightstage_encoder.sh step 3b; bank seed 2; about 12 min for the bank, 24 min training, two processes)
train_in map64_enc2 relit_encoder
#     and its ablation, step 3b's no-geometry mapper restarted the same way on a copy of that bank
on_copy map64_enc2 map64_nogeo_enc2 nogeo_relit_encoder
# 3d. (session 13, the bundled file) step 3c's mapper continued with the image loss on half of each batch
#     at full weight (15 min), then at a smaller learning rate (22 min), on copies of step 3c's bank;
#     and its ablation the same way from step 3c's ablation
for R in map64_img map64_img2 map64_nogeo_img map64_nogeo_img2; do
    mkdir -p runs/$R
    [ -e runs/$R/bank ] || cp -r runs/map64_enc2/bank runs/$R/bank
done
for C in image_ft:map64_img image_ft2:map64_img2 nogeo_image_ft:map64_nogeo_img nogeo_image_ft2:map64_nogeo_img2; do
    train_in "${C##*:}" "${C%%:*}"
done
# 3e. (session 15) pairs exposed by the whole frame (frame.npy, which step 1 adds to older captures):
#     step 3d's mapper and its ablation continued on a frame-exposed bank with step 3c's bank lights
#     (seed 2; the bank about 10 min, 24 min training, two processes; the ablation on a copy);
# 3f. then both continued at a smaller learning rate on a fresh frame-exposed bank (seed 3)
for STEP in frame_exposure:map64_fexp frame_exposure2:map64_fexp2; do
    CFG=${STEP%%:*} RUN=${STEP##*:}
    NOGEO=${RUN/map64_/map64_nogeo_}
    train_in "$RUN" "$CFG"
    on_copy "$RUN" "$NOGEO" "nogeo_$CFG"
done
# 3g. (session 16, the bundled file) step 3f's detail carry, the mapper frozen: the first bank light of
#     every subject and camera refined as Editor.invert refines (BANK/refined; about 16 min with two
#     processes), then the carry alone trained on a copy of step 3f's bank (40 min, two processes);
#     the ablation's carry the same way on a copy of that bank, refined sources included
on_copy map64_fexp2 map64_carry carry
on_copy map64_carry map64_nogeo_carry nogeo_carry
# 3h. (session 17, the bundled file) step 3g's view carry, the network and detail carry frozen: turns
#     under a kept light on the same refined sources (targets: the same bank light from another camera;
#     60 kimg, about 25 min with two processes; the file applies half the carry), on a third copy of
#     the bank, refined sources included
on_copy map64_carry map64_vcarry view_carry
on_copy map64_nogeo_carry map64_nogeo_vcarry nogeo_view_carry  # the ablation's, the same way
# 3j. (session 17, the bundled file) step 3h's detail carry continued on twice the refined sources (the
#     second bank light refined into the same folder, 16 min; then 40 kimg, 16 min, two processes),
#     network and view carry frozen
on_copy map64_vcarry map64_carry2 carry2
# 3k. (session 25, not shipped: ENCODER8=1; the model card) a mapper for the phase-8 encoder
#     (checkpoints/lightstage_encoder.pt): the bundled network continued on a bank of its codes (a), then
#     the bundled detail carry (b; init_carries, with the refined sources of that encoder) and view
#     carry (c) continued on it; about 1 h 45 min with two processes on the first 150 captures
#     (bank_subjects: 150, seeds 0-149)
if [ "${ENCODER8:-0}" = 1 ]; then
    E8=checkpoints/lightstage_encoder.pt
    train_in map64_enc8 encoder8 $E8
    on_copy map64_enc8 map64_enc8_carry encoder8_carry $E8
    on_copy map64_enc8_carry map64_enc8_vcarry encoder8_view_carry $E8
fi
# 3l. (session 26, not shipped: SHADING=1; the model card) the target view's shading map as conditioning
#     (`shading_map: 16`): the bundled network continued 80 kimg with it, and without it as the control,
#     on one bank (seed 5, 3 lights of all 300 captures: the control's run builds it, 6 min); about 35 min
#     for the two runs side by side, two processes each
if [ "${SHADING:-0}" = 1 ]; then
    EM=checkpoints/lightstage_mapper_encoder.pt
    train_in map64_shading_control shading_control $EM
    on_copy map64_shading_control map64_shading_map shading_map $EM
fi
# 3m. (session 26, not shipped: HARD_LIGHTS=1, after step 3l's control has built its bank) more hard,
#     directional fresh targets (`hard_light_weight: 3`), otherwise as step 3l's control; about 22 min
if [ "${HARD_LIGHTS:-0}" = 1 ]; then
    on_copy map64_shading_control map64_hard_lights hard_lights checkpoints/lightstage_mapper_encoder.pt
fi
# 3n. (session 27, not shipped: SUBJECTS600=1, after step 3l's control has built its bank) twice the subjects:
#     300 more captures (seeds 300-599, data/olat64_extra, about 25 min with two processes; data/olat64
#     keeps the 300 every earlier step read), both sets linked in data/olat64_600, and step 3l's control
#     continued on them (its bank copied, the new subjects' shards added: 6 min; training about 20 min)
if [ "${SUBJECTS600:-0}" = 1 ]; then
    $SR lightstage render --aligned --subjects 300 --seed 300 --resolution 64 --out data/olat64_extra
    mkdir -p data/olat64_600
    for d in data/olat64/subject_* data/olat64_extra/subject_*; do
        [ -e "data/olat64_600/${d##*/}" ] || ln -s "$PWD/$d" "data/olat64_600/${d##*/}"
    done
    OLAT=data/olat64_600 on_copy map64_shading_control map64_subjects600 subjects600 \
        checkpoints/lightstage_mapper_encoder.pt
fi
# 3o. (session 28, not shipped: CODE_MIX=1, after step 3l's control has built its bank) the whole-code
#     branch (`code_mix: 256`: every per-layer MLP also reads the whole W+), otherwise as step 3l's
#     control, on a copy of its bank; about 20 min
if [ "${CODE_MIX:-0}" = 1 ]; then
    on_copy map64_shading_control map64_code_mix code_mix checkpoints/lightstage_mapper_encoder.pt
fi
# 3p. (session 28, not shipped: ENCODER8_IMAGE=1, after step 3k) step 3k-a's phase-8 network continued on a
#     fresh bank of phase-8 codes over all 300 captures (seed 8, 3 lights: 6 min), the image loss on every
#     pair, a quarter of the latent loss; 80 kimg, about 40 min with two processes
if [ "${ENCODER8_IMAGE:-0}" = 1 ]; then
    train_in map64_enc8_img encoder8_image checkpoints/lightstage_encoder.pt
    # b, c: its detail carry (from step 3k's, about 19 min) and view carry (about 12 min) on step 3k-b's refined sources
    on_copy map64_enc8_carry map64_enc8_img_carry encoder8_image_carry checkpoints/lightstage_encoder.pt
    on_copy map64_enc8_img_carry map64_enc8_img_vcarry encoder8_image_view_carry checkpoints/lightstage_encoder.pt
fi
# 3q. (session 29, not shipped: ENCODER8_DIRECT=1; needs only step 1 and the bundled files, so a fresh machine
#     can run it) the phase-8 network straight from the bundled file on step 3p's bank recipe (seed 8, 3 lights
#     of all 300 captures: 6 min), identity pairs' latent weight 3; 72 kimg, about 35 min with two processes;
#     b: its detail carry from the bundled file's, on the first bank light of the first 150 captures refined
#     with the phase-8 encoder (1,200 sources, about 12 min; then 20 kimg); c: its view carry, 12 kimg
if [ "${ENCODER8_DIRECT:-0}" = 1 ]; then
    E8=checkpoints/lightstage_encoder.pt
    train_in map64_enc8_direct encoder8_direct $E8
    on_copy map64_enc8_direct map64_enc8_direct_carry encoder8_direct_carry $E8
    on_copy map64_enc8_direct_carry map64_enc8_direct_vcarry encoder8_direct_view_carry $E8
    # session 29 then resumed step 3q-a's network to 112 kimg (a larger --kimg on the same run folder,
    # stopped at a snapshot) and kept it, with step 3q-c's carries, in the repository as a warm start
    # (float16, 14 MB; runs/ does not outlive a machine): train/warm/lightstage_mapper_phase8.pt, which a
    # later run names as init_mapper (and init_carries)
    train_in map64_enc8_direct encoder8_direct $E8 --kimg 112
    mkdir -p train/warm
    [ -e train/warm/lightstage_mapper_phase8.pt ] || $PY -c "import sys; from stylerelight.mapper import load_mapper, save_mapper
from stylerelight.mapper.model import attach_carries
M = attach_carries(load_mapper(sys.argv[1]), load_mapper(sys.argv[2]))
save_mapper(M.half(), sys.argv[3])" runs/map64_enc8_direct/mapper.pt runs/map64_enc8_direct_vcarry/mapper.pt \
        train/warm/lightstage_mapper_phase8.pt
    # session 30 (not shipped, the warm file not replaced): the network on to 176 kimg (33 min; its training
    # PSNR flat from 112 kimg), then its carries continued from step 3q-c's (12 + 8 kimg, 11 min), with the
    # light blend chosen for it in the view carry's config; level with the bundled file on validation
    train_in map64_enc8_direct encoder8_direct $E8 --kimg 176
    on_copy map64_enc8_direct_carry map64_enc8_direct2_carry encoder8_direct2_carry $E8
    on_copy map64_enc8_direct_vcarry map64_enc8_direct2_vcarry encoder8_direct2_view_carry $E8
fi
# 4. evaluation against Mitsuba ground truth on held-out subjects, and shipping
cp runs/map64_carry2/mapper.pt checkpoints/lightstage_mapper.pt
# 4b. (session 31; bundled first, then replaced by 4c's) a re-render read (the Editor's "guided" method;
#     docs/mapper.md) of encoder-only re-render inversions: the eval's edits of
#     201 training subjects (seeds 0-200) and 16 validation ones (4,000,000-4,000,015) with encoder-only
#     inversions of the re-renders (about 22 s a subject a process; ~40 min with two), then 6 epochs (~10 min)
mkdir -p data/read0
$PY benchmarks/fuse_sweep.py --rr-steps 0 --mixes 0 --offset 0 --subjects 100 --threads 1 --codes data/read0/tr_a.npz &
$PY benchmarks/fuse_sweep.py --rr-steps 0 --mixes 0 --offset 100 --subjects 101 --threads 1 --codes data/read0/tr_b.npz
wait
$PY benchmarks/fuse_sweep.py --rr-steps 0 --mixes 0 --offset 4000000 --subjects 16 --threads 2 --codes data/read0/val.npz
$PY -m stylerelight train read --pairs data/read0/tr_a.npz,data/read0/tr_b.npz --val data/read0/val.npz \
    --mapper checkpoints/lightstage_mapper.pt -o runs/read0/mapper_read.pt --mix 0.4 --epochs 6 --threads 1 --force
# 4c. the bundled file's read (session 32): re-renders inverted with 8 L-BFGS steps, 40 + 40 training subjects
#     (37 s a subject a process), the 16 validation ones, then 5 epochs from the fused edit's mix 0.6 (on
#     validation epochs 4-5 were its best; 8 overfit). READ_STEPS=4: session 31's read (bundled until session 32,
#     8 epochs); READ_STEPS=20: the one measured and not shipped (48 + 48 subjects, 10 epochs)
K=${READ_STEPS:-8}
if [ "$K" = 4 ] || [ "$K" = 8 ] || [ "$K" = 20 ]; then
    N=$([ "$K" = 20 ] && echo 48 || echo 40); D=data/read$K
    EP=$(case $K in 4) echo 8;; 8) echo 5;; *) echo 10;; esac)
    mkdir -p $D
    $PY benchmarks/fuse_sweep.py --rr-steps $K --mixes 0 --offset 0 --subjects $N --threads 1 --codes $D/tr_a.npz &
    $PY benchmarks/fuse_sweep.py --rr-steps $K --mixes 0 --offset 100 --subjects $N --threads 1 --codes $D/tr_b.npz
    wait
    $PY benchmarks/fuse_sweep.py --rr-steps $K --mixes 0 --offset 4000000 --subjects 8 --threads 1 --codes $D/val_a.npz &
    $PY benchmarks/fuse_sweep.py --rr-steps $K --mixes 0 --offset 4000008 --subjects 8 --threads 1 --codes $D/val_b.npz
    wait
    $PY -m stylerelight train read --pairs $D/tr_a.npz,$D/tr_b.npz --val $D/val_a.npz,$D/val_b.npz --steps $K \
        --mapper checkpoints/lightstage_mapper.pt -o runs/read$K/mapper_read.pt --mix 0.6 --epochs $EP --threads 2 --force
    if [ "$K" = 8 ]; then cp runs/read8/mapper_read.pt checkpoints/lightstage_mapper.pt; fi
fi
$PY benchmarks/eval_edit.py --subjects 6 --ablation runs/map64_nogeo_vcarry/mapper.pt \
    --json checkpoints/lightstage_mapper_eval.json
# 5. optional (REFINED=1; measured worse, not the bundled file): fine-tune the step-2 mapper on a latent bank of
#    refined codes (encoder + 20 L-BFGS steps, as Editor.invert) of the first 160 subjects; the bank
#    alone is about 45 min with two processes on this 2-core CPU (see the model card's diagnosis)
if [ "${REFINED:-0}" = 1 ]; then
    $TORCHRUN --nproc_per_node 2 -m stylerelight train mapper --olat data/olat64 \
        --config train/configs/lightstage_mapper_refined.yaml --run-dir runs/map64_ref --threads 1
fi
