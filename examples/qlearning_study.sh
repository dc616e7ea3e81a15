#!/bin/sh
# The study of "Reward-Directed Score-Based Diffusion Models via q-Learning" (Gao,
# Zha & Zhou 2024) with this library's examples, at the paper's settings (300 data
# points, T = 5, dt = 0.25, batch 300, Adam 1e-3, 50,000 episodes), on the CPU fast
# path (--backend eigen). Prints four markdown tables, also written to OUT/study.md:
#   1. beta sweeps, trained from scratch: 1-D mixture (beta 0, 0.1, 1) and Swiss
#      roll (beta 0, 1, 10, 30);
#   2. fine-tuning the Swiss roll's score-matching models A (EPISODES episodes) and
#      B (the same run's checkpoint after EPISODES_B) with DDPO, DPOK and q-learning,
#      each stopped when it reaches an expected reward of 0.7, 0.8 or 0.9 (checked on
#      2000 samples after every iteration, every 10 for q-learning), with the KL
#      it costs;
#   3. the simulators (Euler-Maruyama, probability-flow ODE-Euler, DDIM) at 50, 10
#      and 5 steps: score matching (beta = 0), then q-learning fine-tuned to 0.8;
#   4. the conditional version (Algorithm 2) on the 1-D mixture, the mode as the
#      class and a reward point per class (-6, +6), beta 0 and 1.
# A finished run (its metrics.json exists) is not run again, so a stopped study
# continues where it stood; PARTS picks which parts run (default "pretrain
# finetune beta conditional simulators"; the tables show every finished run).
#
#   examples/qlearning_study.sh OUT
#
# Environment: BUILD (build directory, default build), EPISODES (50000),
# EPISODES_B (30000), FINETUNE_EPISODES (at most this many fine-tuning
# iterations, 20000), FINETUNE_LR (their learning rate, 1e-4), FINETUNE_BETA
# (q-learning's beta when fine-tuning, 30),
# THREADS (2), SEED (0).
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
out=$1
build=${BUILD:-build}
episodes=${EPISODES:-50000}
episodes_b=${EPISODES_B:-30000}
finetune_episodes=${FINETUNE_EPISODES:-20000}
finetune_beta=${FINETUNE_BETA:-30}
finetune_lr=${FINETUNE_LR:-1e-4}
parts=${PARTS:-pretrain finetune beta conditional simulators}
[ "$episodes_b" -lt "$episodes" ] || { echo "$0: EPISODES_B ($episodes_b) must be < EPISODES ($episodes)" >&2; exit 2; }
for program in qlearning_gmm1d qlearning_swiss_roll finetune_compare; do
  [ -x "$build/examples/$program" ] || { echo "$0: $build/examples/$program not found: build it first" >&2; exit 1; }
done
mkdir -p "$out"
common="--threads ${THREADS:-2} --seed ${SEED:-0} --backend eigen"

run() {  # name program [flags]
  name=$1 program=$2
  shift 2
  dir=$out/$name
  [ -f "$dir/metrics.json" ] && return 0
  rm -rf "$dir"
  echo "qlearning_study: $name" >&2
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$build/examples/$program" $common --out "$dir" "$@" >"$dir.log" 2>&1 ||
    { echo "$0: $name failed; see $dir.log" >&2; exit 1; }
}

has() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }

model_a=$out/roll-beta0/checkpoint.pt
model_b=$out/roll-beta0/checkpoint_$episodes_b.pt
if has pretrain; then
  run roll-beta0 qlearning_swiss_roll --beta 0 --episodes "$episodes" --snapshots "$episodes_b"
  run roll-model-b qlearning_swiss_roll --episodes 0 --init "$model_b"  # evaluates model B
fi
# A DDPO or DPOK iteration moves the reward by up to a few hundredths, so they are
# checked after every iteration; q-learning's episodes move it far less, and are
# checked every 10.
finetune() {  # name init target method [flags]
  name=$1 init=$2 target=$3 method=$4
  shift 4
  every=1
  [ "$method" = qlearning ] && every=10
  run "$name" finetune_compare --problem swiss-roll --init "$init" --method "$method" \
    --episodes "$finetune_episodes" --target-reward "$target" --check-every $every --check-samples 2000 \
    --lr "$finetune_lr" "$@"
}
if has finetune; then
  for model in a b; do
    init=$model_a
    [ $model = b ] && init=$model_b
    for target in 0.7 0.8 0.9; do
      finetune "ft-$model-ddpo-$target" "$init" "$target" ddpo
      finetune "ft-$model-dpok-$target" "$init" "$target" dpok
      finetune "ft-$model-qlearning-$target" "$init" "$target" qlearning --beta "$finetune_beta"
    done
  done
fi

if has beta; then
  for beta in 0 0.1 1; do run "gmm1d-beta$beta" qlearning_gmm1d --beta $beta --episodes "$episodes"; done
  for beta in 1 10 30; do run "roll-beta$beta" qlearning_swiss_roll --beta $beta --episodes "$episodes"; done
fi
if has conditional; then
  for beta in 0 1; do run "gmm1d-conditional-beta$beta" qlearning_gmm1d --conditional --beta $beta --episodes "$episodes"; done
fi
if has simulators; then
  for sampler in sde ode-euler ddim; do
    for dt in 0.1 0.5 1; do
      run "sim-$sampler-dt$dt" qlearning_swiss_roll --beta 0 --sampler $sampler --dt $dt --episodes "$episodes"
      finetune "sim-$sampler-dt$dt-to0.8" "$out/sim-$sampler-dt$dt/checkpoint.pt" 0.8 qlearning \
        --sampler $sampler --dt $dt --beta "$finetune_beta"
    done
  done
fi

# A field of a run's metrics.json, or "-" when the run has not finished.
field() {  # name key
  if [ -f "$out/$1/metrics.json" ]; then
    sed -n "s/.*\"$2\": \"\{0,1\}\([^\",]*\).*/\1/p" "$out/$1/metrics.json" | head -n 1
  else
    echo "-"
  fi
}
pm() {  # name key: mean +- ci95
  mean=$(field "$1" "$2_mean")
  [ "$mean" = "-" ] && { echo "-"; return; }
  printf '%.3f +- %.3f' "$mean" "$(field "$1" "$2_ci95")"
}
# The same for class $3 of a conditional run.
class_pm() {  # name key class
  [ -f "$out/$1/metrics.json" ] || { echo "-"; return; }
  line=$(grep "\"class\": $3," "$out/$1/metrics.json")
  printf '%.3f +- %.3f' "$(echo "$line" | sed "s/.*\"$2_mean\": \([^,]*\).*/\1/")" \
    "$(echo "$line" | sed "s/.*\"$2_ci95\": \([^,}]*\).*/\1/")"
}
seconds() { s=$(field "$1" train_seconds); [ "$s" = "-" ] && echo "-" || printf '%.0f' "$s"; }

{
  echo "Reward and KL (kNN, generated || data): mean +- 95% CI over 100 batches of 300 samples."
  echo
  echo "| problem | beta | reward | KL (nats) | episodes | train s |"
  echo "|---|---|---|---|---|---|"
  for beta in 0 0.1 1; do
    echo "| 1-D mixture | $beta | $(pm gmm1d-beta$beta reward) | $(pm gmm1d-beta$beta kl) | $(field gmm1d-beta$beta episodes) | $(seconds gmm1d-beta$beta) |"
  done
  for beta in 0 1 10 30; do
    echo "| Swiss roll | $beta | $(pm roll-beta$beta reward) | $(pm roll-beta$beta kl) | $(field roll-beta$beta episodes) | $(seconds roll-beta$beta) |"
  done
  echo "| Swiss roll, model B (the beta = 0 run after $episodes_b episodes) | 0 | $(pm roll-model-b reward) | $(pm roll-model-b kl) | $episodes_b | - |"
  echo
  echo "| conditional 1-D mixture | beta | class 0 (target -6): reward | class 0: KL | class 1 (target +6): reward | class 1: KL | train s |"
  echo "|---|---|---|---|---|---|---|"
  for beta in 0 1; do
    name=gmm1d-conditional-beta$beta
    echo "| Algorithm 2 | $beta | $(class_pm $name reward 0) | $(class_pm $name kl 0) | $(class_pm $name reward 1) | $(class_pm $name kl 1) | $(seconds $name) |"
  done
  echo
  echo "| pretrained | method | target | reward | KL (nats) | iterations | train s |"
  echo "|---|---|---|---|---|---|---|"
  for model in a b; do
    for target in 0.7 0.8 0.9; do
      for method in ddpo dpok qlearning; do
        name=ft-$model-$method-$target
        echo "| $(echo $model | tr ab AB) | $method | $target | $(pm "$name" reward) | $(pm "$name" kl) | $(field "$name" episodes) | $(seconds "$name") |"
      done
    done
  done
  echo
  echo "| simulator | steps | beta = 0: reward | beta = 0: KL | tuned to 0.8: reward | tuned to 0.8: KL | fine-tuning episodes |"
  echo "|---|---|---|---|---|---|---|"
  for sampler in sde ode-euler ddim; do
    for dt in 0.1 0.5 1; do
      name=sim-$sampler-dt$dt
      steps=$(awk -v dt=$dt 'BEGIN { printf "%d", 5 / dt + 0.5 }')
      echo "| $sampler | $steps | $(pm "$name" reward) | $(pm "$name" kl) | $(pm "$name-to0.8" reward) | $(pm "$name-to0.8" kl) | $(field "$name-to0.8" episodes) |"
    done
  done
} | tee "$out/study.md"
