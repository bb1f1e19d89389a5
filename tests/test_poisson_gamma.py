import math

import numpy as np
import pyro
import pytest
import torch
from scipy import stats

from svilab.models import DEFAULT_DATA, PoissonGamma


def test_log_joint_matches_pyro_trace_and_scipy():
    pg = PoissonGamma()
    u, v = torch.tensor([4.2, 0.3, 7.0], dtype=torch.float64), torch.tensor([0.9, 2.5, 0.1],
                                                                             dtype=torch.float64)
    lj = pg.log_joint(u, v)
    x = np.array(DEFAULT_DATA)
    for k in range(3):
        ref = (stats.poisson(u[k].item() * v[k].item()).logpmf(x).sum()
               + stats.gamma(5, scale=1).logpdf(u[k].item())
               + stats.gamma(4, scale=1 / 4).logpdf(v[k].item()))
        assert lj[k].item() == pytest.approx(ref, rel=1e-12)
        cond = pyro.poutine.condition(pg.model, data={"u": u[k], "v": v[k]})
        tr = pyro.poutine.trace(cond).get_trace()
        assert tr.log_prob_sum().item() == pytest.approx(ref, rel=1e-12)


def test_log_joint_vectorizes_over_any_batch_shape():
    pg = PoissonGamma()
    u = torch.rand(4, 3, dtype=torch.float64) * 5 + 0.1
    v = torch.rand(4, 3, dtype=torch.float64) + 0.1
    full = pg.log_joint(u, v)
    assert full.shape == (4, 3)
    assert full[2, 1].item() == pytest.approx(pg.log_joint(u[2, 1], v[2, 1]).item(), rel=1e-14)
    # pointwise log-likelihood sums to the likelihood part
    pw = pg.pointwise_log_likelihood(u, v)
    assert pw.shape == (4, 3, len(DEFAULT_DATA))
    torch.testing.assert_close(pw.sum(-1), pg.log_likelihood(u, v))


def test_log_joint_is_minus_inf_outside_support():
    pg = PoissonGamma()
    out = pg.log_joint(torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([1.0, -0.5, 1.0]))
    assert torch.isneginf(out).all()


def test_zero_counts_allowed():
    pg = PoissonGamma([0, 0, 0])
    assert pg.S == 0
    assert math.isfinite(pg.log_joint(torch.tensor(1.0), torch.tensor(1.0)).item())


@pytest.mark.parametrize("data, msg", [
    ([], "empty"),
    ([1, -2, 3], "non-negative"),
    ([1, 2.5], "integers"),
    ([1, float("nan")], "NaN"),
    ([1, float("inf")], "inf"),
    ([[1, 2], [3, 4]], "1-D"),
    (["a", "b"], "numbers"),
])
def test_bad_counts_raise_clear_errors(data, msg):
    with pytest.raises(ValueError, match=msg):
        PoissonGamma(data)


@pytest.mark.parametrize("prior_u, prior_v, msg", [
    ((0, 1), (4, 4), "prior_u shape"),
    ((5, -1), (4, 4), "prior_u rate"),
    ((5, 1), (float("nan"), 4), "prior_v shape"),
    ((5, 1), (4, 0), "prior_v rate"),
])
def test_bad_priors_raise_clear_errors(prior_u, prior_v, msg):
    with pytest.raises(ValueError, match=msg):
        PoissonGamma(DEFAULT_DATA, prior_u, prior_v)
