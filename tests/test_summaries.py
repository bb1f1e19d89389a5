"""ArviZ InferenceData for guides and MCMC, NUTS, the comparison table, and a user's own model."""

import importlib.util
import math
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import torch

from svilab.guides import make_guide
from svilab.inference.exact import ExactPosterior
from svilab.inference.mcmc import run_nuts
from svilab.inference.summaries import (
    MethodResult,
    comparison_table,
    guide_inference_data,
    mcmc_inference_data,
    summary,
)
from svilab.inference.svi import fit
from svilab.models import PoissonGamma


@pytest.fixture(scope="module")
def pg():
    return PoissonGamma()


@pytest.fixture(scope="module")
def nuts_idata(pg):
    res = run_nuts(pg.model, num_samples=300, warmup_steps=200, num_chains=2, seed=1)
    return res, mcmc_inference_data(res.mcmc)


def test_guide_inference_data_layout_and_log_likelihood(pg, nuts_idata):
    guide = make_guide("gamma", pg.model)
    fit(pg.model, guide, steps=300, num_particles=8, lr=0.05, seed=0)
    idata = guide_inference_data(pg.model, guide, num_samples=2000, seed=3)
    assert {"posterior", "log_likelihood", "observed_data"} <= set(idata.groups())
    assert idata.posterior["u"].shape == (1, 2000)  # independent draws: one chain, labelled as such
    assert idata.posterior.attrs["method"].startswith("variational draws")
    # the same variable names and dims as az.from_pyro gives for MCMC
    mcmc = nuts_idata[1]
    assert set(idata.posterior.data_vars) == set(mcmc.posterior.data_vars) == {"u", "v"}
    assert set(idata.log_likelihood.data_vars) == set(mcmc.log_likelihood.data_vars) == {"x"}
    assert idata.log_likelihood["x"].dims == mcmc.log_likelihood["x"].dims
    np.testing.assert_array_equal(idata.observed_data["x"].values, pg.data.numpy())
    # pointwise log-likelihood against the model's own (independent) formula
    u = torch.as_tensor(idata.posterior["u"].values)
    v = torch.as_tensor(idata.posterior["v"].values)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, pg.pointwise_log_likelihood(u, v).numpy(),
                               rtol=1e-12)
    loo = az.loo(idata)
    assert math.isfinite(loo.elpd_loo) and loo.elpd_loo < 0


def test_guide_draws_match_the_fitted_distribution(pg):
    """Moments of the draws agree with the Gamma factors' closed-form moments (within 4 SE)."""
    guide = make_guide("gamma", pg.model)
    fit(pg.model, guide, steps=100, num_particles=4, lr=0.05, seed=0)
    idata = guide_inference_data(pg.model, guide, num_samples=8000, seed=5)
    q_u = guide.factors()["u"]
    a, m = q_u.concentration.item(), q_u.mean.item()
    draws = idata.posterior["u"].values.ravel()
    sd = m / math.sqrt(a)
    assert abs(draws.mean() - m) < 4 * sd / math.sqrt(draws.size)
    assert draws.std() == pytest.approx(sd, rel=0.05)
    s = summary(idata, ["u"])
    assert s.loc["u", "mean"] == pytest.approx(draws.mean())


def test_nuts_against_exact_posterior(pg, nuts_idata):
    res, idata = nuts_idata
    exact = ExactPosterior(pg)
    s = summary(idata)
    assert (s["r_hat"] < 1.05).all() and (s["ess_bulk"] > 150).all()
    for k in ("u", "v"):
        assert abs(s.loc[k, "mean"] - exact.mean[k]) < 4 * s.loc[k, "mcse_mean"]
    assert res.config["num_chains"] == 2 and res.seconds > 0


def test_comparison_table_columns_and_errors(pg):
    exact = ExactPosterior(pg)
    rows = [MethodResult("exact", elbo=exact.log_evidence, moments={"u": (exact.mean["u"], exact.sd["u"])}),
            MethodResult("a", elbo=exact.log_evidence - 0.5, moments={"u": (exact.mean["u"] + 0.1, 1.0)})]
    t = comparison_table(rows, {"u": (exact.mean["u"], exact.sd["u"])}, exact.log_evidence)
    assert t.loc["a", "KL(q || p)"] == pytest.approx(0.5)
    assert t.loc["a", "E[u] error"] == pytest.approx(0.1)
    assert t.loc["a", "sd(u) error"] == pytest.approx(1.0 - exact.sd["u"])
    assert t.loc["exact", "KL(q || p)"] == 0.0


def _load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "beta_binomial.py"
    spec = importlib.util.spec_from_file_location("beta_binomial_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_user_model_example_agrees_with_closed_form():
    """The workflow on a model svilab does not ship (Beta-Binomial), against its closed form."""
    ex = _load_example()
    a, b, log_evidence = ex.exact_posterior(ex.TRIALS, ex.SUCCESSES)
    assert (a, b) == (31.0, 75.0)
    # the closed-form evidence against quadrature of prior x likelihood (independent check)
    from scipy import integrate, stats

    def lik(p):
        return np.prod(stats.binom.pmf(ex.SUCCESSES.numpy(), ex.TRIALS.numpy(), p)) * stats.beta.pdf(p, 2, 2)
    assert log_evidence == pytest.approx(math.log(integrate.quad(lik, 0, 1, epsabs=0, epsrel=1e-12)[0]), abs=1e-9)

    table, idatas, exact = ex.compare(steps=1500, nuts_samples=300, nuts_chains=2, seed=0)
    assert list(table.index) == ["autonormal (logit-normal)", "beta guide", "nuts"]
    for name in ("autonormal (logit-normal)", "beta guide"):
        row = table.loc[name]
        assert -4 * row["ELBO se"] < row["KL(q || p)"] < 0.01      # both families contain ~the posterior
        assert abs(row["E[p] error"]) < 0.1 * exact["sd"]
        assert abs(row["sd(p) error"]) < 0.05 * exact["sd"]
    nuts = summary(idatas["nuts"]).loc["p"]
    assert abs(nuts["mean"] - exact["mean"]) < 4 * nuts["mcse_mean"] and nuts["r_hat"] < 1.05
    assert math.isnan(table.loc["nuts", "ELBO"])
