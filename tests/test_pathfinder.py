"""Pathfinder (issue #18): the BFGS inverse-Hessian estimates, the resampled draws against an exact Gaussian,
the hard raw-scale regression against its exact posterior, the cost counted, and the command-line method."""

import json
import math

import numpy as np
import pytest
import torch

from svilab.cli import main
from svilab.inference.estimators.base import Target
from svilab.inference.pathfinder import inverse_hessians, pathfinder
from svilab.inference.potential import unconstrained_target


def _gaussian(dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(dim, dtype=torch.float64)
    mean = torch.arange(dim, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(mean, cov)
    calls = {"n": 0}

    def log_p(z):                                     # z: (D, *B)
        calls["n"] += int(np.prod(z.shape[1:]))
        return mvn.log_prob(z.movedim(0, -1))

    return Target(log_p, None, dim=dim, support="real"), mean, cov, calls


def test_the_inverse_hessian_estimates_satisfy_the_secant_condition_and_are_positive_definite():
    """BFGS's defining property: after the update with the pair (s, y), H y = s; every H is symmetric positive
    definite. On a quadratic f = z'Az/2 the pairs are y = A s."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A = a @ a.T + torch.eye(4, dtype=torch.float64)
    xs = torch.randn(7, 4, generator=g, dtype=torch.float64).cumsum(0)
    gs = xs @ A.T
    hs = list(inverse_hessians(xs, gs, history=3))
    assert hs[0] is None and len(hs) == 7
    for k, h in enumerate(hs[1:]):
        s, y = xs[k + 1] - xs[k], gs[k + 1] - gs[k]
        torch.testing.assert_close(h @ y, s, rtol=1e-9, atol=1e-9)
        assert torch.linalg.eigvalsh(h).min() > 0 and torch.allclose(h, h.T)


def test_the_resampled_draws_match_an_exact_gaussian_and_the_cost_is_counted():
    target, mean, cov, calls = _gaussian()
    r = pathfinder(target, num_paths=4, num_draws=2000, seed=0)
    sd = cov.diagonal().sqrt()
    assert ((r.draws.mean(0) - mean).abs() / sd).max() < 0.15
    ratio = r.draws.T.cov().diagonal() / cov.diagonal()
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio
    assert r.pareto_k < 0.7 and r.elbo < 0.5              # log Z = 0: the ELBO is -KL (+ the noise of 20 draws)
    assert r.gradient_evals + r.density_evals == calls["n"]   # every evaluation of log p is counted
    assert len(r.path_elbos) == 4 and all(math.isfinite(e) for e in r.path_elbos)
    again = pathfinder(target, num_paths=4, num_draws=2000, seed=0)
    assert torch.equal(again.draws, r.draws)             # reproducible from the seed


def test_pathfinder_gets_the_hard_raw_scale_regression_right_in_a_few_hundred_gradients():
    """The regression on raw calendar years (coefficients correlated -0.99996; exact posterior a multivariate t):
    Pathfinder's draws have the exact sds within 10% and the means within 0.1 sd, in a few hundred gradient
    evaluations (3000 SVI steps x 16 particles are 48,000)."""
    from test_hard_posteriors import YEARS, Y, exact, years_model

    b, sd, corr, _, _ = exact()
    target = unconstrained_target(years_model, YEARS, Y)
    r = pathfinder(target, num_paths=4, num_draws=2000, seed=0)
    ab = r.draws[:, :2].numpy()
    assert np.all(np.abs(ab.mean(0) - b) / sd < 0.1), (ab.mean(0), b, sd)
    np.testing.assert_allclose(ab.std(0), sd, rtol=0.1)
    assert np.corrcoef(ab.T)[0, 1] == pytest.approx(corr, abs=1e-4)
    assert r.gradient_evals < 1000 and r.pareto_k < 0.7


def test_options_out_of_range_are_named():
    target, *_ = _gaussian()
    with pytest.raises(ValueError, match="--pathfinder-paths must be >= 1"):
        pathfinder(target, num_paths=0)
    with pytest.raises(ValueError, match="--pathfinder-draws-per-iteration must be >= 2"):
        pathfinder(target, draws_per_iter=1)


def test_the_command_line_method(tmp_path, capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    argv = ["posterior", "--model", str(root / "examples/hard/years.py"),
            "--data", str(root / "examples/hard/years.json"), "--guides", "lognormal", "--steps", "300",
            "--draws", "500", "--elbo-samples", "2000", "--pathfinder", "--json", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {m["name"]: m for m in out["methods"]}
    assert set(rows) == {"pathfinder", "lognormal"}
    assert rows["pathfinder"]["details"]["gradient_evals"] < rows["lognormal"]["details"]["gradient_evals"] == 300 * 16
    assert (tmp_path / "run" / "inference_data" / "pathfinder.nc").exists()
    assert main(["posterior", "--pathfinder", "--out", str(tmp_path / "pg")]) == 2
    assert "--pathfinder needs --model" in capsys.readouterr().err


def test_nuts_counts_its_gradient_evaluations(monkeypatch):
    """Every leapfrog step of NUTS is one gradient; the count equals the calls of Pyro's integrator (counted
    independently by wrapping it), warm-up included, over all chains."""
    import pyro
    import pyro.distributions as dist
    import pyro.infer.mcmc.nuts as nuts_module

    from svilab.inference.mcmc import run_nuts

    calls = {"n": 0}
    original = nuts_module.velocity_verlet

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(nuts_module, "velocity_verlet", counted)

    def model():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    res = run_nuts(model, num_samples=30, warmup_steps=20, num_chains=2, seed=0, jit_compile=False, progress=False)
    assert res.config["gradient_evals"] == calls["n"] >= 2 * 50


def test_pathfinder_as_the_start(tmp_path, capsys):
    """--init pathfinder: the guides start (and are whitened) at Pathfinder's best Gaussian instead of the
    Laplace approximation; on the raw-years regression (condition number 5e10) the whitened mvn then lands
    within 0.1 exact sd of alpha and beta (the multivariate t of tests/test_hard_posteriors.py) after 400 steps.
    Without --model it is refused like --init laplace."""
    from pathlib import Path

    import numpy as np
    from test_hard_posteriors import exact

    root = Path(__file__).resolve().parents[1]
    argv = ["posterior", "--model", str(root / "examples/hard/years.py"),
            "--data", str(root / "examples/hard/years.json"), "--init", "pathfinder", "--guides", "mvn",
            "--steps", "400", "--draws", "2000", "--elbo-samples", "2000", "--json", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "Pathfinder start: Pathfinder's best Gaussian (4 of 4 paths usable" in captured.err
    mvn = json.loads(captured.out)["methods"][0]
    assert mvn["details"]["start"] == "pathfinder, whitened"
    mean, sd, *_ = exact()
    got = np.array([mvn["params"]["alpha"]["mean"], mvn["params"]["beta"]["mean"]])
    assert np.all(np.abs(got - mean) < 0.1 * sd), (got - mean) / sd
    assert main(["posterior", "--init", "pathfinder", "--out", str(tmp_path / "pg")]) == 2
    assert "--init pathfinder needs --model" in capsys.readouterr().err
