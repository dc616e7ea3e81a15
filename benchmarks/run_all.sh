#!/bin/sh
# Builds the benchmarks and runs the whole set, printing one table (also written
# to OUT/benchmarks.md, with each binary's CSV beside it).
#
#   benchmarks/run_all.sh cpu  [OUT]   # every benchmark on the CPU
#   benchmarks/run_all.sh cuda [OUT]   # the same set; the ones with --device on CUDA
#
# For CUDA, point CMake at a CUDA build of LibTorch, e.g.
#   CMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') benchmarks/run_all.sh cuda
# Environment: BUILD (build directory, default build-bench), REPETITIONS (default 3),
# THREADS (torch threads, default: all cores).
set -eu

device=${1:-cpu}
out=${2:-out/benchmarks-$device}
build=${BUILD:-build-bench}
repetitions=${REPETITIONS:-3}
case $device in cpu | cuda) ;; *) echo "usage: $0 cpu|cuda [OUT]" >&2; exit 2 ;; esac

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDIFFCTL_BUILD_TESTS=OFF -DDIFFCTL_BUILD_EXAMPLES=OFF \
  ${CMAKE_PREFIX_PATH:+-DCMAKE_PREFIX_PATH="$CMAKE_PREFIX_PATH"} >/dev/null
cmake --build "$build" -j"$(nproc)" --target solver_steps qlearning_episode image_networks reward_ensemble image_sampling \
  data_parallel
mkdir -p "$out"

threads=${THREADS:+--threads $THREADS}
# bench NAME: every benchmark of the binary in its own process, as CSV: Google
# Benchmark's CSV needs the same counters in every row of a process, and a
# peak-memory counter needs a fresh process. Medians of REPETITIONS runs, except
# the backprop rows (one run each: their counter is the process's peak).
bench() {
  name=$1
  device_flag=""
  case $name in image_networks | reward_ensemble | image_sampling) device_flag="--device $device" ;; esac
  # shellcheck disable=SC2086
  "$build/benchmarks/$name" $device_flag $threads --benchmark_list_tests=true >"$out/$name.list"
  while read -r test; do
    case $test in backprop/*) runs=1 ;; *) runs=$repetitions ;; esac
    echo "run_all.sh: $name $test" >&2
    # shellcheck disable=SC2086
    "$build/benchmarks/$name" $device_flag $threads --benchmark_filter="^$test\$" \
      --benchmark_repetitions="$runs" --benchmark_report_aggregates_only=true --benchmark_format=csv \
      >>"$out/$name.csv" 2>>"$out/$name.log" </dev/null
  done <"$out/$name.list"
}
rm -f "$out"/*.csv "$out"/*.log "$out"/*.list
# qlearning_episode and solver_steps have no --device: they run on the CPU only.
if [ "$device" = cpu ]; then
  bench solver_steps
  bench qlearning_episode
fi
bench image_networks
bench reward_ensemble
bench image_sampling
# Scaling: the same global batch on 1, 2, 4 and 8 processes (scripts/launch),
# where the machine has the cores (CPU: each process gets its share) or the GPUs
# (CUDA: one each). Rank 0's rows are the result; the others' output goes to logs.
if [ "$device" = cuda ]; then slots=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); else slots=$(nproc); fi
for processes in 1 2 4 8; do
  [ "$processes" -le "$slots" ] || continue
  echo "run_all.sh: data_parallel on $processes processes" >&2
  # shellcheck disable=SC2086
  LAUNCH_LOGS="$out/data_parallel.rank" scripts/launch "$processes" "$build/benchmarks/data_parallel" \
    --device "$device" $threads --benchmark_repetitions="$repetitions" --benchmark_report_aggregates_only=true \
    --benchmark_format=csv >>"$out/data_parallel.csv" 2>>"$out/data_parallel.log" </dev/null
done

# Google Benchmark's CSV: name,iterations,real_time,cpu_time,time_unit,...,counters.
# Keep medians (and the single-run rows), print name, time and counters.
{
  echo "| benchmark | real time | counters |"
  echo "|---|---|---|"
  for file in "$out"/*.csv; do
    awk -F, '
      /^name,/ { for (i = 1; i <= NF; ++i) { col[i] = $i; gsub(/"/, "", col[i]) }; next }
      NF > 4 && $1 !~ /_(mean|stddev|cv)"?$/ {
        gsub(/"/, "", $1); sub(/_median$/, "", $1)
        counters = ""
        for (i = 11; i <= NF; ++i) if ($i != "") counters = counters sprintf("%s %.4g; ", col[i], $i)
        printf "| %s | %.4g %s | %s |\n", $1, $3, $5, counters
      }' "$file"
  done
} | tee "$out/benchmarks.md"
echo "run_all.sh: $device on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" |
  tee -a "$out/benchmarks.md"
