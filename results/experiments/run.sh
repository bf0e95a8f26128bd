#!/usr/bin/env bash
# The runs ANALYSIS.md cites beyond the two default runs. From the repo root:
#     bash results/experiments/run.sh          # about 4 minutes on 2 cores
# Each run writes its metrics here; weights go to results/tmp/ (not kept).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=results/experiments
train() {  # train FRAMEWORK NAME FLAGS...: one run, quietly
    local framework=$1 name=$2; shift 2
    echo "== $framework $name: $*"
    python "${framework}_nn/train.py" --no-progress "$@" \
        --metrics "$out/${name}.json" --weights "results/tmp/${name}" | tail -n 2 | head -n 1
}

# 1. Seed to seed: how much the final accuracy moves with nothing but the seed.
for seed in 1 2 3 4; do
    train numpy "numpy_seed$seed" --seed "$seed"
    train pytorch "pytorch_seed$seed" --seed "$seed"
done

# 2. The classic set-up the brief's numbers suggest: plain SGD, fixed learning rate.
train numpy numpy_sgd --optimizer sgd --lr 0.1 --schedule constant
train pytorch pytorch_sgd --optimizer sgd --lr 0.1 --schedule constant

# 3. Overfitting: 30 epochs at a fixed learning rate, then the same with dropout and with L2.
train numpy numpy_long --epochs 30 --schedule constant --lr 1e-3
train numpy numpy_long_dropout --epochs 30 --schedule constant --lr 1e-3 --dropout 0.2
train numpy numpy_long_l2 --epochs 30 --schedule constant --lr 1e-3 --weight-decay 1e-4

# 4. PyTorch's own initialisation instead of the NumPy network's weights.
train pytorch pytorch_init_torch --init torch

python compare.py --no-inside --out-dir "$out/seeds" --runs results/numpy_metrics.json \
    results/pytorch_metrics.json "$out"/numpy_seed*.json "$out"/pytorch_seed*.json
python compare.py --no-inside --out-dir "$out/sgd" --runs "$out/numpy_sgd.json" "$out/pytorch_sgd.json"
python compare.py --no-inside --out-dir "$out/overfitting" --runs "$out/numpy_long.json" \
    "$out/numpy_long_dropout.json" "$out/numpy_long_l2.json"
