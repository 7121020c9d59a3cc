#!/usr/bin/env bash
# Reproduce the shipped `mri` and `ct` models from a clean checkout (CPU, 2 cores: the two runs
# go side by side, one thread each). Data: ../shared/data (see its README for licenses).
# Evaluation data (never trained on) comes from benchmarks/prepare_eval_data.py; the MRI
# validation crop (Colin27) from models/prepare_validation.py.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CLADE_SHARED_DATA:-../shared/data}
EPOCHS=${EPOCHS:-3}
python benchmarks/prepare_eval_data.py
python models/prepare_validation.py runs/eval-data runs/validation

# Common recipe: the paper's architecture (64 filters, 6 blocks), Adam 2e-4 (0.5, 0.999),
# batch 4, plus the fidelity safeguards recorded in the model cards: residual generator,
# paired self-supervised term (weight 20), resize-convolution upsampling.
COMMON=(--epochs "$EPOCHS" --batch-size 4 --max-patches 1200 --residual --lambda-paired 20
        --upsample resize --device cpu --seed 0 --checkpoint-minutes 10 --quiet)

OMP_NUM_THREADS=1 nohup python -m CLADE train \
    "$DATA/pelvis_mr_t2_0p5x0p5x3mm_monai.nii.gz" \
    "$DATA/mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain1.nrrd" \
    "$DATA/mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain2.nrrd" \
    --out runs/train-mri --preset mri "${COMMON[@]}" \
    --val runs/validation/colin27_5mm_thick_crop.nii.gz \
    --val-reference runs/validation/colin27_iso_crop.nii.gz --val-stride 24 --best-metric psnr \
    > runs/train-mri.log 2>&1 &

# CT: a fixed HU window (bone and contrast are not clipped as a percentile window would);
# no CT volume is left for validation besides the evaluation one, so the final epoch ships.
OMP_NUM_THREADS=1 nohup python -m CLADE train \
    "$DATA/abdomen_ct_native_20sl_totalseg.nii.gz" \
    --out runs/train-ct --preset ct "${COMMON[@]}" --window -1024 2048 \
    > runs/train-ct.log 2>&1 &
wait
