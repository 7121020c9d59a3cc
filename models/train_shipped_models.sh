#!/usr/bin/env bash
# Reproduce the shipped `mri` and `ct` models from a clean checkout (CPU, 2 cores: the two runs
# go side by side, one thread each). Data: ../shared/data (see its README for licenses).
# Evaluation data (never trained on) comes from benchmarks/prepare_eval_data.py; the MRI
# validation crop (Colin27, Debian package mricron-data) from models/prepare_validation.py.
#
# Two stages per model, both recorded in the model cards:
#  1. warm-up: G_X alone on the self-supervised paired term (HR-plane patches degraded like thick
#     slices, thickness ratio drawn per slice from a range), ~40 pairs/s on one thread;
#  2. the paper's CycleGAN (adversarial + cycle + identity + gradient mapping, the paper's loss
#     weights) continues from stage 1 with the paired and data-consistency safeguards on.
# The MRI model ships the epoch with the best validation PSNR; CT has no validation volume
# (the only isotropic CT is the evaluation volume), see models/cards/ct.md for its rule.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CLADE_SHARED_DATA:-../shared/data}
WARMUP=${WARMUP:-12}
COLIN27=/usr/share/mricron/templates/ch2.nii.gz
if [ ! -f "$COLIN27" ]; then
    echo "The MRI validation volume (Colin27, $COLIN27) is missing: install Debian's" \
         "mricron-data (apt-get install mricron-data), then rerun." >&2
    exit 1
fi
GAN_EPOCHS=${GAN_EPOCHS:-1}
python benchmarks/prepare_eval_data.py
python models/prepare_validation.py runs/eval-data runs/validation
# Common recipe: the paper's architecture (64 filters, 6 blocks), Adam 2e-4 (0.5, 0.999),
# batch 4, plus the fidelity safeguards: residual generator (fixed gain 0.3), paired term
# (weight 20), resize-convolution upsampling.
COMMON=(--batch-size 4 --max-patches 3000 --residual --lambda-paired 20 --upsample resize
        --device cpu --seed 0 --checkpoint-minutes 10 --quiet)
MRI=("$DATA/pelvis_mr_t2_0p5x0p5x3mm_monai.nii.gz"
     "$DATA/mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain1.nrrd"
     "$DATA/mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain2.nrrd")
VAL=(--val runs/validation/colin27_5mm_thick_crop.nii.gz
     --val-reference runs/validation/colin27_iso_crop.nii.gz --val-stride 24 --best-metric psnr)

# Stage 1 (warm-up epochs only).
OMP_NUM_THREADS=1 python -m CLADE train "${MRI[@]}" --out runs/train-mri --preset mri \
    "${COMMON[@]}" --patches-per-slice 8 --paired-ratios 2 8 "${VAL[@]}" \
    --epochs "$WARMUP" --warmup-epochs "$WARMUP" > runs/train-mri.log 2>&1 &
# CT: a fixed HU window (bone and contrast are not clipped as a percentile window would); the
# one CT volume has 2 mm slices (ratio 2), so the paired term draws ratios 2-6 to teach the
# thicker slices the model meets; 64 patches per HR slice because it has only 41 of them.
OMP_NUM_THREADS=1 python -m CLADE train "$DATA/abdomen_ct_native_20sl_totalseg.nii.gz" \
    --out runs/train-ct --preset ct "${COMMON[@]}" --patches-per-slice 64 --paired-ratios 2 6 \
    --window -1024 2048 --epochs "$WARMUP" --warmup-epochs "$WARMUP" > runs/train-ct.log 2>&1 &
wait
for R in mri ct; do cp runs/train-$R/model_final.pt runs/train-$R/model_warmup.pt; done

# Stage 2 (the CycleGAN epochs, resumed from stage 1, data consistency on). Validation decides
# whether they ship: they did not (the gradient-mapping term pulled G_X back to the identity, see
# models/cards/mri.md), so model_best.pt is the last warm-up epoch.
TOTAL=$((WARMUP + GAN_EPOCHS))
OMP_NUM_THREADS=1 python -m CLADE train --out runs/train-mri --resume --epochs "$TOTAL" \
    --lambda-dc 10 > runs/train-mri-gan.log 2>&1 &
OMP_NUM_THREADS=1 python -m CLADE train --out runs/train-ct --resume --epochs "$TOTAL" \
    --lambda-dc 10 > runs/train-ct-gan.log 2>&1 &
wait

# Ship: MRI by validation PSNR; CT takes the phase MRI's validation chose (no CT validation
# volume exists besides the evaluation volume).
python models/ship_model.py runs/train-mri/model_best.pt mri --card models/cards/mri.md \
    --description "Brain and pelvic MRI, stride 12. Trained on the self-supervised paired term (HR-plane patches degraded like thick slices); on a 1 mm MNI T1 simulated at 5 mm: +2.1 dB PSNR over cubic spline and sharper edges (models/cards/mri.md)."
# CT ships with stride 12: 4x fewer patches than the preset's 6 for -0.05 dB (models/cards/ct.md).
python models/ship_model.py runs/train-ct/model_warmup.pt ct --card models/cards/ct.md --stride 12 \
    --description "Abdominal CT, HU window -1024..2048, stride 12. Trained on the self-supervised paired term; on a 3 mm CT simulated at 9 and 12 mm: +0.7 dB PSNR over cubic spline and sharper edges (models/cards/ct.md)."

# Quality tables of the model cards (one thread each, side by side).
OMP_NUM_THREADS=1 python benchmarks/model_quality.py --model mri --volume mri-mni152-5mm \
    --no-eclare --out runs/q-ship-mri > runs/q-ship-mri.log 2>&1 &
OMP_NUM_THREADS=1 python benchmarks/model_quality.py --model ct --volume ct-abdomen-9mm \
    --volume ct-abdomen-12mm --no-eclare --out runs/q-ship-ct > runs/q-ship-ct.log 2>&1 &
wait
