"""The skew geometric Jensen-Shannon divergence and its Pyro ELBO, against numerical integration."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from scipy import integrate, stats
from torch.distributions import Gamma, Normal, kl_divergence

from svilab.inference.divergences import geometric_js
from svilab.inference.jsd_elbo import GeometricJSD_ELBO, JitGeometricJSD_ELBO
from svilab.inference.losses import make_loss

CASES = [(0.3, 0.7, -0.5, 1.2), (1.5, 0.4, 0.0, 1.0), (-2.0, 2.5, 1.0, 0.3)]


def _numeric_gjs(mq, sq, mp, sp, alpha, dual):
    """GJS by quadrature: G = q^a p^(1-a) / Z normalised numerically, KLs integrated numerically."""
    q, p = stats.norm(mq, sq), stats.norm(mp, sp)
    lo, hi = min(mq - 12 * sq, mp - 12 * sp), max(mq + 12 * sq, mp + 12 * sp)

    def log_g_unnorm(z):
        return alpha * q.logpdf(z) + (1 - alpha) * p.logpdf(z)

    log_z = math.log(integrate.quad(lambda z: math.exp(log_g_unnorm(z)), lo, hi, epsabs=0, epsrel=1e-12,
                                    limit=200)[0])

    def kl(log_a, log_b):
        return integrate.quad(lambda z: math.exp(log_a(z)) * (log_a(z) - log_b(z)), lo, hi, epsabs=1e-14,
                              epsrel=1e-11, limit=200)[0]

    log_g = lambda z: log_g_unnorm(z) - log_z  # noqa: E731
    if dual:
        return (1 - alpha) * kl(log_g, q.logpdf) + alpha * kl(log_g, p.logpdf)
    return (1 - alpha) * kl(q.logpdf, log_g) + alpha * kl(p.logpdf, log_g)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dual", [False, True])
def test_closed_form_matches_numerical_integration(case, alpha, dual):
    mq, sq, mp, sp = case
    q = Normal(torch.tensor(mq, dtype=torch.float64), torch.tensor(sq, dtype=torch.float64))
    p = Normal(torch.tensor(mp, dtype=torch.float64), torch.tensor(sp, dtype=torch.float64))
    value = float(geometric_js(q, p, alpha, dual))
    assert value == pytest.approx(_numeric_gjs(mq, sq, mp, sp, alpha, dual), rel=1e-7, abs=1e-10)


def test_limits_and_symmetry():
    g = torch.Generator().manual_seed(0)
    q = Normal(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.rand(4, 3, generator=g).double() + 0.2)
    p = Normal(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.rand(4, 3, generator=g).double() + 0.2)
    kl_qp, kl_pq = kl_divergence(q, p), kl_divergence(p, q)
    torch.testing.assert_close(geometric_js(q, p, 0.0), kl_qp)
    torch.testing.assert_close(geometric_js(q, p, 1.0), kl_pq)
    torch.testing.assert_close(geometric_js(q, p, 0.0, dual=True), kl_pq)
    torch.testing.assert_close(geometric_js(q, p, 1.0, dual=True), kl_qp)
    torch.testing.assert_close(geometric_js(q, p, 1e-7), kl_qp, rtol=1e-5, atol=1e-6)   # continuous at the ends
    torch.testing.assert_close(geometric_js(q, p, 1 - 1e-7, dual=True), kl_qp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(geometric_js(q, p, 0.5), geometric_js(p, q, 0.5))
    torch.testing.assert_close(geometric_js(q, p, 0.5, dual=True), geometric_js(p, q, 0.5, dual=True))
    assert (geometric_js(q, p, 0.3) > 0).all() and (geometric_js(q, q, 0.3).abs() < 1e-12).all()


def test_shapes_follow_kl_divergence():
    q = dist.Normal(torch.zeros(5, 3), torch.ones(5, 3)).to_event(1)
    p = dist.Normal(torch.ones(5, 3), 2 * torch.ones(5, 3)).to_event(1)
    assert geometric_js(q, p).shape == kl_divergence(q, p).shape == (5,)
    assert geometric_js(q.base_dist, p.base_dist).shape == (5, 3)
    torch.testing.assert_close(geometric_js(q, p, 0.4), geometric_js(q.base_dist, p.base_dist, 0.4).sum(-1))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "a"])
def test_alpha_outside_unit_interval_is_an_error(alpha):
    q = Normal(0.0, 1.0)
    with pytest.raises(ValueError, match="alpha must be"):
        geometric_js(q, q, alpha)
    with pytest.raises(ValueError, match="alpha must be"):
        make_loss("gjs", alpha=alpha)


def test_non_normal_is_an_error_without_monte_carlo():
    with pytest.raises(ValueError, match="must be a \\(diagonal\\) Normal distribution, got Gamma"):
        geometric_js(Gamma(2.0, 1.0), Normal(0.0, 1.0))


# ----------------------------------------------------------------------------- the ELBO subclass
X = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.2]], dtype=torch.float64)
W = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.1]], dtype=torch.float64)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T, 0.7).to_event(1), obs=x)


def guide(x):
    loc = pyro.param("loc", torch.tensor([[0.1, -0.2], [0.3, 0.4]], dtype=x.dtype))
    scale = pyro.param("scale", torch.tensor([[0.5, 0.9], [1.2, 0.7]], dtype=x.dtype),
                       constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def _loss(elbo, seed=0):
    pyro.set_rng_seed(seed)
    return elbo.loss(model, guide, X)


def test_alpha0_is_the_mean_field_elbo_and_alpha1_dual_too():
    guide(X)
    ref = _loss(TraceMeanField_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=1))
    for elbo in (GeometricJSD_ELBO(0.0, num_particles=5, vectorize_particles=True, max_plate_nesting=1),
                 GeometricJSD_ELBO(1.0, dual=True, num_particles=5, vectorize_particles=True, max_plate_nesting=1)):
        assert _loss(elbo) == pytest.approx(ref, rel=1e-12)


def test_loss_equals_likelihood_minus_divergence_by_hand():
    """The GJS loss against a direct computation: -(E log p(x|z) - beta * GJS) with the same z."""
    guide(X)
    elbo = GeometricJSD_ELBO(0.3, dual=True, beta=2.0, num_particles=1, max_plate_nesting=1)
    pyro.set_rng_seed(4)
    guide_trace = pyro.poutine.trace(guide).get_trace(X)
    z = guide_trace.nodes["z"]["value"]
    loc, scale = pyro.param("loc"), pyro.param("scale")
    log_lik = dist.Normal(z @ W.T, 0.7).to_event(1).log_prob(X).sum()
    div = geometric_js(dist.Normal(loc, scale).to_event(1), dist.Normal(torch.zeros(2, dtype=X.dtype), 1.0)
                       .expand([2, 2]).to_event(1), 0.3, dual=True).sum()
    pyro.set_rng_seed(4)
    assert elbo.loss(model, guide, X) == pytest.approx(float(-(log_lik - 2.0 * div).detach()), rel=1e-12)


def test_gradients_agree_with_finite_differences_of_the_loss():
    """With the noise fixed by the seed the loss is a smooth function of the parameters."""
    guide(X)
    elbo = GeometricJSD_ELBO(0.6, num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(1)
    elbo.loss_and_grads(model, guide, X)
    store = pyro.get_param_store()
    loc_u = store._params["loc"]
    scale_u = store._params["scale"]
    grad = torch.cat([loc_u.grad.flatten(), scale_u.grad.flatten()])
    direction = torch.tensor([0.3, -0.5, 0.2, 0.7, -0.1, 0.4, 0.6, -0.3], dtype=torch.float64)
    h = 1e-6

    def at(t):
        with torch.no_grad():
            loc_u.copy_(base_loc + t * direction[:4].view(2, 2))
            scale_u.copy_(base_scale + t * direction[4:].view(2, 2))
        return _loss(elbo, seed=1)

    base_loc, base_scale = loc_u.detach().clone(), scale_u.detach().clone()
    fd = (at(h) - at(-h)) / (2 * h)
    assert fd == pytest.approx(float(grad @ direction), rel=1e-6)


def test_jit_variant_gives_the_same_loss():
    guide(X)
    kw = {"num_particles": 4, "vectorize_particles": True, "max_plate_nesting": 1}
    a = _loss(GeometricJSD_ELBO(0.5, **kw), seed=2)
    b = _loss(JitGeometricJSD_ELBO(0.5, **kw), seed=2)
    assert a == pytest.approx(b, rel=1e-10)


def _gjs_by_quadrature(q_pdf, p_pdf, alpha, dual, lo=1e-12, hi=60.0):
    """GJS of two densities on (0, inf) by 1-D quadrature of the definition (independent of the code)."""
    from scipy.integrate import quad

    def g_un(z):
        return q_pdf(z) ** alpha * p_pdf(z) ** (1 - alpha)

    Z = quad(g_un, lo, hi, limit=200)[0]

    def kl(a, b):
        return quad(lambda z: a(z) * (np.log(a(z)) - np.log(b(z))) if a(z) > 0 else 0.0, lo, hi, limit=200)[0]

    def g(z):
        return g_un(z) / Z

    if dual:
        return (1 - alpha) * kl(g, q_pdf) + alpha * kl(g, p_pdf)
    return (1 - alpha) * kl(q_pdf, g) + alpha * kl(p_pdf, g)


@pytest.mark.parametrize("alpha,dual", [(0.3, False), (0.7, False), (0.5, True), (0.2, True)])
def test_monte_carlo_divergence_matches_closed_form_and_quadrature(alpha, dual):
    """geometric_js_mc: against the Normal closed form, and for Gamma vs LogNormal (no closed form)
    against quadrature, each as the mean of 200 independent estimates within 4 standard errors
    (plus the O(1/S) bias of log Z, 1e-3 here)."""
    from scipy import stats

    from svilab.inference.divergences import geometric_js_mc

    torch.manual_seed(0)
    R = 200
    q = Normal(torch.full((R,), 0.3, dtype=torch.float64), torch.full((R,), 0.5, dtype=torch.float64))
    p = Normal(torch.zeros(R, dtype=torch.float64), torch.ones(R, dtype=torch.float64))
    est = geometric_js_mc(q, p, alpha, dual, num_samples=2000)
    exact = float(geometric_js(q, p, alpha, dual)[0])
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / R ** 0.5 + 1e-3
    q = dist.LogNormal(torch.full((R,), 0.4, dtype=torch.float64), torch.full((R,), 0.3, dtype=torch.float64))
    p = Gamma(torch.full((R,), 2.0, dtype=torch.float64), torch.full((R,), 1.0, dtype=torch.float64))
    est = geometric_js_mc(q, p, alpha, dual, num_samples=2000)
    ref = _gjs_by_quadrature(stats.lognorm(0.3, scale=np.exp(0.4)).pdf, stats.gamma(2.0).pdf, alpha, dual)
    assert abs(float(est.mean()) - ref) < 4 * float(est.std()) / R ** 0.5 + 1e-3
    assert geometric_js(q, p, alpha, dual, num_samples=8).shape == (R,)     # the fallback is taken


def test_the_objective_on_autonormal_and_on_a_gamma_guide():
    """AutoNormal on a real latent with a Normal prior gives the hand-written Normal guide's loss (same
    draw, closed form, to 1e-12); on a positive latent (Gamma prior) its divergence, taken in the log
    space, is GJS(LogNormal || Gamma) (quadrature); a hand-written Gamma guide gets the Monte Carlo
    divergence too (a guide drawing all sites jointly: test_a_joint_guide_gets_the_divergence_of_its_joint)."""
    from pyro.infer.autoguide import AutoNormal
    from scipy import stats

    def normal_model():
        pyro.sample("z", dist.Normal(torch.tensor(0.5, dtype=torch.float64), 2.0))

    pyro.clear_param_store()
    auto = AutoNormal(normal_model, init_loc_fn=lambda site: torch.tensor(0.3, dtype=torch.float64), init_scale=0.7)

    def by_hand():
        pyro.sample("z", dist.Normal(pyro.param("AutoNormal.locs.z"), pyro.param("AutoNormal.scales.z")))

    elbo = GeometricJSD_ELBO(0.3, dual=True)
    pyro.set_rng_seed(0)
    a = elbo.loss(normal_model, auto)
    pyro.set_rng_seed(0)
    assert elbo.loss(normal_model, by_hand) == pytest.approx(a, rel=1e-12)
    q = Normal(torch.tensor(0.3, dtype=torch.float64), 0.7)
    assert a == pytest.approx(float(geometric_js(q, Normal(torch.tensor(0.5, dtype=torch.float64), 2.0), 0.3,
                                                  dual=True)), rel=1e-6)

    def gamma_model():
        pyro.sample("rate", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 1.0))

    pyro.clear_param_store()
    auto = AutoNormal(gamma_model, init_loc_fn=lambda site: torch.tensor(1.5, dtype=torch.float64), init_scale=0.3)
    elbo = GeometricJSD_ELBO(0.6, mc_samples=2000)
    pyro.set_rng_seed(1)
    est = np.array([elbo.loss(gamma_model, auto) for _ in range(100)])   # no data: the loss is the divergence
    loc = float(pyro.param("AutoNormal.locs.rate").detach())
    ref = _gjs_by_quadrature(stats.lognorm(0.3, scale=np.exp(loc)).pdf, stats.gamma(2.0).pdf, 0.6, False)
    assert abs(est.mean() - ref) < 4 * est.std() / 10 + 1e-3

    def gamma_guide():
        pyro.sample("rate", dist.Gamma(torch.tensor(3.0, dtype=torch.float64), 1.5))

    est = np.array([GeometricJSD_ELBO(0.5, mc_samples=2000).loss(gamma_model, gamma_guide) for _ in range(100)])
    ref = _gjs_by_quadrature(stats.gamma(3.0, scale=1 / 1.5).pdf, stats.gamma(2.0).pdf, 0.5, False)
    assert abs(est.mean() - ref) < 4 * est.std() / 10 + 1e-3
    assert np.isfinite(_loss(make_loss("dgjs", alpha=0.5, max_plate_nesting=1)))


@pytest.mark.parametrize("dual", [False, True])
def test_a_joint_guide_gets_the_divergence_of_its_joint(dual):
    """AutoMultivariateNormal draws every site from one auxiliary vector: its divergence is taken for the
    joint against the prior carried to that vector (Monte Carlo). With a diagonal covariance the joint is the
    product of AutoNormal's per-site distributions, and the GJS of products is the sum of the per-site GJS
    (closed form for the Normal-prior sites, Monte Carlo for the Gamma one): the two losses agree within 4
    standard errors (vectorized particles, a plated local latent, a positive site with its Jacobian). Two
    joint auxiliary vectors are refused by name."""
    from pyro.infer.autoguide import AutoGuideList, AutoMultivariateNormal, AutoNormal

    f64 = torch.float64

    def model():
        pyro.sample("loc", dist.Normal(torch.tensor([0.5, -1.0], dtype=f64), 2.0).to_event(1))
        pyro.sample("rate", dist.Gamma(torch.tensor(2.0, dtype=f64), 1.0))
        with pyro.plate("groups", 3):
            pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=f64), 1.5))

    locs = {"loc": torch.tensor([0.2, -0.4], dtype=f64), "rate": torch.tensor(0.4, dtype=f64),
            "z": torch.tensor([0.1, -0.3, 0.6], dtype=f64)}
    scales = {"loc": torch.tensor([0.5, 0.8], dtype=f64), "rate": torch.tensor(0.3, dtype=f64),
              "z": torch.tensor([0.7, 0.4, 1.1], dtype=f64)}
    elbo = GeometricJSD_ELBO(0.4, dual=dual, mc_samples=1000, num_particles=4, vectorize_particles=True,
                             max_plate_nesting=1)
    pyro.clear_param_store()
    sep = AutoNormal(model)
    sep()
    joint = AutoMultivariateNormal(model)
    joint()
    with torch.no_grad():
        for k in locs:
            getattr(sep.locs, k).copy_(locs[k])
            setattr(sep.scales, k, scales[k])                          # constrained: set through Pyro
        joint.loc.copy_(torch.cat([locs[k].reshape(-1) for k in ("loc", "rate", "z")]))
        joint.scale = torch.cat([scales[k].reshape(-1) for k in ("loc", "rate", "z")])   # scale_tril: identity
    pyro.set_rng_seed(0)
    a = np.array([elbo.loss(model, sep) for _ in range(30)])      # no data: the loss is the divergence
    b = np.array([elbo.loss(model, joint) for _ in range(30)])
    se = math.hypot(a.std(), b.std()) / math.sqrt(30)
    assert abs(a.mean() - b.mean()) < 4 * se + 1e-3, (a.mean(), b.mean(), se)
    assert b.std() > 0                                             # the joint's divergence is Monte Carlo
    guides = AutoGuideList(model)
    guides.append(AutoMultivariateNormal(pyro.poutine.block(model, expose=["loc"])))
    guides.append(AutoMultivariateNormal(pyro.poutine.block(model, expose=["rate", "z"])))
    with pytest.raises(ValueError, match="more than one auxiliary vector"):
        elbo.loss(model, guides)


def test_plain_pyro_svi_accepts_the_objective():
    guide(X)
    elbo = GeometricJSD_ELBO(0.5, num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    first = np.mean([svi.step(X) for _ in range(20)])
    last = np.mean([svi.step(X) for _ in range(200)][-20:])
    assert last < first


# ----------------------------------------------------------------------------- the learned skew (tGJS / tdGJS)
def _official_gjs(mean, logvar, a, dual):
    """The official code's divergence, typed from jacobdeasy/geometric-js, vae/models/losses.py
    (``_gjs_normal_loss`` with ``invert_alpha=True``, ``_get_mu_var``, ``_kl_normal_loss``): the mean over
    the batch of the sum over latent dimensions, q = N(mean, exp(logvar)), p = N(0, 1)."""
    var = logvar.exp()
    b = 1 - a                                                          # invert_alpha
    var_a = 1 / ((1 - b) / var + b / torch.ones_like(var))
    mean_a = var_a * ((1 - b) * mean / var + b * torch.zeros_like(mean) / torch.ones_like(var))

    def kl(m1, lv1, m2, lv2):
        return (0.5 * (-1 + (lv2 - lv1) + lv1.exp() / lv2.exp() + (m2 - m1).pow(2) / lv2.exp()).mean(0)).sum()

    zero = torch.zeros_like(mean)
    if dual:
        k1, k2 = kl(mean_a, var_a.log(), mean, logvar), kl(mean_a, var_a.log(), zero, zero)
    else:
        k1, k2 = kl(mean, logvar, mean_a, var_a.log()), kl(zero, zero, mean_a, var_a.log())
    return (1 - a) * k1 + a * k2


@pytest.mark.parametrize("dual", [False, True])
def test_a_learned_skew_has_the_official_codes_loss_and_gradient(dual):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(7, 4, generator=g, dtype=torch.float64).requires_grad_()
    logvar = (0.8 * torch.randn(7, 4, generator=g, dtype=torch.float64)).requires_grad_()
    for a0 in (0.1, 0.5, 0.83):
        alpha = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        q = dist.Normal(mean, (logvar / 2).exp()).to_event(1)
        p = dist.Normal(torch.zeros_like(mean), 1.0).to_event(1)
        ours = geometric_js(q, p, alpha, dual=dual).mean()
        theirs = _official_gjs(mean, logvar, alpha, dual)
        assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-12, abs=1e-12)
        for a, b in zip(torch.autograd.grad(ours, [mean, logvar, alpha]),
                        torch.autograd.grad(theirs, [mean, logvar, alpha]), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dual", [False, True])
def test_the_learned_skew_is_a_pyro_parameter_with_the_fixed_skews_loss_and_gradient(dual):
    """At the parameter's value the objective is the fixed-alpha one (same draws); its gradient with respect to
    logit(alpha) is dL/dalpha * alpha (1 - alpha), dL/dalpha by finite differences of the fixed-alpha loss."""
    pyro.clear_param_store()
    guide(X)
    kw = {"num_particles": 3, "vectorize_particles": True, "max_plate_nesting": 1, "dual": dual}
    learned = GeometricJSD_ELBO(0.3, learn_alpha=True, **kw)
    pyro.set_rng_seed(1)
    loss = learned.loss_and_grads(model, guide, X)
    u = dict(pyro.get_param_store().named_parameters())["gjs_alpha"]
    assert float(pyro.param("gjs_alpha")) == pytest.approx(0.3, rel=1e-7)      # the start, constrained to (0, 1)
    a = float(pyro.param("gjs_alpha"))
    assert loss == pytest.approx(_loss(GeometricJSD_ELBO(a, **kw), seed=1), rel=1e-12)
    h = 1e-6
    fd = (_loss(GeometricJSD_ELBO(a + h, **kw), seed=1) - _loss(GeometricJSD_ELBO(a - h, **kw), seed=1)) / (2 * h)
    assert float(u.grad) == pytest.approx(fd * a * (1 - a), rel=1e-6)
    with pytest.raises(ValueError, match=r"a learned alpha starts inside \(0, 1\)"):
        GeometricJSD_ELBO(1.0, learn_alpha=True)
    with pytest.raises(ValueError, match="loss 'iwae' takes no learn_alpha"):
        make_loss("iwae", learn_alpha=True)
