import math

import numpy as np
import pytest
from scipy import integrate, stats

from svilab.inference.cavi import GammaFactor, cavi, elbo
from svilab.inference.exact import ExactPosterior
from svilab.models import PoissonGamma

CASES = [dict(), dict(data=[0, 1, 0, 2], prior_u=(2.0, 0.5), prior_v=(1.5, 2.0)),
         dict(data=[120, 95, 130], prior_u=(1.0, 0.1), prior_v=(3.0, 1.0))]


@pytest.mark.parametrize("case", CASES)
def test_elbo_trace_never_decreases_and_converges(case):
    pg = PoissonGamma(**case)
    r = cavi(pg)
    d = np.diff(r.elbo_trace)
    assert (d >= -1e-12).all()
    assert r.converged and r.iterations >= 1
    kl = r.kl(ExactPosterior(pg).log_evidence)
    assert kl >= 0


def test_closed_form_elbo_matches_2d_quadrature():
    """The closed-form ELBO against E_q[log p(x,u,v) - log q] by 2-D quadrature."""
    pg = PoissonGamma()
    qu, qv = GammaFactor(40.0, 8.0), GammaFactor(30.0, 35.0)
    du, dv = stats.gamma(qu.shape, scale=1 / qu.rate), stats.gamma(qv.shape, scale=1 / qv.rate)
    import torch

    def integrand(v, u):
        lq = du.logpdf(u) + dv.logpdf(v)
        lj = pg.log_joint(torch.tensor(u, dtype=torch.float64),
                          torch.tensor(v, dtype=torch.float64)).item()
        return math.exp(lq) * (lj - lq)

    ref, _ = integrate.dblquad(integrand, du.ppf(1e-12), du.ppf(1 - 1e-12),
                               dv.ppf(1e-12), dv.ppf(1 - 1e-12), epsabs=1e-10, epsrel=1e-10)
    assert elbo(pg, qu, qv) == pytest.approx(ref, rel=1e-7)


def test_cavi_is_a_fixed_point_and_a_maximum():
    pg = PoissonGamma()
    r = cavi(pg)
    # the fixed-point equations hold
    assert r.q_u.rate == pytest.approx(pg.b_u + pg.N * r.q_v.mean, rel=1e-10)
    assert r.q_v.rate == pytest.approx(pg.b_v + pg.N * r.q_u.mean, rel=1e-10)
    # any perturbation of the four Gamma parameters lowers the ELBO
    rng = np.random.default_rng(0)
    for _ in range(20):
        eps = rng.normal(scale=0.02, size=4)
        qu = GammaFactor(r.q_u.shape * math.exp(eps[0]), r.q_u.rate * math.exp(eps[1]))
        qv = GammaFactor(r.q_v.shape * math.exp(eps[2]), r.q_v.rate * math.exp(eps[3]))
        assert elbo(pg, qu, qv) < r.elbo


def test_notebook_cavi_values():
    r = cavi(PoissonGamma())
    assert r.q_u.mean == pytest.approx(4.646266, rel=1e-6)
    assert r.q_v.mean == pytest.approx(0.911565, rel=1e-6)
    assert r.kl(ExactPosterior(PoissonGamma()).log_evidence) == pytest.approx(0.872594, abs=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tol"):
        cavi(PoissonGamma(), tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        cavi(PoissonGamma(), max_iter=0)
