#!/bin/sh
# Kills seiko_demo with SIGKILL at random moments and resumes it each time, then
# compares the finished run with an uninterrupted one of the same flags: labels
# lost, labels asked twice, and every figure of rounds.csv and metrics.json.
#
#   examples/kill_resume.sh OUT [seiko_demo flags]
#
# Environment: BUILD (default build), MODELS (the models seiko_demo.sh trains,
# default out), KILLS (default 20), SEED (of the kill times, default 1),
# KILL_WITHIN (kills come 1 to KILL_WITHIN seconds after each start; default half
# the uninterrupted run: shorter gives more kills before the run is done, but a
# restart must get through a round now and then to make progress).
# Writes OUT/straight, OUT/killed, OUT/kills.csv (the moment of each kill, in
# seconds after its run started) and prints a summary; exits non-zero when the two
# runs differ.
set -eu

[ $# -ge 1 ] || { echo "usage: $0 OUT [seiko_demo flags]" >&2; exit 2; }
out=$1
shift
build=${BUILD:-build}
models=${MODELS:-out}
kills=${KILLS:-20}
seed=${SEED:-1}
demo="$build/examples/seiko_demo"
[ -x "$demo" ] || { echo "$0: $demo not found: build it first" >&2; exit 1; }
command -v sqlite3 > /dev/null || { echo "$0: needs the sqlite3 command (scripts/install-deps)" >&2; exit 1; }
for model in diffusion_uncond oracle weak; do
  [ -d "$models/$model" ] || { echo "$0: no $models/$model: run examples/seiko_demo.sh first" >&2; exit 1; }
done

rm -rf "$out/straight" "$out/killed"
mkdir -p "$out"
run() {  # out-dir [extra flags]: one seiko_demo run
  dir=$1
  shift
  "$demo" --diffusion "$models/diffusion_uncond" --oracle "$models/oracle" --weak "$models/weak" --out "$dir" \
    "$@" > /dev/null 2>> "$out/stderr.log"
}

start=$(date +%s)
run "$out/straight" "$@"
length=$(($(date +%s) - start))
echo "kill_resume.sh: uninterrupted run: $length s"

# Kill times uniform in [1, KILL_WITHIN] seconds after each start, from an awk
# generator seeded with SEED.
echo "kill,seconds,labels_before,labels_after" > "$out/kills.csv"
labels() { [ -f "$out/killed/feedback.sqlite" ] && sqlite3 "$out/killed/feedback.sqlite" "SELECT count(*) FROM labels" || echo 0; }
span=${KILL_WITHIN:-$((length / 2 > 2 ? length / 2 : 2))}
times=$(awk -v n="$kills" -v s="$seed" -v span="$span" 'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%.2f\n", 1 + rand() * (span - 1) }')
kill_count=0
for delay in $times; do
  resume=""
  [ -f "$out/killed/feedback.sqlite" ] && resume=--resume
  before=$(labels)
  # Started here, not through run(): $! must be seiko_demo itself, not a subshell.
  "$demo" --diffusion "$models/diffusion_uncond" --oracle "$models/oracle" --weak "$models/weak" \
    --out "$out/killed" "$@" $resume > /dev/null 2>> "$out/stderr.log" &
  pid=$!
  sleep "$delay"
  if kill -9 "$pid" 2> /dev/null; then
    wait "$pid" 2> /dev/null || true
    kill_count=$((kill_count + 1))
    echo "$kill_count,$delay,$before,$(labels)" >> "$out/kills.csv"
  else
    wait "$pid" || { echo "$0: a resumed run failed; see $out/stderr.log" >&2; exit 1; }
    break  # it finished before this kill
  fi
done
resume=""
[ -f "$out/killed/feedback.sqlite" ] && resume=--resume
run "$out/killed" "$@" $resume

# Labels: the same rows (round, prompt, label, sample bytes) in the same order.
rows() { sqlite3 "$1/feedback.sqlite" "SELECT round, prompt, label, hex(sample) FROM labels ORDER BY id"; }
asked() { sqlite3 "$1/feedback.sqlite" "SELECT queries FROM oracle_state"; }
rows "$out/straight" > "$out/straight_rows.txt"
rows "$out/killed" > "$out/killed_rows.txt"
straight_rows=$(wc -l < "$out/straight_rows.txt")
killed_rows=$(wc -l < "$out/killed_rows.txt")
# Lost: rows of the uninterrupted run the killed one lacks. Asked twice: answers
# the killed run's oracle gave beyond the uninterrupted one's.
lost=$(grep -cvxF -f "$out/killed_rows.txt" "$out/straight_rows.txt" || true)
extra=$(($(asked "$out/killed") - $(asked "$out/straight")))
same_labels=no
cmp -s "$out/straight_rows.txt" "$out/killed_rows.txt" && same_labels=yes
# Figures: rounds.csv without its seconds column, metrics.json without timings.
figures() {
  cut -d, -f1-7,9- "$1/rounds.csv"
  grep -v '"seconds"' "$1/metrics.json"
}
same_figures=no
[ "$(figures "$out/straight")" = "$(figures "$out/killed")" ] && same_figures=yes

echo "kill_resume.sh: $kill_count kills; labels: uninterrupted $straight_rows (oracle answered $(asked "$out/straight")), killed and resumed $killed_rows (oracle answered $(asked "$out/killed")); lost $lost, asked twice $extra; identical rows: $same_labels; identical figures: $same_figures"
[ "$same_labels" = yes ] && [ "$same_figures" = yes ] && [ "$lost" -eq 0 ] && [ "$extra" -eq 0 ]
