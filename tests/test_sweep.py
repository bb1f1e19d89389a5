"""svilab sweep on Ray (issue #16), on tiny trials: a sweep whose driver is killed with SIGKILL leaves
no Ray process behind and resumes with only its unfinished trials (finished ones byte-identical); a
trial equals the command run alone; the summary and paired intervals are those of the trials'
own results; failures are recorded, never dropped; TensorBoard reads every trial; --report
re-aggregates to the same sweep.json; a trial whose worker is killed is retried, then recorded as
failed; and a two-node Ray cluster gives the same results with trials on both nodes.

The checks that no Ray process is left look only at the Ray processes these tests started: each carries
the environment variable SVILAB_TEST_RAY set here (Ray's processes inherit the driver's environment), so
another Ray on the machine (a study running beside the tests) is not counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svilab.cli import main
from svilab.experiments.runs import read_status
from svilab.sweep.stats import t_interval

pytest.importorskip("ray")

GOOD, BAD = "5,0.5,1,0.2", "-5,0.1,1,0.2"      # BAD: the truncated Normal underflows, found when the trial runs
SPEC = f"""
command = "elbo"
seeds = 3
baseline = {{ reps = 40 }}
[options]
M = [5, 10]
[grid]
point = ["{GOOD}", "{BAD}"]
reps = [40, 60]
"""


MARK = f"SVILAB_TEST_RAY=svilab-tests-{os.getpid()}"
os.environ["SVILAB_TEST_RAY"] = MARK.split("=", 1)[1]


def _ours(pid: str) -> bool:
    try:
        return MARK.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:                       # gone, or not ours to read
        return False


def ray_processes() -> list[str]:
    """The Ray processes these tests started (see the module docstring)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if any(k in ln for k in ("raylet", "gcs_server", "ray::"))
            and _ours(ln.split()[0])]


def folder_bytes(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}


def _sweep_until_a_trial_finished(tmp: Path) -> tuple[subprocess.Popen, Path]:
    """``svilab sweep SPEC`` started in its own process and session, returned once its first trial finished."""
    spec = tmp / "spec.toml"
    spec.write_text(SPEC)
    out = tmp / "sweep"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "svilab", "sweep", str(spec), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("trials/*/seed-*/trial.json")):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    return proc, out


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A sweep killed (SIGKILL) after its first finished trial, then resumed in this process."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tmp / "spec.toml"
    proc, out = _sweep_until_a_trial_finished(tmp)
    proc.kill()
    proc.wait()
    finished_before = {p.parent: folder_bytes(p.parent) for p in out.glob("trials/*/seed-*/trial.json")}
    assert finished_before, "no trial finished in time"
    deadline = time.time() + 20              # the watchdog ends what Ray left behind
    while time.time() < deadline and ray_processes():
        time.sleep(0.5)
    left = ray_processes()
    status = read_status(out)["status"]
    import contextlib
    import io

    dry = io.StringIO()                       # a dry run of the resume lists only the unfinished trials
    with contextlib.redirect_stdout(dry):
        assert main(["sweep", "--resume", str(out), "--dry-run", "--json"]) == 0
    planned = len(json.loads(dry.getvalue())["trials"])
    rc = main(["sweep", "--resume", str(out), "--json"])
    return {"out": out, "spec": spec, "before": finished_before, "left": left, "status": status, "rc": rc,
            "planned": planned}


def test_a_killed_sweep_leaves_no_ray_and_resumes_only_its_unfinished_trials(killed_and_resumed, capsys):
    k = killed_and_resumed
    assert k["left"] == [] and k["status"] == "killed"
    assert k["rc"] == 0 and k["planned"] == 12 - len(k["before"])
    for folder, before in k["before"].items():                 # finished trials untouched, byte for byte
        assert folder_bytes(folder) == before
    sj = json.loads((k["out"] / "sweep.json").read_text())
    assert sj["counts"] == {"trials": 12, "done": 6, "failed": 6, "pending": 0}
    assert read_status(k["out"])["status"] == "finished" and ray_processes() == []
    for t in sj["trials"]:
        assert (t["status"] == "failed") == (t["setting"]["point"] == BAD)
        if t["status"] == "failed":
            assert "mu/sigma = -50" in t["error"] and t["metrics"] == {}


def test_a_trial_equals_the_command_run_alone(killed_and_resumed, tmp_path):
    out = killed_and_resumed["out"]
    trial = json.loads((out / f"trials/point={GOOD},reps=60/seed-2/trial.json").read_text())
    alone = tmp_path / "alone"
    assert main(["elbo", *trial["argv"], "--out", str(alone)]) == 0
    assert (alone / "results.json").read_text() == (out / trial["folder"] / "results.json").read_text()
    cfg_a, cfg_t = (json.loads((p / "config.json").read_text()) for p in (alone, out / trial["folder"]))
    assert cfg_a == cfg_t


def test_summary_and_paired_intervals_are_those_of_the_trials(killed_and_resumed):
    out = killed_and_resumed["out"]
    sj = json.loads((out / "sweep.json").read_text())

    def values(reps):
        res = [json.loads((out / f"trials/point={GOOD},reps={reps}/seed-{s}/results.json").read_text())
               for s in range(3)]
        return [r["results"][0]["std"] ** 2 for r in res]        # M = 5: the variance of the estimate

    row = next(r for r in sj["summary"] if r["setting"] == {"point": GOOD, "reps": 60} and r["unit_label"] == "M=5"
               and r["metric"] == "variance")
    expect = t_interval(values(60))
    assert row["n"] == 3 and row["failed"] == 0
    for key in ("mean", "sd", "ci_low", "ci_high"):
        assert row[key] == pytest.approx(expect[key], rel=1e-12)
    bad = next(r for r in sj["summary"] if r["setting"] == {"point": BAD, "reps": 40})
    assert bad["failed"] == 3 and bad["n"] == 0                 # shown, not dropped
    pair = next(r for r in sj["paired"] if r["setting"] == {"point": GOOD, "reps": 60} and r["unit_label"] == "M=5"
                and r["metric"] == "variance")
    diffs = [a - b for a, b in zip(values(60), values(40), strict=True)]
    assert pair["n"] == 3 and pair["mean_diff"] == pytest.approx(t_interval(diffs)["mean"], rel=1e-12)
    assert pair["baseline"] == {"point": GOOD, "reps": 40}
    for name in ("summary.csv", "summary.md", "paired.csv", "paired.md", "trials.csv", "metric_variance.png",
                 "paired.png", "spec.toml", "trials.json", "config.json"):
        assert (out / name).is_file(), name


def test_tensorboard_reads_every_trial_and_report_reaggregates_the_same(killed_and_resumed, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = killed_and_resumed["out"]
    trial = out / f"trials/point={GOOD},reps=40/seed-0"
    acc = EventAccumulator(str(trial))
    acc.Reload()
    assert "final/M=5/variance" in acc.Tags()["scalars"]
    before = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").unlink()
    assert main(["sweep", "--report", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == before == json.loads((out / "sweep.json").read_text())


def test_a_two_node_cluster_runs_trials_on_both_nodes_with_the_same_results(killed_and_resumed, tmp_path, capsys):
    from ray.cluster_utils import Cluster

    spec = tmp_path / "spec.toml"
    spec.write_text(f'command = "elbo"\nseeds = 3\n[options]\nM = [5, 10]\n[grid]\npoint = ["{GOOD}"]\nreps = [40]\n')
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        rc = main(["sweep", str(spec), "--address", cluster.address, "--out", str(tmp_path / "c"), "--json"])
    finally:
        cluster.shutdown()
    assert rc == 0
    sj = json.loads(capsys.readouterr().out)
    assert len({t["node"] for t in sj["trials"]}) == 2
    local = killed_and_resumed["out"]
    for t in sj["trials"]:
        mine = (tmp_path / "c" / t["folder"] / "results.json").read_text()
        assert mine == (local / t["folder"] / "results.json").read_text()
    assert ray_processes() == []


KILLER = '''
import os
import sys

import pyro
import pyro.distributions as dist


def model(data):
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():          # in a Ray worker: die as the OOM killer would
        with open(os.environ["SVILAB_TEST_KILL_LOG"], "a") as f:
            f.write("attempt\\n")
        os.kill(os.getpid(), 9)
    pyro.sample("x", dist.Normal(0.0, 1.0))
'''


def test_a_trial_whose_worker_dies_is_retried_then_recorded_as_failed(tmp_path, monkeypatch, capsys):
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "data.json").write_text('{"n": 1}')
    (tmp_path / "spec.toml").write_text('command = "elbo"\nmodel = "killer.py"\n[options]\ndata = "data.json"\n'
                                        'M = [5]\nreps = 10\n')
    log = tmp_path / "attempts.txt"
    monkeypatch.setenv("SVILAB_TEST_KILL_LOG", str(log))
    assert main(["sweep", str(tmp_path / "spec.toml"), "--retries", "1", "--max-concurrent", "1", "--json",
                 "--out", str(tmp_path / "s")]) == 0
    sj = json.loads(capsys.readouterr().out)
    assert log.read_text().count("attempt") == 2                # the first run and one retry
    (trial,) = sj["trials"]
    assert trial["status"] == "failed" and "worker died" in trial["error"] and "1 retries" in trial["error"]
    assert sj["counts"]["failed"] == 1 and ray_processes() == []


def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path):
    """ray.init installs its own SIGTERM handlers (one prints a C++ stack dump and exits at once); the sweep puts
    svilab's back, so SIGTERM cancels the trials, shuts Ray down and says so, with the finished trials kept."""
    proc, out = _sweep_until_a_trial_finished(tmp_path)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 143, err
    assert "svilab sweep: terminated (SIGTERM)" in err and "SIGTERM received at time" not in err, err
    assert read_status(out)["status"] == "interrupted"
    assert list(out.glob("trials/*/seed-*/trial.json"))        # what finished is kept
    deadline = time.time() + 20
    while time.time() < deadline and ray_processes():
        time.sleep(0.5)
    assert ray_processes() == []
