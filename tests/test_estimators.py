"""Every hand-written estimator against the exact ELBO gradient (2-D quadrature), within its
Monte Carlo standard error; the hand-written derivatives against torch.autograd; the
reparameterization and score-function estimators against Pyro's own autodiff on the same noise."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from svilab.guides.truncated_normal import PositiveNormal
from svilab.inference.estimators import (
    ESTIMATORS,
    GRADIENT_ESTIMATORS,
    Target,
    estimate,
    get_estimator,
    get_family,
    mean_and_se,
)
from svilab.inference.estimators.base import check_params
from svilab.inference.estimators.pyro_autodiff import pyro_elbo_gradient, pyro_noise
from svilab.inference.exact_elbo import exact_elbo_and_grad
from svilab.models import PoissonGamma

PG = PoissonGamma()
TARGET = Target.from_poisson_gamma(PG)
POINTS = [
    ("normal", (5.0, 0.5, 1.0, 0.2)),     # the notebook's point
    ("normal", (2.0, 1.5, 0.3, 0.5)),     # truncation matters: mu/sigma = 1.3 and 0.6
    ("lognormal", (1.5, 0.3, -0.1, 0.3)),
    ("lognormal", (1.2, 0.6, 0.2, 0.5)),
]
Z_TOL = 4.5   # |mean - exact| / se; 4 components x 7 estimators x 4 points, fixed seeds


@pytest.mark.parametrize("family, point", POINTS)
@pytest.mark.parametrize("name", GRADIENT_ESTIMATORS)
def test_gradient_estimators_are_unbiased(name, family, point):
    _, exact = exact_elbo_and_grad(TARGET, family, point)
    g = estimate(name, TARGET, family, point, M=16, reps=20000, seed=11)
    mean, se = mean_and_se(g)
    z = ((mean - exact) / se).abs()
    assert (z < Z_TOL).all(), f"{name} at {point}: z = {z.tolist()}"
    # the test has teeth: a bias of half the gradient (or 0.25) would be detected, also for the
    # plain score function, whose variance is the largest
    assert (Z_TOL * se < 0.5 * exact.abs() + 0.25).all(), se


@pytest.mark.parametrize("name", [*GRADIENT_ESTIMATORS, "elbo"])
def test_float32_estimators_are_unbiased_and_track_float64(name):
    """``dtype=float32`` (``--dtype float32``): unbiased against the float64 exact values, and on the
    same noise within float32 rounding of the float64 estimates."""
    family, point = POINTS[0]
    exact_value, exact_grad = exact_elbo_and_grad(TARGET, family, point)
    exact = torch.tensor([exact_value]) if name == "elbo" else exact_grad
    g32 = estimate(name, TARGET, family, point, M=16, reps=20000, seed=11, dtype=torch.float32)
    assert g32.dtype == torch.float32
    mean, se = mean_and_se(g32.double())
    assert (((mean - exact) / se).abs() < Z_TOL).all()
    # the same noise (drawn in float64, rounded to float32): equal up to float32 rounding
    est, fam = get_estimator(name), get_family(family)
    eps = est.noise(200, 16, 2, torch.Generator().manual_seed(3), torch.float64)
    tiny = torch.finfo(torch.float32).eps
    eps32 = eps.float().clamp(tiny, 1 - tiny)
    g64 = est(TARGET, fam, check_params(point), eps32.double())
    g32 = est(TARGET, fam, check_params(point, dtype=torch.float32), eps32).double()
    scale = g64.abs().mean(0) + 1.0
    assert ((g32 - g64).abs().max(0).values / scale < 1e-3).all()


@pytest.mark.parametrize("family, point", POINTS)
def test_elbo_estimator_is_unbiased(family, point):
    exact, _ = exact_elbo_and_grad(TARGET, family, point)
    values = estimate("elbo", TARGET, family, point, M=10, reps=4000, seed=5)
    mean, se = mean_and_se(values)
    assert abs(mean.item() - exact) < Z_TOL * se.item()


def test_score_function_without_prior_is_biased():
    """The notebook's weight (log-likelihood minus log q, no log prior) gives another answer."""
    lik_only = Target(lambda z: PG.log_likelihood(z[0], z[1]))
    point = POINTS[0][1]
    _, exact = exact_elbo_and_grad(TARGET, "normal", point)
    g = estimate("score", lik_only, "normal", point, M=100, reps=50000, seed=2)
    mean, se = mean_and_se(g)
    assert (((mean - exact) / se).abs() > 6).any()


def test_variance_reduction_orders_as_expected():
    point = POINTS[0][1]
    v = {n: estimate(n, TARGET, "normal", point, M=100, reps=1000, seed=3).var(0)
         for n in ("score", "score_loo", "score_cv", "reparam", "reparam_qmc")}
    assert (v["score_loo"] < v["score"] / 10).all()
    assert (v["score_cv"] < v["score"] / 10).all()
    assert (v["reparam"] < v["score_loo"]).all()
    assert (v["reparam_qmc"] < v["reparam"] / 3).all()


def test_qmc_variance_falls_faster_than_one_over_m():
    point = POINTS[0][1]
    v1 = estimate("reparam_qmc", TARGET, "normal", point, M=64, reps=1000, seed=1).var(0)
    v2 = estimate("reparam_qmc", TARGET, "normal", point, M=1024, reps=1000, seed=1).var(0)
    slope = torch.log(v2 / v1) / math.log(1024 / 64)
    assert (slope < -1.2).all(), slope


def test_exact_elbo_against_scipy_dblquad_and_finite_differences():
    point = (2.0, 1.5, 0.3, 0.5)

    from scipy.special import gammaln, log_ndtr

    c = (PG.a_u * math.log(PG.b_u) - gammaln(PG.a_u) + PG.a_v * math.log(PG.b_v) - gammaln(PG.a_v)
         - PG.log_factorials)

    def scipy_elbo(p):
        """Independent: scipy's adaptive 2-D quadrature in (u, v), scalar Python integrand."""
        mu_u, s_u, mu_v, s_v = p
        lz_u, lz_v = log_ndtr(mu_u / s_u), log_ndtr(mu_v / s_v)

        def f(v, u):
            lq = (-0.5 * ((u - mu_u) / s_u) ** 2 - math.log(s_u) - lz_u
                  - 0.5 * ((v - mu_v) / s_v) ** 2 - math.log(s_v) - lz_v - math.log(2 * math.pi))
            lp = (c + (PG.a_u + PG.S - 1) * math.log(u) + (PG.a_v + PG.S - 1) * math.log(v)
                  - PG.b_u * u - PG.b_v * v - PG.N * u * v)
            return math.exp(lq) * (lp - lq)

        val, _ = integrate.dblquad(f, 0, mu_u + 12 * s_u, 0, mu_v + 12 * s_v,
                                   epsabs=1e-11, epsrel=1e-11)
        return val

    value, grad = exact_elbo_and_grad(TARGET, "normal", point)
    assert value == pytest.approx(scipy_elbo(point), rel=1e-8)
    h = 1e-4
    for k in (0, 3):   # two components are enough to catch a wrong gradient (slow quadrature)
        e = np.zeros(4)
        e[k] = h
        fd = (scipy_elbo(np.array(point) + e) - scipy_elbo(np.array(point) - e)) / (2 * h)
        assert grad[k].item() == pytest.approx(fd, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("family, point", [*POINTS, ("gaussian", (0.3, 0.7, -1.0, 0.2))])
def test_hand_written_derivatives_match_autograd(family, point):
    fam = get_family(family)
    p = check_params(point).requires_grad_(True)
    eps = torch.rand((2, 3, 7), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = fam.sample(p, eps)
    # dz/dparams
    dz = fam.dz_dparams(p.detach(), eps, z.detach())
    for i in range(2):
        (g,) = torch.autograd.grad(z[i].sum(), p, retain_graph=True)
        torch.testing.assert_close(dz[i].sum((-1, -2)), g[i])
    # score at fixed z, d log q / dz, entropy and its gradient
    zf = z.detach().requires_grad_(True)
    lq = fam.log_prob(p, zf)
    s = fam.score(p.detach(), zf.detach())
    (gp,) = torch.autograd.grad(lq.sum(), p, retain_graph=True)
    torch.testing.assert_close(s.sum((-1, -2)), gp)
    (gz,) = torch.autograd.grad(lq.sum(), zf)
    torch.testing.assert_close(fam.dlogq_dz(p.detach(), zf.detach()), gz)
    (ge,) = torch.autograd.grad(fam.entropy(p).sum(), p)
    torch.testing.assert_close(fam.entropy_grad(p.detach()), ge)


def test_entropy_against_torch_and_scipy():
    fam = get_family("normal")
    p = check_params((2.0, 1.5, 0.3, 0.5))
    ref = [stats.truncnorm(-a / b, 60, loc=a, scale=b).entropy() for a, b in p.tolist()]
    torch.testing.assert_close(fam.entropy(p), torch.tensor(ref, dtype=torch.float64))
    d = PositiveNormal(p[:, 0], p[:, 1])
    torch.testing.assert_close(d.entropy(), torch.tensor(ref, dtype=torch.float64))
    ref_mean = [stats.truncnorm(-a / b, 60, loc=a, scale=b).mean() for a, b in p.tolist()]
    torch.testing.assert_close(d.mean, torch.tensor(ref_mean, dtype=torch.float64))


def test_target_autograd_fallback_matches_hand_written_gradient():
    auto = Target(TARGET.log_joint)
    z = torch.rand(2, 5, dtype=torch.float64) + 0.5
    torch.testing.assert_close(auto.grad(z), TARGET.grad(z))
    torch.testing.assert_close(TARGET(z), PG.log_joint(z[0], z[1]))


@pytest.mark.parametrize("family, point", [POINTS[1], POINTS[2]])
def test_pyro_autodiff_agrees_on_the_same_noise(family, point):
    fam = get_family(family)
    params = check_params(point)
    for seed in (0, 1):
        eps = pyro_noise(family, 16, seed)
        ours = ESTIMATORS["reparam"](TARGET, fam, params, eps)[0]
        theirs = pyro_elbo_gradient(PG.model, family, point, 16, True, seed)
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
        ours = ESTIMATORS["score"](TARGET, fam, params, eps)[0]
        theirs = pyro_elbo_gradient(PG.model, family, point, 16, False, seed)
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_chunking_keeps_results_reproducible_and_independent_of_memory():
    a = estimate("reparam", TARGET, "normal", POINTS[0][1], M=100, reps=50, seed=4, chunk=1000)
    b = estimate("reparam", TARGET, "normal", POINTS[0][1], M=100, reps=50, seed=4, chunk=1000)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (50, 4)
    # M larger than the chunk still works (one repetition per chunk)
    c = estimate("score", TARGET, "normal", POINTS[0][1], M=5000, reps=3, seed=4, chunk=1000)
    assert c.shape == (3, 4) and torch.isfinite(c).all()


@pytest.mark.parametrize("kwargs, msg", [
    (dict(M=0), "M"),
    (dict(M=1, name="score_loo"), "M"),
    (dict(reps=0), "reps"),
    (dict(point=(5, -0.5, 1, 0.2)), "sigma"),
    (dict(point=(5, float("nan"), 1, 0.2)), "finite"),
    (dict(point=(5, 0.5, 1)), "expected 4"),
    (dict(name="nope"), "unknown estimator"),
    (dict(family="gauss"), "unknown guide family"),
])
def test_bad_input(kwargs, msg):
    args = dict(name="reparam", family="normal", point=POINTS[0][1], M=10, reps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        estimate(args["name"], TARGET, args["family"], args["point"], M=args["M"], reps=args["reps"])
    with pytest.raises(ValueError, match="reps >= 2"):
        mean_and_se(torch.zeros(1, 4))
