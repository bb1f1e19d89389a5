"""Guides sized by the model (issue #21, part 1): the flow's widths from the latent dimension, the low-rank
guide and its Laplace start, the memory refusals before any folder, and the Laplace start skipped where its
D x D matrices would not fit."""

import re

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from svilab.cli import main
from svilab.guides import make_guide
from svilab.guides.sizing import flow_hidden_dims, flow_parameter_count, guide_memory_bytes, lowrank_rank
from svilab.inference.laplace import laplace, start_guide_at
from svilab.inference.potential import UnconstrainedTarget
from svilab.inference.sites import model_sites


def _vector_model(dim):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
    return model


def test_flow_widths_follow_the_dimension():
    assert flow_hidden_dims(1) == [16] and flow_hidden_dims(8) == [16] and flow_hidden_dims(26) == [52]
    assert flow_hidden_dims(100) == [200] and flow_hidden_dims(1000) == [1100]
    assert flow_hidden_dims(26, [26, 40]) == [26, 40]
    with pytest.raises(ValueError, match="flow: hidden width 16 is less than the latent dimension 26 .*"
                                         "--flow-hidden 26 or more"):
        flow_hidden_dims(26, [16])


@pytest.mark.parametrize("dim", [1, 2, 17, 150, 1000])
def test_the_flow_builds_and_steps_at_every_dimension_with_the_counted_weights(dim):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = _vector_model(dim)
    guide = make_guide("flow", model)
    loss = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=0).differentiable_loss(model, guide)
    loss.backward()
    assert torch.isfinite(loss)
    built = sum(p.numel() for p in guide.parameters())
    assert built == flow_parameter_count(dim)          # the memory model counts what is built
    assert all(torch.isfinite(p.grad).all() for p in guide.parameters() if p.grad is not None)


def test_a_flow_narrower_than_the_model_says_both_numbers():
    pyro.clear_param_store()
    model = _vector_model(26)
    guide = make_guide("flow", model, hidden_dims=(16,))
    with pytest.raises(ValueError, match="hidden width 16 is less than the latent dimension 26"):
        Trace_ELBO().differentiable_loss(model, guide)


def test_the_low_rank_guide_starts_at_the_laplace_approximation_and_beats_the_diagonal():
    """On a Gaussian target with covariance F F^T + diag (F of rank 2, D = 30), the low-rank guide started at
    the Laplace approximation (exact here) holds the leading directions: its covariance is far closer to the
    target's than the mean-field start, and its own parameters reproduce what was set."""
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(0)
        d = 30
        F = torch.randn(d, 2, generator=g)
        cov = F @ F.T + torch.diag(0.05 + 0.15 * torch.rand(d, generator=g))

        def model():
            pyro.sample("z", dist.MultivariateNormal(torch.zeros(d), cov))

        sites = model_sites(model)
        target = UnconstrainedTarget(model, sites)
        approx = laplace(target, torch.zeros(d))
        assert approx.ok and torch.allclose(approx.cov, cov, atol=1e-8)
        pyro.clear_param_store()
        guide = make_guide("lowrank", model)
        guide()
        assert guide.rank == lowrank_rank(d) == 5
        start_guide_at(guide, approx, target)
        q = guide.get_posterior().covariance_matrix
        eig, vec = torch.linalg.eigh(approx.cov)
        lead = (vec[:, -5:] * eig[-5:]) @ vec[:, -5:].T
        rest = (approx.cov.diagonal() - lead.diagonal()).clamp_min(0.01 * approx.cov.diagonal())
        torch.testing.assert_close(q, lead + torch.diag(rest), rtol=1e-10, atol=1e-10)
        diagonal = torch.diag(cov.diagonal())
        assert torch.linalg.norm(q - cov) < 0.1 * torch.linalg.norm(diagonal - cov)
    finally:
        torch.set_default_dtype(torch.float32)


def test_memory_per_guide_grows_as_stated():
    small, big = 1000, 100_000
    ratio = {g: guide_memory_bytes(g, big) / guide_memory_bytes(g, small) for g in ("lognormal", "lowrank", "mvn")}
    assert 90 < ratio["lognormal"] < 110                       # linear
    assert 90 < ratio["lowrank"] < 110                         # linear: the rank is capped at 32 above D = 1024
    assert 9000 < ratio["mvn"] < 11000                         # quadratic


def _write_big_model(tmp_path, dim):
    f = tmp_path / "big.py"
    f.write_text("import pyro, pyro.distributions as dist, torch\n\n"
                 "def model(data):\n"
                 f"    z = pyro.sample('z', dist.Normal(torch.zeros({dim}), 1.0).to_event(1))\n"
                 "    pyro.sample('y', dist.Normal(z[:3].sum(), 1.0), obs=torch.tensor(data['y']))\n")
    (tmp_path / "big.json").write_text('{"y": 0.5}')
    return ["--model", str(f), "--data", str(tmp_path / "big.json")]


def test_a_guide_that_cannot_hold_the_dimension_is_one_line_before_any_folder(tmp_path, capsys):
    big = _write_big_model(tmp_path, 200_000)
    cases = [(["--guides", "mvn"], r"guide mvn at 200000 latent dimensions with 16 particles needs about .* TB .*"
                                   r"the lowrank guide \(rank 32\) or lognormal fit in memory linear in D"),
             (["--guides", "lognormal", "--flow-hidden", "30"], "--flow-hidden and --flow-layers shape the flow guide"),
             (["--guides", "flow", "--flow-hidden", "30"],
              "flow: hidden width 30 is less than the latent dimension 200000")]
    for extra, msg in cases:
        out = tmp_path / "out"
        assert main(["posterior", "--out", str(out), *big, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(msg, err), err
        assert not out.exists()


def test_the_laplace_start_is_skipped_where_its_matrices_would_not_fit(tmp_path, monkeypatch):
    from svilab.experiments.posterior_user import check_user_model, laplace_start
    from svilab.models.user import float64_default, load_user_model

    args = _write_big_model(tmp_path, 400)
    um = load_user_model(args[1], args[3])
    monkeypatch.setenv("SVILAB_MEMORY_GB", "0.005")           # 5 MB: the 400 x 400 matrices need about 10 MB
    with float64_default():
        sites = check_user_model(um)
        _, approx = laplace_start(um, sites)
    assert not approx.ok
    assert re.match(r"skipped: the 400 x 400 Hessian of the Laplace start needs about 9.77 MB", approx.message)


def test_draws_are_evaluated_in_chunks_the_memory_budget_allows(monkeypatch):
    """200,000 observations: one draw's traces take about 19 MB, so under a 50 MB budget the draws go 2 at a time
    and every draw, pointwise log-likelihood and weight is there; under 20 MB not even 2 fit: one line naming the
    amount."""
    from pyro.infer.autoguide import AutoNormal

    from svilab.inference.draws import fit_chunk, guide_draws

    n = 200_000
    x = torch.linspace(-1, 1, n)

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 10.0), obs=x)

    pyro.clear_param_store()
    guide = AutoNormal(model)
    guide(x)
    sites = model_sites(model, x)
    monkeypatch.setenv("SVILAB_MEMORY_GB", str(50 / 1024))
    assert fit_chunk(4096, sites, "draws") == 2
    d = guide_draws(model, guide, x, num_samples=6, seed=0, sites=sites)
    assert d.log_likelihood["x"].shape == (6, n) and d.latent["mu"].shape == (6,)
    assert np.isfinite(d.log_weights).all()
    monkeypatch.setenv("SVILAB_MEMORY_GB", str(20 / 1024))
    with pytest.raises(ValueError, match=r"6 draws of the guide: the model evaluated on 2 draws at once "
                                         r"\(200,001 latent, deterministic and observed values per draw\) needs about"):
        guide_draws(model, guide, x, num_samples=6, seed=0, sites=sites)


def test_nuts_samples_times_values_are_refused_with_the_amount(tmp_path, monkeypatch, capsys):
    big = _write_big_model(tmp_path, 100_000)
    monkeypatch.setenv("SVILAB_MEMORY_GB", "1")
    out = tmp_path / "out"
    assert main(["posterior", "--out", str(out), *big, "--guides", "lognormal", "--nuts", "--chains", "4",
                 "--nuts-samples", "1000"]) == 2
    err = capsys.readouterr().err
    assert "NUTS's --chains 4 x --nuts-samples 1000 draws of 100,001 latent, deterministic and pointwise " in err
    assert not out.exists()


def test_the_lowrank_guide_is_pyros_with_its_rank_capped():
    """Up to D = 1024 the guide is Pyro's AutoLowRankMultivariateNormal (same rank, same parameters from the
    same seed: the replicated setup follows Pyro's); above, the rank is 32, so a step is linear in D."""
    from pyro.infer.autoguide import AutoLowRankMultivariateNormal

    def model_of(d):
        def model():
            pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        return model

    for d in (7, 400):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        ours = make_guide("lowrank", model_of(d), init="median")
        ours()
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        theirs = AutoLowRankMultivariateNormal(model_of(d))
        theirs()
        assert ours.rank == theirs.rank == round(d ** 0.5)
        for name in ("loc", "scale", "cov_factor"):
            torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=0, atol=0)
    pyro.clear_param_store()
    big = make_guide("lowrank", model_of(5000))
    big()
    assert big.rank == lowrank_rank(5000) == 32 and big.cov_factor.shape == (5000, 32)


def test_a_log_likelihood_that_would_not_fit_is_left_out_with_a_warning(tmp_path, monkeypatch, capsys):
    """5,000 observations x 300 draws of pointwise log-likelihood (about 12 MB) under a 4 MB budget: decided
    before the fit, the InferenceData has no log_likelihood group, and the warning is on stderr, in
    results.json and in config.json; with --no-log-likelihood there is no warning."""
    import json

    import arviz as az

    f = tmp_path / "many.py"
    f.write_text("import pyro, pyro.distributions as dist, torch\n\n"
                 "def model(data):\n"
                 "    mu = pyro.sample('mu', dist.Normal(0.0, 10.0))\n"
                 "    with pyro.plate('rows', 5000):\n"
                 "        pyro.sample('y', dist.Normal(mu, 1.0), obs=torch.linspace(-1.0, 3.0, 5000))\n")
    (tmp_path / "d.json").write_text("{}")
    monkeypatch.setenv("SVILAB_MEMORY_GB", str(4 / 1024))
    argv = ["posterior", "--model", str(f), "--data", str(tmp_path / "d.json"), "--guides", "lognormal",
            "--steps", "40", "--particles", "2", "--draws", "300", "--elbo-samples", "1000", "--json"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    msg = "the pointwise log-likelihood (300 draws x 5,000 observations, about 11.5 MB with the draws) would not fit"
    assert f"warning: {msg}" in captured.err
    assert msg in json.loads(captured.out)["warnings"][0]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["log_likelihood"] is False and msg in config["warnings"][0]
    idata = az.from_netcdf(tmp_path / "a" / "inference_data" / "lognormal.nc")
    assert "log_likelihood" not in idata.groups() and idata.posterior.sizes["draw"] == 300
    assert main([*argv, "--no-log-likelihood", "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert "pointwise log-likelihood" not in captured.err and "warnings" not in json.loads(captured.out)
