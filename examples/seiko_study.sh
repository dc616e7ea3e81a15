#!/bin/sh
# The SEIKO study on Fashion-MNIST: runs seiko_demo for several variants and
# seeds at the same oracle budget and prints three markdown tables (also written
# to OUT/study.md):
#   1. feedback efficiency: mean-std vs greedy vs non-adaptive, over SEEDS;
#   2. continuous vs discrete control: top-k vs every step vs uniform times;
#   3. ablation over optimism rules (mean-std, max, thompson, ucb, greedy).
# A finished run (its metrics.json exists) is not run again, so a stopped study
# continues where it stood.
#
#   examples/seiko_study.sh OUT [seiko_demo flags shared by every run]
#
# Environment: BUILD (build directory, default build), SEEDS (default "0 1 2"),
# DIFFUSION, ORACLE, WEAK (default out/diffusion_uncond, out/oracle, out/weak).
set -eu

[ $# -ge 1 ] || { echo "usage: $0 OUT [seiko_demo flags]" >&2; exit 2; }
out=$1
shift
build=${BUILD:-build}
seeds=${SEEDS:-0 1 2}
demo=$build/examples/seiko_demo
[ -x "$demo" ] || { echo "$0: $demo not found: build the seiko_demo target first" >&2; exit 1; }
mkdir -p "$out"

run() {  # variant seed [seiko_demo flags]
  variant=$1 seed=$2
  shift 2
  dir=$out/$variant-seed$seed
  [ -f "$dir/metrics.json" ] && return 0
  rm -rf "$dir"
  echo "seiko_study: $variant, seed $seed" >&2
  "$demo" --diffusion "${DIFFUSION:-out/diffusion_uncond}" --oracle "${ORACLE:-out/oracle}" \
    --weak "${WEAK:-out/weak}" --variant "$variant" --seed "$seed" --out "$dir" "$@" >"$dir.log" 2>&1 ||
    { echo "$0: $variant, seed $seed failed; see $dir.log" >&2; exit 1; }
}

first_seed=${seeds%% *}
for seed in $seeds; do
  for v in mean-std greedy non-adaptive; do run $v "$seed" "$@"; done
done
for v in discrete uniform max thompson ucb; do run $v "$first_seed" "$@"; done

# The last row of rounds.csv: round,queries_total,oracle_reward_mean,
# ensemble_reward_mean,uncertainty_mean,kl_to_pretrained,control_points_mean,seconds
# A run that is missing (the study was stopped) reads as nan.
row() {  # variant seed line
  if [ -f "$out/$1-seed$2/metrics.json" ]; then sed -n "$3" "$out/$1-seed$2/rounds.csv"; else echo "0,0,nan,nan,nan,nan,nan,nan"; fi
}
last() { row "$1" "$2" '$p'; }
first() { row "$1" "$2" 2p; }

{
  echo "Pretrained model (round 0 of mean-std, seed $first_seed): oracle reward $(first mean-std "$first_seed" | cut -d, -f3)"
  echo
  echo "| variant | queries | oracle reward per seed ($seeds) | mean | std | KL to pretrained (mean) |"
  echo "|---|---|---|---|---|---|"
  for variant in mean-std greedy non-adaptive; do
    rows=""
    for seed in $seeds; do rows="$rows$(last $variant "$seed")
"; done
    printf '%s' "$rows" | awk -F, -v v=$variant '
      { r[NR] = $3; kl += $6; q = $2; list = list (NR > 1 ? ", " : "") sprintf("%.3f", $3) }
      END {
        for (i = 1; i <= NR; ++i) m += r[i] / NR
        for (i = 1; i <= NR; ++i) s += (r[i] - m) ^ 2
        printf "| %s | %d | %s | %.3f | %.3f | %.1f |\n", v, q, list, m, (NR > 1 ? sqrt(s / (NR - 1)) : 0), kl / NR }'
  done
  echo
  echo "| control times (mean + std optimism, seed $first_seed) | oracle reward | KL to pretrained | controls per sample |"
  echo "|---|---|---|---|"
  for variant in mean-std uniform discrete; do
    last $variant "$first_seed" | awk -F, -v v=$variant '{ printf "| %s | %.3f | %.1f | %.2f |\n", v, $3, $6, $7 }'
  done
  echo
  echo "| optimism (top-k control times, seed $first_seed) | oracle reward | ensemble reward | uncertainty | KL to pretrained |"
  echo "|---|---|---|---|---|"
  for variant in mean-std max thompson ucb greedy; do
    last $variant "$first_seed" | awk -F, -v v=$variant '{ printf "| %s | %.3f | %.3f | %.4f | %.1f |\n", v, $3, $4, $5, $6 }'
  done
} | tee "$out/study.md"
