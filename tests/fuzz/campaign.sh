#!/bin/sh
# A longer fuzzing campaign over the parsers, one target after another, each until
# RUNS inputs or SECONDS seconds: corpora kept in OUT/corpus/<target> (a later
# campaign continues from them), findings in OUT/finding_<target>_*, one line per
# target in OUT/campaign.csv.
#
#   tests/fuzz/campaign.sh HARNESS OUT [target ...]
#
# HARNESS is the fuzz_parsers binary (ctest builds it in
# build/tests/cmake/fuzz/build/). Environment: RUNS (default 1000000), SECONDS
# (default 3600 per target).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 HARNESS OUT [target ...]" >&2; exit 2; }
harness=$1 out=$2
shift 2
[ $# -gt 0 ] || set -- idx idx-labels cifar state-dict checkpoint feedback
runs=${RUNS:-1000000}
limit=${SECONDS_PER_TARGET:-${SECONDS:-3600}}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
[ -f "$out/campaign.csv" ] || echo "target,inputs,seconds,inputs_per_second,corpus_files,findings" > "$out/campaign.csv"
for target in "$@"; do
  corpus="$out/corpus/$target"
  mkdir -p "$corpus"
  DIFFCTL_FUZZ_TARGET=$target DIFFCTL_FUZZ_SEEDS="$corpus" "$harness"
  start=$(date +%s)
  status=0
  DIFFCTL_FUZZ_TARGET=$target LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0" \
    "$harness" "$corpus" -runs="$runs" -max_total_time="$limit" -timeout=10 -rss_limit_mb=3072 \
    -artifact_prefix="$out/finding_${target}_" -print_final_stats=1 > "$out/$target.log" 2>&1 || status=$?
  seconds=$(($(date +%s) - start))
  inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$target.log")
  findings=$(ls "$out" | grep -c "^finding_${target}_" || true)
  echo "$target,${inputs:-0},$seconds,$(( ${inputs:-0} / (seconds > 0 ? seconds : 1) )),$(ls "$corpus" | wc -l),$findings" \
    >> "$out/campaign.csv"
  echo "campaign: $target: ${inputs:-0} inputs in $seconds s, exit $status, findings $findings"
done
