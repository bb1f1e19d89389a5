"""A model the user writes: loading, sample-free init, site discovery, draws, diagnostics, reference
comparison, and the CLI path, checked against independent computations (closed form, Pyro's own
psis_diagnostic, reference draws)."""

import json
import math
import re
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.importance import psis_diagnostic

from svilab.cli import main
from svilab.guides import make_guide
from svilab.inference.diagnostics import loss_convergence, mcmc_warnings, pareto_k, reference_warnings
from svilab.inference.draws import flat_draws, guide_draws, replay_draws
from svilab.inference.init import make_init
from svilab.inference.mcmc import run_nuts
from svilab.inference.reference import Reference, read_reference
from svilab.inference.sites import model_sites
from svilab.inference.summaries import MethodResult, comparison_table, guide_inference_data, mcmc_inference_data
from svilab.inference.svi import fit
from svilab.models.user import float64_default, load_data, load_user_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def f64():
    with float64_default():
        yield


# --------------------------------------------------------------------------- a conjugate regression
def regression_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    X = torch.stack([torch.ones(n, dtype=torch.float64), x], -1)
    y = X @ torch.tensor([1.0, -2.0], dtype=torch.float64) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def regression(X, y, sigma=0.5, prior_sd=10.0):
    """beta ~ N(0, prior_sd^2 I) (a global vector latent), y ~ N(X beta, sigma^2), a deterministic site."""
    beta = pyro.sample("beta", dist.Normal(0.0, prior_sd).expand([2]).to_event(1))
    pyro.deterministic("slope_x2", 2 * beta[..., 1])
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def regression_posterior(X, y, sigma=0.5, prior_sd=10.0):
    precision = X.T @ X / sigma**2 + torch.eye(2, dtype=X.dtype) / prior_sd**2
    cov = torch.linalg.inv(precision)
    return cov @ X.T @ y / sigma**2, cov


def test_vector_latent_deterministic_sites_and_loo(f64):
    """The issue's crash (a global vector latent beside a data plate) and deterministic sites kept out
    of the likelihood; the guide is exact here, so draws must match the closed-form posterior."""
    X, y = regression_data()
    mean, cov = regression_posterior(X, y)
    guide = make_guide("mvn", regression, init="uniform")
    fit(regression, guide, X, y, steps=1500, num_particles=16, lr=0.05, lr_final=0.001, seed=0)
    idata = guide_inference_data(regression, guide, X, y, num_samples=4000, seed=1)
    assert idata.posterior["beta"].shape == (1, 4000, 2)
    assert set(idata.log_likelihood.data_vars) == {"y"} and idata.log_likelihood["y"].shape == (1, 4000, 40)
    assert set(idata.observed_data.data_vars) == {"y"}
    beta = idata.posterior["beta"].values[0]
    np.testing.assert_allclose(idata.posterior["slope_x2"].values[0], 2 * beta[:, 1])
    sd = cov.diagonal().sqrt().numpy()
    assert np.all(np.abs(beta.mean(0) - mean.numpy()) < 4 * sd / math.sqrt(4000) + 0.02 * sd)
    np.testing.assert_allclose(beta.std(0), sd, rtol=0.06)
    # pointwise log-likelihood against the Normal density written out by hand
    resid = y.numpy() - beta @ X.numpy().T
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0],
                               -0.5 * (resid / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi), rtol=1e-10)
    assert math.isfinite(az.loo(idata).elpd_loo)


def test_plate_dims_follow_pyros_rule():
    """A model whose only plate is at dim=-2: nesting 2 (Pyro's -min(frame.dim)), not 1."""
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", 3, dim=-2):
            pyro.sample("x", dist.Normal(z, 1.0), obs=torch.zeros(3, 1))

    assert model_sites(model).max_plate_nesting == 2
    guide = make_guide("lognormal", model)
    d = guide_draws(model, guide, num_samples=7, seed=0)
    assert d.latent["z"].shape == (7,) and d.log_likelihood["x"].shape == (7, 3, 1)


def test_improper_priors_work_everywhere(f64):
    """Flat priors (ImproperUniform): sites, every init, guides, ELBO, NUTS; against the closed form
    (flat prior on the mean of N(mu, 1) data: mu | y ~ N(ybar, 1/n))."""
    y = torch.tensor([0.3, -1.2, 2.0, 0.8, 1.1, -0.4])

    def model():
        mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    for name in ("uniform", "feasible", "median", "mean", "sample"):
        site = {"fn": dist.ImproperUniform(constraints.positive, (3,), ()), "name": "s"}
        v = make_init(name)(site)
        assert v.shape == (3,) and (v > 0).all()
    guide = make_guide("lognormal", model, init="uniform")
    fit(model, guide, steps=800, num_particles=8, lr=0.05, lr_final=0.002, seed=0)
    d = guide_draws(model, guide, num_samples=4000, seed=1)
    assert abs(d.latent["mu"].mean() - y.mean().item()) < 0.05
    assert d.latent["mu"].std() == pytest.approx(1 / math.sqrt(6), rel=0.08)
    res = run_nuts(model, num_samples=300, warmup_steps=200, num_chains=2, seed=0)
    idata = mcmc_inference_data(res)
    draws = idata.posterior["mu"].values.ravel()
    assert abs(draws.mean() - y.mean().item()) < 0.1 and "diverging" in idata.sample_stats


def test_pareto_k_matches_pyros_psis_diagnostic(f64):
    """Our k-hat from the ELBO's log-weights equals Pyro's psis_diagnostic on the same draws."""
    X, y = regression_data()
    guide = make_guide("lognormal", regression, init="feasible")
    fit(regression, guide, X, y, steps=300, num_particles=8, lr=0.05, seed=0)
    d = guide_draws(regression, guide, X, y, num_samples=3000, chunk=3000, seed=5)
    pyro.set_rng_seed(5)
    k_pyro = psis_diagnostic(regression, guide, X, y, num_particles=3000, max_plate_nesting=1)
    assert pareto_k(d.log_weights) == pytest.approx(k_pyro, rel=1e-9)


def test_diagnostics_flag_a_bad_fit_and_pass_a_good_one(f64):
    X, y = regression_data()
    # mean-field on a posterior with corr(beta) far from 0: a k-hat warning; full-rank: none
    Xc = torch.stack([torch.ones(40, dtype=torch.float64), X[:, 1] + 3.0], -1)  # uncentred: strong correlation
    out = {}
    for name in ("lognormal", "mvn"):
        pyro.clear_param_store()
        guide = make_guide(name, regression, init="feasible")
        fit(regression, guide, Xc, y, steps=2500, num_particles=16, lr=0.05, lr_final=0.001, seed=0)
        out[name] = pareto_k(guide_draws(regression, guide, Xc, y, num_samples=5000, seed=1).log_weights)
    assert out["lognormal"] > 0.7 > 0.5 > out["mvn"]
    # a loss still falling is not converged; a flat noisy one is
    rng = np.random.default_rng(0)
    assert not loss_convergence(np.linspace(100, 50, 1000) + rng.normal(0, 1, 1000))[0]
    assert loss_convergence(50 + rng.normal(0, 1, 1000))[0]


def test_mcmc_and_reference_warnings():
    import pandas as pd

    s = pd.DataFrame({"r_hat": [1.0, 1.05], "ess_bulk": [1000.0, 150.0], "ess_tail": [900.0, 800.0]}, index=["a", "b"])
    w = mcmc_warnings(s, divergences=3, num_chains=4, num_draws=500)
    assert any("3 divergent" in x for x in w) and any("R-hat up to 1.050" in x for x in w)
    assert any("ess bulk down to 150 < 400 (b)" in x for x in w)
    w = reference_warnings({"a": {"mean_error_sd": 0.7, "sd_ratio": 1.0}, "b": {"mean_error_sd": 0.1, "sd_ratio": 0.3}})
    assert "1 parameter mean(s) more than 0.5" in w[0] and "worst a: +0.70" in w[0] and "worst b" in w[1]


# --------------------------------------------------------------------------- reference draws
def test_reference_files_and_stan_names(tmp_path):
    p = tmp_path / "ref.json"
    p.write_text(json.dumps({"draws": {"beta[1]": [1.0, 2.0, 3.0], "sigma": [0.5, 0.7, 0.6]}}))
    ref = read_reference(p)
    assert ref.mean["beta[1]"] == 2.0 and ref.sd["beta[1]"] == pytest.approx(1.0)
    assert list(flat_draws({"L": np.zeros((5, 2, 2))})) == ["L[1,1]", "L[1,2]", "L[2,1]", "L[2,2]"]
    for content, msg in [("", "the file is empty"), ("[1, 2]", "expected"), ('{"a": [1]}', "at least 2"),
                         ('{"a": [1, 2], "b": [1, 2, 3]}', "has 3 draws, others have 2"),
                         ('{"a": ["x", "y"]}', "list of numbers"), ('{"a": [1, NaN]}', "NaN"),
                         ('{"a": [1, 1]}', "constant"), ("{", "not valid JSON")]:
        p.write_text(content)
        with pytest.raises(ValueError, match=f"reference file {p}: .*{msg}"):
            read_reference(p)
    with pytest.raises(ValueError, match="not found"):
        read_reference(tmp_path / "missing.json")


def test_comparison_table_takes_reference_and_rejects_unknown_names():
    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={"beta": rng.normal(size=(1, 2000, 2))})
    m = MethodResult("q", idata, pareto_k=0.3, warnings=["w1"])
    ref = Reference.from_draws({"beta[1]": rng.normal(size=5000), "beta[2]": rng.normal(1.0, 2.0, size=5000)})
    t = comparison_table([m], ref, per_parameter=False)
    assert t.loc["q", "Pareto k"] == 0.3 and t.loc["q", "warnings"] == "w1"
    assert t.loc["q", "max |mean error| (ref sd)"] == pytest.approx(0.5, abs=0.06)  # beta[2] is 1/2 sd off
    with pytest.raises(ValueError, match="parameters not produced by the model: gamma"):
        comparison_table([m], {"gamma": (0.0, 1.0)})


# --------------------------------------------------------------------------- loading files
def test_model_and_data_files_give_one_line_errors(tmp_path):
    good = tmp_path / "m.py"
    good.write_text("def model(data):\n    pass\n\ndef other(a, b):\n    pass\n")
    cases = [(str(tmp_path / "nope.py"), "not found"),
             (str(tmp_path), "not a file"),
             (str(good) + ":missing", "no function 'missing' \\(functions defined there: model, other\\)"),
             (str(good) + ":other", "must take one argument, the data dict")]
    bad = tmp_path / "bad.py"
    bad.write_text("def model(data):\n    return (\n")
    cases.append((str(bad), "syntax error at line"))
    boom = tmp_path / "boom.py"
    boom.write_text("raise RuntimeError('no')\n")
    cases.append((str(boom), "importing it failed: RuntimeError: no"))
    for spec, msg in cases:
        with pytest.raises(ValueError, match=msg):
            load_user_model(spec)
    data = tmp_path / "d.json"
    data.write_text('{"N": 3, "y": [1, 2, 3], "x": [0.5, 1.5], "X": [[1, 2], [3, 4]], "s": 2.5}')
    d = load_data(data)
    assert d["N"] == 3 and d["y"].dtype == torch.int64 and d["x"].dtype == torch.float64
    assert d["X"].shape == (2, 2) and d["s"] == 2.5
    for content, msg in [('{"X": [[1, 2], [3]]}', "ragged"), ("[1]", "expected a JSON object"),
                         ('{"y": [1, NaN]}', "NaN"), ("{", "not valid JSON")]:
        data.write_text(content)
        with pytest.raises(ValueError, match=f"data file {data}: .*{msg}"):
            load_data(data)


POSTERIORDB = ROOT.parent / "shared" / "posteriordb"
EIGHT = POSTERIORDB / "eight_schools-eight_schools_noncentered"


@pytest.mark.skipif(not EIGHT.exists(), reason="../shared/posteriordb not present")
def test_cli_model_path_json_and_errors(tmp_path, capsys):
    argv = ["posterior", "--model", str(ROOT / "examples/posteriordb/eight_schools_noncentered.py"),
            "--data", str(EIGHT / "data.json"), "--reference", str(EIGHT / "reference_draws.json"),
            "--guides", "mvn", "--steps", "1500", "--draws", "2000", "--elbo-samples", "4000", "--nuts",
            "--nuts-samples", "300", "--nuts-warmup", "300", "--chains", "2", "--json", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    mvn, nuts = out["methods"]
    assert {"name", "elbo", "elbo_se", "pareto_k", "warnings", "max_abs_mean_error_sd", "params", "seconds"} <= set(mvn)
    assert set(mvn["params"]["theta[1]"]) == {"mean", "sd", "mean_error_sd", "sd_ratio"}
    assert nuts["elbo"] is None and nuts["max_abs_mean_error_sd"] < 0.15
    for m in out["methods"]:  # never more than 0.5 reference sd off without a warning
        assert m["max_abs_mean_error_sd"] < 0.5 or m["warnings"]
        for w in m["warnings"]:
            assert f"warning: {m['name']}: {w}" in captured.err
    for f in ("comparison.csv", "parameters.csv", "summary_nuts.csv", "inference_data/mvn.nc",
              "posterior_marginals.png", "svi_loss.png", "nuts_trace.png", "config.json"):
        assert (tmp_path / "r" / f).exists(), f
    idata = az.from_netcdf(tmp_path / "r" / "inference_data" / "mvn.nc")
    assert idata.posterior.attrs["method"].startswith("variational draws") and "theta" in idata.posterior


@pytest.mark.skipif(not EIGHT.exists(), reason="../shared/posteriordb not present")
def test_cli_model_errors_are_one_line_and_leave_no_folder(tmp_path, capsys):
    model = str(ROOT / "examples/posteriordb/eight_schools_noncentered.py")
    bad_ref = tmp_path / "ref.json"
    bad_ref.write_text('{"draws": {"phi": [1, 2]}}')
    cases = [(["--model", str(tmp_path / "x.py")], "model file .*x.py: not found"),
             (["--model", model], "model .*eight_schools_noncentered.py:model: running it on the data failed: "
                                  "KeyError: 'y' \\(no --data file was given\\)"),
             (["--model", model, "--data", str(EIGHT / "data.json"), "--reference", str(bad_ref)],
              "reference file .*ref.json: parameters not produced by the model: phi"),
             (["--model", model, "--data", str(EIGHT / "data.json"), "--prior-u", "1,1"], "Poisson-Gamma model only"),
             (["--model", model, "--data", str(EIGHT / "data.json"), "--init", "zeros"], "unknown --init 'zeros'"),
             (["--model", model, "--data", str(EIGHT / "data.json"), "--guides", "mvn", "mvn"], "given twice"),
             (["--reference", str(bad_ref)], "--reference needs --model")]
    for extra, msg in cases:
        out = tmp_path / "out"
        assert main(["posterior", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(msg, err), err
        assert not out.exists()


def test_replay_draws_match_guide_draws(f64):
    """The model replayed on given draws gives the same deterministic sites and log-likelihood."""
    X, y = regression_data()
    guide = make_guide("mvn", regression, init="feasible")
    fit(regression, guide, X, y, steps=50, num_particles=4, seed=0)
    d = guide_draws(regression, guide, X, y, num_samples=500, chunk=128, seed=2)
    r = replay_draws(regression, d.latent, X, y, chunk=100)
    np.testing.assert_allclose(r.deterministic["slope_x2"], d.deterministic["slope_x2"])
    np.testing.assert_allclose(r.log_likelihood["y"], d.log_likelihood["y"], rtol=1e-12)


def test_a_model_that_does_not_vectorize_is_told_how_to_fix_it(f64):
    from svilab.inference.draws import VectorizationError

    X, y = regression_data()

    def matmul_model(X, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(X @ beta, 0.5), obs=y)

    guide = make_guide("mvn", matmul_model, init="feasible")
    with pytest.raises(VectorizationError, match=r"\(X \* beta\)\.sum\(-1\) instead of X @ beta"):
        guide_draws(matmul_model, guide, X, y, num_samples=10)

    def bad_rate_model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        rate = torch.where(z == 0, 1.0, torch.nan)  # fine at the init point (0), invalid on every draw
        pyro.sample("x", dist.Poisson(rate), obs=torch.tensor(1.0))

    with pyro.validation_enabled(True), pytest.raises(ValueError, match="failed: Expected parameter rate") as err:
        guide_draws(bad_rate_model, make_guide("lognormal", bad_rate_model), num_samples=10)
    assert not isinstance(err.value, VectorizationError)


def test_importance_check_finds_an_off_centre_guide_that_k_hat_passes():
    """A Gaussian posterior N(0, I_3) and Gaussian guides, weights log p - log q written out in numpy:
    a guide shifted by 0.5 sd in one coordinate has a small k-hat but the importance-weighted means
    move by the exact shift (-0.5 guide sd, within 4 standard errors), and the check says so; the
    centred guide (sd 1.1, so the weights are not constant) moves by less than 4 standard errors and passes."""
    from svilab.inference.diagnostics import importance_shift, importance_warnings

    rng = np.random.default_rng(0)
    S, sd_q = 4000, 1.1
    for offset, expect_warning in ((0.5 * sd_q, True), (0.0, False)):
        mean_q = np.array([offset, 0.0, 0.0])
        z = mean_q + sd_q * rng.standard_normal((S, 3))
        log_p = -0.5 * (z**2).sum(1)
        log_q = -0.5 * (((z - mean_q) / sd_q) ** 2).sum(1)
        lw = log_p - log_q
        k = pareto_k(lw)
        draws = {f"z[{i + 1}]": z[:, i] for i in range(3)}
        shift, ess = importance_shift(draws, lw)
        se = math.sqrt(1 / ess + 1 / S)
        exact = (0.0 - mean_q) / sd_q          # E_p - E_q in guide sds
        assert k < 0.5
        for i in range(3):
            assert abs(shift[f"z[{i + 1}]"] - exact[i]) < 4 * se, (shift, exact, se)
        warned = importance_warnings(draws, lw, k)
        assert bool(warned) == expect_warning, warned
        if expect_warning:
            assert f"worst z[1]: {shift['z[1]']:+.2f} sd" in warned[0], warned
    assert importance_warnings(draws, lw, k=0.9) == []      # weights not trusted: k-hat's own warning speaks
