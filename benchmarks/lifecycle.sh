#!/usr/bin/env bash
# Lifecycle measurements on a GPU machine (closing note of the lifecycle issue): checkpoint cost
# (seconds, bytes) for PPO CartPole x 4 seeds and brax ant at 2048 envs, Ctrl-C + resume vs a straight
# run, eval --video for both. Run from the repo root; writes to $OUT (default ./lifecycle-out).
# `bash benchmarks/lifecycle.sh brax` runs the brax part only.
OUT=${OUT:-./lifecycle-out}; mkdir -p $OUT
set -x
[ -d .whl ] && { python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1; }
# MUJOCO_GL: prpo.render picks egl or osmesa itself for the video
nvidia-smi --query-gpu=name,memory.total --format=csv
C="python3 -m prpo train --no-progress"
if [ "${1:-all}" != brax ]; then
$C --seeds 4 --out /tmp/cp --checkpoint-every 61 2>&1 | tail -2
python3 -c "import json; s=json.load(open('/tmp/cp/summary.json')); print({k: s.get(k) for k in ('final_returns','checkpoint_s','checkpoint_bytes','checkpoints_written','steps_per_s','compile_s','run_s','wall_s')})"
# Ctrl-C half-way, resume, compare with the straight run (GPU)
$C --seeds 4 --out /tmp/cut --checkpoint-every 61 > /tmp/cut.log 2>&1 &
P=$!; while [ ! -s /tmp/cut/metrics.jsonl ]; do sleep 0.05; done; sleep 1; kill -INT $P; wait $P; echo "rc=$?"; tail -1 /tmp/cut.log
$C --resume /tmp/cut 2>&1 | tail -1
python3 - <<'PY'
import json, numpy as np, jax, prpo
a=json.load(open('/tmp/cp/summary.json')); b=json.load(open('/tmp/cut/summary.json'))
print("resumed_at", b.get("resumed_at_update"), "final equal", a["final_returns"]==b["final_returns"], a["final_returns"], b["final_returns"])
print("jsonl equal", open('/tmp/cp/metrics.jsonl').read()==open('/tmp/cut/metrics.jsonl').read())
_, sa = prpo.load('/tmp/cp'); _, sb = prpo.load('/tmp/cut')
d = max(float(np.max(np.abs(np.asarray(x, np.float64)-np.asarray(y, np.float64)))) for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)))
print("max param diff", d)
PY
# GPU determinism: the same straight run twice (bit-identical?), and with deterministic GPU ops
$C --seeds 4 --out /tmp/cp2 2>&1 | tail -1
XLA_FLAGS=--xla_gpu_deterministic_ops=true $C --seeds 4 --out /tmp/d1 2>&1 | tail -1
XLA_FLAGS=--xla_gpu_deterministic_ops=true $C --seeds 4 --out /tmp/d2 --checkpoint-every 61 > /tmp/d2.log 2>&1 &
P=$!; while [ ! -s /tmp/d2/metrics.jsonl ]; do sleep 0.05; done; sleep 1; kill -INT $P; wait $P; echo "rc=$?"; tail -1 /tmp/d2.log
XLA_FLAGS=--xla_gpu_deterministic_ops=true $C --resume /tmp/d2 2>&1 | tail -1
python3 - <<'PY'
import json
print("straight twice: jsonl equal", open('/tmp/cp/metrics.jsonl').read()==open('/tmp/cp2/metrics.jsonl').read())
print("deterministic ops, straight vs Ctrl-C + resume at", json.load(open('/tmp/d2/summary.json')).get("resumed_at_update"),
      ": jsonl equal", open('/tmp/d1/metrics.jsonl').read()==open('/tmp/d2/metrics.jsonl').read())
PY
python3 -m prpo eval /tmp/cp --episodes 10 --video $OUT/cartpole.gif 2>&1 | tail -2
fi
# brax ant, 2048 envs
$C ppo --env ant --num-envs 2048 --total-steps 3e6 --out /tmp/ant --checkpoint-every 10 2>&1 | tail -2
python3 -c "import json; s=json.load(open('/tmp/ant/summary.json')); print({k: s.get(k) for k in ('final_returns','num_updates','checkpoint_s','checkpoint_bytes','checkpoints_written','steps_per_s','compile_s','run_s','wall_s')})"
du -sb /tmp/ant/checkpoints/*
python3 -m prpo eval /tmp/ant --episodes 2 --video $OUT/ant.gif 2>&1 | tail -2
cp /tmp/ant/eval.json $OUT/ant-eval.json; cp /tmp/ant/summary.json $OUT/ant-summary.json
[ "${1:-all}" != brax ] && { cp /tmp/cp/eval.json $OUT/cp-eval.json; cp /tmp/cp/summary.json $OUT/cp-summary.json; cp /tmp/cut/summary.json $OUT/cut-summary.json; }
ls -la $OUT
