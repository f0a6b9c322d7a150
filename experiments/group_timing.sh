#!/usr/bin/env bash
# Time per update of PPO and the critic-free group algorithms, each run alone (one process at a
# time, so the timings do not share the device). Usage: bash experiments/group_timing.sh OUTDIR
set -uo pipefail
out=${1:?usage: group_timing.sh OUTDIR}
mkdir -p "$out"
for shape in "16 128 5e5 8" "2048 128 5242880 1"; do
  set -- $shape
  for algo in ppo rloo remax grpo reinforce_pp; do
    python -m prpo train "$algo" --env CartPole-v1 --num-envs "$1" --set num_steps="$2" --total-steps "$3" \
      --seeds "$4" --out "$out/$algo-$1" --no-progress > "$out/$algo-$1.log" 2>&1 || echo "$algo-$1 failed"
    python - "$out/$algo-$1/summary.json" "$algo" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>13} {sys.argv[3]:>5} envs  {s['steps_per_s']/1e6:8.3f} M env-steps/s  compile {s['compile_s']:5.1f} s  "
      f"return {s['final_return_mean']:.1f}")
PY
  done
done | tee "$out/timing.txt"
