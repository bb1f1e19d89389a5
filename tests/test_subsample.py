"""SVI on data subsamples (issue #21, part 2): Pyro's subsample_size idiom, a minibatch fit checked against the
full-data posterior, the evaluation on every row, and the bad inputs named before any folder."""

import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

import svilab
from svilab.cli import main
from svilab.inference.laplace import laplace
from svilab.inference.potential import UnconstrainedTarget
from svilab.inference.sites import model_sites
from svilab.inference.subsample import check_batch_size, subsampled_plates, with_batch_size
from svilab.models.user import float64_default, load_user_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "big" / "logistic.py")


@pytest.fixture
def small(tmp_path):
    (tmp_path / "d.json").write_text('{"n": 4000, "p": 3, "seed": 1}')
    return load_user_model(EXAMPLE, tmp_path / "d.json")


def test_a_minibatch_fit_finds_the_full_data_posterior_and_is_evaluated_on_every_row(small):
    with float64_default():
        plates = check_batch_size(200, small.model, function=small.fn)
        assert [(p.name, p.size, p.subsample_size) for p in plates] == [("data", 4000, 200)]
        sites = model_sites(small.model)                  # subsample_size=None: every row
        assert sites.observed["y"].shape == (4000,)
        approx = laplace(UnconstrainedTarget(small.model, sites), torch.zeros(4))     # the full-data posterior
        assert approx.ok
        sd = approx.cov.diagonal().sqrt()
        pyro.clear_param_store()
        guide = AutoNormal(small.model)
        svilab.fit(with_batch_size(small.model, 200), guide, steps=2000, num_particles=8, lr=0.02, lr_final=0.0005,
                   seed=0, jit=False, progress=False)
        mean = guide.median()["beta"]
        assert ((mean - approx.loc).abs() / sd).max() < 0.5, (mean, approx.loc, sd)
        check = svilab.evaluate_guide(small.model, guide, draws=200, elbo_samples=2000, seed=1, warn=False)
        assert check.idata.log_likelihood["y"].shape == (1, 200, 4000)       # every row, not a batch
        # the full-data ELBO is below the log evidence, whose Laplace estimate is close for this posterior
        log_evidence = approx.log_density + 0.5 * torch.logdet(2 * torch.pi * approx.cov)
        assert check.elbo.value < float(log_evidence) + 4 * check.elbo.se
        assert float(log_evidence) - check.elbo.value < 2.0


def test_bad_batch_sizes_and_models_are_named(small):
    with float64_default():
        with pytest.raises(ValueError, match="--batch-size must be an integer >= 1, got 0"):
            check_batch_size(0, small.model, function=small.fn)
        with pytest.raises(ValueError, match="--batch-size 5000 is larger than the data: plate 'data' has 4000 rows"):
            check_batch_size(5000, small.model, function=small.fn)

        def no_argument(data):
            with pyro.plate("data", 10):
                pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.zeros(10))

        with pytest.raises(ValueError, match="takes no subsample_size argument; write the model as def model"):
            check_batch_size(5, no_argument, {})

        def ignores_it(data, subsample_size=None):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            with pyro.plate("data", 10):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=torch.zeros(10))

        with pytest.raises(ValueError, match="no plate of the model took subsample_size=5"):
            check_batch_size(5, ignores_it, {})

        def local_latents(data, subsample_size=None):
            with pyro.plate("data", 10, subsample_size=subsample_size):
                pyro.sample("z", dist.Normal(0.0, 1.0))

        with pytest.raises(ValueError, match="latent site 'z' is inside the subsampled plate 'data'"):
            subsampled_plates(local_latents, {}, subsample_size=5)


def test_the_cli_refuses_before_any_folder(tmp_path, capsys):
    data = tmp_path / "d.json"
    data.write_text('{"n": 300, "p": 2, "seed": 0}')
    eight = str(ROOT / "examples/posteriordb/eight_schools_noncentered.py")
    eight_data = str(Path(ROOT).parent / "shared/posteriordb/eight_schools-eight_schools_noncentered/data.json")
    cases = [(["--model", EXAMPLE, "--data", str(data), "--batch-size", "500"],
              "--batch-size 500 is larger than the data: plate 'data' has 300 rows"),
             (["--batch-size", "10"], "--batch-size needs --model"),
             (["--model", eight, "--data", eight_data, "--batch-size", "4"], "takes no subsample_size argument")]
    for extra, msg in cases:
        if "eight" in " ".join(extra) and not Path(eight_data).exists():
            continue
        out = tmp_path / "out"
        assert main(["posterior", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(re.escape(msg), err), err
        assert not out.exists()


def test_a_minibatch_run_from_the_laplace_start_steps_below_the_posterior_sds(tmp_path, capsys):
    """With --batch-size, Adam's learning rate after a Laplace start is capped at a tenth of the smallest Laplace
    sd (minibatch steps of the default 0.01 put a 2M-row fit 3.6 sds off); the ELBO is of every row."""
    import json

    from svilab.experiments.posterior_user import check_user_model, laplace_start

    data = tmp_path / "d.json"
    data.write_text('{"n": 4000, "p": 3, "seed": 1}')
    um = load_user_model(EXAMPLE, data)
    with float64_default():
        _, approx = laplace_start(um, check_user_model(um))
    cap = 0.1 * float(approx.cov.diagonal().sqrt().min())
    assert cap < 0.01
    argv = ["posterior", "--model", EXAMPLE, "--data", str(data), "--guides", "lognormal", "--batch-size", "200",
            "--steps", "300", "--draws", "100", "--elbo-samples", "500", "--json", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)["methods"][0]
    assert row["details"]["lr"] == pytest.approx(cap, rel=1e-9)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["batch_size"] == 200
