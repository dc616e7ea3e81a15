#!/bin/bash
# seiko_demo --variant score-matching killed (SIGKILL) three times and resumed
# each time: after part of a round's labels were stored, after a round's row,
# after the next round's labels; the resumed run asks no label twice and ends with the uninterrupted run's
# rows and samples, byte for byte (one thread: the same arithmetic in the same order).
#   score_matching_resume.sh PRETRAIN SEIKO_DEMO CLASSIFIER WORK_DIR
set -euo pipefail
pretrain=$1 program=$2 classifier=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
"$pretrain" --unconditional --threads 1 --steps 2 --batch 8 --sample-steps 2 --samples-per-class 1 \
  --out "$work/diffusion" > "$work/pretrain.log" 2>&1
# Round 1 asks 1,500 labels of the pool's samples in chunks of 128 (the last 92):
# the first kill lands after the first chunk and, with eleven more to go (each an
# oracle call and a write), before the round's end.
args=(--diffusion "$work/diffusion" --oracle "$classifier" --weak "$classifier" --threads 1
  --variant score-matching --alpha 0.1 --pool 1536 --queries 1500 8 --sample-steps 3 --optimize-steps 2 --batch 8
  --eval-samples 20 --final-per-prompt 2 --per-prompt 1)
"$program" "${args[@]}" --out "$work/straight" > "$work/straight.log" 2>&1

# (Read-only, and only once the store exists: the sqlite3 command creates a missing file.)
labels() {
  [ -f "$work/killed/feedback.sqlite" ] &&
    sqlite3 -readonly "$work/killed/feedback.sqlite" "SELECT count(*) FROM labels" 2> /dev/null || echo 0
}
rounds() { [ -f "$work/killed/rounds.csv" ] && echo $(($(wc -l < "$work/killed/rounds.csv") - 1)) || echo 0; }
# Runs the demo into killed/ (resuming what is there) and kills it once the
# condition (a shell expression) holds; fails if the run ends first.
run_and_kill() {
  local resume=""
  [ -d "$work/killed" ] && resume=--resume
  "$program" "${args[@]}" --out "$work/killed" $resume >> "$work/killed.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2> /dev/null; do
    if eval "$1"; then
      kill -9 "$pid"
      wait "$pid" || true
      echo "killed when $1: $(labels) labels, $(rounds) rows"
      return 0
    fi
    sleep 0.02
  done
  echo "the run ended before $1" >&2
  exit 1
}
run_and_kill '[ "$(labels)" -ge 128 ]'  # round 1's first chunk stored, not all of them
[ "$(labels)" -lt 1500 ] || { echo "the first kill came after all of round 1's labels: no partial round" >&2; exit 1; }
run_and_kill '[ "$(rounds)" -ge 2 ]'     # round 1's row written: its checkpoint follows
run_and_kill '[ "$(labels)" -ge 1508 ]'  # round 2's labels stored, after round 1's checkpoint
"$program" "${args[@]}" --out "$work/killed" --resume >> "$work/killed.log" 2>&1

fail() { echo "$1" >&2; cat "$work/killed.log" >&2; exit 1; }
[ "$(labels)" -eq 1508 ] || fail "the resumed run holds $(labels) labels, not 1500 + 8: some were asked twice or lost"
# rounds.csv without its seconds column, the samples and the prompts.
for run in straight killed; do cut -d, -f1-7,9- "$work/$run/rounds.csv" > "$work/$run.rows"; done
cmp "$work/straight.rows" "$work/killed.rows" || fail "rounds.csv differs from the uninterrupted run's"
cmp "$work/straight/samples.npy" "$work/killed/samples.npy" || fail "samples.npy differs from the uninterrupted run's"
cmp "$work/straight/prompts.npy" "$work/killed/prompts.npy" || fail "prompts.npy differs"
# The pool optimum of each round, the resumed rounds' read back from the checkpoint.
for run in straight killed; do
  sed -n '/"pool_optima"/,/^  \]/p' "$work/$run/metrics.json" > "$work/$run.optima"
done
[ "$(grep -c '"round"' "$work/killed.optima")" -eq 2 ] || fail "metrics.json: not one pool optimum per round"
cmp "$work/straight.optima" "$work/killed.optima" || fail "the pool optima differ from the uninterrupted run's"
grep -q "resuming after round 1" "$work/killed.log" || fail "no resume after round 1"
echo "score matching killed three times and resumed: the uninterrupted run's rows and samples, 1508 labels"
rm -rf "$work"
