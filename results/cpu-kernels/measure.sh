#!/bin/bash
# Measurements taken alone on the 2-core VM (nothing else running).
cd /work/main
source .venv/bin/activate
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/ext-main}
OUT=${OUT:-/tmp/quiet}; mkdir -p $OUT
echo "== spectrum new"; python benchmarks/spectrum_speed.py 2>&1 | tee $OUT/spectrum_new.txt
echo "== spectrum old (ac865bb)"; PYTHONPATH=${OLD_SRC:?a checkout of ac865bb/src} python -c "
import time, torch
from mgcnn.analysis import conv_eigenvalues
torch.manual_seed(0); w = torch.randn(256, 256, 3, 3) / 48
ts=[]
for _ in range(2):
    t=time.perf_counter(); conv_eigenvalues(w, 32); ts.append(time.perf_counter()-t)
print(f'old LFA eigenvalues float64 256ch 32x32: {min(ts):.2f} s')" 2>&1 | tee $OUT/spectrum_old.txt
echo "== zgeev bound"; python -c "
import time, torch
torch.set_num_threads(1)
a = torch.randn(16, 256, 256, dtype=torch.complex128)
torch.linalg.eigvals(a[:2]); t=time.perf_counter(); torch.linalg.eigvals(a); per=(time.perf_counter()-t)/16
print(f'zgeev 256x256 one thread: {per*1e3:.1f} ms per matrix; 510 complex + 4 real problems on 2 cores >= {510*per/2:.1f} s')" 2>&1 | tee $OUT/zgeev.txt
echo "== per-layer, mgiad_c16_g4"; python benchmarks/layers.py convs --models mgiad_c16_g4 2>&1 | tee $OUT/convs_c16_g4.txt
echo "== bench kernels on"; mgcnn bench --models resnet18 mgnet_ab mgiad_c16_g4 mgiad_c64_g8 --csv $OUT/bench_on.csv 2>&1 | tee $OUT/bench_on.txt
echo "== bench kernels off"; mgcnn bench --models mgnet_ab mgiad_c16_g4 --no-cpu-kernels 2>&1 | tee $OUT/bench_off.txt
echo "== main job model 28x28 on/off"; mgcnn bench --models mgiad_l3_c16_g8 --in-channels 1 --image-size 28 2>&1 | tee $OUT/main_on.txt
mgcnn bench --models mgiad_l3_c16_g8 --in-channels 1 --image-size 28 --no-cpu-kernels 2>&1 | tee $OUT/main_off.txt
echo "== main job model 32x32 on/off"; mgcnn bench --models mgiad_l3_c16_g8 --in-channels 1 --image-size 32 2>&1 | tee $OUT/main32_on.txt
mgcnn bench --models mgiad_l3_c16_g8 --in-channels 1 --image-size 32 --no-cpu-kernels 2>&1 | tee $OUT/main32_off.txt
echo done
