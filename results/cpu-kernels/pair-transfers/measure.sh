#!/bin/bash
# The figures of this folder, taken alone on the 2-core Xeon VM (nothing else running), at the commit named in README.md.
cd "$(dirname "$0")/../../.."
source .venv/bin/activate
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/ext-main}
OUT=results/cpu-kernels/pair-transfers
echo "== per call"; python benchmarks/layers.py transfers 2>&1 | tee $OUT/transfers.txt
echo "== whole steps"; python benchmarks/layers.py transfer-steps 2>&1 | tee $OUT/transfer_steps.txt
echo "== per layer"; python benchmarks/layers.py convs --models mgiad_c16_g4 2>&1 | tee $OUT/convs_c16_g4.txt
echo "== bench on"; mgcnn bench --models mgnet_ab mgiad_c16_g4 mgiad_c64_g8 --csv $OUT/bench_on.csv 2>&1 | tee $OUT/bench_on.txt
echo "== bench off"; mgcnn bench --models mgnet_ab mgiad_c16_g4 --no-cpu-kernels 2>&1 | tee $OUT/bench_off.txt
for size in 28 32; do
  for round in 1 2 3; do
    for flag in "" "--no-cpu-kernels"; do
      echo "== main job ${size}x${size} round $round ${flag:-kernels on}"
      mgcnn bench --models mgiad_l3_c16_g8 --in-channels 1 --image-size $size $flag 2>&1 | grep "^| mgiad"
    done
  done
done 2>&1 | tee $OUT/main_job_rounds.txt
echo done
