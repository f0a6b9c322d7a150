#!/usr/bin/env bash
# The issue-15 piece ablations in one go (one GPU; each study a separate process, run side by
# side). Usage: bash experiments/po_pieces.sh OUTDIR   (writes OUTDIR/<study>/ and logs).
# Every study is also reproducible alone: its command is in its results README.
set -uo pipefail
out=${1:?usage: po_pieces.sh OUTDIR}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
A="python experiments/ablation.py --no-progress"
run() { local name=$1; shift; ( /usr/bin/time -f "$name wall %e s" "$@" > "$out/$name.log" 2>&1; echo "$name rc $?" >> "$out/$name.log" ) & }
# 4: group rollouts, every algorithm on 16 envs x 128 steps (the group presets' batch)
run po-group-rollouts $A --algos ppo,rloo,remax,grpo,reinforce_pp --envs CartPole-v1 --num-envs 16 --seeds 8 --out "$out/po-group-rollouts"
# 9: ST-PPO vs PPO, 10 epochs (more off-policy minibatches), clipping fractions logged
run po-stppo $A --algos ppo,stppo --envs CartPole-v1 --seeds 8 --set update_epochs=10 --metric step_clip_frac --metric stppo_bias --out "$out/po-stppo"
# 11: PROPS vs PPO, sampling error logged
run po-props $A --algos ppo,props --envs CartPole-v1,Pendulum-v1 --seeds 8 --metric props_sampling_error --out "$out/po-props"
# 12: PMOE vs Gaussian PPO on brax hopper (positional), deterministic evaluation
run po-pmoe-hopper $A --algos ppo,pmoe --envs hopper --seeds 5 --total-steps 1e7 --set env_backend=positional --eval --out "$out/po-pmoe-hopper"
# 12: the two-goal task
run multimodal-pmoe python experiments/multimodal.py --algos ppo,fpo,dppo,pmoe --seeds 3 --budgets 3e4,1.2e5 --out "$out/multimodal-pmoe"
# 8: DPPO per-step ratios and GRPO-Guard variants
for v in none guard guard+reweight batch; do
  run "sr-$v" python experiments/dppo_step_ratios.py --seeds 8 --total-steps 3e5 --variants "$v" --out "$out/sr-$v"
done
wait
python experiments/dppo_step_ratios.py --merge "$out"/sr-none "$out"/sr-guard "$out"/sr-guard+reweight "$out"/sr-batch --out "$out/dppo-step-ratios" > "$out/sr-merge.log" 2>&1
grep -h "wall\| rc " "$out"/*.log
