#!/usr/bin/env bash
# Bitwise check of a refactor: seeded, deterministic short training runs with the source tree of git revision REV
# ("before") and with the working tree ("after"); prints the SHA-256 of every run's trained weights (the model state
# in checkpoint.pt, tensor by tensor in key order), then "identical" or "DIFFERENT" per model.
#
#   bash benchmarks/weights_ab.sh REV [DATA_DIR]      e.g. bash benchmarks/weights_ab.sh HEAD~3 ../shared/data
#
# The runs: MGiaD c_K=16 g_s=8 (the main job's model, speedrun recipe) and Poly-MgNet q_2 with init="spectrum",
# each 2 epochs on 1,024 FashionMNIST images, one thread, --deterministic (stock kernels, no timing-based plans).
set -euo pipefail
rev=${1:?usage: weights_ab.sh REV [DATA_DIR]}
data=${2:-../shared/data}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/before"
git -C "$root" archive "$rev" src | tar -x -C "$work/before"
python=${PYTHON:-python}
runs=("mgiad_l3_c16_g8" "poly_mgnet_q2 --model-arg init=spectrum")
status=0
for run in "${runs[@]}"; do
  name=${run%% *}
  for side in before after; do
    src=$([ "$side" = before ] && echo "$work/before/src" || echo "$root/src")
    # shellcheck disable=SC2086
    PYTHONPATH=$src "$python" -m mgcnn train --model $run --data-dir "$data" --train-subset 1024 --test-subset 256 \
      --epochs 2 --threads 1 --deterministic --progress-every 0 --out "$work/$name-$side" >/dev/null
    PYTHONPATH=$src "$python" - "$work/$name-$side/checkpoint.pt" > "$work/$name-$side.sha" <<'PY'
import hashlib, sys
import torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["model"]
h = hashlib.sha256()
for k in sorted(state):
    h.update(k.encode()); h.update(state[k].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
print(h.hexdigest())
PY
    echo "$name $side $(cat "$work/$name-$side.sha")"
  done
  if cmp -s "$work/$name-before.sha" "$work/$name-after.sha"; then echo "$name identical"; else echo "$name DIFFERENT"; status=1; fi
done
exit $status
