"""The sweep spec (issue #16): expansion into trials and every bad input as one line naming the key
(no Ray here: nothing runs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from svilab.cli import command_parsers, main
from svilab.sweep.spec import SpecError, SweepSpec, option_actions
from svilab.sweep.stats import paired, summarize, t_interval

SPEC = """
command = "posterior"
seeds = 2
baseline = { guides = "gamma" }
[options]
steps = 300
nuts = false
[grid]
guides = ["gamma", "mvn"]
lr = [0.01, 1e-3]
"""


def spec(text: str, tmp_path=None) -> SweepSpec:
    return SweepSpec.from_text(text, tmp_path or ".")


def test_the_issue_spec_expands_to_the_cartesian_product_times_the_seeds():
    s = spec(SPEC)
    trials = s.trials()
    assert len(trials) == 2 * 2 * 2
    assert [t.setting for t in trials[::2]] == [{"guides": "gamma", "lr": 0.01}, {"guides": "gamma", "lr": 0.001},
                                                {"guides": "mvn", "lr": 0.01}, {"guides": "mvn", "lr": 0.001}]
    assert [t.seed for t in trials[:2]] == [0, 1]
    t = trials[1]
    # switches: true -> --flag, false -> nothing (store_true) or --no-flag (BooleanOptionalAction); floats exact
    assert t.argv == ("--steps=300", "--guides", "gamma", "--lr=0.01", "--seed=1")
    assert t.folder == "trials/guides=gamma,lr=0.01/seed-1"
    assert s.baseline == {"guides": "gamma"}
    vae = spec('command = "vae train"\n[options]\njit = false\nhidden = [10, 10]\n[grid]\nloss = ["gjs"]')
    assert vae.trials()[0].argv == ("--no-jit", "--hidden", "10", "10", "--loss=gjs", "--seed=0")


def test_options_lists_tables_and_paths(tmp_path):
    (tmp_path / "m.py").write_text("def model(data):\n    pass\n")
    text = """
command = "gradients"
seeds = [3, 7]
model = "m.py:model"
[options]
M = [10, 100]
reps = 20
data = "d.json"
[grid]
estimators = [["reparam", "score"], "score_cv"]
"""
    s = SweepSpec.from_text(text, tmp_path)
    trials = s.trials()
    assert [t.seed for t in trials] == [3, 7, 3, 7]
    assert trials[0].argv[:2] == (f"--model={tmp_path / 'm.py'}:model", "--M")
    assert f"--data={tmp_path / 'd.json'}" in trials[0].argv           # data is a path when there is a model
    assert trials[0].argv[-4:] == ("--estimators", "reparam", "score", "--seed=3")
    assert trials[2].setting == {"estimators": "score_cv"}
    assert trials[0].setting_key == "estimators=reparam+score"
    table = SweepSpec.from_text("""
command = "posterior"
[[grid.posterior]]
name = "a"
model = "x.py"
data = "x.json"
[[grid.posterior]]
name = "b"
model = "y.py"
data = "y.json"
""", tmp_path)
    tr = table.trials()
    assert [t.setting for t in tr] == [{"posterior": "a"}, {"posterior": "b"}]
    assert tr[1].argv[:2] == (f"--model={tmp_path / 'y.py'}", f"--data={tmp_path / 'y.json'}")


def test_the_parser_introspection_sees_every_option():
    # guards option_actions (argparse's parser._actions): the sweep cannot check names without it
    actions = option_actions(command_parsers()["posterior"])
    for opt in ("--steps", "--guides", "--nuts", "--lr", "--model", "--seed"):
        assert opt in actions
    assert set(command_parsers()) >= {"posterior", "vae train", "vae compare", "gradients", "elbo", "sweep"}


@pytest.mark.parametrize("text, message", [
    ("command = ", "not TOML"),
    ('command = "exact"', "command: expected one of"),
    ('command = "posterior"\nfoo = 1', "unknown key 'foo'"),
    ('command = "posterior"\n[options]\nstepz = 3', "options.stepz = 3: the command has no option --stepz"),
    ('command = "posterior"\n[grid]\n', "grid: empty"),
    ('command = "posterior"\n[grid]\nlr = []', "grid.lr: an empty list"),
    ('command = "posterior"\n[grid]\nlr = 0.1', "grid.lr: expected a list"),
    ('command = "posterior"\nseeds = 0', "seeds: must be at least 1"),
    ('command = "posterior"\nseeds = [1, 1]', "seeds: 1 given twice"),
    ('command = "posterior"\nseeds = [-1]', "seeds: each seed"),
    ('command = "posterior"\n[options]\nseed = 3', "options.seed: not allowed in a sweep"),
    ('command = "posterior"\n[options]\nout = "x"', "options.out: not allowed"),
    ('command = "posterior"\n[options]\nlr = [0.1, 0.2]', "options.lr = [0.1, 0.2]: --lr takes one value"),
    ('command = "posterior"\n[options]\nnuts = 1', "--nuts is a switch"),
    ('command = "posterior"\nbaseline = {lr = 1}\n[grid]\nguides = ["gamma"]', "baseline.lr: not a grid axis"),
    ('command = "posterior"\nbaseline = {guides = "flow"}\n[grid]\nguides = ["gamma"]', "baseline.guides = 'flow'"),
    ('command = "posterior"\nmetrics = ["accuracy"]', "metrics: 'accuracy' is not a metric of posterior"),
    ('command = "posterior"\n[options]\nsteps = 3\n[grid]\nsteps = [1]', "grid.steps: also given in [options]"),
])
def test_bad_specs_are_one_line_naming_the_key(text, message):
    with pytest.raises(SpecError, match=None) as info:
        s = spec(text)
        s.trials()
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("grid, message", [
    ("lr = [0.01, -1.0]", "grid.lr = -1.0: --lr must be a finite positive number"),
    ('guides = ["gamma", "banana"]', "grid.guides = 'banana': unknown guide"),
    ("steps = [0]", "grid.steps = 0: --steps must be >= 1"),
])
def test_a_grid_value_the_command_refuses_is_found_before_anything_runs(grid, message):
    s = spec(f'command = "posterior"\n[grid]\n{grid}')
    with pytest.raises(SpecError) as info:
        s.check()
    assert message in str(info.value), str(info.value)


def test_cli_bad_input_one_line_rc2_nothing_made(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('command = "posterior"\n[grid]\nlr = [-1.0]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "svilab sweep: error: grid.lr = -1.0" in err and not out.exists()
    good = tmp_path / "good.toml"
    good.write_text('command = "elbo"\n[options]\nM = [5]\nreps = 10\n')
    for argv, message in ([["sweep", str(good), "--max-concurrent", "0"], "--max-concurrent must be at least 1"],
                          [["sweep", "--resume", str(tmp_path)], "is not a sweep folder"],
                          [["sweep", str(good), "--address", "127.0.0.1:1", "--out", str(out)],
                           "--address 127.0.0.1:1: cannot connect"],
                          [["sweep", str(good), "--address", "nowhere"], "expected auto, HOST:PORT"],
                          [["sweep", str(tmp_path / "missing.toml")], "cannot read it"],
                          [["sweep", "--report", str(tmp_path), "--dry-run"], "--report only re-aggregates"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not out.exists()


def test_dry_run_prints_the_trials_and_an_estimate_and_makes_nothing(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(SPEC)
    assert main(["sweep", str(f), "--dry-run", "--json"]) == 0
    cap = capsys.readouterr()
    got = json.loads(cap.out)
    assert len(got["trials"]) == 8 and got["seconds"] > 0 and "trials/guides=mvn,lr=0.001" in cap.err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- statistics
def test_t_interval_is_scipys_student_t_interval():
    x = [0.3, 1.2, 0.7, 2.5, 1.1]
    got = t_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert got["n"] == 5 and math.isclose(got["ci_low"], lo, rel_tol=1e-12) and math.isclose(got["ci_high"], hi,
                                                                                              rel_tol=1e-12)
    assert math.isclose(got["sd"], np.std(x, ddof=1), rel_tol=1e-12)
    one = t_interval([2.0, None, math.nan])
    assert one == {"n": 1, "mean": 2.0, "sd": None, "ci_low": None, "ci_high": None}
    assert t_interval([])["mean"] is None


def _trial(key, setting, seed, metrics, status="done"):
    return {"setting_key": key, "setting": setting, "seed": seed, "status": status,
            "metrics": metrics, "units": {k: {"method": k} for k in metrics}}


def test_summary_counts_failures_and_paired_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.3, 6), rng.normal(0.7, 0.3, 6)
    settings = [("guides=gamma", {"guides": "gamma"}), ("guides=mvn", {"guides": "mvn"}),
                ("guides=flow", {"guides": "flow"})]
    trials = [_trial("guides=gamma", {"guides": "gamma"}, s, {"gamma": {"kl": a[s]}}) for s in range(6)]
    trials += [_trial("guides=mvn", {"guides": "mvn"}, s, {"mvn": {"kl": b[s]}}) for s in range(5)]
    trials += [_trial("guides=mvn", {"guides": "mvn"}, 5, {}, status="failed")]
    trials += [_trial("guides=flow", {"guides": "flow"}, s, {}, status="failed") for s in range(6)]
    summ = summarize(trials, settings, list(range(6)))
    mvn = next(r for r in summ if r["setting"] == {"guides": "mvn"})
    assert mvn["n"] == 5 and mvn["failed"] == 1 and math.isclose(mvn["mean"], b[:5].mean())
    flow = next(r for r in summ if r["setting"] == {"guides": "flow"})
    assert flow["metric"] is None and flow["failed"] == 6          # a setting that failed entirely is shown
    pairs = paired(trials, settings, {"guides": "gamma"})
    p = next(r for r in pairs if r["setting"] == {"guides": "mvn"})
    assert p["unit_label"] == "mvn" and p["baseline_unit_label"] == "gamma" and p["n"] == 5
    ci = stats.ttest_rel(b[:5], a[:5]).confidence_interval(0.95)
    assert math.isclose(p["ci_low"], ci.low, rel_tol=1e-10) and math.isclose(p["ci_high"], ci.high, rel_tol=1e-10)
    assert p["excludes_zero"] == (ci.low > 0 or ci.high < 0)
