"""experiments/million_envs.py: the curve statistics against hand-computed values, and the table."""

import json

import numpy as np
import pytest

from _experiments import load_experiment  # tests/ is on sys.path


def _mod():
    return load_experiment("million_envs")


def test_first_reach_skips_unevaluated_updates():
    m = _mod()
    nan = float("nan")
    assert m.first_reach([nan, 100.0, nan, 480.0, nan, 500.0]) == 3  # 475 by default
    assert m.first_reach([nan, 100.0, nan, 480.0, nan, 500.0], 500.0) == 5
    assert m.first_reach([nan, 474.9, nan]) is None
    assert m.first_reach([]) is None


def test_max_drawdown_by_hand():
    m = _mod()
    nan = float("nan")
    assert m.max_drawdown([1.0, 2.0, 3.0, 3.0]) == 0.0  # monotonic
    # running max 10, 10, 12, 12, 12: falls 0, 7, 0, 4, 1 -> 7
    assert m.max_drawdown([10.0, 3.0, 12.0, 8.0, 11.0]) == 7.0
    assert m.max_drawdown([nan, 5.0, nan, 1.0, 6.0]) == 4.0  # NaNs (no evaluation) skipped
    assert np.isnan(m.max_drawdown([nan, nan]))


def test_table_rows_from_a_hand_made_run():
    m = _mod()
    nan = float("nan")
    seed = lambda ev, run_s: {"eval_return": ev, "run_s": run_s, "final_eval": ev[-1], "steps_per_s": 4000 / run_s,  # noqa: E731
                              "eval_max_drawdown": m.max_drawdown(ev)}
    row = {"num_envs": 10, "num_steps": 100, "updates": 4, "batch": 1_000_000, "minibatch": 250_000, "num_minibatches": 4,
           "sgd_steps_per_update": 16, "compile_s": 1.0,
           # seed A: 475 at update 2, 500 at update 4; seed B: 480 at update 4, never 500
           "seeds": [seed([nan, 476.0, nan, 500.0], 8.0), seed([nan, 300.0, nan, 480.0], 4.0)]}
    line = [ln for ln in m.markdown([row], "cmd", "dev").splitlines() if ln.startswith("| 10 ")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6] == "490.0 ± 10.0"  # final eval: mean of 500 and 480, s.e. = std(ddof=1)/sqrt(2) = 10
    assert cells[8] == "2 / 2"  # both reached 475 ...
    assert cells[9] == "3.0 ± 1.0 M"  # ... at updates 2 and 4: 2 M and 4 M env steps
    assert cells[10] == "4.0 ± 0.0"  # seconds: 2/4 × 8 s = 4 and 4/4 × 4 s = 4
    assert cells[11] == "1 / 2" and cells[13] == "8.0 ± 0.0"  # only seed A reached 500, at 4/4 × 8 s


def test_rebuild_and_no_overwrite(tmp_path, capsys):
    m = _mod()
    with pytest.raises(SystemExit):
        m.main(["--rebuild", "--out", str(tmp_path)])
    assert "--rebuild needs" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"command": "c", "device": "d", "rows": []}))
    with pytest.raises(SystemExit):
        m.main(["--out", str(tmp_path)])
    assert "nothing is overwritten" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--eval-every", "0,2,1"], "--eval-every must be positive integers"),
    (["--envs", "2048.5,65536,1048576"], "not integers: [2048.5]"),
    (["--updates", "300,nan,12"], "not integers"),
    (["--envs", "2048,65536"], "the same number of entries"),
    (["--updates", "300,61,12", "--eval-every", "10,2,1"], "--updates 61 must be a multiple of --eval-every 2"),
    (["--minibatch", "100"], "--minibatch 100 must divide"),
])
def test_bad_arguments_refused_in_one_line(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _mod().main(argv + ["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "Traceback" not in err, err
