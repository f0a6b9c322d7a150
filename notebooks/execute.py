"""Execute notebooks in place, saving their outputs (what the saved files show).

    python notebooks/execute.py                          # every notebook, full size, on this machine
    python notebooks/execute.py scaling.ipynb            # one of them
    PRPO_NB_SCALE=gpu python notebooks/execute.py scaling.ipynb   # the scaling notebook's GPU list (to 2^20 envs)
    PRPO_NB_SMALL=1 python notebooks/execute.py --no-save         # the CI sizes, nothing written

Runs each through a Jupyter kernel of this interpreter (needs ``nbclient`` and ``ipykernel``, in
the ``test`` extra) with the notebook's folder as working directory, and prints each one's time.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def main(argv=None) -> int:
    import nbclient
    import nbformat

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", help="notebook files (default: every notebooks/*.ipynb)")
    p.add_argument("--no-save", action="store_true", help="execute only; leave the files as they are")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = p.parse_args(argv)
    paths = [pathlib.Path(n) if os.path.exists(n) else HERE / n for n in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as root:  # a python3 kernelspec for this interpreter, first on JUPYTER_PATH
        spec = pathlib.Path(root) / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python"}))
        os.environ["JUPYTER_PATH"] = root
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures saved as PNG outputs
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            nbclient.NotebookClient(nb, timeout=args.timeout, kernel_name="python3", record_timing=False,
                                    resources={"metadata": {"path": str(path.parent)}}).execute()
            nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
            if not args.no_save:
                nbformat.write(nb, path)
            print(f"{path.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
