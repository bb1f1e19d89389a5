"""Reliability (issue #10): every case of docs/reliability.md gives a one-line error naming the
option or file (rc 2) or the right result; nothing written is lost, no run folder is clobbered."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from functools import partialmethod
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

from svilab.cli import main
from svilab.experiments.runs import LOCK, RunFolder
from svilab.inference.estimators import Target, estimate
from svilab.inference.estimators.base import BYTES_PER_SAMPLE_COORD
from svilab.inference.exact import ExactPosterior
from svilab.inference.exact_elbo import exact_elbo_and_grad
from svilab.models import PoissonGamma
from svilab.validation import parse_floats

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- run folders
def test_a_finished_run_folder_is_never_clobbered(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["exact", "--json", "--out", str(out)]) == 0
    before = (out / "results.json").read_text()
    assert main(["elbo", "--M", "5", "--reps", "10", "--out", str(out)]) == 2
    _one_line_error(capsys, f"run folder {out} is not empty", "--overwrite")
    assert (out / "results.json").read_text() == before and not (out / "elbo.csv").exists()
    # --overwrite replaces an earlier svilab run completely (no mixing of two commands' files)
    assert main(["elbo", "--M", "5", "--reps", "10", "--overwrite", "--out", str(out)]) == 0
    assert (out / "elbo.csv").exists() and not (out / "exact_vs_cavi.csv").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert main(["exact", "--overwrite", "--out", str(mine)]) == 2
    _one_line_error(capsys, "not an svilab run folder")
    assert (mine / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_out_that_cannot_be_a_folder(tmp_path, capsys, kind):
    f = tmp_path / "afile"
    f.write_text("x")
    out = f if kind == "file" else f / "sub"
    assert main(["exact", "--out", str(out)]) == 2
    _one_line_error(capsys, f"cannot create run folder {out}")


def test_a_folder_in_use_by_a_live_process_is_refused_and_a_stale_lock_is_taken(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(str(os.getppid()))          # a live process that is not us
    with pytest.raises(ValueError, match=f"in use by svilab process {os.getppid()}"):
        RunFolder("x", out=out)
    (out / LOCK).write_text("999999999")                  # no such process: stale
    folder = RunFolder("x", out=out)
    assert json.loads((folder.path / LOCK).read_text())["pid"] == os.getpid()
    folder.finish()
    assert not (folder.path / LOCK).exists() and json.loads((out / "status.json").read_text())["status"] == "finished"


def test_two_processes_on_one_out_one_wins_the_other_says_why(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "svilab", "posterior", "--guides", "gamma", "--steps", "400", "--draws", "200",
           "--elbo-samples", "1000", "--out", str(out)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "in use by svilab process" in loser or "is not empty" in loser
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "posterior" and (out / "results.json").exists()
    assert not list(out.glob("*.tmp")) and not (out / LOCK).exists()


def test_default_folders_of_runs_started_in_the_same_second_differ(tmp_path):
    a = RunFolder("exact", root=tmp_path)
    b = RunFolder("exact", root=tmp_path)
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()


def test_an_error_after_the_folder_exists_leaves_no_half_folder(tmp_path, capsys):
    out = tmp_path / "run"
    # a point whose truncation is beyond float64: found when sampling, after the folder was made
    assert main(["gradients", "--point=-5,0.1,1,0.2", "--M", "10", "--reps", "10", "--out", str(out)]) == 2
    _one_line_error(capsys, "mu/sigma = -50")
    assert not out.exists()


# ----------------------------------------------------------------------------- VAE checkpoints and resume
def _vae_run(tmp_path, capsys):
    from tests.test_vae import write_idx

    data = write_idx(tmp_path / "data", n_train=60)
    run = tmp_path / "run"
    argv = ["vae", "train", "--data-root", str(data), "--validation", "10", "--batch-size", "10", "--epochs", "1",
            "--eval-k", "3", "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    return data, run


@pytest.mark.parametrize("damage, message", [
    ("truncated", "cannot read checkpoint"),
    ("random", "cannot read checkpoint"),
    ("empty", "cannot read checkpoint"),
    ("missing_key", "not an svilab VAE checkpoint (missing optim)"),
    ("mismatched", "does not fit its own configuration"),
])
def test_corrupt_checkpoints_give_one_line(tmp_path, capsys, damage, message):
    _, run = _vae_run(tmp_path, capsys)
    ckpt = run / "checkpoint.pt"
    raw = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(raw[: len(raw) // 2])
    elif damage == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        state = torch.load(ckpt, weights_only=False)
        if damage == "missing_key":
            del state["optim"]
        else:
            state["config"]["vae"]["latent_dim"] = 7
        torch.save(state, ckpt)
    assert main(["vae", "train", "--resume", str(run), "--epochs", "2"]) == 2
    _one_line_error(capsys, message, str(ckpt) if damage != "missing_key" else "checkpoint")


def test_resume_refuses_conflicting_options_and_keeps_absolute_data_root(tmp_path, capsys, monkeypatch):
    data, run = _vae_run(tmp_path, capsys)
    cfg = json.loads((run / "config.json").read_text())
    assert Path(cfg["data_root"]).is_absolute()
    assert main(["vae", "train", "--resume", str(run), "--preset", "standard", "--loss", "gjs", "--seed", "7"]) == 2
    line = _one_line_error(capsys, "conflict", "--preset standard", "--loss gjs", "--seed 7")
    assert "Only --epochs, --time-limit, --data-root and --device may change" in line
    assert main(["vae", "train", "--resume", str(tmp_path / "nothere")]) == 2
    _one_line_error(capsys, "no such run folder")
    assert not (tmp_path / "nothere").exists()
    # the stored absolute root works from another directory; --data-root wins over it
    monkeypatch.chdir(tmp_path / "data")
    assert main(["vae", "train", "--resume", str(run), "--epochs", "2", "--data-root", str(data)]) == 0
    assert len(json.loads((run / "results.json").read_text())["history"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--loss", "elbo", "--alpha", "0.3"], "--alpha is the skew of gjs/dgjs"),
    (["--loss", "elbo", "--beta", "2"], "--beta weighs the divergence"),
    (["--time-limit", "-1"], "--time-limit must be a positive number"),
    (["--time-limit", "nan"], "--time-limit must be a positive number"),
    (["--seed", "-1"], "--seed must be an integer in [0,"),
])
def test_vae_options_that_were_silently_accepted(tmp_path, capsys, argv, message):
    from tests.test_vae import write_idx

    data = write_idx(tmp_path / "data")
    assert main(["vae", "train", "--data-root", str(data), "--validation", "5", "--out", str(tmp_path / "r"),
                 *argv]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "r").exists()


def test_vae_compare_duplicate_losses(tmp_path, capsys):
    assert main(["vae", "compare", "--losses", "elbo", "elbo", "trace_elbo", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "--losses: elbo given twice")


# ----------------------------------------------------------------------------- numbers: never silently wrong
def test_far_tail_point_gives_finite_estimates_close_to_exact():
    target = Target.from_poisson_gamma(PoissonGamma())
    point = (-1.0, 0.1, 1.0, 0.2)                      # mu_u / sigma_u = -10: Phi = 7.6e-24
    exact, grad = exact_elbo_and_grad(target, "normal", point)
    v = estimate("elbo", target, "normal", point, M=100, reps=200, seed=0).double()
    assert torch.isfinite(v).all()
    assert abs(float(v.mean()) - exact) < 4.5 * float(v.std()) / math.sqrt(200)
    g = estimate("reparam", target, "normal", point, M=100, reps=200, seed=0)
    z = (g.mean(0) - grad) / (g.std(0) / math.sqrt(200))
    assert torch.isfinite(g).all() and (z.abs() < 4.5).all()


@pytest.mark.parametrize("data", ["1e12,2e12", "1e14,1e14"])
def test_exact_refuses_counts_beyond_its_quadrature(tmp_path, capsys, data):
    assert main(["exact", "--data", data, "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "quadrature lost accuracy")
    assert not (tmp_path / "r").exists()


def test_exact_large_counts_stay_consistent_and_cavi_non_convergence_is_reported(tmp_path, capsys):
    exact = ExactPosterior(PoissonGamma([1_000_000, 1_000_000]))
    assert -1 <= exact.corr <= -0.99 and exact.accuracy < 1e-9
    # the ridge u v = S / N: E[uv] from the quadrature against the conditional's closed form
    assert main(["exact", "--data", "1000000,1000000", "--json", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["cavi"]["converged"] is False and "did not converge" in res["warnings"][0]
    assert "warning: CAVI did not converge" in out.err


@pytest.mark.parametrize("text", ["3,,4", ",3", "3,", ""])
def test_empty_items_in_number_lists(text):
    with pytest.raises(ValueError, match="--data: an empty item"):
        parse_floats(text, "--data")


def test_fit_rejects_meaningless_stopping_rules():
    from svilab.guides import make_guide
    from svilab.inference.svi import fit

    pg = PoissonGamma()
    with pytest.raises(ValueError, match="patience must be >= 1"):
        fit(pg.model, make_guide("gamma", pg.model), steps=10, stop_tol=0.1, patience=0)
    with pytest.raises(ValueError, match="smoothing must be in"):
        fit(pg.model, make_guide("gamma", pg.model), steps=10, smoothing=2)


@pytest.mark.parametrize("argv, message", [
    (["posterior", "--nuts", "--nuts-samples", "1"], "--nuts-samples must be >= 4"),
    (["posterior", "--elbo-samples", "1"], "--elbo-samples must be >= 2"),
    (["posterior", "--loss", "renyi", "--alpha", "inf"], "--alpha must be a finite number"),
    (["demo", "--seed=-1"], "--seed must be an integer in [0,"),
    (["exact", "--data", "3,,4"], "--data: an empty item"),
    (["exact", "--threads", "0"], "--threads must be a positive integer"),
])
def test_options_checked_before_any_work(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- memory
def test_memory_budget_refuses_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SVILAB_MEMORY_GB", "0.01")
    assert main(["gradients", "--estimators", "reparam", "--M", "10000000", "--reps", "2",
                 "--out", str(tmp_path / "a")]) == 2
    _one_line_error(capsys, "M = 10000000 (samples in one estimate) needs about", "SVILAB_MEMORY_GB")
    assert main(["posterior", "--elbo-samples", "1000000", "--out", str(tmp_path / "b")]) == 2
    _one_line_error(capsys, "--elbo-samples 1000000 needs about")
    monkeypatch.setenv("SVILAB_MEMORY_GB", "lots")
    assert main(["elbo", "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "SVILAB_MEMORY_GB must be a positive number")


@pytest.mark.parametrize("name", ["score_cv", "reparam"])
def test_measured_memory_per_sample_is_within_the_budget_constant(name):
    """The constant behind the up-front refusal, against the peak resident size of a fresh process."""
    code = f"""
from svilab.inference.estimators import Target, estimate
from svilab.models import PoissonGamma

def hwm():
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]) * 1024

T = Target.from_poisson_gamma(PoissonGamma())
estimate({name!r}, T, "normal", (5, 0.5, 1, 0.2), 10, 10)
open("/proc/self/clear_refs", "w").write("5")     # reset the peak resident size to the current one
r0 = hwm()
estimate({name!r}, T, "normal", (5, 0.5, 1, 0.2), 3_000_000, 2)
print((hwm() - r0) / 3_000_000)
"""
    per_sample = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.split()[-1])
    assert 50 < per_sample <= BYTES_PER_SAMPLE_COORD * 2 * 8


# ----------------------------------------------------------------------------- signals
def test_sigterm_stops_with_a_message(tmp_path):
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "svilab", "posterior", "--steps", "200000", "--guides", "gamma",
                          "--out", str(out)], env={**os.environ, "MPLBACKEND": "Agg"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err



def test_ctrl_c_in_a_run_whose_model_is_slow_stops_it_within_seconds(tmp_path):
    """A user's model that takes 50 ms a call (a slow likelihood): Ctrl-C reaches Python between two of its
    calls, and the run ends ``interrupted`` (one line, status 130, status.json saying so) within seconds,
    wherever it was (Laplace start, the fit)."""
    (tmp_path / "m.py").write_text("import time\nimport pyro\nimport pyro.distributions as dist\n\n\ndef model(data):\n"
                                   "    time.sleep(0.05)\n"
                                   "    mu = pyro.sample('mu', dist.Normal(0.0, 1.0))\n"
                                   "    with pyro.plate('data', data['x'].shape[0]):\n"
                                   "        pyro.sample('x', dist.Normal(mu, 1.0), obs=data['x'])\n")
    (tmp_path / "d.json").write_text('{"x": [0.5, 1.2, -0.3, 0.8]}')
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "svilab", "posterior", "--model", str(tmp_path / "m.py"), "--data",
                          str(tmp_path / "d.json"), "--guides", "lognormal", "--steps", "100000", "--out", str(out)],
                         env={**os.environ, "MPLBACKEND": "Agg"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    sent = time.time()
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    took = time.time() - sent
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, (p.returncode, err)
    assert json.loads((out / "status.json").read_text())["status"] == "interrupted"
    assert took < 15, took                   # measured 1.3-1.5 s: between two model calls, then the folder's status

# ----------------------------------------------------------------------------- MNIST files
@pytest.mark.parametrize("damage, message", [
    ("truncated", "the header says 40 images"),
    ("magic", "wrong magic number"),
    ("counts", "files of the train split disagree"),
    ("empty", "is empty"),
    ("md5", "MD5"),
])
def test_corrupt_mnist_files_are_named(tmp_path, capsys, damage, message):
    import struct

    from tests.test_vae import write_idx

    data = write_idx(tmp_path / "data")
    raw = data / "MNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    bad = images
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "magic":
        images.write_bytes(struct.pack(">I", 2049) + images.read_bytes()[4:])
    elif damage == "counts":
        bad = labels
        labels.write_bytes(struct.pack(">II", 2049, 39) + labels.read_bytes()[8:-1])
    elif damage == "empty":
        images.write_bytes(b"")
    else:   # a labels file with the original count whose bytes are not the original's
        bad = raw / "t10k-labels-idx1-ubyte"
        bad.write_bytes(struct.pack(">II", 2049, 10_000) + bytes(10_000))
    assert main(["vae", "train", "--data-root", str(data), "--validation", "5", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, message, str(bad))
    assert not (tmp_path / "r").exists()


def test_ctrl_c_in_the_first_epoch_does_not_advise_a_resume(tmp_path, capsys, monkeypatch):
    from svilab.inference.vae_training import TrainStep
    from tests.test_vae import write_idx

    data = write_idx(tmp_path / "data")

    def interrupted(self, x):
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainStep, "__call__", interrupted)
    assert main(["vae", "train", "--data-root", str(data), "--validation", "5", "--batch-size", "5",
                 "--out", str(tmp_path / "r")]) == 130
    out = capsys.readouterr()
    assert "nothing to resume" in out.out and "--resume" not in out.out
    assert "svilab vae train: interrupted" in out.err


def test_an_odd_number_of_guide_draws_is_kept_whole(tmp_path):
    """``posterior --draws 1001`` used to fail after fitting (draws split into 4 pseudo-chains); the guide's
    draws are one chain of independent draws: all 1001 are in the InferenceData and its moments."""
    import arviz as az

    out = tmp_path / "r"
    assert main(["posterior", "--guides", "gamma", "--steps", "300", "--draws", "1001", "--elbo-samples", "2000",
                 "--out", str(out)]) == 0
    idata = az.from_netcdf(out / "inference_data" / "gamma.nc")
    assert dict(idata.posterior.sizes) == {"chain": 1, "draw": 1001}
    gamma = json.loads((out / "results.json").read_text())["methods"][0]
    assert gamma["u"]["mean"] == pytest.approx(float(idata.posterior["u"].mean()), rel=1e-12)


def test_a_guide_that_ran_away_is_left_out_and_the_rest_of_the_run_is_kept(tmp_path, capsys):
    """``posterior --model ... --lr 1e6``: both guides' parameters run away to invalid values (scale 0);
    each is left out with a warning naming it, NUTS is still reported, rc 0 (it used to end the whole run)."""
    (tmp_path / "m.py").write_text("import pyro\nimport pyro.distributions as dist\n\n\ndef model(data):\n"
                                   "    mu = pyro.sample('mu', dist.Normal(0.0, 1.0))\n"
                                   "    with pyro.plate('data', data['x'].shape[0]):\n"
                                   "        pyro.sample('x', dist.Normal(mu, 1.0), obs=data['x'])\n")
    (tmp_path / "d.json").write_text('{"x": [0.5, 1.2, -0.3, 0.8]}')
    out = tmp_path / "r"
    rc = main(["posterior", "--model", str(tmp_path / "m.py"), "--data", str(tmp_path / "d.json"), "--guides", "mvn",
               "lognormal", "--lr", "1e6", "--steps", "50", "--elbo-samples", "1000", "--draws", "100", "--nuts",
               "--nuts-samples", "50", "--nuts-warmup", "50", "--chains", "2", "--json", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0 and "Traceback" not in cap.err
    res = json.loads(cap.out)
    assert [m["name"] for m in res["methods"]] == ["nuts"]
    assert [f["name"] for f in res["failed"]] == ["mvn", "lognormal"]
    assert all("try a smaller learning rate" in f["error"] for f in res["failed"])
    for name in ("mvn", "lognormal"):
        assert f"warning: {name}: left out of the comparison" in cap.err
    assert (out / "comparison.csv").exists() and (out / "inference_data" / "nuts.nc").exists()


# ----------------------------------------------------------------------------- the run-folder protocol (#20)
def test_status_json_says_how_a_run_ended(tmp_path, capsys, monkeypatch):
    from svilab.experiments import exact
    from svilab.experiments.runs import read_status

    assert main(["exact", "--out", str(tmp_path / "ok")]) == 0
    st = read_status(tmp_path / "ok")
    assert st["status"] == "finished" and st["pid"] == os.getpid() and "exact" in st["command"]
    assert not (tmp_path / "ok" / LOCK).exists()

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(exact, "figure", stop)
    assert main(["exact", "--out", str(tmp_path / "int")]) == 130
    assert read_status(tmp_path / "int")["status"] == "interrupted"      # results.json was written: kept
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "status.json").write_text(json.dumps({"status": "running", "pid": 999999999}))
    assert read_status(tmp_path / "dead")["status"] == "killed"
    assert main(["exact", "--out", str(tmp_path / "dead")]) == 2
    _one_line_error(capsys, "is not empty (its run: killed", "--overwrite")


def test_a_folder_inside_a_run_in_use_is_refused(tmp_path):
    parent = tmp_path / "demo"
    parent.mkdir()
    (parent / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(ValueError, match=f"inside {parent}, which is in use by svilab process {os.getppid()}"):
        RunFolder("exact", out=parent / "exact", mode="overwrite")


def test_a_full_disk_or_a_removed_folder_is_one_line_and_leaves_no_half_file(tmp_path, capsys, monkeypatch):
    import errno

    from matplotlib.figure import Figure

    from svilab.files import WriteError, atomic_write

    target = tmp_path / "x.json"
    target.write_text("old")

    def full(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=f"no space left on the device writing {target}"):
        atomic_write(target, full)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(WriteError, match="was removed while the command ran"):
        atomic_write(tmp_path / "gone" / "results.json", lambda tmp: tmp.write_text("{}"))

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", no_space)
    assert main(["exact", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "no space left on the device writing", "posterior_exact_vs_cavi.png")
    assert not list((tmp_path / "run").glob("*.tmp")) if (tmp_path / "run").exists() else True


@pytest.mark.parametrize("argv, message", [
    (["gradients", "--estimators", "reparam", "reparam", "--M", "5"], "--estimators: reparam given twice"),
    (["elbo", "--reference-samples", "100"], "--reference-samples applies to --model"),
    (["posterior", "--draws", "1"], "--draws must be >= 2"),
    (["vae", "train", "--preset", "standard", "--sigma", "0.5"], "--sigma is the scale of the Gaussian likelihood"),
    (["vae", "compare", "--losses", "elbo", "--alphas", "0.3"], "--alphas are the skews of gjs/dgjs"),
    (["--threads", "1000000", "exact"], "--threads 1000000: more than"),
    (["exact", "--prior-u", "1e300,1"], "prior_u shape must be in"),
    (["posterior", "--particles", "1000000000"], "--particles = 1000000000 (samples per SVI step, each of 12 latent"),
    (["vae", "train", "--hidden", "1000000000"], "2,370,000,000,794 weights) with --batch-size 50"),
    (["vae", "train", "--particles", "100000000"], "and --particles 100000000 needs about"),
    (["posterior", "--time-limit", "60"], "--time-limit limits NUTS; give --nuts too"),
    (["posterior", "--nuts", "--time-limit", "0"], "--time-limit must be a finite positive number"),
])
def test_options_that_do_not_apply_or_cannot_work_are_refused(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "r")] if argv[0] != "--threads" else argv) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "r").exists()


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, capsys):
    from svilab.experiments.runs import read_status

    data, run = _vae_run(tmp_path, capsys)
    before = read_status(run)
    assert main(["vae", "train", "--resume", str(run), "--epochs", "1"]) == 2
    _one_line_error(capsys, "the run has done 1 epoch(s) of 1; --epochs 1 would not continue it")
    assert read_status(run) == before and before["status"] == "finished"


def test_nuts_with_one_chain_reports_without_r_hat(tmp_path, capsys):
    assert main(["posterior", "--guides", "gamma", "--steps", "30", "--draws", "100", "--elbo-samples", "500",
                 "--nuts", "--chains", "1", "--nuts-samples", "30", "--nuts-warmup", "30", "--json",
                 "--out", str(tmp_path / "r")]) == 0
    nuts = next(m for m in json.loads(capsys.readouterr().out)["methods"] if m["name"] == "nuts")
    assert nuts["details"]["max_r_hat"] is None


def test_nuts_says_where_it_is_without_a_progress_bar(monkeypatch, capsys):
    """Without a terminal NUTS prints a line now and then (every 15 s; every step here) naming the chain,
    the stage, the iteration and the time left."""
    import pyro.distributions as dist

    from svilab.inference import mcmc

    monkeypatch.setattr(mcmc._Monitor, "__init__", partialmethod(mcmc._Monitor.__init__, every=0.0))

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    mcmc.run_nuts(model, num_samples=20, warmup_steps=20, num_chains=2, seed=0, progress=False)
    err = capsys.readouterr().err
    assert "NUTS chain 1/2: warmup 1/40" in err and "NUTS chain 2/2: sampling 40/40" in err and "s left)" in err
    assert "it/s, tree depth " in err and "iterations at the limit 10), 0 divergences" in err


def test_estimates_that_lose_the_answer_are_refused_or_warned(tmp_path, capsys):
    """float32 25 sds into the truncated Normal's tail: non-finite estimates are an error naming the
    dtype, not a table of NaN; a scale of 1e-9: the bias in standard errors is a warning (stderr and
    JSON), not silence."""
    assert main(["gradients", "--point", "5,0.5,-5,0.2", "--dtype", "float32", "--M", "10", "--reps", "20",
                 "--estimators", "reparam", "--out", str(tmp_path / "a")]) == 2
    _one_line_error(capsys, "repetitions are not finite at --point 5,0.5,-5,0.2 in float32", "use --dtype float64")
    assert main(["gradients", "--point", "5,1e-9,1,0.2", "--M", "10", "--reps", "200", "--estimators", "reparam",
                 "--no-boxplots", "--json", "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["warnings"] and "standard errors from the exact value" in out["warnings"][0]
    assert "warning: reparam at M=10" in captured.err


def test_a_model_that_raises_for_some_values_is_named_not_a_traceback(tmp_path, capsys):
    """A model that raises (a RuntimeError of its own) only where mu > 3: each method is left out with a
    warning naming the error; with nothing left, one error line and rc 2."""
    model = tmp_path / "m.py"
    model.write_text("import torch, pyro, pyro.distributions as dist\n\n"
                     "def model(data):\n"
                     "    y = torch.as_tensor(data['y'], dtype=torch.float64)\n"
                     "    mu = pyro.sample('mu', dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))\n"
                     "    if (torch.as_tensor(mu) > 3.0).any():\n"
                     "        raise RuntimeError('mu is too large for my solver')\n"
                     "    with pyro.plate('data', len(y)):\n"
                     "        pyro.sample('y', dist.Normal(mu, 1.0), obs=y)\n")
    data = tmp_path / "d.json"
    data.write_text('{"y": [2.5, 3.1, 2.9]}')
    assert main(["posterior", "--model", str(model), "--data", str(data), "--guides", "lognormal", "--steps", "50",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "warning: lognormal: left out of the comparison: fitting lognormal: the model raised RuntimeError: mu is " \
           "too large for my solver" in err


@pytest.mark.parametrize("command", ["elbo", "gradients"])
def test_user_models_that_raise_or_do_not_vectorize_in_the_estimator_lab(command, tmp_path, capsys):
    """elbo/gradients --model: a model that raises where mu > 1.5 (reached from --point 1.3,0.1) is one line
    naming its error, rc 2 (was a traceback); X @ beta is one line saying how to vectorize, before any folder;
    a model with one latent (two guide parameters) runs and draws its boxplots (was an IndexError); a model
    with improper priors (a + b, both flat: an improper posterior) is warned about (stderr and JSON)."""
    head = "import torch, pyro, pyro.distributions as dist\n\ndef model(data):\n"
    data = tmp_path / "d.json"
    data.write_text('{"y": [0.1, 0.5, 1.2], "X": [[1.0, 0.2], [1.0, 0.5], [1.0, 0.9]]}')
    models = {
        "raising": "    mu = pyro.sample('mu', dist.Normal(0.0, 1.0))\n    if torch.any(mu > 1.5):\n"
                   "        raise RuntimeError('mu too large for my solver')\n",
        "matmul": "    X = torch.as_tensor(data['X'])\n"
                  "    mu = pyro.sample('beta', dist.Normal(torch.zeros(2), 1.0).to_event(1))\n"
                  "    mu = X @ mu\n",
        "one": "    mu = pyro.sample('mu', dist.Normal(0.0, 1.0))\n",
        "improper": "    from torch.distributions import constraints\n"
                    "    a = pyro.sample('a', dist.ImproperUniform(constraints.real, (), ()))\n"
                    "    mu = a + pyro.sample('b', dist.ImproperUniform(constraints.real, (), ()))\n"}
    for name, body in models.items():
        (tmp_path / f"{name}.py").write_text(head + body + "    with pyro.plate('d', 3):\n        pyro.sample("
                                             "'y', dist.Normal(mu, 1.0), obs=torch.as_tensor(data['y']))\n")
    small = ["--M", "5", "10", "--reps", "20"]
    small += ["--estimators", "reparam", "score"] if command == "gradients" else []
    out = tmp_path / "out"
    assert main([command, "--model", str(tmp_path / "raising.py"), "--data", str(data), "--point", "1.3,0.1",
                 *small, "--out", str(out)]) == 2
    _one_line_error(capsys, "the model raised RuntimeError: mu too large for my solver")
    assert main([command, "--model", str(tmp_path / "matmul.py"), "--data", str(data), *small,
                 "--out", str(out)]) == 2
    _one_line_error(capsys, "could not be evaluated on 3 draws at once", "(X * beta).sum(-1) instead of X @ beta")
    assert not out.exists()
    assert main([command, "--model", str(tmp_path / "one.py"), "--data", str(data), *small, "--out", str(out)]) == 0
    assert command == "elbo" or (out / "boxplots_reparam.png").exists()
    assert "improper" not in capsys.readouterr().err
    assert main([command, "--model", str(tmp_path / "improper.py"), "--data", str(data), *small, "--json",
                 "--out", str(tmp_path / "imp")]) == 0
    captured = capsys.readouterr()
    assert "warning: latent site(s) a, b have improper priors" in captured.err
    assert "may be improper" in json.loads(captured.out)["warnings"][0]


def test_svi_says_where_it_is_without_a_progress_bar(monkeypatch, capsys):
    import pyro.distributions as dist

    import svilab
    import svilab.inference.svi as svi_module

    monkeypatch.setattr(svi_module, "LINE_EVERY", 0.0)

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    svilab.fit(model, svilab.make_guide("meanfield", model), steps=200, check_every=100, description="SVI x")
    err = capsys.readouterr().err
    assert "SVI x: step 100/200, loss" in err and "SVI x: step 200/200" in err and "s left)" in err
    svilab.fit(model, svilab.make_guide("meanfield", model), steps=200, check_every=100, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("sig, rc, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_while_the_command_starts_is_one_line(sig, rc, said, tmp_path):
    """Ctrl-C or SIGTERM in the first seconds, while the commands import torch, Pyro and ArviZ: one line and
    the usual exit status (was a traceback from inside torch's import and death by the signal)."""
    import subprocess
    import time

    # SIGINT restored in the child: a test run started in the background (nohup, &) ignores it, and a Python
    # started with SIGINT ignored keeps ignoring it
    p = subprocess.Popen([sys.executable, "-m", "svilab", "exact", "--out", str(tmp_path / "r")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.5)
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == rc and said in err and "Traceback" not in err, (p.returncode, err)
    if "while starting" in err:        # on a machine that imports in under 0.5 s the command itself stopped
        assert not (tmp_path / "r").exists()


def test_the_lock_appears_with_its_holder_and_one_of_many_racing_processes_wins(tmp_path, monkeypatch):
    """The lock file is never seen empty: it is a hard link to a file already holding the pid (created empty
    and written after, a second process could read it in between, take it for stale, remove it, and both ran:
    CI saw two `posterior` runs in one folder both end with rc 0). At the moment the link is made the holder is
    readable; and of eight processes taking one folder at once, exactly one wins."""
    import subprocess

    from svilab.experiments import runs

    seen = []
    real_link = os.link

    def link(src, dst):
        real_link(src, dst)
        seen.append(runs.read_lock(Path(dst).parent))

    monkeypatch.setattr(runs.os, "link", link)
    folder = RunFolder("exact", out=tmp_path / "a")
    assert seen and seen[0] is not None and seen[0]["pid"] == os.getpid()
    folder.finish()
    code = ("import sys, time\nfrom svilab.experiments.runs import RunFolder, RunFolderError\n"
            "try:\n    f = RunFolder('exact', out=sys.argv[1])\nexcept RunFolderError:\n    sys.exit(2)\n"
            "time.sleep(1.0)\nf.finish()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "b")]) for _ in range(8)]
    assert sorted(p.wait(timeout=60) for p in procs) == [0] + [2] * 7


def test_a_folder_another_process_made_and_locked_first_is_never_removed_by_the_loser(tmp_path, monkeypatch):
    """CI saw two `posterior` runs on one `--out`: both made the folder (each saw it missing before its
    mkdir), one took the lock, and the loser, failing on "in use", removed the folder it thought it had made,
    under the winner ("was removed while the command ran"). Played out here deterministically: another live
    process makes and locks the folder right after this one's mkdir."""
    import subprocess

    from svilab.experiments import runs

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real_make = runs.RunFolder._make

        def make(path, exist_ok):
            made = real_make(path, exist_ok)
            (path / LOCK).write_text(json.dumps({"pid": other.pid, "host": runs._host()}))
            (path / "status.json").write_text("{}")
            return made

        monkeypatch.setattr(runs.RunFolder, "_make", staticmethod(make))
        monkeypatch.setattr(runs, "_CREATED", [])          # earlier tests' folders are not this one's question
        out = tmp_path / "run"
        with pytest.raises(runs.RunFolderError, match="in use by svilab process"):
            RunFolder("posterior", out=out)
        assert runs.discard_unfinished() == []
        assert (out / LOCK).exists() and (out / "status.json").exists()
    finally:
        other.kill()
        other.wait()


def test_a_folder_made_but_not_locked_is_not_left_behind(tmp_path, monkeypatch):
    """The lock cannot be taken (here: a file system that refuses the lock file): the error names the folder,
    and the empty folder this process made for it is gone (it used to stay until the end of the command)."""
    from svilab.experiments import runs

    def refuse(lock, content):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runs, "_create_lock", refuse)
    out = tmp_path / "new" / "run"
    with pytest.raises(runs.RunFolderError, match="cannot create run folder .*Permission denied"):
        RunFolder("posterior", out=out)
    assert not out.exists()
