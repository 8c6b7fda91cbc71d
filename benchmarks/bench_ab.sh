#!/usr/bin/env bash
# A/B speed check of two versions of the package in one run: `mgcnn bench` on the same models with the source tree of
# git revision REV ("before") and with the working tree ("after"), alternating ROUNDS times so that drift of the
# machine shows up as spread rather than as a difference.
#
#   bash benchmarks/bench_ab.sh REV [ROUNDS] [MODEL ...]      e.g. bash benchmarks/bench_ab.sh HEAD~1 2
#
# Default models: the main job's MGiaD and the 3-level MgNet, on 1-channel 32x32 inputs (FashionMNIST's shape).
set -euo pipefail
rev=${1:?usage: bench_ab.sh REV [ROUNDS] [MODEL ...]}
rounds=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(mgiad_l3_c16_g8 mgnet_ab_l3)
root=$(git rev-parse --show-toplevel)
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
git -C "$root" archive "$rev" src | tar -x -C "$before"
python=${PYTHON:-python}
echo "before: $rev ($(git -C "$root" rev-parse --short "$rev")); after: working tree of $root"
for round in $(seq "$rounds"); do
  for side in before after; do
    src=$([ "$side" = before ] && echo "$before/src" || echo "$root/src")
    echo "== $side, round $round"
    PYTHONPATH=$src "$python" -m mgcnn bench --models "${models[@]}" --in-channels 1 --steps 10 --warmup 3 \
      | grep -E '^\| (model|[a-z])'
  done
done
