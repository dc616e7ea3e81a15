#!/bin/sh
# The main demo end to end: trains what is not cached yet (the unconditional
# diffusion model, the strong classifier that plays the oracle, the weak one the
# reward ensemble starts from), then runs seiko_demo. Models go to MODELS
# (default out/), the run to OUT (default out/seiko). Extra arguments go to
# seiko_demo. Without a --variant among them the demo runs score matching
# (SEIKO's objective solved on a pool of pretrained samples, distilled into the
# UNet: the variant that aligns without collapsing, examples/RESULTS.md).
#
# Another run of the same command continues an unfinished run in OUT (--resume:
# no label is asked twice, and the figures are an uninterrupted run's); a
# finished score-matching run there is kept and reported.
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

# The variant asked for (score matching unless named), and whether it was named.
variant=score-matching named="" previous=""
for arg in "$@"; do
  case $arg in --variant=*) variant=${arg#--variant=} named=yes ;; esac
  [ "$previous" = --variant ] && variant=$arg named=yes
  previous=$arg
done
variant_flag=""
[ -n "$named" ] || variant_flag="--variant $variant"
resume=""
if [ "$variant" = score-matching ] && [ -f "$out/metrics.json" ]; then
  echo "seiko_demo.sh: $out holds a finished run ($out/metrics.json, $out/rounds.csv); set OUT for another"
  exit 0
fi
if [ -f "$out/feedback.sqlite" ] || [ -f "$out/pool.pt" ]; then
  resume=--resume
fi
t=$(date +%s)
"$build/examples/seiko_demo" --diffusion "$models/diffusion_uncond" --oracle "$models/oracle" --weak "$models/weak" \
  --out "$out" $resume $variant_flag "$@"
echo "seiko_demo.sh: $variant: $(($(date +%s) - t)) s; whole demo: $(($(date +%s) - start)) s"
