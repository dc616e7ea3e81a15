#!/bin/sh
# The main demo end to end: trains what is not cached yet (the unconditional
# diffusion model, the strong classifier that plays the oracle, the weak one the
# reward ensemble starts from), then runs seiko_demo. Models go to MODELS
# (default out/), the SEIKO run to OUT (default out/seiko; an existing run there
# is continued with --resume). Extra arguments go to seiko_demo.
#
#   examples/seiko_demo.sh [seiko_demo flags]
#
# Environment: BUILD (build directory, default build), MODELS, OUT.
set -eu

build=${BUILD:-build}
models=${MODELS:-out}
out=${OUT:-out/seiko}
for program in pretrain_diffusion train_classifier seiko_demo; do
  [ -x "$build/examples/$program" ] || { echo "$0: $build/examples/$program not found: build it first" >&2; exit 1; }
done

start=$(date +%s)
# A phase whose weights exist is skipped; one stopped midway continues from its checkpoint.
phase() {  # name weights-file command...
  name=$1 weights=$2
  shift 2
  if [ -f "$weights" ]; then
    echo "seiko_demo.sh: $name: reusing $weights"
    return 0
  fi
  continue_flag=""
  [ -f "$(dirname "$weights")/checkpoint.pt" ] && continue_flag=--resume
  t=$(date +%s)
  "$@" $continue_flag
  echo "seiko_demo.sh: $name: $(($(date +%s) - t)) s"
}
phase "diffusion model" "$models/diffusion_uncond/model.pt" \
  "$build/examples/pretrain_diffusion" --unconditional --out "$models/diffusion_uncond"
phase "oracle (strong classifier)" "$models/oracle/classifier.pt" \
  "$build/examples/train_classifier" --strength strong --out "$models/oracle"
phase "weak classifier" "$models/weak/classifier.pt" \
  "$build/examples/train_classifier" --strength weak --out "$models/weak"

resume=""
[ -f "$out/feedback.sqlite" ] && resume=--resume
t=$(date +%s)
"$build/examples/seiko_demo" --diffusion "$models/diffusion_uncond" --oracle "$models/oracle" --weak "$models/weak" \
  --out "$out" $resume "$@"
echo "seiko_demo.sh: SEIKO: $(($(date +%s) - t)) s; whole demo: $(($(date +%s) - start)) s"
