"""Time from command to error for every CLI case of tests/test_bad_input.py, as a user meets it.

Each case runs as its own ``python -m prpo ...`` process (interpreter start, imports, validation);
the script prints the per-case seconds, the exit codes and the slowest case.

    python benchmarks/bad_input_latency.py --out benchmarks/results/bad-input-latency-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from test_bad_input import CLI_CASES

    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")}
    rows = []
    for argv_, needle in CLI_CASES:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "prpo", *argv_], capture_output=True, text=True, env=env, cwd=ROOT)
        dt = time.perf_counter() - t0
        rows.append({"argv": argv_, "seconds": round(dt, 2), "rc": proc.returncode,
                     "one_line": len(proc.stderr.strip().splitlines()) == 1, "needle_found": needle in proc.stderr})
        print(json.dumps(rows[-1]), flush=True)
    slowest = max(rows, key=lambda r: r["seconds"])
    print(f"{len(rows)} cases; all exit 2: {all(r['rc'] == 2 for r in rows)}; slowest {slowest['seconds']} s: "
          f"python -m prpo {' '.join(slowest['argv'])}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "slowest": slowest}, f, indent=1)


if __name__ == "__main__":
    main()
