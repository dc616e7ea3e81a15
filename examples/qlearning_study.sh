#!/bin/sh
# The study of "Reward-Directed Score-Based Diffusion Models via q-Learning" (Gao,
# Zha & Zhou 2024) with this library's examples, at the paper's settings (the
# Swiss roll in scikit-learn's coordinates with noise 0.5, 300 data points, T = 5,
# dt = 0.25, batch 300, Adam 1e-3, 50,000 episodes) on the CPU fast path (the
# Eigen backend, the examples' default). Every table has an exact-score row: the
# same simulator driven by the ratio estimator's score, no learning, the floor a
# perfect learner reaches. KL is the kNN estimate (k = 2) against fresh data.
# Prints five markdown tables, also written to OUT/study.md:
#   1. beta sweeps, trained from scratch: 1-D mixture (beta 0, 0.1, 1) and Swiss
#      roll (beta 0, 1, 10, 30), with the data's own reward;
#   2. the pretrained models: A (the beta = 0 run) and B (the snapshot of A's run
#      whose KL is closest to --model-b-kl, the paper's model B), and the
#      temperature of the paper's Table 2 (5) against the study's (0.1);
#   3. fine-tuning A and B with DDPO, DPOK and q-learning, each stopped when it
#      reaches an expected reward of 0.7, 0.8 or 0.9 (checked on 2000 samples
#      after every iteration, every 10 for q-learning), with the KL it costs;
#   4. the simulators (Euler-Maruyama, probability-flow ODE-Euler, DDIM) at 50,
#      10 and 5 steps: score matching (beta = 0), then q-learning tuned to 0.8;
#   5. the conditional version (Algorithm 2) on the 1-D mixture, the mode as the
#      class and a reward point per class (-6, +6), beta 0 and 1.
# A finished run (its metrics.json exists) is not run again, so a stopped study
# continues where it stood, and two studies with different --parts can share OUT.
#
#   examples/qlearning_study.sh [flags] OUT      (or --out OUT; --help for the flags)
set -eu

me=$(basename "$0")
usage() {
  cat <<EOF
usage: $me [flags] OUT
  --out DIR               output directory (or give it as the last argument)
  --build DIR             build directory holding examples/ (build)
  --parts "P ..."         parts to run, of: pretrain temperature finetune beta simulators conditional
                          (default: all of them; the tables show every finished run)
  --episodes N            training episodes of every model trained from scratch (50000)
  --snapshots "N ..."     episodes of model A's run kept as candidates for model B (250 500 1000 2000 5000 10000)
  --model-b-kl X          model B is the candidate whose KL is closest to X (0.68, the paper's model B)
  --finetune-episodes N   at most this many fine-tuning iterations (20000)
  --finetune-lr X         their learning rate (1e-4)
  --finetune-betas "X ..." q-learning's betas when fine-tuning, one row each (30 10; the simulators use the first)
  --eval-batches N        evaluation batches of 300 samples per run (100)
  --threads N             threads per run (2)
  --seed N                seed of every run (0)
EOF
}
fail() { echo "$me: $*" >&2; exit 2; }
is_count() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -ge 1 ]; }
is_number() { awk -v x="$1" 'BEGIN { exit !(x ~ /^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/) }'; }

out= build=build episodes=50000 finetune_episodes=20000 finetune_lr=1e-4 finetune_betas="30 10"
snapshots="250 500 1000 2000 5000 10000" model_b_kl=0.68 eval_batches=100 threads=2 seed=0
parts="pretrain temperature finetune beta simulators conditional"
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --*)
      [ $# -ge 2 ] && case $2 in --*) false ;; esac || fail "$1 needs a value (see --help)"
      value=$2
      case $1 in
        --out) out=$value ;;
        --build) build=$value ;;
        --parts) parts=$value ;;
        --episodes) is_count "$value" || fail "--episodes: expected a positive integer, found '$value'"; episodes=$value ;;
        --snapshots) snapshots=$value ;;
        --model-b-kl) is_number "$value" || fail "--model-b-kl: expected a number, found '$value'"; model_b_kl=$value ;;
        --finetune-episodes) is_count "$value" || fail "--finetune-episodes: expected a positive integer, found '$value'"; finetune_episodes=$value ;;
        --finetune-lr) is_number "$value" || fail "--finetune-lr: expected a number, found '$value'"; finetune_lr=$value ;;
        --finetune-betas)
          for x in $value; do is_number "$x" || fail "--finetune-betas: expected numbers, found '$x'"; done
          [ -n "$value" ] || fail "--finetune-betas: expected at least one beta"
          finetune_betas=$value ;;
        --eval-batches) is_count "$value" && [ "$value" -ge 2 ] || fail "--eval-batches: expected an integer >= 2, found '$value'"; eval_batches=$value ;;
        --threads) is_count "$value" || fail "--threads: expected a positive integer, found '$value'"; threads=$value ;;
        --seed) case $value in '' | *[!0-9]*) fail "--seed: expected a non-negative integer, found '$value'" ;; esac; seed=$value ;;
        *) fail "unknown flag $1 (see --help)" ;;
      esac
      shift 2 ;;
    *) [ -z "$out" ] || fail "one output directory expected, found '$out' and '$1' (see --help)"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || fail "no output directory given (see --help)"
for part in $parts; do
  case " pretrain temperature finetune beta simulators conditional " in
    *" $part "*) ;;
    *) fail "--parts: unknown part '$part'" ;;
  esac
done
for n in $snapshots; do
  is_count "$n" && [ "$n" -lt "$episodes" ] || fail "--snapshots: expected episodes below --episodes ($episodes), found '$n'"
done
for program in qlearning_gmm1d qlearning_swiss_roll finetune_compare; do
  [ -x "$build/examples/$program" ] || { echo "$me: $build/examples/$program not found: build it first" >&2; exit 1; }
done
mkdir -p "$out"
common="--threads $threads --seed $seed --eval-batches $eval_batches"

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
    { echo "$me: $name failed; see $dir.log" >&2; exit 1; }
}
has() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }

# A field of a run's metrics.json, or "-" when the run has not finished.
field() {  # name key
  if [ -f "$out/$1/metrics.json" ]; then
    sed -n "s/.*\"$2\": \"\{0,1\}\([^\",]*\).*/\1/p" "$out/$1/metrics.json" | head -n 1
  else
    echo "-"
  fi
}

# Model A, its snapshots, and model B: the snapshot whose KL is closest to --model-b-kl.
model_a=$out/roll-beta0/checkpoint.pt
model_b_name() {
  best= best_gap=
  for n in $snapshots; do
    kl=$(field "roll-snapshot-$n" kl_mean)
    [ "$kl" = "-" ] && continue
    gap=$(awk -v a="$kl" -v b="$model_b_kl" 'BEGIN { d = a - b; print (d < 0 ? -d : d) }')
    if [ -z "$best" ] || awk -v a="$gap" -v b="$best_gap" 'BEGIN { exit !(a < b) }'; then best=$n best_gap=$gap; fi
  done
  echo "$best"
}
if has pretrain; then
  # shellcheck disable=SC2086
  run roll-beta0 qlearning_swiss_roll --beta 0 --episodes "$episodes" --snapshots $snapshots
  run roll-exact qlearning_swiss_roll --exact-score
  for n in $snapshots; do
    run "roll-snapshot-$n" qlearning_swiss_roll --episodes 0 --init "$out/roll-beta0/checkpoint_$n.pt"
  done
fi
if has temperature; then
  run roll-beta0-theta5 qlearning_swiss_roll --beta 0 --episodes "$episodes" --temperature 5
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
  b=$(model_b_name)
  [ -n "$b" ] || { echo "$me: no evaluated snapshot for model B: run --parts pretrain first" >&2; exit 1; }
  for model in a b; do
    init=$model_a
    [ $model = b ] && init=$out/roll-beta0/checkpoint_$b.pt
    for target in 0.7 0.8 0.9; do
      finetune "ft-$model-ddpo-$target" "$init" "$target" ddpo
      finetune "ft-$model-dpok-$target" "$init" "$target" dpok
      for beta in $finetune_betas; do
        finetune "ft-$model-qlearning-b$beta-$target" "$init" "$target" qlearning --beta "$beta"
      done
    done
  done
fi

if has beta; then
  run gmm1d-exact qlearning_gmm1d --exact-score
  for beta in 0 0.1 1; do run "gmm1d-beta$beta" qlearning_gmm1d --beta $beta --episodes "$episodes"; done
  for beta in 1 10 30; do run "roll-beta$beta" qlearning_swiss_roll --beta $beta --episodes "$episodes"; done
fi
if has conditional; then
  run gmm1d-conditional-exact qlearning_gmm1d --conditional --exact-score
  for beta in 0 1; do run "gmm1d-conditional-beta$beta" qlearning_gmm1d --conditional --beta $beta --episodes "$episodes"; done
fi
first_beta=${finetune_betas%% *}
if has simulators; then
  for sampler in sde ode-euler ddim; do
    for dt in 0.1 0.5 1; do
      run "sim-$sampler-dt$dt-exact" qlearning_swiss_roll --exact-score --sampler $sampler --dt $dt
      run "sim-$sampler-dt$dt" qlearning_swiss_roll --beta 0 --sampler $sampler --dt $dt --episodes "$episodes"
      finetune "sim-$sampler-dt$dt-to0.8" "$out/sim-$sampler-dt$dt/checkpoint.pt" 0.8 qlearning \
        --sampler $sampler --dt $dt --beta "$first_beta"
    done
  done
fi

pm() {  # name key: mean +- ci95
  mean=$(field "$1" "$2_mean")
  [ "$mean" = "-" ] && { echo "-"; return; }
  printf '%.3f +- %.3f' "$mean" "$(field "$1" "$2_ci95")"
}
# The same for class $3 of a conditional run.
class_pm() {  # name key class
  [ -f "$out/$1/metrics.json" ] || { echo "-"; return; }
  # The class's object: from its "class" key to its closing brace (one line or several).
  block=$(awk -v key="\"class\": $3," 'index($0, key) { on = 1 } on { print } on && /}/ { exit }' "$out/$1/metrics.json")
  printf '%.3f +- %.3f' "$(echo "$block" | sed -n "s/.*\"$2_mean\": \([^,}]*\).*/\1/p")" \
    "$(echo "$block" | sed -n "s/.*\"$2_ci95\": \([^,}]*\).*/\1/p")"
}
seconds() { s=$(field "$1" train_seconds); [ "$s" = "-" ] && echo "-" || printf '%.0f' "$s"; }
data_reward() { r=$(field "$1" data_reward); [ "$r" = "-" ] && echo "-" || printf '%.3f' "$r"; }

b=$(model_b_name)
{
  echo "Reward and KL (kNN, k = 2, generated || fresh data): mean +- 95% CI over $eval_batches batches of 300 samples."
  echo
  echo "| problem | model | reward | KL (nats) | data's reward | episodes | train s |"
  echo "|---|---|---|---|---|---|---|"
  echo "| 1-D mixture | exact score | $(pm gmm1d-exact reward) | $(pm gmm1d-exact kl) | $(data_reward gmm1d-exact) | - | - |"
  for beta in 0 0.1 1; do
    echo "| 1-D mixture | beta = $beta | $(pm gmm1d-beta$beta reward) | $(pm gmm1d-beta$beta kl) | $(data_reward gmm1d-beta$beta) | $(field gmm1d-beta$beta episodes) | $(seconds gmm1d-beta$beta) |"
  done
  echo "| Swiss roll | exact score | $(pm roll-exact reward) | $(pm roll-exact kl) | $(data_reward roll-exact) | - | - |"
  for beta in 0 1 10 30; do
    echo "| Swiss roll | beta = $beta | $(pm roll-beta$beta reward) | $(pm roll-beta$beta kl) | $(data_reward roll-beta$beta) | $(field roll-beta$beta episodes) | $(seconds roll-beta$beta) |"
  done
  echo
  echo "| pretrained Swiss roll model | reward | KL (nats) | KL (data \|\| samples) | episodes |"
  echo "|---|---|---|---|---|"
  echo "| exact score | $(pm roll-exact reward) | $(pm roll-exact kl) | $(pm roll-exact forward_kl) | - |"
  echo "| A (beta = 0, temperature 0.1) | $(pm roll-beta0 reward) | $(pm roll-beta0 kl) | $(pm roll-beta0 forward_kl) | $(field roll-beta0 episodes) |"
  echo "| A with temperature 5 | $(pm roll-beta0-theta5 reward) | $(pm roll-beta0-theta5 kl) | $(pm roll-beta0-theta5 forward_kl) | $(field roll-beta0-theta5 episodes) |"
  for n in $snapshots; do
    mark=
    [ "$n" = "$b" ] && mark=" = model B"
    echo "| A's run after $n episodes$mark | $(pm roll-snapshot-$n reward) | $(pm roll-snapshot-$n kl) | $(pm roll-snapshot-$n forward_kl) | $n |"
  done
  echo
  echo "| pretrained | method | target | reward | KL (nats) | iterations | train s |"
  echo "|---|---|---|---|---|---|---|"
  for model in a b; do
    for target in 0.7 0.8 0.9; do
      for method in ddpo dpok $(for beta in $finetune_betas; do echo "qlearning-b$beta"; done); do
        name=ft-$model-$method-$target
        label=$(echo "$method" | sed 's/qlearning-b\(.*\)/q-learning, beta = \1/')
        echo "| $(echo $model | tr ab AB) | $label | $target | $(pm "$name" reward) | $(pm "$name" kl) | $(field "$name" episodes) | $(seconds "$name") |"
      done
    done
  done
  echo
  echo "| simulator | steps | exact score: reward | exact score: KL | beta = 0: reward | beta = 0: KL | tuned to 0.8: reward | tuned to 0.8: KL | fine-tuning episodes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for sampler in sde ode-euler ddim; do
    for dt in 0.1 0.5 1; do
      name=sim-$sampler-dt$dt
      steps=$(awk -v dt=$dt 'BEGIN { printf "%d", 5 / dt + 0.5 }')
      echo "| $sampler | $steps | $(pm "$name-exact" reward) | $(pm "$name-exact" kl) | $(pm "$name" reward) | $(pm "$name" kl) | $(pm "$name-to0.8" reward) | $(pm "$name-to0.8" kl) | $(field "$name-to0.8" episodes) |"
    done
  done
  echo
  echo "| conditional 1-D mixture | model | class 0 (target -6): reward | class 0: KL | class 1 (target +6): reward | class 1: KL | train s |"
  echo "|---|---|---|---|---|---|---|"
  name=gmm1d-conditional-exact
  echo "| Algorithm 2 | exact score | $(class_pm $name reward 0) | $(class_pm $name kl 0) | $(class_pm $name reward 1) | $(class_pm $name kl 1) | - |"
  for beta in 0 1; do
    name=gmm1d-conditional-beta$beta
    echo "| Algorithm 2 | beta = $beta | $(class_pm $name reward 0) | $(class_pm $name kl 0) | $(class_pm $name reward 1) | $(class_pm $name kl 1) | $(seconds $name) |"
  done
} | tee "$out/study.md"
