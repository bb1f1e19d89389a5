"""The exact posterior against independent computations: 2-D quadrature in (u, v), the other
marginal, and Monte Carlo."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import gammaln

from svilab.inference.exact import ExactPosterior
from svilab.models import PoissonGamma

CASES = [
    dict(),                                                     # the notebook's model
    dict(data=[0, 1, 0, 2], prior_u=(2.0, 0.5), prior_v=(1.5, 2.0)),
    dict(data=[120, 95, 130], prior_u=(1.0, 0.1), prior_v=(3.0, 1.0)),
]


def _brute_force(pg: PoissonGamma):
    """2-D adaptive quadrature of the joint density in the original (u, v) coordinates."""
    def lj(u, v):
        return (pg.S * math.log(u * v) - pg.N * u * v - pg.log_factorials
                + pg.a_u * math.log(pg.b_u) - gammaln(pg.a_u) + (pg.a_u - 1) * math.log(u)
                - pg.b_u * u + pg.a_v * math.log(pg.b_v) - gammaln(pg.a_v)
                + (pg.a_v - 1) * math.log(v) - pg.b_v * v)

    ex = ExactPosterior(pg)
    # a generous box from the exact marginals' extreme quantiles, shift for stability
    u_hi = float(ex.quantile("u", 1 - 1e-13)) * 1.5
    v_hi = float(ex.quantile("v", 1 - 1e-13)) * 1.5
    shift = -ex.log_evidence

    def moment(g):
        val, _ = integrate.dblquad(lambda v, u: g(u, v) * math.exp(lj(u, v) + shift + math.log(1)),
                                   0, u_hi, 0, v_hi, epsabs=0, epsrel=1e-11)
        return val

    z = moment(lambda u, v: 1.0)
    eu = moment(lambda u, v: u) / z
    ev = moment(lambda u, v: v) / z
    vu = moment(lambda u, v: (u - eu) ** 2) / z
    vv = moment(lambda u, v: (v - ev) ** 2) / z
    cuv = moment(lambda u, v: (u - eu) * (v - ev)) / z
    return dict(log_evidence=math.log(z) - shift, mean_u=eu, mean_v=ev, sd_u=math.sqrt(vu),
                sd_v=math.sqrt(vv), corr=cuv / math.sqrt(vu * vv))


@pytest.mark.parametrize("case", CASES)
def test_exact_matches_bruteforce_2d_quadrature(case):
    pg = PoissonGamma(**case)
    ex = ExactPosterior(pg)
    ref = _brute_force(pg)
    assert ex.log_evidence == pytest.approx(ref["log_evidence"], rel=1e-8, abs=1e-8)
    assert ex.mean["u"] == pytest.approx(ref["mean_u"], rel=1e-6)
    assert ex.mean["v"] == pytest.approx(ref["mean_v"], rel=1e-6)
    assert ex.sd["u"] == pytest.approx(ref["sd_u"], rel=1e-6)
    assert ex.sd["v"] == pytest.approx(ref["sd_v"], rel=1e-6)
    assert ex.corr == pytest.approx(ref["corr"], rel=1e-6)


def test_notebook_values():
    ex = ExactPosterior(PoissonGamma())
    # values from the 2-D quadrature above, pinned so that regressions show up plainly
    assert ex.log_evidence == pytest.approx(-24.689867112868, abs=1e-9)
    assert ex.mean["u"] == pytest.approx(4.864367166312, rel=1e-9)
    assert ex.mean["v"] == pytest.approx(0.966091791578, rel=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_marginals_are_consistent_with_the_conditionals(case):
    """E[u] from the u-marginal equals E_v[E[u | v]] from the v-marginal (different integrals)."""
    pg = PoissonGamma(**case)
    ex = ExactPosterior(pg)
    mv = ex.marginals["v"]
    eu_via_v = mv.expect(lambda v: (pg.a_u + pg.S) / (pg.b_u + pg.N * v))
    assert ex.mean["u"] == pytest.approx(eu_via_v, rel=1e-10)
    # and the u marginal normaliser gives the same evidence as the v one
    mu = ex.marginals["u"]
    log_kappa = (pg.a_u * math.log(pg.b_u) + pg.a_v * math.log(pg.b_v) - math.lgamma(pg.a_u)
                 - math.lgamma(pg.a_v) - pg.log_factorials)
    assert log_kappa + math.lgamma(pg.a_v + pg.S) + mu.log_norm == pytest.approx(
        ex.log_evidence, rel=1e-12)


@pytest.mark.parametrize("name", ["u", "v"])
def test_marginal_density_cdf_and_quantiles(name):
    pg = PoissonGamma()
    ex = ExactPosterior(pg)
    # the density integrates to one (scipy quad, independent of the panel rule)
    total, _ = integrate.quad(lambda w: float(ex.pdf(name, w)), 0, np.inf, epsrel=1e-11, limit=200)
    assert total == pytest.approx(1.0, abs=1e-9)
    # CDF against adaptive quadrature of the density
    for w in ex.quantile(name, [0.05, 0.5, 0.9]):
        ref, _ = integrate.quad(lambda t: float(ex.pdf(name, t)), 0, w, epsrel=1e-12, limit=200)
        assert float(ex.cdf(name, w)) == pytest.approx(ref, rel=1e-8)
    q = np.array([1e-6, 0.01, 0.3, 0.5, 0.77, 0.999999])
    np.testing.assert_allclose(ex.cdf(name, ex.quantile(name, q)), q, rtol=1e-9)
    # v marginal density against the conditional mixture: p(v) = int p(v | u) p(u) du
    if name == "v":
        from scipy import stats
        v0 = 0.8
        mix, _ = integrate.quad(
            lambda u: stats.gamma(pg.a_v + pg.S, scale=1 / (pg.b_v + pg.N * u)).pdf(v0)
            * float(ex.pdf("u", u)), 0, np.inf, epsrel=1e-11, limit=200)
        assert float(ex.pdf("v", v0)) == pytest.approx(mix, rel=1e-8)


def test_exact_samples_match_moments_within_standard_error():
    ex = ExactPosterior(PoissonGamma())
    n = 200_000
    s = ex.sample(n, seed=1)
    for name in ("u", "v"):
        se = ex.sd[name] / math.sqrt(n)
        assert abs(s[name].mean() - ex.mean[name]) < 4 * se
        # the sample variance's standard error, from the fourth central moment
        m4 = ex.marginals[name].expect(lambda w, m=ex.mean[name]: (w - m) ** 4)
        se_var = math.sqrt((m4 - ex.sd[name] ** 4) / n)
        assert abs(s[name].var() - ex.sd[name] ** 2) < 4 * se_var
    # correlation: Fisher z standard error 1/sqrt(n-3)
    r = np.corrcoef(s["u"], s["v"])[0, 1]
    assert abs(np.arctanh(r) - np.arctanh(ex.corr)) < 4 / math.sqrt(n - 3)
    # reproducible
    s2 = ex.sample(10, seed=1)
    np.testing.assert_array_equal(s2["u"], ex.sample(10, seed=1)["u"])


def test_evidence_against_importance_sampling():
    """log p(x) by importance sampling from the prior, within its standard error."""
    pg = PoissonGamma([1, 0, 2])
    ex = ExactPosterior(pg)
    rng = np.random.default_rng(3)
    n = 400_000
    u = rng.gamma(pg.a_u, 1 / pg.b_u, n)
    v = rng.gamma(pg.a_v, 1 / pg.b_v, n)
    import torch
    w = np.exp(pg.log_likelihood(torch.from_numpy(u), torch.from_numpy(v)).numpy())
    est, se = w.mean(), w.std() / math.sqrt(n)
    assert abs(est - math.exp(ex.log_evidence)) < 4 * se
    assert se / est < 0.01   # the check has teeth


def test_unknown_latent_name():
    ex = ExactPosterior(PoissonGamma())
    with pytest.raises(ValueError, match="unknown latent"):
        ex.pdf("w", 1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ex.quantile("u", 1.5)
